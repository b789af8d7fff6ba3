"""Taking an order when Stripe may be slow: no database connection is held while Stripe thinks.

1. Reserve: the order row and its access token, in a short transaction of their own.
2. Ask Stripe for the Checkout Session, on the event loop, holding no connection and no
   worker thread, for at most ``ORDER_WAIT_SECONDS``.
3. Attach the link in a second short transaction.

Whatever fails, the parent gets a clear answer (503 with ``Retry-After`` when trying again
may help) and nothing is kept: the reservation is deleted, and a session Stripe made for it
anyway is expired, so no payable link points at an order that does not exist:

- Stripe too slow: the answer is 503 at once; when Stripe does answer, that session is expired.
- The answer lost (a timeout, a dropped connection, a 5xx): Stripe may or may not have made a
  session. The same request is sent again later under the same idempotency key, which gives
  back the session Stripe made (or a new one), and that is expired. (A refused connection is
  taken as never sent; with SDK retries an earlier attempt could have been answered and lost
  before a last refused one: that rare session is left to expire on its own.)
- The database fails while attaching: the new session is expired.

Every failure counts in ``basketball_api_order_creation_failures_total{reason}``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from basketball_api import access, orders
from basketball_api.db import transaction
from basketball_api.deps import Services, checkout_params
from basketball_api.models import Order
from basketball_api.stripe_gateway import (
    SessionSnapshot,
    StripeFailure,
    StripeNotSent,
    StripeRejected,
    StripeUnavailable,
)

log = structlog.get_logger("basketball_api.ordering")

#: Stripe failures after which a session may exist all the same.
_OUTCOME_UNKNOWN = frozenset({"connection", "server_error", "bad_response", "stripe_error"})
#: Pauses before asking Stripe again what it made of a request whose answer was lost.
CLEANUP_PAUSES_SECONDS = (1.0, 10.0, 60.0)

_background: set[asyncio.Task[None]] = set()


@dataclass(frozen=True)
class Taken:
    order: Order
    token: str


@dataclass(frozen=True)
class _Reserved:
    order: Order
    token: str
    params: dict[str, Any]


async def take_order(
    services: Services,
    *,
    product_id: int,
    parent_email: str,
    player_name: str,
    quantity: int,
    with_checkout: bool,
) -> Taken:
    """A saved order with its access token and, unless asked not to, its link."""
    failures = services.metrics.order_creation_failures
    deadline = time.monotonic() + services.settings.order_wait_seconds
    try:
        reserved = await run_in_threadpool(
            _reserve, services, product_id, parent_email, player_name, quantity
        )
    except (OperationalError, PoolTimeout):
        failures.labels(reason="database").inc()
        raise
    order_id = reserved.order.id
    if not with_checkout:
        return Taken(reserved.order, reserved.token)
    key = f"order-{order_id}-checkout-{secrets.token_hex(8)}"
    call = asyncio.ensure_future(
        services.gateway.create_checkout_session(
            **reserved.params, idempotency_key=key, send_by=deadline
        )
    )
    try:
        snapshot = await asyncio.wait_for(
            asyncio.shield(call), max(0.0, deadline - time.monotonic())
        )
    except (TimeoutError, asyncio.CancelledError) as e:
        # Sent and not answered in time: answer now, expire whatever Stripe makes of it.
        in_background(_expire_when_answered(services, call, reserved.params, key, order_id))
        failures.labels(reason="timeout").inc()
        if isinstance(e, asyncio.CancelledError):
            in_background(_discard(services, order_id))
            raise
        await _discard(services, order_id)
        raise StripeUnavailable(
            "Stripe did not answer in time; nothing was kept", "timeout"
        ) from None
    except StripeFailure as e:
        await _discard(services, order_id)
        if e.reason in _OUTCOME_UNKNOWN and not e.never_sent:
            in_background(_expire_lost(services, reserved.params, key, order_id))
        failures.labels(reason=_failure_reason(e)).inc()
        raise
    try:
        attached = await run_in_threadpool(_attach, services, order_id, snapshot)
    except BaseException:
        in_background(_expire(services, snapshot.id, order_id))
        in_background(_discard(services, order_id))
        failures.labels(reason="database").inc()
        raise
    return Taken(attached, reserved.token)


def _failure_reason(e: StripeFailure) -> str:
    if isinstance(e, StripeNotSent):
        return "timeout"
    if isinstance(e, StripeRejected):
        return "stripe_rejected"
    return "stripe_unavailable"


def _reserve(
    services: Services, product_id: int, parent_email: str, player_name: str, quantity: int
) -> _Reserved:
    with transaction(services.sessions) as db:
        order = orders.reserve_order(
            db,
            product_id=product_id,
            parent_email=parent_email,
            player_name=player_name,
            quantity=quantity,
        )
        token = access.issue_token(db, order.id, "order_created")
        params = checkout_params(services.gateway, services.settings, order, order.product, token)
    return _Reserved(order, token, params)


def _attach(services: Services, order_id: int, snapshot: SessionSnapshot) -> Order:
    with transaction(services.sessions) as db:
        order = orders.attach_first_session(db, order_id, snapshot)
        if order is None:  # cannot happen while only this request knows the reservation
            raise RuntimeError(f"order {order_id} vanished before its link was attached")
        return order


async def _discard(services: Services, order_id: int) -> None:
    def work() -> None:
        with transaction(services.sessions) as db:
            orders.discard_reservation(db, order_id)

    try:
        await run_in_threadpool(work)
    except Exception as e:  # a pending order without a link counts nowhere; say so
        log.warning("order_reservation_kept", order_id=order_id, error=type(e).__name__)


# -- cleaning up at Stripe ------------------------------------------------------------------------


def in_background(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` after the answer is sent; :func:`drain` waits for it at shutdown."""
    task = asyncio.get_running_loop().create_task(work)
    _background.add(task)
    task.add_done_callback(_background.discard)


def cleanups_in_flight() -> int:
    return len(_background)


async def drain(within_seconds: float) -> None:
    """Let clean-ups in flight finish (up to ``within_seconds``), then cancel the rest."""
    pending = [t for t in _background if t.get_loop() is asyncio.get_running_loop()]
    if not pending:
        return
    _done, late = await asyncio.wait(pending, timeout=within_seconds)
    for task in late:
        task.cancel()
        log.warning("order_cleanup_abandoned")


async def _expire_when_answered(
    services: Services,
    call: asyncio.Future[SessionSnapshot],
    params: dict[str, Any],
    key: str,
    order_id: int,
) -> None:
    try:
        snapshot = await call
    except StripeFailure as e:
        if e.reason in _OUTCOME_UNKNOWN and not e.never_sent:
            await _expire_lost(services, params, key, order_id)
        return
    await _expire(services, snapshot.id, order_id)


async def _expire_lost(services: Services, params: dict[str, Any], key: str, order_id: int) -> None:
    """Ask Stripe again, under the same idempotency key, what it made; expire that."""
    for pause in CLEANUP_PAUSES_SECONDS:
        await asyncio.sleep(pause)
        try:
            snapshot = await services.gateway.create_checkout_session(**params, idempotency_key=key)
        except StripeRejected as e:
            log.warning("order_session_unresolved", order_id=order_id, reason=e.reason)
            return
        except StripeFailure:
            continue
        await _expire(services, snapshot.id, order_id)
        return
    log.warning("order_session_unresolved", order_id=order_id, reason="stripe_unavailable")


async def _expire(services: Services, session_id: str, order_id: int) -> None:
    for pause in (0.0, *CLEANUP_PAUSES_SECONDS):
        await asyncio.sleep(pause)
        try:
            snapshot = await services.gateway.expire_session(session_id)
        except StripeRejected as e:  # no longer open: expired already, or (alas) paid
            log.warning("orphan_session_not_open", order_id=order_id, reason=e.reason)
            return
        except StripeFailure:
            continue
        log.info("orphan_session_expired", order_id=order_id, status=snapshot.status)
        return
    log.warning("orphan_session_not_expired", order_id=order_id, session_id=session_id)
