"""Checkout links history: every session an order had, for audit of reissued links.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "checkout_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("stripe_checkout_session_id", sa.String(length=255), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("recovery_url", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("replaced_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_checkout_links_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checkout_links")),
        sa.UniqueConstraint(
            "stripe_checkout_session_id", name=op.f("uq_checkout_links_stripe_checkout_session_id")
        ),
    )
    op.create_index(op.f("ix_checkout_links_order_id"), "checkout_links", ["order_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_checkout_links_order_id"), table_name="checkout_links")
    op.drop_table("checkout_links")
