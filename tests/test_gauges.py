"""The gauges are one GROUP BY: pending orders per category and bucket of their current link."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from tests.links import Pending, copies_out_of_step, factory_for, insert_pending

from basketball_api.db import transaction
from basketball_api.gauges import count_pending
from basketball_api.link_state import Fact, epoch, from_epoch, learn
from basketball_api.metrics import CATEGORIES
from basketball_api.models import CheckoutLink, Learnt, LinkState, Order, OrderStatus, PaymentStatus
from basketball_api.poller_store import Store

NOW = 1_800_000_000
HOW = Learnt.webhook


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


def copy_on(order: Order) -> tuple[LinkState | None, int]:
    """The order's copy of its current link's state and expiry (read anew each time)."""
    return order.link_state, epoch(order.checkout_session_expires_at)


def test_an_order_carries_its_current_links_state_and_only_that_one(
    factory: sessionmaker[Session],
) -> None:
    # The gauges read the copy on the order (no join); it must follow every learnt fact of the
    # current link, ignore a replaced link's, and be seen by an order already loaded.
    insert_pending(factory, [Pending("cs_current", "monthly", NOW - 60, NOW + 3600)])
    with transaction(factory) as db:
        order = db.scalars(select(Order)).one()
        db.add(
            CheckoutLink(
                order_id=order.id,
                stripe_checkout_session_id="cs_replaced",
                created_at=from_epoch(NOW - 7200),
                replaced_at=from_epoch(NOW - 60),
            )
        )
    with transaction(factory) as db:
        order = db.scalars(select(Order)).one()
        assert copy_on(order) == (None, NOW + 3600)
        learn(db, {"cs_current": Fact(LinkState.open, PaymentStatus.unpaid, NOW + 60)}, HOW)
        assert copy_on(order) == (LinkState.open, NOW + 60)
        learn(db, {"cs_replaced": Fact(LinkState.complete, PaymentStatus.paid)}, HOW)
        assert copy_on(order) == (LinkState.open, NOW + 60)
        learn(db, {"cs_current": Fact(LinkState.complete, PaymentStatus.failed)}, HOW)
    with transaction(factory) as db:
        assert count_pending(db, now=NOW, grace=0).failed["monthly"] == 1
    assert copies_out_of_step(factory.kw["bind"]) == []


def test_a_poll_repairs_a_copy_written_around(factory: sessionmaker[Session]) -> None:
    # Before: a link updated without its order's copy (an older replica during a rolling
    # update) left the order "unknown", to be learnt again on every poll, for good.
    insert_pending(factory, [Pending("cs_a", "monthly", NOW - 60, NOW + 3600)])
    with transaction(factory) as db:
        db.execute(update(CheckoutLink).values(state=LinkState.expired, payment_status="unpaid"))
    store = Store(factory)
    assert store.to_learn(None) == ["cs_a"]
    assert store.repair_copies() == 0  # not due yet: one period after the store was made
    assert store.repair_copies(every_seconds=0) == 1
    assert store.to_learn(None) == []
    assert store.repair_copies(every_seconds=0) == 0
    with transaction(factory) as db:
        assert count_pending(db, now=NOW, grace=0).expired["monthly"] == 1
    assert copies_out_of_step(factory.kw["bind"]) == []


def test_an_order_read_after_its_link_was_learnt_needs_no_session(
    factory: sessionmaker[Session],
) -> None:
    # Before: learning a link expired the loaded order's copy, so an admin reissue that found
    # the link still open answered 500 (DetachedInstanceError) once its session was closed.
    insert_pending(factory, [Pending("cs_a", "monthly", NOW - 60, NOW + 3600)])
    with transaction(factory) as db:
        order = db.scalars(select(Order)).one()
        learn(db, {"cs_a": Fact(LinkState.open, PaymentStatus.unpaid, NOW + 60)}, HOW)
    assert copy_on(order) == (LinkState.open, NOW + 60)


def test_one_batch_of_mixed_facts_writes_links_copies_and_loaded_rows(
    factory: sessionmaker[Session],
) -> None:
    """A listing batch in one ``learn``: two links with the same new fact (one statement), one
    whose expires_at moved, one confirmed unchanged, and a replaced link whose order must keep
    its current link's copy; the rows this session had loaded get what was written."""
    sids = ["cs_a", "cs_b", "cs_c", "cs_d", "cs_e"]
    insert_pending(
        factory, [Pending(s, "jersey", NOW - 600, NOW + 3600) for s in sids], known_open=True
    )
    with transaction(factory) as db:
        order_e = db.scalars(select(Order).where(Order.stripe_checkout_session_id == "cs_e")).one()
        db.add(CheckoutLink(order_id=order_e.id, stripe_checkout_session_id="cs_e_old"))
        # a link whose expires_at was never told (Stripe's, once known, never changes)
        db.execute(
            update(CheckoutLink)
            .where(CheckoutLink.stripe_checkout_session_id == "cs_c")
            .values(expires_at=None)
        )
        # a copy that drifted from its link (as written around by an older replica)
        db.execute(
            update(Order)
            .where(Order.stripe_checkout_session_id == "cs_a")
            .values(checkout_session_expires_at=from_epoch(NOW + 5))
        )
    with transaction(factory) as db:
        loaded = {o.stripe_checkout_session_id: o for o in db.scalars(select(Order))}
        links = {link.stripe_checkout_session_id: link for link in db.scalars(select(CheckoutLink))}
        changed = learn(
            db,
            {
                "cs_a": Fact(LinkState.expired, PaymentStatus.unpaid, NOW + 3600),
                "cs_b": Fact(LinkState.expired, PaymentStatus.unpaid, NOW + 3600),
                "cs_c": Fact(LinkState.open, PaymentStatus.unpaid, NOW + 7200),
                "cs_d": Fact(LinkState.open, PaymentStatus.unpaid, NOW + 3600),
                "cs_e_old": Fact(LinkState.complete, PaymentStatus.paid),
            },
            Learnt.listing,
            confirm=True,
        )
        assert changed == ["cs_a", "cs_b", "cs_c", "cs_e_old"]
        seen = {
            sid: (o.link_state, epoch(o.checkout_session_expires_at)) for sid, o in loaded.items()
        }
        assert links["cs_d"].learnt_from == Learnt.listing  # confirmed
        assert epoch(links["cs_c"].expires_at) == NOW + 7200
    assert seen == {
        "cs_a": (LinkState.expired, NOW + 3600),  # the drifted copy takes the link's expiry
        "cs_b": (LinkState.expired, NOW + 3600),
        "cs_c": (LinkState.open, NOW + 7200),
        "cs_d": (LinkState.open, NOW + 3600),
        "cs_e": (LinkState.open, NOW + 3600),  # its current link is cs_e, not the replaced one
    }
    with transaction(factory) as db:
        stored = {
            sid: (o.link_state, epoch(o.checkout_session_expires_at))
            for sid, o in ((o.stripe_checkout_session_id, o) for o in db.scalars(select(Order)))
        }
        old = db.scalars(
            select(CheckoutLink).where(CheckoutLink.stripe_checkout_session_id == "cs_e_old")
        ).one()
        assert (old.state, old.payment_status) == (LinkState.complete, PaymentStatus.paid)
    assert stored == seen
    assert copies_out_of_step(factory.kw["bind"]) == []
