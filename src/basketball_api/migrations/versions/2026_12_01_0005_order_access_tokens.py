"""Order access tokens: the hashed capabilities behind pay links and order pages.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "order_access_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_order_access_tokens_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_access_tokens")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_order_access_tokens_token_sha256")),
    )
    op.create_index(op.f("ix_order_access_tokens_order_id"), "order_access_tokens", ["order_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_order_access_tokens_order_id"), table_name="order_access_tokens")
    op.drop_table("order_access_tokens")
