"""Pending orders and their links written straight into a test database (bulk, no Stripe)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from basketball_api.db import make_engine, make_session_factory, transaction
from basketball_api.models import CheckoutLink, Learnt, LinkState, Order, Product
from basketball_api.stripe_gateway import SessionSnapshot


@dataclass(frozen=True)
class Pending:
    session_id: str
    category: str
    created: int
    expires_at: int


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def insert_pending(
    factory: sessionmaker[Session], rows: Iterable[Pending], *, known_open: bool = False
) -> None:
    """One pending order per row, its link's state unknown (as a link that predates the link
    state columns) or, with ``known_open``, recorded open as at creation."""
    rows = list(rows)
    with transaction(factory) as db:
        products = {c.value: pid for pid, c in db.execute(select(Product.id, Product.category))}
        ids = db.scalars(
            insert(Order).returning(Order.id, sort_by_parameter_order=True),
            [
                {
                    "product_id": products[r.category],
                    "status": "pending",
                    "quantity": 1,
                    "amount": 1000,
                    "currency": "usd",
                    "parent_email": f"parent{i}@example.org",
                    "player_name": f"Player {i}",
                    "stripe_checkout_session_id": r.session_id,
                    "checkout_session_created_at": _at(r.created),
                    "checkout_session_expires_at": _at(r.expires_at),
                }
                for i, r in enumerate(rows)
            ],
        ).all()
        state = LinkState.open if known_open else None
        db.execute(
            insert(CheckoutLink),
            [
                {
                    "order_id": ids[i],
                    "stripe_checkout_session_id": r.session_id,
                    "created_at": _at(r.created),
                    "expires_at": _at(r.expires_at),
                    "state": state,
                    "payment_status": "unpaid" if known_open else None,
                    "learnt_from": Learnt.created if known_open else None,
                    "learnt_at": datetime.now(UTC) if known_open else None,
                }
                for i, r in enumerate(rows)
            ],
        )


def pending_of(snapshot: SessionSnapshot, category: str) -> Pending:
    return Pending(snapshot.id, category, snapshot.created, snapshot.expires_at)


def factory_for(database_url: str) -> sessionmaker[Session]:
    return make_session_factory(make_engine(database_url))
