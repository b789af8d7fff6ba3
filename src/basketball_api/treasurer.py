"""The treasurer's view of orders: search and filters, amount outstanding, link state, totals per
product, CSV. Plain queries over the orders; the routes are in ``treasurer_admin.py``."""

from __future__ import annotations

import csv
import enum
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar

from sqlalchemy import Select, case, func, select
from sqlalchemy.orm import Session

from basketball_api import link_state
from basketball_api.link_state import Bucket, from_epoch
from basketball_api.models import Category, Order, OrderStatus, Product

MAX_ROWS = 500  # one page of the listing; the totals always cover every matching order


class LinkState(enum.StrEnum):
    """What a treasurer needs to know about an order's payment link."""

    none = "none"  # pending, no link was ever made
    open = "open"  # the parent can pay now
    dead = "dead"  # expired: the order is stranded until a new link is sent
    paid_at_stripe = "paid_at_stripe"  # paid, the confirmation is still on its way
    processing = "processing"  # a delayed payment method is settling
    payment_failed = "payment_failed"
    missing = "missing"  # Stripe does not know the session
    unknown = "unknown"  # not learnt yet (no refresh since the link was made)
    closed = "closed"  # the order is paid or cancelled: no link is needed

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    LinkState.none: "no link",
    LinkState.open: "open",
    LinkState.dead: "dead",
    LinkState.paid_at_stripe: "paid at Stripe",
    LinkState.processing: "payment processing",
    LinkState.payment_failed: "payment failed",
    LinkState.missing: "unknown to Stripe",
    LinkState.unknown: "not known yet",
    LinkState.closed: "—",
}
_FROM_BUCKET = {
    Bucket.open: LinkState.open,
    Bucket.expired: LinkState.dead,
    Bucket.paid: LinkState.paid_at_stripe,
    Bucket.processing: LinkState.processing,
    Bucket.failed: LinkState.payment_failed,
    Bucket.missing: LinkState.missing,
    Bucket.unknown: LinkState.unknown,
}

_Stmt = TypeVar("_Stmt", bound=Select[Any])


def _link(order: Order, bucket: str) -> LinkState:
    """The treasurer's word for an order's link, from the gauge's own bucket of it."""
    if order.status != OrderStatus.pending:
        return LinkState.closed
    if order.stripe_checkout_session_id is None:
        return LinkState.none
    return _FROM_BUCKET[Bucket(bucket)]


@dataclass(frozen=True)
class OrderFilter:
    """Every field optional; all given ones must hold. Dates are order dates, UTC, inclusive."""

    state: OrderStatus | None = None
    category: Category | None = None
    product_id: int | None = None
    ordered_from: date | None = None
    ordered_until: date | None = None
    text: str | None = None  # part of the player's name or the parent's email, any case

    def apply(self, stmt: _Stmt) -> _Stmt:
        if self.state is not None:
            stmt = stmt.where(Order.status == self.state)
        if self.category is not None:
            stmt = stmt.where(Product.category == self.category)
        if self.product_id is not None:
            stmt = stmt.where(Order.product_id == self.product_id)
        if self.ordered_from is not None:
            stmt = stmt.where(Order.created_at >= _midnight(self.ordered_from))
        if self.ordered_until is not None and self.ordered_until < date.max:
            stmt = stmt.where(Order.created_at < _midnight(self.ordered_until + timedelta(days=1)))
        text = (self.text or "").strip()
        if text:
            stmt = stmt.where(
                Order.player_name.icontains(text, autoescape=True)
                | Order.parent_email.icontains(text, autoescape=True)
            )
        return stmt


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment  # SQLite: naive UTC


def outstanding(order: Order) -> int:
    """What the club still expects for the order: all of it while pending, else nothing."""
    return order.amount if order.status == OrderStatus.pending else 0


@dataclass(frozen=True)
class OrderRow:
    order_id: int
    ordered_at: datetime
    player_name: str
    parent_email: str
    category: Category
    product_id: int
    product_name: str
    state: OrderStatus
    amount: int
    outstanding: int
    currency: str
    link_state: LinkState
    link_url: str | None  # the live link, when there is one to send


@dataclass(frozen=True)
class ProductTotal:
    product_id: int
    product_name: str
    category: Category
    currency: str
    orders: int  # in every state
    cancelled: int  # of those, cancelled
    paid: int  # amount paid
    outstanding: int  # amount still expected (pending orders)


@dataclass(frozen=True)
class Listing:
    rows: list[OrderRow]
    matching: int  # every order matching the filter (rows holds at most MAX_ROWS)
    totals: list[ProductTotal]


def search(
    db: Session,
    where: OrderFilter,
    *,
    now: float,
    grace: float,
    limit: int = MAX_ROWS,
    offset: int = 0,
) -> Listing:
    """Matching orders, newest first, with totals per product over all of them.

    Each order's link state is the gauges' bucket of it at Stripe's time ``now`` and ``grace``,
    read in the same query (the order's copy of its current link)."""
    page = db.execute(_newest_first(where, now, grace).limit(limit).offset(offset)).all()
    matching = db.scalar(select(func.count()).select_from(_matching(where).subquery())) or 0
    rows = [_row(order, _link(order, bucket)) for order, bucket in page]
    return Listing(rows, matching, totals(db, where))


def every_row(db: Session, where: OrderFilter, *, now: float, grace: float) -> Iterable[OrderRow]:
    """All matching orders, newest first, read in batches (the CSV export)."""
    stmt = _newest_first(where, now, grace).execution_options(yield_per=500)
    for order, bucket in db.execute(stmt):
        yield _row(order, _link(order, bucket))


def _matching(where: OrderFilter) -> Select[Any]:
    return where.apply(select(Order).join(Product, Product.id == Order.product_id))


def _newest_first(where: OrderFilter, now: float, grace: float) -> Select[Any]:
    """The matching orders with each one's bucket (the gauges' expression), newest first."""
    return (
        _matching(where)
        .add_columns(link_state.bucket(from_epoch(now - grace)))
        .order_by(Order.created_at.desc(), Order.id.desc())
    )


def _row(order: Order, link: LinkState) -> OrderRow:
    return OrderRow(
        order_id=order.id,
        ordered_at=_utc(order.created_at),
        player_name=order.player_name,
        parent_email=order.parent_email,
        category=order.product.category,
        product_id=order.product_id,
        product_name=order.product.name,
        state=order.status,
        amount=order.amount,
        outstanding=outstanding(order),
        currency=order.currency,
        link_state=link,
        link_url=order.checkout_url if link == LinkState.open else None,
    )


def totals(db: Session, where: OrderFilter) -> list[ProductTotal]:
    """Per product (and currency): orders, cancelled, amount paid and outstanding. One GROUP BY."""

    def when(status: OrderStatus, value: Any) -> Any:
        return func.coalesce(func.sum(case((Order.status == status, value), else_=0)), 0)

    stmt = where.apply(
        select(
            Order.product_id,
            Product.name,
            Product.category,
            Order.currency,
            func.count(Order.id),
            when(OrderStatus.cancelled, 1),
            when(OrderStatus.paid, Order.amount),
            when(OrderStatus.pending, Order.amount),
        ).join(Product, Product.id == Order.product_id)
    ).group_by(Order.product_id, Product.name, Product.category, Order.currency)
    return [
        ProductTotal(int(pid), name, Category(cat), cur, int(n), int(c), int(p), int(o))
        for pid, name, cat, cur, n, c, p, o in db.execute(stmt.order_by(Order.product_id))
    ]


CSV_COLUMNS = (
    "order",
    "ordered_at",
    "player",
    "parent_email",
    "category",
    "product",
    "state",
    "amount",
    "outstanding",
    "currency",
    "link",
)


def money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def csv_lines(rows: Iterable[OrderRow]) -> Iterable[str]:
    """The CSV export, a line at a time: amounts in units (150.00), times in UTC ISO 8601.

    Cells that a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``) are quoted with
    a leading apostrophe: a player name is whatever a parent typed.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def line(values: Sequence[str]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([_safe(v) for v in values])
        return buffer.getvalue()

    yield line(CSV_COLUMNS)
    for r in rows:
        yield line(
            (
                str(r.order_id),
                r.ordered_at.isoformat(timespec="seconds"),
                r.player_name,
                r.parent_email,
                r.category.value,
                r.product_name,
                r.state.value,
                money(r.amount),
                money(r.outstanding),
                r.currency.upper(),
                r.link_state.value,
            )
        )


def _safe(value: str) -> str:
    return f"'{value}" if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
