"""Operator endpoints (token-protected): stranded orders, reissued links, refresh now.

JSON under ``/admin/…`` takes ``Authorization: Bearer <ADMIN_TOKEN>``; the server-rendered
page at ``/admin`` takes the same token once through a form and keeps it in a strict cookie.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field
from sqlalchemy import select

from basketball_api import access, notify, recovery
from basketball_api.db import transaction
from basketball_api.deps import Services, ServicesDep, ThreadStripe
from basketball_api.errors import DomainError, Unauthorized
from basketball_api.metrics import CATEGORIES
from basketball_api.models import Category, CheckoutLink
from basketball_api.orders import get_order
from basketball_api.schemas import MAX_ID, OrderId, OrderOut
from basketball_api.stripe_gateway import StripeFailure

router = APIRouter(prefix="/admin", tags=["admin"])
templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
COOKIE = "basketball_admin"


def _valid(services: Services, presented: str | None) -> bool:
    token = services.settings.admin_token
    if token is None or not presented:
        return False
    return hmac.compare_digest(presented.encode(), token.get_secret_value().encode())


def has_page_session(request: Request, services: Services) -> bool:
    """Whether the operator page's cookie holds the admin token."""
    return _valid(services, request.cookies.get(COOKIE))


def require_token(request: Request, services: ServicesDep) -> None:
    if services.settings.admin_token is None:
        raise Unauthorized("admin endpoints are disabled: set ADMIN_TOKEN")
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not _valid(services, presented):
        raise Unauthorized("a valid 'Authorization: Bearer <ADMIN_TOKEN>' header is required")


Admin = access.operator(require_token)


def require_page_cookie(request: Request, services: ServicesDep) -> None:
    """The page's forms: the operator cookie, else back to the sign-in page."""
    if not has_page_session(request, services):
        raise HTTPException(303, "sign in first", headers={"Location": "/admin"})


PageOperator = access.operator(require_page_cookie)


class StrandedOut(BaseModel):
    order_id: int
    category: Category
    product_name: str
    player_name: str
    ordered_at: datetime = Field(description="When the order was taken (UTC).")
    parent_email: str = Field(description="Masked: first letter and domain only.")
    amount: int = Field(description="Outstanding, in cents: all of it (the order is pending).")
    currency: str
    session_id: str
    dead_for_seconds: int | None = Field(
        description="Since the link's expiry time; null when it was expired early by hand."
    )
    recovery_url: str | None = Field(
        description="Stripe's recovery link of an earlier expired session of this order "
        "(recorded when a link is reissued); an operator may send it instead of a new link."
    )


class StrandedList(BaseModel):
    totals: dict[str, int] = Field(
        description="Stranded orders per category, every category whatever the filter; "
        "equal to the expired-session gauge after a refresh."
    )
    orders: list[StrandedOut]
    last_refresh_at: float | None = Field(
        description="Unix time of the last successful refresh; null before the first one "
        "(the list is then empty because nothing is known yet)."
    )


class ReissueOut(BaseModel):
    created: bool = Field(description="False when the order already had a live link.")
    emailed: bool
    email: notify.Email = Field(
        description="What became of the email: `not_configured` when SMTP_HOST is unset "
        "(nothing was sent), `failed` when the mail server refused it."
    )
    recovery_url: str | None = Field(description="Stripe's recovery link of the replaced session.")
    pay_url: str = Field(description="The order's pay link, to give the parent.")
    order: OrderOut


def _stranded(services: Services, category: str | None) -> StrandedList:
    refresher = services.refresher
    with transaction(services.sessions) as db:
        found = recovery.stranded_orders(
            db,
            refresher.knowledge,
            now=refresher.source.stripe_now(),
            grace=refresher.grace,
        )
    totals = dict.fromkeys(CATEGORIES, 0)
    for s in found:
        totals[s.category] += 1
    return StrandedList(
        totals=totals,
        orders=[
            StrandedOut.model_validate(s, from_attributes=True)
            for s in found
            if category is None or s.category == category
        ],
        last_refresh_at=refresher.last_success_at,
    )


@router.get("/stranded-orders", dependencies=[Admin])
async def stranded_orders(
    services: ServicesDep, category: Annotated[Category | None, Query()] = None
) -> StrandedList:
    """Pending orders whose payment link is dead (as of the last refresh and webhooks)."""
    return await run_in_threadpool(_stranded, services, category.value if category else None)


def _reissue(services: Services, order_id: int, email: bool) -> ReissueOut:
    stripe = ThreadStripe(services.gateway, services.settings)
    result = recovery.reissue(services.sessions, stripe, order_id)
    out = OrderOut.of(result.order)
    # The parent gets the order's pay link (it never dies), not Stripe's session URL.
    purpose = "email" if result.created and email else "operator"
    pay_url = access.pay_url(
        services.settings, access.issue_link_token(services.sessions, order_id, purpose)
    )
    sent = notify.Email.not_requested
    if result.created and email:
        sent = notify.send_link(
            services.settings,
            to=out.parent_email,
            order_id=out.id,
            product=out.product_name,
            url=pay_url,
        )
    return ReissueOut(
        created=result.created,
        emailed=sent == notify.Email.sent,
        email=sent,
        recovery_url=result.recovery_url,
        pay_url=pay_url,
        order=out,
    )


async def _reissue_and_observe(services: Services, order_id: int, email: bool) -> ReissueOut:
    result = await run_in_threadpool(_reissue, services, order_id, email)
    if result.created:
        services.refresher.wake()  # learn the new link's state now, not in five minutes
    return result


@router.post("/orders/{order_id}/reissue", dependencies=[Admin])
async def reissue(
    order_id: OrderId, services: ServicesDep, email: Annotated[bool, Query()] = False
) -> ReissueOut:
    """Give a pending order a fresh Checkout link (idempotent while a live link exists).

    ``email=true`` also emails the parent the new link (when SMTP is configured).
    """
    return await _reissue_and_observe(services, order_id, email)


@router.post("/refresh", dependencies=[Admin])
async def refresh_now(services: ServicesDep) -> dict[str, object]:
    """Run one refresh now and report whether it succeeded."""
    ok = await services.refresher.run_cycle()
    counts = services.refresher.counts
    return {"succeeded": ok, "expired": counts.expired if counts else None}


# -- the operator page --------------------------------------------------------------------

_OUTCOMES = {
    "created": "New link issued for order {order}.",
    "live": "Order {order} already has a live link; nothing was created.",
    "conflict": "Order {order} cannot get a new link (it is paid or cancelled).",
    "not_found": "Order {order} does not exist.",
    "stripe": "Stripe did not answer; order {order} is unchanged. Try again in a moment.",
}


@dataclass(frozen=True)
class _Notice:
    text: str
    ok: bool
    url: str | None = None
    recovery_url: str | None = None
    email: str = ""


_EMAIL_SAID = {
    notify.Email.sent: "The parent was emailed the new link.",
    notify.Email.not_configured: "No email was sent: email is not configured (set SMTP_HOST). "
    "Send the parent the link below yourself.",
    notify.Email.failed: "The email to the parent failed (the mail server refused it or could "
    "not be reached). Send the parent the link below yourself.",
}


def _notice(services: Services, order_id: int, outcome: str, email: str) -> _Notice | None:
    template = _OUTCOMES.get(outcome)
    if template is None:
        return None
    text = template.format(order=order_id)
    if outcome not in ("created", "live"):
        return _Notice(text, ok=False)
    with transaction(services.sessions) as db:
        try:
            get_order(db, order_id)
        except DomainError:
            return None
        recovery_url = db.scalars(
            select(CheckoutLink.recovery_url)
            .where(CheckoutLink.order_id == order_id)
            .where(CheckoutLink.recovery_url.is_not(None))
            .order_by(CheckoutLink.id.desc())
            .limit(1)
        ).first()
        said = _EMAIL_SAID.get(notify.Email(email), "") if email in set(notify.Email) else ""
        pay_url = access.pay_url(services.settings, access.issue_token(db, order_id, "operator"))
        return _Notice(text, True, pay_url, recovery_url, said)


# Public: without the operator cookie it is the sign-in form and shows no order.
@router.get("", response_class=HTMLResponse, include_in_schema=False, dependencies=[access.PUBLIC])
async def page(
    request: Request,
    services: ServicesDep,
    category: str | None = None,
    order: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    outcome: str = "",
    email: str = "",
    failed: bool = False,
) -> Response:
    if not has_page_session(request, services):
        return templates.TemplateResponse(
            request,
            "login.html",
            {"disabled": services.settings.admin_token is None, "failed": failed},
        )
    chosen = category if category in CATEGORIES else None
    listing = await run_in_threadpool(_stranded, services, chosen)
    notice = None
    if order is not None:
        notice = await run_in_threadpool(_notice, services, order, outcome, email)
    counts = services.refresher.counts
    return templates.TemplateResponse(
        request,
        "admin.html",
        {
            "listing": listing,
            "categories": CATEGORIES,
            "chosen": chosen,
            "notice": notice,
            "gauge": counts.expired if counts else None,
        },
    )


@router.post("/login", include_in_schema=False, dependencies=[access.PUBLIC])
async def login(request: Request, services: ServicesDep, token: Annotated[str, Form()]) -> Response:
    if not _valid(services, token):
        return RedirectResponse("/admin?failed=true", status_code=303)
    response = RedirectResponse("/admin", status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/admin",
    )
    return response


@router.post("/logout", include_in_schema=False, dependencies=[access.PUBLIC])
async def logout() -> Response:
    response = RedirectResponse("/admin", status_code=303)
    response.delete_cookie(COOKIE, path="/admin")
    return response


@router.post(
    "/page/orders/{order_id}/reissue", include_in_schema=False, dependencies=[PageOperator]
)
async def page_reissue(
    order_id: OrderId,
    services: ServicesDep,
    category: Annotated[str | None, Form()] = None,
) -> Response:
    query: dict[str, str | int] = {"order": order_id}
    if category in CATEGORIES:
        query["category"] = category
    try:
        result = await _reissue_and_observe(services, order_id, email=True)
    except DomainError as e:
        query["outcome"] = "not_found" if e.status_code == 404 else "conflict"
    except StripeFailure:
        query["outcome"] = "stripe"
    else:
        query["outcome"] = "created" if result.created else "live"
        query["email"] = result.email.value
    return RedirectResponse(f"/admin?{urlencode(query)}", status_code=303)
