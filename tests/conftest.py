"""Shared fixtures. Async tests use anyio's pytest plugin on asyncio.

Tests that touch SQL run on both SQLite and a real PostgreSQL (``TEST_DATABASE_URL``, default
the local server's ``test`` database, in which each run creates and drops its own database).
The schema is always built by Alembic.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from tests.procs import PG_ADMIN_URL, UNLIMITED, temporary_postgres
from tests.standard_catalogue import create_standard_catalogue

from basketball_api.db import make_engine, upgrade_database

# Shared fixtures: a module-wide sandbox with its control and SDK client (the sandbox's own
# tests), and a headless chromium (the browser tests).
pytest_plugins = ("tests.sandbox_fixtures", "tests.browser")


@pytest.fixture(autouse=True)
def _no_rate_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test is one client address sending many orders: the per-client limits would turn
    them into 429s. Tests of the limits pass their own."""
    monkeypatch.setenv("ORDER_RATE_LIMIT", UNLIMITED)
    monkeypatch.setenv("PAY_LINK_RATE_LIMIT", UNLIMITED)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of our own on the PostgreSQL server, migrated once, dropped at the end."""
    try:
        with temporary_postgres("basketball_test") as url:
            yield url
    except psycopg.OperationalError as e:
        pytest.fail(f"PostgreSQL is required for the SQL tests ({PG_ADMIN_URL}): {e}")


def _truncate(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "TRUNCATE order_access_tokens, checkout_links, payments_needing_review,"
            " links_to_expire, orders, processed_webhook_events, products, poller_cursor"
            " RESTART IDENTITY"
        )
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database migrated by Alembic and holding no rows at all, on each engine."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.db'}"
        upgrade_database(url)
        return url
    postgres_url: str = request.getfixturevalue("postgres_url")
    _truncate(postgres_url)
    return postgres_url


@pytest.fixture
def database_url(empty_database_url: str) -> str:
    """A migrated database holding the standard catalogue (products 1, 2, 3: tournament,
    monthly, jersey), created through the catalogue service as an operator would."""
    create_standard_catalogue(empty_database_url)
    return empty_database_url
