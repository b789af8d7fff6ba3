"""Operator endpoints (token-protected): stranded orders, reissued links, refresh now.

JSON under ``/admin/…`` takes ``Authorization: Bearer <ADMIN_TOKEN>``; the server-rendered
page at ``/admin`` takes the same token once through a form and keeps it in a strict cookie.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel

from basketball_api import notify, recovery
from basketball_api.db import transaction
from basketball_api.deps import Services, ServicesDep, ThreadStripe
from basketball_api.errors import Unauthorized
from basketball_api.metrics import CATEGORIES
from basketball_api.models import Category
from basketball_api.schemas import OrderOut

router = APIRouter(prefix="/admin", tags=["admin"])
templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
COOKIE = "basketball_admin"


def _valid(services: Services, presented: str | None) -> bool:
    token = services.settings.admin_token
    if token is None or not presented:
        return False
    return hmac.compare_digest(presented.encode(), token.get_secret_value().encode())


def require_token(request: Request, services: ServicesDep) -> None:
    if services.settings.admin_token is None:
        raise Unauthorized("admin endpoints are disabled: set ADMIN_TOKEN")
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not _valid(services, presented):
        raise Unauthorized("a valid 'Authorization: Bearer <ADMIN_TOKEN>' header is required")


Admin = Depends(require_token)


class StrandedOut(BaseModel):
    order_id: int
    category: Category
    product_name: str
    parent_email: str
    amount: int
    currency: str
    session_id: str
    dead_for_seconds: int


class StrandedList(BaseModel):
    totals: dict[str, int]
    orders: list[StrandedOut]


class ReissueOut(BaseModel):
    created: bool
    emailed: bool
    order: OrderOut


def _stranded(services: Services, category: str | None) -> StrandedList:
    refresher = services.refresher
    with transaction(services.sessions) as db:
        found = recovery.stranded_orders(
            db,
            refresher.knowledge,
            now=refresher.source.stripe_now(),
            grace=refresher.grace,
            category=category,
        )
    totals = dict.fromkeys(CATEGORIES, 0)
    for s in found:
        totals[s.category] += 1
    return StrandedList(
        totals=totals, orders=[StrandedOut.model_validate(s, from_attributes=True) for s in found]
    )


@router.get("/stranded-orders", dependencies=[Admin])
async def stranded_orders(
    services: ServicesDep, category: Annotated[Category | None, Query()] = None
) -> StrandedList:
    """Pending orders whose payment link is dead (as of the last refresh and webhooks)."""
    return await run_in_threadpool(_stranded, services, category.value if category else None)


def _reissue(services: Services, order_id: int, email: bool) -> ReissueOut:
    stripe = ThreadStripe(services.gateway, services.settings)
    with transaction(services.sessions) as db:
        result = recovery.reissue_link(db, stripe, order_id)
        out = OrderOut.of(result.order)
    emailed = False
    if result.created and email and out.checkout_url:
        emailed = notify.send_new_link(
            services.settings,
            to=out.parent_email,
            order_id=out.id,
            product=out.product_name,
            url=out.checkout_url,
        )
    return ReissueOut(created=result.created, emailed=emailed, order=out)


async def _reissue_and_observe(services: Services, order_id: int, email: bool) -> ReissueOut:
    result = await run_in_threadpool(_reissue, services, order_id, email)
    if result.created:
        services.refresher.wake()  # learn the new link's state now, not in five minutes
    return result


@router.post("/orders/{order_id}/reissue", dependencies=[Admin])
async def reissue(
    order_id: int, services: ServicesDep, email: Annotated[bool, Query()] = False
) -> ReissueOut:
    """Give a pending order a fresh Checkout link (idempotent while a live link exists)."""
    return await _reissue_and_observe(services, order_id, email)


@router.post("/refresh", dependencies=[Admin])
async def refresh_now(services: ServicesDep) -> dict[str, object]:
    """Run one refresh now and report whether it succeeded."""
    ok = await services.refresher.run_cycle()
    counts = services.refresher.counts
    return {"succeeded": ok, "expired": counts.expired if counts else None}


# -- the operator page --------------------------------------------------------------------


@router.get("", response_class=HTMLResponse, include_in_schema=False)
async def page(
    request: Request, services: ServicesDep, category: str | None = None, notice: str = ""
) -> Response:
    if not _valid(services, request.cookies.get(COOKIE)):
        return templates.TemplateResponse(
            request, "login.html", {"disabled": services.settings.admin_token is None}
        )
    chosen = category if category in CATEGORIES else None
    listing = await run_in_threadpool(_stranded, services, chosen)
    return templates.TemplateResponse(
        request,
        "admin.html",
        {
            "listing": listing,
            "categories": CATEGORIES,
            "chosen": chosen,
            "notice": notice,
            "gauge": services.refresher.counts.expired if services.refresher.counts else None,
        },
    )


@router.post("/login", include_in_schema=False)
async def login(services: ServicesDep, token: Annotated[str, Form()]) -> Response:
    response = RedirectResponse("/admin", status_code=303)
    if _valid(services, token):
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
    return response


@router.post("/page/orders/{order_id}/reissue", include_in_schema=False)
async def page_reissue(request: Request, order_id: int, services: ServicesDep) -> Response:
    if not _valid(services, request.cookies.get(COOKIE)):
        return RedirectResponse("/admin", status_code=303)
    result = await _reissue_and_observe(services, order_id, email=True)
    verb = "New link issued" if result.created else "Link already live"
    notice = f"{verb} for order {order_id}: {result.order.checkout_url}"
    return RedirectResponse(f"/admin?{urlencode({'notice': notice})}", status_code=303)
