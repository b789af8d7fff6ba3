"""Alembic is the only way a schema is made; the models and the migrations must agree."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text
from tests.procs import temporary_postgres

from basketball_api.db import make_engine, make_session_factory, upgrade_database
from basketball_api.link_state import epoch
from basketball_api.models import Base, Category, LinkState, Order, PaymentStatus, Product

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
LATER = datetime(2026, 12, 2, 12, tzinfo=UTC)


def test_models_and_migrations_agree(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
        assert diff == []
        assert {"orders", "products", "processed_webhook_events"} <= set(
            inspect(engine).get_table_names()
        )
    finally:
        engine.dispose()


def test_migrations_carry_no_catalogue(empty_database_url: str) -> None:
    """Products are data an operator creates; a fresh schema has none."""
    engine = make_engine(empty_database_url)
    try:
        with make_session_factory(engine)() as db:
            assert db.scalars(select(Product)).all() == []
    finally:
        engine.dispose()


def test_the_standard_catalogue_has_one_product_per_category(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as db:
            products = db.scalars(select(Product).order_by(Product.id)).all()
        assert [(p.id, p.category) for p in products] == [
            (1, Category.tournament),
            (2, Category.monthly),
            (3, Category.jersey),
        ]
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def blank_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no schema at all, on each engine."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'blank.db'}"
        return
    with temporary_postgres("basketball_migration", migrate=False) as url:
        yield url


def test_0009_upgrades_a_database_holding_orders(blank_url: str) -> None:
    # Before: on SQLite the upgrade rebuilt `orders` and dropping the old table failed its
    # foreign keys as soon as an order had a link or an access token.
    empty_database_url = blank_url
    upgrade_database(empty_database_url, "0008")
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO products (id, name, category, unit_amount, currency, active,"
                    " created_at) VALUES (1, 'Dues', 'monthly', 2500, 'usd', true, :now)"
                ),
                {"now": NOW},
            )
            conn.execute(
                text(
                    "INSERT INTO orders (id, product_id, status, quantity, amount, currency,"
                    " parent_email, player_name, stripe_checkout_session_id, created_at,"
                    " updated_at) VALUES (1, 1, 'pending', 1, 2500, 'usd', 'p@example.org',"
                    " 'Ana', 'cs_1', :now, :now)"
                ),
                {"now": NOW},
            )
            conn.execute(
                text(
                    "INSERT INTO checkout_links (order_id, stripe_checkout_session_id,"
                    " created_at, expires_at, state, payment_status) VALUES"
                    " (1, 'cs_1', :now, :later, 'expired', 'unpaid')"
                ),
                {"now": NOW, "later": LATER},
            )
            conn.execute(
                text(
                    "INSERT INTO order_access_tokens (order_id, token_sha256, purpose,"
                    " created_at) VALUES (1, :sha, 'order', :now)"
                ),
                {"now": NOW, "sha": "0" * 64},
            )
        upgrade_database(empty_database_url)
        with make_session_factory(engine)() as db:
            order = db.get(Order, 1)
            assert order is not None
            assert (order.link_state, order.link_payment_status) == (
                LinkState.expired,
                PaymentStatus.unpaid,
            )
            assert epoch(order.checkout_session_expires_at) == epoch(LATER)
    finally:
        engine.dispose()
