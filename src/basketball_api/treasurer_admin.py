"""The treasurer's view: orders searched and filtered, totals per product, CSV export, and the
cancel, reissue and resend-link actions — JSON under ``/admin/orders…`` and the page
``/admin/page/orders``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import partial
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from pydantic import AfterValidator, BeforeValidator, Field

from basketball_api import access, catalogue, notify, orders, recovery, treasurer
from basketball_api.admin import Admin, PageOperator, has_page_session, templates
from basketball_api.db import transaction
from basketball_api.deps import Services, ServicesDep, ThreadStripe
from basketball_api.errors import DomainError, NotFound
from basketball_api.models import Category, OrderStatus
from basketball_api.operators import OperatorName, operator_errors
from basketball_api.schemas import MAX_ID, OrderId
from basketball_api.stripe_gateway import StripeFailure
from basketball_api.treasurer import Listing, OrderFilter

router = APIRouter(prefix="/admin", tags=["treasurer"])


def _blank_is_none(value: Any) -> Any:
    """An HTML form sends empty fields as ``""``: they mean "no filter"."""
    return None if isinstance(value, str) and not value.strip() else value


def _printable(value: str) -> str:
    if not value.isprintable():  # PostgreSQL refuses NUL in a string: a 422, not a 500
        raise ValueError("q must be printable text")
    return value


_Blank = BeforeValidator(_blank_is_none)


def order_filter(
    state: Annotated[
        OrderStatus | None, _Blank, Query(description="Only orders in this state.")
    ] = None,
    category: Annotated[
        Category | None, _Blank, Query(description="Only orders of this category.")
    ] = None,
    product: Annotated[
        Annotated[int, Field(ge=1, le=MAX_ID)] | None,
        _Blank,
        Query(description="Only orders of this product id."),
    ] = None,
    ordered_from: Annotated[
        date | None, _Blank, Query(description="Ordered on or after this day (UTC).")
    ] = None,
    ordered_until: Annotated[
        date | None, _Blank, Query(description="Ordered on or before this day (UTC).")
    ] = None,
    q: Annotated[
        Annotated[str, Field(max_length=200), AfterValidator(_printable)] | None,
        _Blank,
        Query(description="Part of the player's name or the parent's email."),
    ] = None,
) -> OrderFilter:
    return OrderFilter(state, category, product, ordered_from, ordered_until, q)


Filter = Annotated[OrderFilter, Depends(order_filter)]
_FILTER_KEYS = ("state", "category", "product", "ordered_from", "ordered_until", "q")


def _query_of(where: OrderFilter) -> dict[str, str]:
    values = {
        "state": where.state,
        "category": where.category,
        "product": where.product_id,
        "ordered_from": where.ordered_from,
        "ordered_until": where.ordered_until,
        "q": where.text,
    }
    return {k: str(v) for k, v in values.items() if v not in (None, "")}


def _search(services: Services, where: OrderFilter, limit: int, offset: int) -> Listing:
    now, grace = services.refresher.source.stripe_now(), services.refresher.grace
    with transaction(services.sessions) as db:
        return treasurer.search(db, where, now=now, grace=grace, limit=limit, offset=offset)


def _csv(services: Services, where: OrderFilter) -> StreamingResponse:
    now, grace = services.refresher.source.stripe_now(), services.refresher.grace

    def lines() -> Iterator[str]:
        with transaction(services.sessions) as db:
            yield from treasurer.csv_lines(treasurer.every_row(db, where, now=now, grace=grace))

    name = f"orders-{datetime.now(UTC):%Y-%m-%d}.csv"
    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


# -- JSON and CSV -------------------------------------------------------------------------


@router.get("/orders", dependencies=[Admin], responses=operator_errors())
async def list_orders(
    services: ServicesDep,
    where: Filter,
    limit: Annotated[int, Query(ge=1, le=treasurer.MAX_ROWS)] = treasurer.MAX_ROWS,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> Listing:
    """Orders matching every filter given, newest first, with player name, order date, amount
    outstanding and link state; ``totals`` cover every matching order, per product."""
    return await run_in_threadpool(_search, services, where, limit, offset)


@router.get(
    "/orders.csv",
    dependencies=[Admin],
    response_class=StreamingResponse,
    responses=operator_errors(),
)
def export_orders(services: ServicesDep, where: Filter) -> StreamingResponse:
    """Every matching order as CSV (amounts in units, times in UTC)."""
    return _csv(services, where)


class EmailNotConfigured(DomainError):
    # 409, not 503: retrying changes nothing until the club configures SMTP.
    status_code = 409
    code = "email_not_configured"


@dataclass(frozen=True)
class Resent:
    email: notify.Email
    new_link: bool  # the link was dead and a new one was issued first
    link_url: str | None


def _resend(services: Services, order_id: int, operator: str) -> Resent:
    """Make sure the order has a live link (reissued if dead), then email it to the parent."""
    result = recovery.reissue(
        services.sessions,
        ThreadStripe(services.gateway, services.settings),
        order_id,
        operator=operator,
    )
    order = result.order
    # The parent gets the order's pay link (it never dies), never Stripe's session URL.
    link = access.pay_url(
        services.settings, access.issue_link_token(services.sessions, order_id, "email")
    )
    email = notify.send_link(
        services.settings,
        to=order.parent_email,
        order_id=order.id,
        product=order.product.name,
        url=link,
        renewed=result.created,
    )
    return Resent(email, result.created, link)


async def _resend_and_observe(services: Services, order_id: int, operator: str) -> Resent:
    resent = await run_in_threadpool(_resend, services, order_id, operator)
    if resent.new_link:
        services.refresher.request_recount()
    return resent


@router.post("/orders/{order_id}/resend-link", responses=operator_errors(404, 409, 502, 503))
async def resend_link(order_id: OrderId, services: ServicesDep, who: OperatorName) -> Resent:
    """Email the parent the order's payment link (a new one first if it was dead).

    409 ``email_not_configured`` when SMTP is not set up: nothing is emailed, and the body says
    so; the order still gets a live link, which the operator can send by hand."""
    resent = await _resend_and_observe(services, order_id, who)
    if resent.email == notify.Email.not_configured:
        raise EmailNotConfigured(f"{notify.NOT_CONFIGURED}; the live link is {resent.link_url}")
    return resent


# -- the page -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Notice:
    text: str
    ok: bool
    url: str | None = None


_DONE = {
    "cancelled": (True, "Order {order} is cancelled: nobody can pay it any more."),
    "not_cancelled": (False, "Order {order} was not cancelled: {why}."),
    "relinked": (
        True,
        "New link issued for order {order}. No email was sent: copy the link, or "
        "use “resend link” to email it.",
    ),
    "live": (True, "Order {order} already has a live link; nothing was created."),
    "emailed": (True, "The payment link was emailed to the parent of order {order}."),
    "email_off": (
        False,
        "No email was sent for order {order}: email is not configured (set "
        "SMTP_HOST). Send the parent this link yourself.",
    ),
    "email_failed": (
        False,
        "The email for order {order} failed (the mail server refused it or "
        "could not be reached). Send the parent this link yourself.",
    ),
    "not_pending": (False, "Order {order} is {state}: it needs no link."),
    "not_found": (False, "Order {order} does not exist."),
    "stripe": (False, "Stripe did not answer; order {order} is unchanged. Try again in a moment."),
}


def _notice(services: Services, order_id: int, done: str) -> _Notice | None:
    if done not in _DONE:
        return None
    ok, template = _DONE[done]
    with transaction(services.sessions) as db:
        try:
            order = orders.get_order(db, order_id)
        except NotFound:
            return _Notice(_DONE["not_found"][1].format(order=order_id), False)
        state = order.status.value
        why = f"it is {state}" if state != "pending" else "Stripe says it was paid"
        text = template.format(order=order_id, state=state, why=why)
        show_link = done in ("relinked", "live", "email_off", "email_failed")
        url = None
        if order.status == OrderStatus.pending and show_link:
            url = access.pay_url(services.settings, access.issue_token(db, order_id, "operator"))
        return _Notice(text, ok, url if show_link else None)


@router.get(
    "/page/orders",
    response_class=HTMLResponse,
    include_in_schema=False,
    dependencies=[PageOperator],
)
async def page(
    request: Request,
    services: ServicesDep,
    where: Filter,
    done: str = "",
    order: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Response:
    if not has_page_session(request, services):
        return RedirectResponse("/admin", status_code=303)
    listing = await run_in_threadpool(_search, services, where, treasurer.MAX_ROWS, 0)
    notice = None
    if order is not None:
        notice = await run_in_threadpool(_notice, services, order, done)

    def products() -> list[tuple[int, str]]:
        with transaction(services.sessions) as db:
            return [(p.id, p.name) for p in catalogue.all_products(db)]

    query = _query_of(where)
    return templates.TemplateResponse(
        request,
        "orders.html",
        {
            "listing": listing,
            "where": where,
            "query": query,
            "back": urlencode(query),
            "states": [s.value for s in OrderStatus],
            "categories": [c.value for c in Category],
            "products": await run_in_threadpool(products),
            "notice": notice,
            "money": treasurer.money,
            "email_on": notify.configured(services.settings),
            "refreshed": services.refresher.last_success_at is not None,
            "max_rows": treasurer.MAX_ROWS,
        },
    )


@router.get("/page/orders.csv", include_in_schema=False, dependencies=[PageOperator])
def page_csv(request: Request, services: ServicesDep, where: Filter) -> Response:
    if not has_page_session(request, services):
        return RedirectResponse("/admin", status_code=303)
    return _csv(services, where)


def _back(back: str, order_id: int, done: str) -> RedirectResponse:
    """Back to the listing with the same filters (only known keys: never a foreign URL)."""
    kept = [(k, v) for k, v in parse_qsl(back) if k in _FILTER_KEYS]
    query = urlencode([*kept, ("done", done), ("order", str(order_id))])
    return RedirectResponse(f"/admin/page/orders?{query}#notice", status_code=303)


async def _act(services: Services, order_id: int, action: str, operator: str) -> str:
    """Run one button's action; the outcome code names what the page says."""
    try:
        if action == "cancel":

            def cancel() -> None:
                stripe = ThreadStripe(services.gateway, services.settings)
                with transaction(services.sessions) as db:
                    orders.cancel_order(db, stripe, order_id, by=operator)

            await run_in_threadpool(cancel)
            services.refresher.request_recount()
            return "cancelled"
        if action == "relink":
            stripe = ThreadStripe(services.gateway, services.settings)
            result = await run_in_threadpool(
                partial(recovery.reissue, operator=operator), services.sessions, stripe, order_id
            )
            if result.created:
                services.refresher.request_recount()
            return "relinked" if result.created else "live"
        resent = await _resend_and_observe(services, order_id, operator)
        return {
            notify.Email.sent: "emailed",
            notify.Email.not_configured: "email_off",
        }.get(resent.email, "email_failed")
    except NotFound:
        return "not_found"
    except DomainError:
        return "not_cancelled" if action == "cancel" else "not_pending"
    except StripeFailure:
        return "stripe"


async def _page_action(
    request: Request, services: Services, order_id: int, action: str, back: str
) -> Response:
    who: str = request.state.operator  # set by the route's PageOperator rule
    return _back(back, order_id, await _act(services, order_id, action, who))


Back = Annotated[str, Form(description="The listing's filters, to return to them.")]


@router.post("/page/orders/{order_id}/cancel", include_in_schema=False, dependencies=[PageOperator])
async def page_cancel(
    request: Request, order_id: OrderId, services: ServicesDep, back: Back = ""
) -> Response:
    return await _page_action(request, services, order_id, "cancel", back)


@router.post("/page/orders/{order_id}/relink", include_in_schema=False, dependencies=[PageOperator])
async def page_relink(
    request: Request, order_id: OrderId, services: ServicesDep, back: Back = ""
) -> Response:
    return await _page_action(request, services, order_id, "relink", back)


@router.post("/page/orders/{order_id}/resend", include_in_schema=False, dependencies=[PageOperator])
async def page_resend(
    request: Request, order_id: OrderId, services: ServicesDep, back: Back = ""
) -> Response:
    return await _page_action(request, services, order_id, "resend", back)
