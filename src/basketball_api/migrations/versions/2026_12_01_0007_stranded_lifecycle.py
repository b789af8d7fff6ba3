"""The stranded-order lifecycle: when an order's link was seen dead, when its parent was
emailed (once), and an operator's snooze.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("stranded_at", sa.DateTime(timezone=True)),
    ("stranded_emailed_at", sa.DateTime(timezone=True)),
    ("snoozed_until", sa.DateTime(timezone=True)),
    ("snoozed_by", sa.String(100)),
)


def upgrade() -> None:
    for name, type_ in _COLUMNS:
        op.add_column("orders", sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        for name, _type in reversed(_COLUMNS):
            batch.drop_column(name)
