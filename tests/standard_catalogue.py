"""The standard catalogue every test database starts with: the demo club's three products,
created through the catalogue service (ids 1, 2, 3: tournament, monthly, jersey)."""

from __future__ import annotations

from basketball_api import catalogue
from basketball_api.db import make_engine, make_session_factory, transaction, upgrade_database
from basketball_api.demo import CATALOGUE


def create_standard_catalogue(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with transaction(make_session_factory(engine)) as db:
            for product in CATALOGUE:
                catalogue.create_product(db, product)
    finally:
        engine.dispose()


def migrate_with_catalogue(database_url: str) -> None:
    """A schema built by Alembic, then the standard catalogue (migrations carry no data)."""
    upgrade_database(database_url)
    create_standard_catalogue(database_url)
