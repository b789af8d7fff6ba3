"""The parents' pages: the pay link that never dies, the order page and the return page.

- ``GET /pay/{token}``: the one link a parent is ever given. It redirects to the order's live
  Checkout Session, or, when that one is dead, to a fresh one (the reissue path: one live link
  per order, safe under double clicks); a paid or cancelled order shows its page instead.
- ``GET /o/{token}``: the order, its state and a pay button; server-rendered, readable on a
  phone, no Stripe call.
- ``GET /checkout/return?session_id=…&token=…``: where Checkout sends the parent back (the
  link's ``success_url`` carries an access token of the order). The session is retrieved from
  Stripe and must be one of the order's links; a paid one is applied at once (the webhook may
  be late or lost: Stripe's guidance is to fulfil on both, idempotently). Unpaid, expired or
  unknown sessions say so. Only with the order's token as well does the page show the player
  and offer the pay link: a session id alone (it appears in logs) says whether it was paid and
  nothing more, and no token is ever handed out here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Annotated

import structlog
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from sqlalchemy.orm import Session

from basketball_api import access, link_state, payments, recovery
from basketball_api.access import TokenOrderId
from basketball_api.db import transaction
from basketball_api.deps import Services, ServicesDep, ThreadStripe
from basketball_api.errors import Conflict
from basketball_api.models import CheckoutLink, Learnt, Order
from basketball_api.orders import get_order
from basketball_api.ratelimit import rate_limited
from basketball_api.stripe_gateway import SessionSnapshot, StripeFailure

log = structlog.get_logger("basketball_api.paylink")
router = APIRouter(tags=["parents"])
templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))

SessionId = Annotated[str, Query(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_]+$")]


@dataclass(frozen=True)
class OrderView:
    """What the parent's pages show of an order."""

    number: int
    product_name: str
    player_name: str
    amount: int
    currency: str
    status: str

    @classmethod
    def of(cls, order: Order) -> OrderView:
        return cls(
            order.id,
            order.product.name,
            order.player_name,
            order.amount,
            order.currency,
            order.status.value,
        )

    @property
    def price(self) -> str:
        return f"{self.amount / 100:,.2f} {self.currency.upper()}"


def _page(
    request: Request,
    *,
    title: str,
    message: str,
    order: OrderView | None = None,
    pay_url: str | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        "parent.html",
        {"title": title, "message": message, "order": order, "pay_url": pay_url},
        status_code=status_code,
        headers={**_PRIVATE, **(headers or {})},
    )


#: The pages carry a capability (in their URL and their pay button): no cache keeps them, and
#: no link sends them on as a referrer.
_PRIVATE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=_PRIVATE)


_STATE_MESSAGES = {
    "paid": "Paid. Thank you! Nothing more to do.",
    "cancelled": "This order was cancelled; nothing is owed.",
    "pending": "Not paid yet.",
}


def _view(services: Services, order_id: int) -> OrderView:
    with transaction(services.sessions) as db:
        return OrderView.of(get_order(db, order_id))


def install_link_errors(app: FastAPI) -> None:
    """A wrong token on a parent's page is a page too, not JSON."""

    async def unknown(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, access.UnknownLink)
        if request.url.path.startswith(("/o/", "/pay/")):
            return _page(request, title="Link not found", message=exc.message, status_code=404)
        return JSONResponse({"detail": exc.message, "code": exc.code}, exc.status_code)

    app.add_exception_handler(access.UnknownLink, unknown)


# -- the order page -------------------------------------------------------------------------------


@router.get("/o/{token}", response_class=HTMLResponse, summary="The parent's order page")
async def order_page(
    request: Request, token: str, order_id: TokenOrderId, services: ServicesDep
) -> Response:
    """The order and its state, with a pay button while it is pending."""
    view = await run_in_threadpool(_view, services, order_id)
    pay = access.pay_url(services.settings, token) if view.status == "pending" else None
    return _page(
        request,
        title=f"Order {view.number}",
        message=_STATE_MESSAGES[view.status],
        order=view,
        pay_url=pay,
    )


# -- the pay link ---------------------------------------------------------------------------------


@router.get(
    "/pay/{token}",
    response_class=RedirectResponse,
    status_code=303,
    summary="The order's pay link: to its live Checkout page, renewed when dead",
)
async def pay(
    request: Request,
    token: str,
    order_id: TokenOrderId,
    services: ServicesDep,
    _limit: None = rate_limited("pay_link"),
) -> Response:
    """Redirects (303) to the order's live Checkout Session, creating a fresh one when the last
    one is dead; a paid or cancelled order redirects to its page. Rate limited per client."""
    page = f"/o/{token}"
    view = await run_in_threadpool(_view, services, order_id)
    if view.status != "pending":
        return _redirect(page)
    stripe = ThreadStripe(services.gateway, services.settings)
    try:
        result = await run_in_threadpool(
            partial(recovery.reissue, operator="pay_link"), services.sessions, stripe, order_id
        )
    except Conflict:  # paid at Stripe, not yet here: the order page tells what is known
        return _redirect(page)
    except StripeFailure:
        return _page(
            request,
            title=f"Order {view.number}",
            message="The payment page cannot be opened right now. Please try again in a minute;"
            " this link keeps working.",
            order=view,
            pay_url=access.pay_url(services.settings, token),
            status_code=503,
            headers={"Retry-After": "30"},
        )
    if result.created:
        log.info("pay_link_renewed", order_id=order_id)
        services.refresher.request_recount()  # the new link is recorded open: no call needed
    url = result.order.checkout_url
    if not url:  # Stripe gives no URL for a session that is not open
        return _redirect(page)
    return _redirect(url)


# -- the return page ------------------------------------------------------------------------------


def apply_paid_session(db: Session, snapshot: SessionSnapshot) -> payments.Settlement:
    """The return page's payment, decided as every payment is (``payments.settle``): applied
    only to the order whose own link it is, for its amount; anything else kept for review."""
    return payments.settle(db, snapshot, via="return_page")


def _order_of_session(db: Session, session_id: str) -> int | None:
    found = db.scalars(
        select(CheckoutLink.order_id).where(CheckoutLink.stripe_checkout_session_id == session_id)
    ).first()
    if found is None:
        found = db.scalars(
            select(Order.id).where(Order.stripe_checkout_session_id == session_id)
        ).first()
    return found


@dataclass(frozen=True)
class _Returned:
    view: OrderView
    settled: payments.Settlement
    holder: bool  # the request carried an access token of this very order
    link_changed: bool = False

    @property
    def applied(self) -> bool:
        return self.settled.outcome == payments.Outcome.applied


def _settle(
    services: Services, order_id: int, snapshot: SessionSnapshot, token: str | None
) -> _Returned:
    with transaction(services.sessions) as db:
        settled = apply_paid_session(db, snapshot)
        learnt = link_state.learn(
            db, {snapshot.id: link_state.fact_of(snapshot)}, Learnt.return_page
        )
        view = OrderView.of(get_order(db, order_id))
        holder = token is not None and access.order_for_token(db, token) == order_id
    return _Returned(view, settled, holder, bool(learnt))


def _lookup(services: Services, session_id: str) -> int | None:
    with transaction(services.sessions) as db:
        return _order_of_session(db, session_id)


@router.get("/checkout/return", response_class=HTMLResponse, summary="Back from Checkout")
async def checkout_return(
    request: Request,
    services: ServicesDep,
    session_id: SessionId,
    token: Annotated[str | None, Query(max_length=64)] = None,
    _public: None = access.PUBLIC,
    _limit: None = rate_limited("pay_link"),
) -> Response:
    """Checks the session with Stripe, applies a payment, and says what is true now (a Stripe
    call per view for a session of ours: rate limited per client like the pay link). The
    order's details and pay link only for the holder of one of its tokens (``token``)."""
    order_id = await run_in_threadpool(_lookup, services, session_id)
    if order_id is None:
        return _page(
            request,
            title="Payment not found",
            message="This payment is not one of ours. If you were charged, contact the club "
            "with your receipt.",
            status_code=404,
        )
    try:
        snapshot = await services.gateway.retrieve_session(session_id)
    except StripeFailure:
        return _page(
            request,
            title="Checking your payment",
            message="We cannot check your payment with Stripe right now. Reload this page in a "
            "minute; if you paid, nothing is lost.",
            status_code=503,
            headers={"Retry-After": "30"},
        )
    returned = await run_in_threadpool(_settle, services, order_id, snapshot, token)
    await payments.after_commit(
        services.sessions, services.gateway, services.metrics, returned.settled
    )
    if returned.applied:
        log.info("order_paid_on_return", order_id=order_id)
    if returned.applied or returned.link_changed:
        services.refresher.request_recount()
    view = returned.view
    pay = None
    if returned.holder and token is not None and view.status == "pending":
        pay = access.pay_url(services.settings, token)
    again = "Use the button for a new one." if pay else "Open your pay link again for a new one."
    if view.status != "pending":
        message = _STATE_MESSAGES[view.status]
    elif snapshot.status == "complete":
        message = "Your payment is being processed (a bank payment can take a few days)."
        pay = None
    elif snapshot.status == "expired":
        message = f"This payment page expired before it was paid. {again}"
    else:
        message = "This order is not paid yet."
        if not pay:
            message += " Your pay link (in your confirmation) still works."
    if not returned.holder:
        # A session id alone is no capability (it is in log lines): no personal data.
        view = replace(view, player_name="")
    return _page(request, title=f"Order {view.number}", message=message, order=view, pay_url=pay)


@router.get("/checkout/cancelled", response_class=HTMLResponse, summary="Checkout cancelled")
async def checkout_cancelled(request: Request, _public: None = access.PUBLIC) -> Response:
    return _page(
        request,
        title="Payment not made",
        message="Nothing was charged. Your pay link keeps working: open it again whenever "
        "you are ready.",
    )
