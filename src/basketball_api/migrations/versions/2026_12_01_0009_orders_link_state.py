"""Each order carries its current link's state, so the gauges read one table.

The gauge query joined 100,000 pending orders to their current links by session id: one index
probe per order, 250 ms on SQLite and 150-200 ms on PostgreSQL at best (targets 200 and 100).
``orders`` gains ``link_state`` and ``link_payment_status``, kept equal to the current link's
row in the same transaction that changes either (``link_state.learn`` and
``orders.attach_session``); ``checkout_session_expires_at`` becomes the copy of its
``expires_at`` (set here from the link where the link knows it).
The gauge query is then an index-only scan of ``ix_orders_gauge`` (115 ms on SQLite, 35 ms on
PostgreSQL once vacuumed). The link-side covering index had no other reader.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_GAUGE_COLUMNS = [
    "status",
    "product_id",
    "link_state",
    "link_payment_status",
    "checkout_session_expires_at",
]


def _enum(name: str, *values: str, length: int = 16) -> sa.Enum:
    # No CHECK constraint: SQLite cannot add one to an existing table without rebuilding it
    # (see upgrade), and the copy is only ever written from the link's checked values.
    return sa.Enum(*values, name=name, native_enum=False, length=length, create_constraint=False)


def upgrade() -> None:
    # Plain ADD COLUMN, not a batch: on SQLite a batch rebuilds ``orders``, and dropping the
    # old table fails its foreign keys (links, access tokens) as soon as it holds an order.
    op.add_column(
        "orders",
        sa.Column(
            "link_state",
            _enum("link_state", "open", "expired", "complete", "missing"),
            nullable=True,
        ),
    )
    op.add_column(
        "orders",
        sa.Column(
            "link_payment_status",
            _enum(
                "link_payment_status", "unpaid", "paid", "no_payment_required", "failed", length=24
            ),
            nullable=True,
        ),
    )
    op.execute(
        "UPDATE orders SET"
        " link_state = (SELECT l.state FROM checkout_links l"
        "  WHERE l.stripe_checkout_session_id = orders.stripe_checkout_session_id),"
        " link_payment_status = (SELECT l.payment_status FROM checkout_links l"
        "  WHERE l.stripe_checkout_session_id = orders.stripe_checkout_session_id),"
        " checkout_session_expires_at = COALESCE((SELECT l.expires_at FROM checkout_links l"
        "  WHERE l.stripe_checkout_session_id = orders.stripe_checkout_session_id),"
        "  checkout_session_expires_at)"
        " WHERE stripe_checkout_session_id IS NOT NULL"
    )
    op.create_index("ix_orders_gauge", "orders", _GAUGE_COLUMNS)
    op.drop_index("ix_orders_status_product_session", table_name="orders")
    op.drop_index("ix_checkout_links_session_state", table_name="checkout_links")


def downgrade() -> None:
    op.create_index(
        "ix_checkout_links_session_state",
        "checkout_links",
        ["stripe_checkout_session_id", "state", "payment_status", "expires_at"],
    )
    op.create_index(
        "ix_orders_status_product_session",
        "orders",
        ["status", "product_id", "stripe_checkout_session_id"],
    )
    op.drop_index("ix_orders_gauge", table_name="orders")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("link_payment_status")
        batch.drop_column("link_state")
