"""Orders: creation with a Checkout Session, cancellation, and the one status transition.

Functions here run in a worker thread with one database session (one transaction owned by the
caller); ``stripe`` is a synchronous facade over the async gateway for that thread.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import structlog
from sqlalchemy import (
    BigInteger,
    CursorResult,
    String,
    delete,
    func,
    select,
    type_coerce,
    update,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from basketball_api.catalogue import get_product, is_on_sale
from basketball_api.errors import Conflict, NotFound, Unprocessable
from basketball_api.models import CheckoutLink, Order, OrderAccessToken, OrderStatus, Product
from basketball_api.session_sync import PendingRows
from basketball_api.stripe_gateway import SessionSnapshot

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

    def create_checkout_session(self, order: Order, product: Product) -> SessionSnapshot: ...
    def expire_session(self, session_id: str) -> SessionSnapshot: ...
    def retrieve_session(self, session_id: str) -> SessionSnapshot: ...
    def list_open_sessions(self, created_gte: int) -> list[SessionSnapshot]: ...
    def stripe_now(self) -> float: ...


def epoch(moment: datetime | None) -> int:
    if moment is None:
        return 0
    if moment.tzinfo is None:  # SQLite hands back naive UTC
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def from_epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


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
    db.add(
        CheckoutLink(
            order_id=order.id,
            stripe_checkout_session_id=snapshot.id,
            url=snapshot.url,
            created_at=from_epoch(snapshot.created),
            expires_at=from_epoch(snapshot.expires_at),
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
        snapshot = stripe.retrieve_session(order.stripe_checkout_session_id)
        if snapshot.status == "open":
            snapshot = stripe.expire_session(snapshot.id)
        if snapshot.status == "complete":
            raise Conflict(f"order {order_id} was already paid at Stripe; it cannot be cancelled")
    transition(order, OrderStatus.cancelled, cause="cancel_request")
    log.info("order_cancelled", order_id=order.id, operator=by)
    db.flush()
    return order


class _EpochSeconds(FunctionElement[int]):
    """A timestamp column as whole Unix seconds, computed by the database (no per-row
    datetime objects in Python: half the time of reading 100,000 pending orders)."""

    type = BigInteger()
    inherit_cache = True
    name = "epoch_seconds"


@compiles(_EpochSeconds, "sqlite")
def _epoch_sqlite(element: _EpochSeconds, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLAlchemy stores SQLite timestamps as naive UTC text; strftime('%s') reads them as UTC.
    return f"CAST(strftime('%s', {compiler.process(element.clauses, **kw)}) AS INTEGER)"


@compiles(_EpochSeconds, "postgresql")
def _epoch_postgresql(element: _EpochSeconds, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(FLOOR(EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)})) AS BIGINT)"


def load_pending_rows(db: Session) -> PendingRows:
    """Pending orders with a session: only the four values the refresher needs, as columns.

    Covered by the ``ix_orders_status_session_cover`` index (an index-only scan on both
    databases); categories come as plain strings and timestamps as Unix seconds.

    It runs in a worker thread while the event loop serves requests, so it reads 1,000 rows at
    a time (a server-side cursor on PostgreSQL: psycopg would otherwise convert the whole result
    in one call holding the interpreter lock), turns each batch into columns in C, and sleeps
    half a millisecond between batches so the loop's thread gets the interpreter lock at once
    instead of waiting for CPython's forced 5 ms hand-over (SQLite drops and retakes the lock
    on every row, which never lets that hand-over happen).
    """
    stmt = (
        select(
            Order.stripe_checkout_session_id,
            type_coerce(Product.category, String),
            func.coalesce(_EpochSeconds(Order.checkout_session_created_at), 0),
            func.coalesce(_EpochSeconds(Order.checkout_session_expires_at), 0),
        )
        .join(Product, Product.id == Order.product_id)
        .where(Order.status == OrderStatus.pending)
        .where(Order.stripe_checkout_session_id.is_not(None))
        .execution_options(yield_per=1_000)
    )
    rows = PendingRows()
    for batch in db.execute(stmt).partitions():
        if batch:
            rows.extend(*zip(*batch, strict=True))
        time.sleep(0.0005)
    return rows
