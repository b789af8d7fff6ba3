"""Alembic is the only way a schema is made; the models and the migrations must agree."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select

from basketball_api.db import make_engine, make_session_factory
from basketball_api.models import Base, Category, Product


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
