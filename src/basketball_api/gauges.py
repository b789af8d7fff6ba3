"""The pending-order gauges as one query: pending orders per category and current-link bucket.

One ``GROUP BY`` over pending orders joined to their current link (``orders``' covering index
and ``ix_checkout_links_session_state``); expiry by time is part of the bucket expression,
evaluated by the database against Stripe's clock. No count is ever patched in memory: every
recount asks the database again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from basketball_api.link_state import Bucket, bucket, current_link, from_epoch
from basketball_api.metrics import CATEGORIES
from basketball_api.models import CheckoutLink, Order, OrderStatus, Product


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
    """Pending orders per (category, bucket) of their current link, at Stripe time ``now``."""
    rows = (
        select(
            Product.category.label("category"),
            bucket(from_epoch(now - grace)).label("bucket"),
        )
        .select_from(Order)
        .join(Product, Product.id == Order.product_id)
        .join(CheckoutLink, current_link())
        .where(Order.status == OrderStatus.pending)
        .subquery()
    )
    stmt = select(rows.c.category, rows.c.bucket, func.count()).group_by(
        rows.c.category, rows.c.bucket
    )
    counts = Counts()
    for category, name, n in db.execute(stmt):
        counts.of(Bucket(name))[str(category.value if hasattr(category, "value") else category)] = n
    return counts
