"""Each checkout link's Stripe state in the database, and the poller's cursor.

``checkout_links`` gains the link's state (open, expired, complete, missing; null until learnt),
its payment status (with ``failed`` for a delayed payment that failed) and when and how that was
learnt; indexes cover the gauge query (pending orders by product, their links' state).
``poller_cursor`` holds one row: the events-feed position and Stripe's clock. Orders whose
session predates the links table get their link row, so every order's current session is a
row the gauges and the poller can see.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _enum(name: str, *values: str, length: int = 16) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, length=length, create_constraint=True)


def upgrade() -> None:
    with op.batch_alter_table("checkout_links") as batch:
        batch.add_column(
            sa.Column(
                "state",
                _enum("link_state", "open", "expired", "complete", "missing"),
                nullable=True,
            )
        )
        batch.add_column(
            sa.Column(
                "payment_status",
                _enum(
                    "link_payment_status",
                    "unpaid",
                    "paid",
                    "no_payment_required",
                    "failed",
                    length=24,
                ),
                nullable=True,
            )
        )
        batch.add_column(sa.Column("learnt_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column(
                "learnt_from",
                _enum(
                    "link_learnt_from",
                    "created",
                    "webhook",
                    "events",
                    "listing",
                    "retrieve",
                    "return_page",
                ),
                nullable=True,
            )
        )
    op.create_index(
        "ix_checkout_links_session_state",
        "checkout_links",
        ["stripe_checkout_session_id", "state", "payment_status", "expires_at"],
    )
    # The gauge query reads pending orders by product with their session id; the refresher's
    # old covering index (session created/expires times) has no reader any more.
    op.create_index(
        "ix_orders_status_product_session",
        "orders",
        ["status", "product_id", "stripe_checkout_session_id"],
    )
    op.drop_index("ix_orders_status_session_cover", table_name="orders")
    op.create_table(
        "poller_cursor",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=True),
        sa.Column("event_created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stripe_clock_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("polled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("relisting_since", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_poller_cursor")),
    )
    op.execute(
        "INSERT INTO checkout_links (order_id, stripe_checkout_session_id, url, created_at,"
        " expires_at) SELECT o.id, o.stripe_checkout_session_id, o.checkout_url,"
        " COALESCE(o.checkout_session_created_at, o.created_at), o.checkout_session_expires_at"
        " FROM orders o WHERE o.stripe_checkout_session_id IS NOT NULL AND NOT EXISTS"
        " (SELECT 1 FROM checkout_links l"
        "  WHERE l.stripe_checkout_session_id = o.stripe_checkout_session_id)"
    )


def downgrade() -> None:
    op.drop_table("poller_cursor")
    op.create_index(
        "ix_orders_status_session_cover",
        "orders",
        [
            "status",
            "stripe_checkout_session_id",
            "product_id",
            "checkout_session_created_at",
            "checkout_session_expires_at",
        ],
    )
    op.drop_index("ix_orders_status_product_session", table_name="orders")
    op.drop_index("ix_checkout_links_session_state", table_name="checkout_links")
    with op.batch_alter_table("checkout_links") as batch:
        batch.drop_column("learnt_from")
        batch.drop_column("learnt_at")
        batch.drop_column("payment_status")
        batch.drop_column("state")
