"""Stranded-order recovery: list them, reissue links, heal payments whose webhook was lost."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from basketball_api import access, payments
from basketball_api.errors import Conflict
from basketball_api.link_state import DEAD, Bucket, bucket, epoch, from_epoch
from basketball_api.models import CheckoutLink, Order, OrderStatus, Product
from basketball_api.orders import (
    CheckoutCreator,
    attach_session,
    current_session,
    get_order,
    transition,
)
from basketball_api.stripe_gateway import SessionSnapshot, StripeFailure

log = structlog.get_logger("basketball_api.recovery")


def mask_email(email: str) -> str:
    """``p***@example.org``: enough for an operator to recognise, no more."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}" if local and domain else "***"


@dataclass(frozen=True)
class StrandedOrder:
    order_id: int
    category: str
    product_name: str
    player_name: str  # with the order date and amount, how a treasurer tells families apart
    ordered_at: datetime
    parent_email: str  # masked
    amount: int  # all of it is outstanding: the order is pending
    currency: str
    session_id: str
    dead_for_seconds: int | None  # None: dead before its time (by hand, failed, missing)
    recovery_url: str | None = None  # Stripe's recovery link of an earlier expired session
    link_state: str = Bucket.expired.value  # expired, failed (delayed payment) or missing


def stranded_orders(
    db: Session,
    *,
    now: float,
    grace: float,
    category: str | None = None,
) -> list[StrandedOrder]:
    """Pending orders whose current link is dead (expired, payment failed, missing at Stripe),
    longest dead first.

    "Dead" is the gauges' own bucket expression on the same rows, clock and grace, so the list
    and the gauges agree after every recount.
    """
    state = bucket(from_epoch(now - grace)).label("bucket")
    stmt = (
        select(Order, Product.name, Product.category, state, Order.checkout_session_expires_at)
        .join(Product, Product.id == Order.product_id)
        .where(Order.status == OrderStatus.pending)
        .where(state.in_([b.value for b in DEAD]))
        .order_by(Order.checkout_session_expires_at, Order.id)
    )
    if category is not None:
        stmt = stmt.where(Product.category == category)
    out = []
    for order, name, cat, dead, expires in db.execute(stmt):
        expires_at = epoch(expires)
        out.append(
            StrandedOrder(
                order_id=order.id,
                category=cat.value,
                product_name=name,
                player_name=order.player_name,
                ordered_at=from_epoch(epoch(order.created_at)),
                parent_email=mask_email(order.parent_email),
                amount=order.amount,
                currency=order.currency,
                session_id=str(order.stripe_checkout_session_id),
                dead_for_seconds=int(now) - expires_at
                if expires_at and now >= expires_at
                else None,
                link_state=str(dead),
            )
        )
    if not out:
        return out
    recovery = _recovery_urls(db)
    return [replace(s, recovery_url=recovery.get(s.order_id)) for s in out]


def _recovery_urls(db: Session) -> dict[int, str]:
    """The newest recorded recovery URL of each pending order that has one."""
    stmt = (
        select(CheckoutLink.order_id, CheckoutLink.recovery_url)
        .join(Order, Order.id == CheckoutLink.order_id)
        .where(Order.status == OrderStatus.pending)
        .where(CheckoutLink.recovery_url.is_not(None))
        .order_by(CheckoutLink.id)
    )
    return {order_id: url for order_id, url in db.execute(stmt) if url}


@dataclass(frozen=True)
class Reissued:
    order: Order
    created: bool  # False: the order already had a live link (or another request made one)
    old_session_id: str | None
    recovery_url: str | None = None  # Stripe's recovery link of the replaced session, if any


def reissue(
    factory: sessionmaker[Session],
    stripe: CheckoutCreator,
    order_id: int,
    *,
    operator: str,
) -> Reissued:
    """:func:`reissue_link` in a transaction of its own, logged with who asked: an operator's
    name, ``cli:<user>`` for the command line, ``pay_link`` for a parent's pay link.

    If the commit fails after Stripe created the new session, that session is expired, so the
    order keeps exactly the link the database says it has.
    """
    with factory() as db:
        try:
            result = reissue_link(db, stripe, order_id)
        except BaseException:
            db.rollback()
            raise
        # Read before committing: a failed commit's rollback expires the loaded order.
        fresh = result.order.stripe_checkout_session_id if result.created else None
        try:
            db.commit()
        except BaseException:
            db.rollback()
            if fresh is not None:
                _expire_quietly(stripe, fresh)
            raise
    if result.created:
        log.info(
            "link_reissued",
            operator=operator,
            order_id=order_id,
            old_session=result.old_session_id,
            new_session=result.order.stripe_checkout_session_id,
            recovery_url_recorded=result.recovery_url is not None,
        )
    return result


def reissue_link(db: Session, stripe: CheckoutCreator, order_id: int) -> Reissued:
    """Give a pending order a fresh Checkout link; one live link per order, always.

    The caller owns the transaction (see :func:`reissue`). Safe under double clicks and
    concurrent requests: the order's row is locked before Stripe is asked anything, so a second
    request waits and then finds the live link. A session created but not kept (the transaction
    failed) is expired, so no order is ever left with two live links. A link Stripe does not
    know (404) is dead: the order gets a new one.
    """
    order = get_order(db, order_id, for_update=True)
    if order.status != OrderStatus.pending:
        raise Conflict(f"order {order_id} is {order.status.value}; only pending orders get links")
    old = order.stripe_checkout_session_id
    current: SessionSnapshot | None = None
    if old is not None:
        current = current_session(db, stripe, old)
        if current is not None and current.status == "open":
            return Reissued(order, False, old)
        if current is not None and current.status == "complete":
            raise Conflict(f"order {order_id} was paid at Stripe; it needs healing, not a link")
    payments.expire_open_recoveries(db, stripe, order)
    # The new link's way back carries a token of its own (the parent's tokens are kept only as
    # digests); it is stored in this transaction, so a failure drops it too.
    return_token = access.issue_token(db, order.id, "checkout_return")
    fresh = stripe.create_checkout_session(order, order.product, return_token)
    try:
        attach_session(db, order, fresh)
        if old is not None:
            _retire(db, old, current)
        db.flush()
    except BaseException:
        _expire_quietly(stripe, fresh.id)
        raise
    return Reissued(order, True, old, current.recovery_url if current is not None else None)


def _retire(db: Session, old_id: str, old: SessionSnapshot | None) -> None:
    """Keep the replaced link for audit: when it was replaced and Stripe's recovery URL."""
    now = datetime.now(UTC)
    recovery_url = old.recovery_url if old is not None else None
    db.execute(
        update(CheckoutLink)
        .where(CheckoutLink.stripe_checkout_session_id == old_id)
        .values(replaced_at=now, recovery_url=recovery_url)
        .execution_options(synchronize_session=False)
    )


def _expire_quietly(stripe: CheckoutCreator, session_id: str) -> None:
    try:
        stripe.expire_session(session_id)
    except StripeFailure:
        log.warning("orphan_session_not_expired", session_id=session_id)
    else:
        log.info("unused_session_expired", session_id=session_id)


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
        # The session that paid: its webhook, when Stripe retries it, is then no second payment.
        order.paid_by_session_id = order.stripe_checkout_session_id
        log.warning(
            "order_healed",
            order_id=order.id,
            session_id=order.stripe_checkout_session_id,
            audit="paid at Stripe, webhook never applied",
        )
        healed.append(str(order.stripe_checkout_session_id))
    db.flush()
    return healed
