"""Stranded-order recovery: list them, reissue links, heal payments whose webhook was lost."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import structlog
from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from basketball_api.errors import Conflict
from basketball_api.knowledge import SessionKnowledge, SessionState
from basketball_api.models import CheckoutLink, Order, OrderStatus, Product
from basketball_api.orders import CheckoutCreator, attach_session, epoch, get_order, transition
from basketball_api.stripe_gateway import StripeFailure

log = structlog.get_logger("basketball_api.recovery")


def mask_email(email: str) -> str:
    """``p***@example.org``: enough for an operator to recognise, no more."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


@dataclass(frozen=True)
class StrandedOrder:
    order_id: int
    category: str
    product_name: str
    parent_email: str  # masked
    amount: int
    currency: str
    session_id: str
    dead_for_seconds: int


def stranded_orders(
    db: Session,
    knowledge: SessionKnowledge,
    *,
    now: float,
    grace: float,
    category: str | None = None,
) -> list[StrandedOrder]:
    """Pending orders whose current link is dead, oldest dead link first."""
    stmt = (
        select(Order, Product.name, Product.category)
        .join(Product, Product.id == Order.product_id)
        .where(Order.status == OrderStatus.pending)
        .where(Order.stripe_checkout_session_id.is_not(None))
        .order_by(Order.checkout_session_expires_at, Order.id)
    )
    out = []
    for order, name, cat in db.execute(stmt):
        sid = order.stripe_checkout_session_id
        if sid is None or (category and cat.value != category):
            continue
        if knowledge.state(sid, now, grace) != SessionState.EXPIRED:
            continue
        out.append(
            StrandedOrder(
                order_id=order.id,
                category=cat.value,
                product_name=name,
                parent_email=mask_email(order.parent_email),
                amount=order.amount,
                currency=order.currency,
                session_id=sid,
                dead_for_seconds=max(0, int(now) - epoch(order.checkout_session_expires_at)),
            )
        )
    return out


@dataclass(frozen=True)
class Reissued:
    order: Order
    created: bool  # False: the order already had a live link (or another request made one)
    old_session_id: str | None


def reissue_link(db: Session, stripe: CheckoutCreator, order_id: int) -> Reissued:
    """Give a pending order a fresh Checkout link; one live link per order, always.

    Safe under double clicks and concurrent requests: the new session is swapped in only if
    the order still points at the link we saw (compare-and-swap); a loser expires the session
    it created, so no order is ever left with two live links.
    """
    order = get_order(db, order_id, for_update=True)
    if order.status != OrderStatus.pending:
        raise Conflict(f"order {order_id} is {order.status.value}; only pending orders get links")
    old = order.stripe_checkout_session_id
    if old is not None:
        current = stripe.retrieve_session(old)
        if current.status == "open":
            return Reissued(order, False, old)
        if current.status == "complete":
            raise Conflict(f"order {order_id} was paid at Stripe; it needs healing, not a link")
    fresh = stripe.create_checkout_session(order, order.product)
    try:
        result = db.execute(
            update(Order)
            .where(Order.id == order_id)
            .where(
                Order.stripe_checkout_session_id == old
                if old is not None
                else Order.stripe_checkout_session_id.is_(None)
            )
            .values(stripe_checkout_session_id=fresh.id)
            .execution_options(synchronize_session=False)
        )
        if cast(CursorResult[Any], result).rowcount != 1:
            raise _LostRace
        db.refresh(order)
        attach_session(db, order, fresh)
        if old is not None:
            db.execute(
                update(CheckoutLink)
                .where(CheckoutLink.stripe_checkout_session_id == old)
                .values(replaced_at=datetime.now(UTC))
            )
        db.flush()
    except BaseException as e:
        _expire_quietly(stripe, fresh.id)
        if isinstance(e, _LostRace):
            db.rollback()
            return Reissued(get_order(db, order_id), False, old)
        raise
    log.info("link_reissued", order_id=order_id, old_session=old, new_session=fresh.id)
    return Reissued(order, True, old)


class _LostRace(Exception):
    pass


def _expire_quietly(stripe: CheckoutCreator, session_id: str) -> None:
    try:
        stripe.expire_session(session_id)
    except StripeFailure:
        log.warning("orphan_session_not_expired", session_id=session_id)


def heal_paid_orders(db: Session, session_ids: Iterable[str]) -> list[str]:
    """Mark paid the pending orders whose session Stripe says is paid (their webhook was lost)."""
    ids = list(session_ids)
    if not ids:
        return []
    stmt = (
        select(Order)
        .where(Order.stripe_checkout_session_id.in_(ids))
        .where(Order.status == OrderStatus.pending)
        .with_for_update(of=Order)
    )
    healed = []
    for order in db.scalars(stmt):
        transition(order, OrderStatus.paid, cause="reconciled_lost_webhook")
        log.warning(
            "order_healed",
            order_id=order.id,
            session_id=order.stripe_checkout_session_id,
            audit="paid at Stripe, webhook never applied",
        )
        healed.append(str(order.stripe_checkout_session_id))
    db.flush()
    return healed
