"""Payments needing review, links to expire, and which session paid an order.

A payment that cannot be applied (no order's own link, a cancelled or already-paid order, a
second paid link, a wrong amount or currency) is kept in ``payments_needing_review`` until an
operator resolves it. ``links_to_expire`` holds the live links that must stop being payable.
``orders.paid_by_session_id`` tells a repeated event of the paying session from a second
payment; ``checkout_links.recovered_from`` marks sessions made through a recovery URL.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

REASONS = (
    "unknown_order",
    "cancelled_order",
    "already_paid",
    "second_payment",
    "amount_mismatch",
    "currency_mismatch",
)
RESOLUTIONS = ("applied", "refunded", "dismissed")


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("paid_by_session_id", sa.String(length=255), nullable=True))
    with op.batch_alter_table("checkout_links") as batch:
        batch.add_column(sa.Column("recovered_from", sa.String(length=255), nullable=True))
    op.create_table(
        "payments_needing_review",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stripe_checkout_session_id", sa.String(length=255), nullable=False),
        sa.Column("stripe_payment_intent_id", sa.String(length=255), nullable=True),
        sa.Column("stripe_event_id", sa.String(length=255), nullable=True),
        sa.Column(
            "reason",
            sa.Enum(
                *REASONS,
                name="review_reason",
                native_enum=False,
                length=24,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("claimed_reference", sa.String(length=255), nullable=True),
        sa.Column("amount_total", sa.Integer(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("found_via", sa.String(length=24), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=100), nullable=True),
        sa.Column(
            "resolution",
            sa.Enum(
                *RESOLUTIONS,
                name="review_resolution",
                native_enum=False,
                length=16,
                create_constraint=True,
            ),
            nullable=True,
        ),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_payments_needing_review_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments_needing_review")),
        sa.UniqueConstraint(
            "stripe_checkout_session_id",
            name=op.f("uq_payments_needing_review_stripe_checkout_session_id"),
        ),
    )
    op.create_index(
        op.f("ix_payments_needing_review_order_id"), "payments_needing_review", ["order_id"]
    )
    op.create_table(
        "links_to_expire",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stripe_checkout_session_id", sa.String(length=255), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("cause", sa.String(length=24), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=100), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_links_to_expire_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_links_to_expire")),
        sa.UniqueConstraint(
            "stripe_checkout_session_id",
            name=op.f("uq_links_to_expire_stripe_checkout_session_id"),
        ),
    )
    op.create_index(op.f("ix_links_to_expire_order_id"), "links_to_expire", ["order_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_links_to_expire_order_id"), table_name="links_to_expire")
    op.drop_table("links_to_expire")
    op.drop_index(op.f("ix_payments_needing_review_order_id"), table_name="payments_needing_review")
    op.drop_table("payments_needing_review")
    with op.batch_alter_table("checkout_links") as batch:
        batch.drop_column("recovered_from")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("paid_by_session_id")
