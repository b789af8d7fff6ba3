"""Pending orders and their links written straight into a test database (bulk, no Stripe)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session, sessionmaker

from basketball_api.db import make_engine, make_session_factory, transaction
from basketball_api.link_state import current_link, epoch
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
    state = LinkState.open if known_open else None
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
                    "link_state": state,  # the order's copy of its link's state
                    "link_payment_status": "unpaid" if known_open else None,
                }
                for i, r in enumerate(rows)
            ],
        ).all()
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


def copies_out_of_step(engine: Engine) -> list[str]:
    """Orders whose copy of their current link's state differs from the link's row (there
    must be none: the gauges read the copy)."""
    stmt = select(
        Order.id,
        Order.link_state,
        Order.link_payment_status,
        Order.checkout_session_expires_at,
        CheckoutLink.state,
        CheckoutLink.payment_status,
        CheckoutLink.expires_at,
    ).join(CheckoutLink, current_link())
    with engine.connect() as conn:
        return [
            f"order {oid}: {o_state}/{o_paid}/{o_exp} != link {state}/{paid}/{exp}"
            for oid, o_state, o_paid, o_exp, state, paid, exp in conn.execute(stmt)
            if (o_state, o_paid, epoch(o_exp)) != (state, paid, epoch(exp))
        ]
