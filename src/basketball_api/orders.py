"""Orders: creation with a Checkout Session, cancellation, and the one status transition.

Functions here run in a worker thread with one database session (one transaction owned by the
caller); ``stripe`` is a synchronous facade over the async gateway for that thread.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol, cast

import structlog
from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.orm import Session

from basketball_api import link_state
from basketball_api.catalogue import get_product, is_on_sale
from basketball_api.errors import Conflict, NotFound, Unprocessable
from basketball_api.link_state import Fact, from_epoch
from basketball_api.models import (
    CheckoutLink,
    Learnt,
    LinkState,
    Order,
    OrderAccessToken,
    OrderStatus,
    Product,
)
from basketball_api.stripe_gateway import SessionSnapshot, StripeRejected

log = structlog.get_logger("basketball_api.orders")

_ALLOWED = {
    (OrderStatus.pending, OrderStatus.paid),
    (OrderStatus.pending, OrderStatus.cancelled),
}


class InvalidTransition(Conflict):
    pass


def transition(order: Order, target: OrderStatus, *, cause: str) -> bool:
    """The only way an order changes status. Returns False when it already is ``target``."""
    if order.status == target:
        return False
    if (order.status, target) not in _ALLOWED:
        raise InvalidTransition(
            f"order {order.id} is {order.status.value}, cannot become {target.value}"
        )
    now = datetime.now(UTC)
    log.info(
        "order_transition", order_id=order.id, old=order.status.value, new=target.value, cause=cause
    )
    order.status = target
    if target == OrderStatus.paid:
        order.paid_at = now
    elif target == OrderStatus.cancelled:
        order.cancelled_at = now
    return True


class CheckoutCreator(Protocol):
    """The synchronous Stripe calls order handling needs."""

    def create_checkout_session(
        self, order: Order, product: Product, return_token: str
    ) -> SessionSnapshot: ...
    def expire_session(self, session_id: str) -> SessionSnapshot: ...
    def retrieve_session(self, session_id: str) -> SessionSnapshot: ...
    def list_open_sessions(self, created_gte: int) -> list[SessionSnapshot]: ...
    def stripe_now(self) -> float: ...


def current_session(
    db: Session, stripe: CheckoutCreator, session_id: str
) -> SessionSnapshot | None:
    """The session as Stripe says it is now, recorded on its link; None when Stripe does not
    know it (404): the link is then ``missing``, dead for reissue and cancel alike."""
    try:
        snapshot = stripe.retrieve_session(session_id)
    except StripeRejected as e:
        if not e.missing:
            raise
        link_state.learn(db, {session_id: Fact(LinkState.missing)}, Learnt.retrieve)
        return None
    link_state.learn(db, {session_id: link_state.fact_of(snapshot)}, Learnt.retrieve)
    return snapshot


def get_order(db: Session, order_id: int, *, for_update: bool = False) -> Order:
    """The order; ``for_update`` locks it until the transaction ends, on both databases."""
    stmt = select(Order).where(Order.id == order_id)
    if for_update:
        lock_order(db, order_id)
        stmt = stmt.with_for_update(of=Order)
    order = db.scalars(stmt).first()
    if order is None:
        raise NotFound(f"order {order_id} does not exist")
    return order


def lock_order(db: Session, order_id: int) -> None:
    """SQLite ignores ``FOR UPDATE``: a no-op write takes its (database-wide) write lock now,
    so concurrent writers of one order queue instead of both acting on what they read.
    PostgreSQL locks the row with ``FOR UPDATE`` in :func:`get_order`."""
    if db.get_bind().dialect.name == "sqlite":
        db.execute(
            update(Order)
            .where(Order.id == order_id)
            .values(status=Order.status)
            .execution_options(synchronize_session=False)
        )


def attach_session(db: Session, order: Order, snapshot: SessionSnapshot) -> None:
    """Make ``snapshot`` the order's link, keeping every link it ever had for audit."""
    order.stripe_checkout_session_id = snapshot.id
    order.checkout_url = snapshot.url
    order.checkout_session_created_at = from_epoch(snapshot.created)
    order.checkout_session_expires_at = from_epoch(snapshot.expires_at)
    fact = link_state.fact_of(snapshot)  # the copy the gauges read (see link_state.learn)
    order.link_state, order.link_payment_status = fact.state, fact.payment_status
    db.add(
        CheckoutLink(
            order_id=order.id,
            stripe_checkout_session_id=snapshot.id,
            url=snapshot.url,
            created_at=from_epoch(snapshot.created),
            expires_at=from_epoch(snapshot.expires_at),
            **link_state.created_fields(snapshot, datetime.now(UTC)),
        )
    )


def reserve_order(
    db: Session, *, product_id: int, parent_email: str, player_name: str, quantity: int
) -> Order:
    """A pending order with no link yet: the first of the three steps of taking an order
    (reserve and commit, ask Stripe holding no connection, attach the link; see ``ordering``)."""
    product = get_product(db, product_id)
    if not is_on_sale(product, datetime.now(UTC)):
        raise Unprocessable(f"product {product_id} ({product.name}) is not on sale")
    order = Order(
        product=product,
        status=OrderStatus.pending,
        quantity=quantity,
        amount=product.unit_amount * quantity,
        currency=product.currency,
        parent_email=parent_email,
        player_name=player_name,
    )
    db.add(order)
    db.flush()
    return order


def attach_first_session(db: Session, order_id: int, snapshot: SessionSnapshot) -> Order | None:
    """Attach the first link of a reserved order; None if the order is gone or has a link
    already (its reservation was given up, or another path linked it), so the caller expires
    ``snapshot``."""
    result = db.execute(
        update(Order)
        .where(Order.id == order_id)
        .where(Order.status == OrderStatus.pending)
        .where(Order.stripe_checkout_session_id.is_(None))
        .values(stripe_checkout_session_id=snapshot.id)
        .execution_options(synchronize_session=False)
    )
    if cast(CursorResult[Any], result).rowcount != 1:
        return None
    order = get_order(db, order_id)
    db.refresh(order)
    attach_session(db, order, snapshot)
    db.flush()
    return order


def discard_reservation(db: Session, order_id: int) -> None:
    """Delete a reserved order that never got its link (Stripe failed or was too slow), with
    its access tokens: the parent was told nothing was kept."""
    db.execute(delete(OrderAccessToken).where(OrderAccessToken.order_id == order_id))
    db.execute(
        delete(Order)
        .where(Order.id == order_id)
        .where(Order.stripe_checkout_session_id.is_(None))
        .execution_options(synchronize_session=False)
    )


def cancel_order(db: Session, stripe: CheckoutCreator, order_id: int, *, by: str) -> Order:
    """Cancel a pending order; its payment link is expired first so nobody can pay it.
    ``by`` is who asked, for the audit log: an operator's name, or ``parent``."""
    order = get_order(db, order_id, for_update=True)
    if order.status == OrderStatus.cancelled:
        return order
    if order.status != OrderStatus.pending:
        raise Conflict(f"order {order_id} is {order.status.value} and cannot be cancelled")
    if order.stripe_checkout_session_id:
        snapshot = current_session(db, stripe, order.stripe_checkout_session_id)
        if snapshot is not None and snapshot.status == "open":
            snapshot = stripe.expire_session(snapshot.id)
            link_state.learn(db, {snapshot.id: link_state.fact_of(snapshot)}, Learnt.retrieve)
        if snapshot is not None and snapshot.status == "complete":
            raise Conflict(f"order {order_id} was already paid at Stripe; it cannot be cancelled")
    transition(order, OrderStatus.cancelled, cause="cancel_request")
    log.info("order_cancelled", order_id=order.id, operator=by)
    db.flush()
    return order
