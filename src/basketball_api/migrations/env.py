"""Alembic environment: the URL comes from the caller (``basketball-api migrate``).

On PostgreSQL an upgrade first takes a transaction-level advisory lock, so migrations started
at once (two pods' init containers, a Job and a pod) run one after the other: the second
waits, then finds the schema at head and does nothing. The lock is released with the
upgrade's transaction, also when the process dies.
"""

from __future__ import annotations

import zlib

from alembic import context
from sqlalchemy import Connection, text

from basketball_api.db import make_engine
from basketball_api.models import Base

config = context.config
target_metadata = Base.metadata

# A fixed 32-bit key of our own in PostgreSQL's advisory-lock space for "schema upgrade".
MIGRATION_LOCK_KEY = zlib.crc32(b"basketball-api:alembic-upgrade")


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Before Alembic reads (or creates) alembic_version, so the waiter sees the head.
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
