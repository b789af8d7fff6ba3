"""Operator endpoints of the catalogue: JSON under ``/admin/products`` and the page
``/admin/catalogue`` (list, create, edit, take off sale)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ValidationError

from basketball_api import catalogue
from basketball_api.admin import Admin, PageOperator, has_page_session, templates
from basketball_api.catalogue import ProductAdminOut, ProductIn, ProductUpdate
from basketball_api.db import transaction
from basketball_api.deps import Services, ServicesDep
from basketball_api.errors import DomainError
from basketball_api.models import Category
from basketball_api.operators import OperatorName, operator_errors
from basketball_api.schemas import MAX_ID

router = APIRouter(prefix="/admin", tags=["catalogue"])
ProductId = Annotated[int, Path(ge=1, le=MAX_ID, description="The product's id.")]


def _now() -> datetime:
    return datetime.now(UTC)


@router.get("/products", dependencies=[Admin], responses=operator_errors())
def list_products(services: ServicesDep) -> list[ProductAdminOut]:
    """Every product, on sale or not."""
    now = _now()
    with transaction(services.sessions) as db:
        return [ProductAdminOut.of(p, now) for p in catalogue.all_products(db)]


@router.post("/products", status_code=status.HTTP_201_CREATED, responses=operator_errors(409))
def create_product(
    body: ProductIn, services: ServicesDep, operator: OperatorName
) -> ProductAdminOut:
    """Add a product to the catalogue."""
    with transaction(services.sessions) as db:
        product = catalogue.create_product(db, body, operator=operator)
        return ProductAdminOut.of(product, _now())


@router.patch("/products/{product_id}", responses=operator_errors(404, 409))
def update_product(
    product_id: ProductId, body: ProductUpdate, services: ServicesDep, operator: OperatorName
) -> ProductAdminOut:
    """Change a product; orders already taken keep their price. 409 when the category of a
    product with orders would change."""
    with transaction(services.sessions) as db:
        product = catalogue.update_product(db, product_id, body, operator=operator)
        return ProductAdminOut.of(product, _now())


@router.post("/products/{product_id}/deactivate", responses=operator_errors(404, 409))
def deactivate_product(
    product_id: ProductId, services: ServicesDep, operator: OperatorName
) -> ProductAdminOut:
    """Take a product off sale (it stays, with its orders)."""
    with transaction(services.sessions) as db:
        product = catalogue.deactivate_product(db, product_id, operator=operator)
        return ProductAdminOut.of(product, _now())


# -- the page -----------------------------------------------------------------------------


class ProductForm(BaseModel):
    """The page's form, as typed: a price in units ("150.00"), datetime-local fields in UTC."""

    name: str = ""
    category: str = ""
    price: str = ""
    currency: str = "usd"
    event_date: str = ""
    sale_starts_at: str = ""
    sale_ends_at: str = ""
    active: bool = False

    def values(self) -> dict[str, Any]:
        """The API's fields: cents, aware datetimes, empty optional fields as null."""
        try:
            cents = Decimal(self.price.strip() or "x") * 100
        except InvalidOperation:
            raise ValueError(f"price: {self.price!r} is not an amount such as 150.00") from None
        if cents != cents.to_integral_value():
            raise ValueError("price: at most two decimals")

        def moment(text: str) -> str | None:
            return f"{text}:00+00:00" if len(text) == 16 else (text or None)

        return {
            "name": self.name,
            "category": self.category,
            "unit_amount": int(cents),
            "currency": self.currency,
            "event_date": self.event_date or None,
            "sale_starts_at": moment(self.sale_starts_at),
            "sale_ends_at": moment(self.sale_ends_at),
            "active": self.active,
        }


def _problem(e: ValidationError | ValueError | DomainError) -> str:
    if isinstance(e, DomainError):
        return e.message
    if isinstance(e, ValidationError):
        return "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or 'form'}: {err['msg']}" for err in e.errors()
        )
    return str(e)


def _render(
    request: Request,
    services: Services,
    *,
    editing: int | None = None,
    saved: int | None = None,
    error: str | None = None,
    form: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    now = _now()
    with transaction(services.sessions) as db:
        products = [ProductAdminOut.of(p, now) for p in catalogue.all_products(db)]
    current = next((p for p in products if p.id == editing), None)
    if form is None and current is not None:
        form = current.model_dump()
        form["price"] = f"{current.unit_amount / 100:.2f}"
        for field in ("sale_starts_at", "sale_ends_at"):
            moment = form[field]
            form[field] = moment.strftime("%Y-%m-%dT%H:%M") if moment else ""
    return templates.TemplateResponse(
        request,
        "catalogue.html",
        {
            "products": products,
            "categories": [c.value for c in Category],
            "editing": current,
            "saved": next((p for p in products if p.id == saved), None),
            "error": error,
            "form": form or {"currency": "usd", "active": True},
        },
        status_code=status_code,
    )


@router.get(
    "/catalogue", response_class=HTMLResponse, include_in_schema=False, dependencies=[PageOperator]
)
async def page(
    request: Request,
    services: ServicesDep,
    edit: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    saved: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Response:
    if not has_page_session(request, services):
        return RedirectResponse("/admin", status_code=303)
    return await run_in_threadpool(_render, request, services, editing=edit, saved=saved)


def _save(services: Services, product_id: int | None, form: ProductForm, operator: str) -> int:
    values = form.values()
    with transaction(services.sessions) as db:
        if product_id is None:
            new = ProductIn.model_validate(values)
            return catalogue.create_product(db, new, operator=operator).id
        changes = ProductUpdate.model_validate(values)
        return catalogue.update_product(db, product_id, changes, operator=operator).id


async def _page_save(
    request: Request, services: Services, product_id: int | None, form: ProductForm
) -> Response:
    operator: str = request.state.operator  # set by the route's PageOperator rule
    try:
        saved = await run_in_threadpool(_save, services, product_id, form, operator)
    except (ValidationError, ValueError, DomainError) as e:
        return await run_in_threadpool(
            _render,
            request,
            services,
            editing=product_id,
            error=_problem(e),
            form=form.model_dump(),
            status_code=422,
        )
    return RedirectResponse(f"/admin/catalogue?saved={saved}", status_code=303)


@router.post("/page/products", include_in_schema=False, dependencies=[PageOperator])
async def page_create(
    request: Request,
    services: ServicesDep,
    form: Annotated[ProductForm, Form()],
) -> Response:
    return await _page_save(request, services, None, form)


@router.post("/page/products/{product_id}", include_in_schema=False, dependencies=[PageOperator])
async def page_update(
    request: Request,
    product_id: ProductId,
    services: ServicesDep,
    form: Annotated[ProductForm, Form()],
) -> Response:
    return await _page_save(request, services, product_id, form)


@router.post(
    "/page/products/{product_id}/deactivate", include_in_schema=False, dependencies=[PageOperator]
)
async def page_deactivate(
    request: Request, product_id: ProductId, services: ServicesDep
) -> Response:
    operator: str = request.state.operator

    def work() -> None:
        with transaction(services.sessions) as db:
            catalogue.deactivate_product(db, product_id, operator=operator)

    try:
        await run_in_threadpool(work)
    except DomainError as e:
        return await run_in_threadpool(
            _render, request, services, error=e.message, status_code=e.status_code
        )
    return RedirectResponse(f"/admin/catalogue?saved={product_id}", status_code=303)
