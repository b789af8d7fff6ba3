"""The gauges are one GROUP BY: pending orders per category and bucket of their current link."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker
from tests.links import Pending, factory_for, insert_pending

from basketball_api.db import transaction
from basketball_api.gauges import count_pending
from basketball_api.link_state import Fact, learn
from basketball_api.metrics import CATEGORIES
from basketball_api.models import Learnt, LinkState, Order, OrderStatus, PaymentStatus

NOW = 1_800_000_000


@pytest.fixture
def factory(database_url: str) -> Iterator[sessionmaker[Session]]:
    f = factory_for(database_url)
    yield f
    f.kw["bind"].dispose()


def test_each_pending_order_counts_once_in_its_category_and_bucket(
    factory: sessionmaker[Session],
) -> None:
    facts = {
        "cs_open": Fact(LinkState.open, PaymentStatus.unpaid),
        "cs_timed_out": Fact(LinkState.open, PaymentStatus.unpaid),
        "cs_expired": Fact(LinkState.expired),
        "cs_paid": Fact(LinkState.complete, PaymentStatus.paid),
        "cs_processing": Fact(LinkState.complete, PaymentStatus.unpaid),
        "cs_failed": Fact(LinkState.complete, PaymentStatus.failed),
        "cs_missing": Fact(LinkState.missing),
    }
    rows = []
    for i, category in enumerate(CATEGORIES):
        for sid in [*facts, "cs_unknown", "cs_not_pending"]:
            expires = NOW - 30 if sid == "cs_timed_out" else NOW + 3600
            rows.append(Pending(f"{sid}_{i}", category, NOW - 3600, expires))
    insert_pending(factory, rows)
    with transaction(factory) as db:
        learn(db, {f"{s}_{i}": f for s, f in facts.items() for i in range(3)}, Learnt.listing)
        db.execute(
            update(Order)
            .where(Order.stripe_checkout_session_id.like("cs_not_pending%"))
            .values(status=OrderStatus.paid)
        )

    with transaction(factory) as db:
        counts = count_pending(db, now=NOW, grace=0)
        graced = count_pending(db, now=NOW, grace=60)

    one = dict.fromkeys(CATEGORIES, 1)
    assert counts.expired == dict.fromkeys(CATEGORIES, 2)  # expired, and open past expires_at
    assert counts.open == one
    assert counts.completed == one
    assert counts.processing == one
    assert counts.failed == one
    assert counts.missing == one
    assert counts.unknown == one
    assert graced.expired == one  # within the grace period the timed-out link is still open
    assert graced.open == dict.fromkeys(CATEGORIES, 2)
