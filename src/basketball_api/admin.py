"""Operator endpoints: stranded orders, reissued links, refresh now, the operator page.

Who may call them, and how the page's session and forms are protected, is ``operators``: JSON
under ``/admin/…`` takes an operator's bearer token; the page at ``/admin`` logs in once and
keeps a signed, expiring session cookie, and every form carries a CSRF token.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field
from sqlalchemy import select

from basketball_api import access, notify, operators, recovery, reviews
from basketball_api.db import transaction
from basketball_api.deps import Services, ServicesDep, ThreadStripe
from basketball_api.errors import DomainError
from basketball_api.metrics import CATEGORIES
from basketball_api.models import Category, CheckoutLink
from basketball_api.operators import FormOperator, OperatorName
from basketball_api.operators import operator_errors as errors
from basketball_api.orders import get_order
from basketball_api.ratelimit import TooManyRequests
from basketball_api.schemas import MAX_ID, OrderId, OrderOut
from basketball_api.stripe_gateway import StripeFailure

router = APIRouter(prefix="/admin", tags=["admin"])
templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
templates.env.globals["csrf_field"] = operators.csrf_field


def has_page_session(request: Request, services: Services) -> bool:
    """Whether the request carries a valid operator page session (signed, unexpired)."""
    return operators.page_session(request) is not None


#: The rule of every operator JSON route: an operator's bearer token (``OperatorName`` gives
#: the operator's name for the audit log).
Admin = access.operator(operators.operator)
#: The rule of every operator page route: the signed page session; on POST also a same-site
#: Origin and the session's CSRF token (``FormOperator`` gives the operator's name).
PageOperator = access.operator(operators.operator_form)


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
        description="Since the link's expiry time; null when it died before it (expired early "
        "by hand, delayed payment failed, unknown to Stripe)."
    )
    link_state: str = Field(
        description="expired, failed (the delayed payment failed) or missing (Stripe answers "
        "404 for the link: a data reset or another account's key)."
    )
    recovery_url: str | None = Field(
        description="Stripe's recovery link of an earlier expired session of this order "
        "(recorded when a link is reissued); an operator may send it instead of a new link."
    )


class StrandedList(BaseModel):
    totals: dict[str, int] = Field(
        description="Orders behind an expired link per category, every category whatever the "
        "filter; equal to the expired-session gauge. Orders whose delayed payment failed or "
        "whose link Stripe does not know are listed too, and have gauges of their own."
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
            now=refresher.source.stripe_now(),
            grace=refresher.grace,
        )
    totals = dict.fromkeys(CATEGORIES, 0)
    for s in found:
        if s.link_state == "expired":
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


@router.get("/stranded-orders", dependencies=[Admin], responses=errors())
async def stranded_orders(
    services: ServicesDep, category: Annotated[Category | None, Query()] = None
) -> StrandedList:
    """Pending orders whose payment link is dead (as of the last refresh and webhooks)."""
    return await run_in_threadpool(_stranded, services, category.value if category else None)


def _reissue(services: Services, order_id: int, email: bool, operator: str) -> ReissueOut:
    stripe = ThreadStripe(services.gateway, services.settings)
    result = recovery.reissue(services.sessions, stripe, order_id, operator=operator)
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


async def _reissue_and_recount(
    services: Services, order_id: int, email: bool, operator: str
) -> ReissueOut:
    result = await run_in_threadpool(_reissue, services, order_id, email, operator)
    if result.created:
        services.refresher.request_recount()  # the new link is recorded open: no call needed
    return result


@router.post("/orders/{order_id}/reissue", responses=errors(404, 409, 502, 503))
async def reissue(
    order_id: OrderId,
    services: ServicesDep,
    who: OperatorName,
    email: Annotated[bool, Query()] = False,
) -> ReissueOut:
    """Give a pending order a fresh Checkout link (idempotent while a live link exists).

    ``email=true`` also emails the parent the new link (when SMTP is configured). Any session
    a parent opened through the recovery URL of an old link is expired first.
    """
    return await _reissue_and_recount(services, order_id, email, who)


@router.post("/refresh", dependencies=[Admin], responses=errors())
async def refresh_now(services: ServicesDep) -> dict[str, object]:
    """Refresh now (wakes the refresher's loop, waits for that cycle) and report the result."""
    ok = await services.refresher.refresh_now()
    counts = services.refresher.counts
    return {"succeeded": ok, "expired": counts.expired if counts else None}


# -- the operator page --------------------------------------------------------------------

_OUTCOMES = {
    "created": "New link issued for order {order}.",
    "live": "Order {order} already has a live link; nothing was created.",
    "conflict": "Order {order} cannot get a new link (it is paid or cancelled).",
    "not_found": "Order {order} does not exist.",
    "stripe": "Stripe did not answer; order {order} is unchanged. Try again in a moment.",
    "snoozed": "Order {order} is snoozed for 7 days: it no longer counts for the alerts.",
    "cancelled": "Order {order} is cancelled.",
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
        return _Notice(text, ok=outcome in ("snoozed", "cancelled"))
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
    if operators.page_session(request) is None:
        return _login_page(request, failed=failed)
    chosen = category if category in CATEGORIES else None
    listing = await run_in_threadpool(_stranded, services, chosen)
    payments = await run_in_threadpool(reviews.open_reviews, services.sessions)
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
            "reviews": payments,
            "resolved": request.query_params.get("resolved"),
        },
    )


def _login_page(
    request: Request, *, failed: bool = False, throttled: int | None = None
) -> Response:
    return templates.TemplateResponse(
        request,
        "login.html",
        {
            "disabled": not operators.get_operators(request).enabled,
            "failed": failed,
            "throttled": throttled,
        },
        status_code=429 if throttled else 200,
        headers={"Retry-After": str(throttled)} if throttled else None,
    )


@router.post("/login", include_in_schema=False, dependencies=[access.PUBLIC])
async def login(request: Request, token: Annotated[str, Form()]) -> Response:
    """The page's login: the token once, then a signed, expiring session cookie."""
    ops = operators.get_operators(request)
    if not operators.same_origin(request, ops.settings):
        raise operators.Forbidden("cross-site login refused (Origin does not match this site)")
    client = operators.client_of(request)
    credential = ops.identify(token)
    if credential is None:
        try:
            await operators.check_failed_logins(request, client)
        except TooManyRequests as e:
            return _login_page(request, throttled=int(e.headers["Retry-After"]))
        await operators.count_failed_login(request, client)
        return RedirectResponse("/admin?failed=true", status_code=303)
    response = RedirectResponse("/admin", status_code=303)
    operators.set_session_cookie(response, request, ops.new_session(credential))
    return response


@router.post("/logout", include_in_schema=False, dependencies=[PageOperator])
async def logout() -> Response:
    response = RedirectResponse("/admin", status_code=303)
    response.delete_cookie(operators.COOKIE, path=operators.COOKIE_PATH)
    return response


@router.post("/page/orders/{order_id}/reissue", include_in_schema=False)
async def page_reissue(
    order_id: OrderId,
    services: ServicesDep,
    who: FormOperator,
    category: Annotated[str | None, Form()] = None,
) -> Response:
    query: dict[str, str | int] = {"order": order_id}
    if category in CATEGORIES:
        query["category"] = category
    try:
        result = await _reissue_and_recount(services, order_id, email=True, operator=who)
    except DomainError as e:
        query["outcome"] = "not_found" if e.status_code == 404 else "conflict"
    except StripeFailure:
        query["outcome"] = "stripe"
    else:
        query["outcome"] = "created" if result.created else "live"
        query["email"] = result.email.value
    return RedirectResponse(f"/admin?{urlencode(query)}", status_code=303)
