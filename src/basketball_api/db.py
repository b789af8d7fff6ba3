"""Engine and session factory. Nothing connects at import time."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Engine, Table, any_, bindparam, create_engine, event
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker


def make_engine(database_url: str) -> Engine:
    """An engine for PostgreSQL (psycopg 3) or a SQLite file, created lazily by the caller."""
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql" and url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 15})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def insert_unless_present(
    db: Session, table: Table, unique: list[str], values: dict[str, Any]
) -> bool:
    """INSERT … ON CONFLICT (``unique``) DO NOTHING on either database; True if inserted.

    Two transactions inserting the same row both succeed, one of them without writing.
    """
    insert = pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = (
        insert(table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=unique)
        .returning(*table.primary_key.columns)  # rowcount is not reliable with RETURNING
    )
    return db.execute(stmt).first() is not None


def among(
    db: Session,
    column: ColumnElement[Any] | InstrumentedAttribute[Any],
    values: Sequence[object],
) -> ColumnElement[bool]:
    """``column IN (values)``; on PostgreSQL ``column = ANY(array)``, one parameter however
    many values. A batch names 1,000 links: as 1,000 parameters, rendering and parsing them
    held the interpreter lock long enough to delay ``/metrics`` beside a listing."""
    if db.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=ARRAY(column.type)))
    return column.in_(values)


def upgrade_database(database_url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with Alembic, the only way any schema is created."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "basketball_api:migrations")
    config.set_main_option("sqlalchemy.url", database_url)
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()
