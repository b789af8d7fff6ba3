"""Products managed as data: an optional event date and sale window, and when last changed.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("event_date", sa.Date()),
    ("sale_starts_at", sa.DateTime(timezone=True)),
    ("sale_ends_at", sa.DateTime(timezone=True)),
    ("updated_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    for name, type_ in _COLUMNS:
        op.add_column("products", sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("products") as batch:
        for name, _type in reversed(_COLUMNS):
            batch.drop_column(name)
