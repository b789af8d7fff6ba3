"""The pending-order gauges as one query: pending orders per category and current-link bucket.

One ``GROUP BY`` over pending orders and the copy of their current link's state they carry,
read from ``ix_orders_gauge`` alone, with no join (a join by session id cost one index probe
per order: 250 ms at 100,000 on SQLite); expiry by time is part of the bucket expression,
evaluated by the database against Stripe's clock. No count is ever patched in memory: every
recount asks the database again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from basketball_api.link_state import Bucket, bucket, from_epoch
from basketball_api.metrics import CATEGORIES
from basketball_api.models import Order, OrderStatus, Product


def _zeros() -> dict[str, int]:
    return dict.fromkeys(CATEGORIES, 0)


@dataclass
class Counts:
    """Pending orders per category, by what their current link says."""

    expired: dict[str, int] = field(default_factory=_zeros)
    completed: dict[str, int] = field(default_factory=_zeros)  # complete and paid
    open: dict[str, int] = field(default_factory=_zeros)
    failed: dict[str, int] = field(default_factory=_zeros)  # delayed payment failed
    missing: dict[str, int] = field(default_factory=_zeros)  # Stripe does not know the link
    processing: dict[str, int] = field(default_factory=_zeros)
    unknown: dict[str, int] = field(default_factory=_zeros)

    def of(self, name: Bucket) -> dict[str, int]:
        return {
            Bucket.expired: self.expired,
            Bucket.paid: self.completed,
            Bucket.open: self.open,
            Bucket.failed: self.failed,
            Bucket.missing: self.missing,
            Bucket.processing: self.processing,
            Bucket.unknown: self.unknown,
        }[name]


def count_pending(db: Session, *, now: float, grace: float) -> Counts:
    """Pending orders per (category, bucket) of their current link, at Stripe time ``now``.

    Grouped by product, then summed per category: the products are a handful of rows, and a
    join to them per order costs more than the grouping itself on SQLite."""
    rows = (
        select(Order.product_id.label("product_id"), bucket(from_epoch(now - grace)).label("b"))
        .where(Order.status == OrderStatus.pending)
        .subquery()
    )
    stmt = select(rows.c.product_id, rows.c.b, func.count()).group_by(rows.c.product_id, rows.c.b)
    grouped = db.execute(stmt).all()
    categories = {
        pid: category for pid, category in db.execute(select(Product.id, Product.category))
    }
    counts = Counts()
    for product_id, name, n in grouped:
        per_category = counts.of(Bucket(name))
        category = categories[product_id].value
        per_category[category] = per_category.get(category, 0) + n
    return counts
