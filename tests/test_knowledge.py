"""Session knowledge: facts only move forward, timeouts need no call, bulk learning."""

from __future__ import annotations

import pytest
from tests.fakes import FakeStripe

from basketball_api.knowledge import SessionKnowledge, SessionState, may_replace, state_from
from basketball_api.metrics import Metrics
from basketball_api.refresher import Refresher
from basketball_api.session_sync import PendingRow

pytestmark = pytest.mark.anyio


def test_terminal_states_are_never_undone_by_late_snapshots() -> None:
    k = SessionKnowledge()
    k.track([("cs_1", "jersey")])
    assert k.learn("cs_1", SessionState.EXPIRED, 100)
    assert not k.learn("cs_1", SessionState.OPEN, 100)  # an older snapshot arriving late
    assert k.state("cs_1", now=0) == SessionState.EXPIRED
    assert may_replace(SessionState.PROCESSING, SessionState.PAID)
    assert not may_replace(SessionState.PAID, SessionState.EXPIRED)


def test_states_from_snapshots_and_events() -> None:
    assert state_from("complete", "paid") == SessionState.PAID
    assert state_from("complete", "unpaid") == SessionState.PROCESSING
    assert state_from("complete", "unpaid", "checkout.session.async_payment_succeeded") == (
        SessionState.PAID
    )
    assert state_from("expired", "unpaid") == SessionState.EXPIRED


def test_an_open_session_counts_as_expired_once_its_expiry_has_passed() -> None:
    k = SessionKnowledge()
    k.track([("cs_1", "monthly")])
    k.learn("cs_1", SessionState.OPEN, 1_000)
    assert k.state("cs_1", now=999, grace=0) == SessionState.OPEN
    assert k.state("cs_1", now=1_000, grace=0) == SessionState.EXPIRED
    assert k.state("cs_1", now=1_030, grace=60) == SessionState.OPEN
    counts = k.counts(now=2_000)
    assert counts.expired["monthly"] == 1


def test_tracking_drops_orders_that_are_no_longer_pending() -> None:
    k = SessionKnowledge()
    assert k.track([("cs_1", "jersey"), ("cs_2", "jersey")]) == ["cs_1", "cs_2"]
    k.learn("cs_1", SessionState.OPEN, 10)
    assert k.track([("cs_1", "tournament")]) == []
    assert len(k) == 1
    assert k.category("cs_1") == "tournament"


async def test_warm_refresh_costs_one_call_however_many_orders_are_pending() -> None:
    stripe = FakeStripe()
    rows = []
    for i in range(500):
        sid = f"cs_{i}"
        stripe.add(sid, "expired" if i % 3 == 0 else "open", created=int(stripe.now) - i)
        rows.append(
            PendingRow(sid, ("tournament", "monthly", "jersey")[i % 3], int(stripe.now) - i)
        )
    refresher = Refresher(
        load_pending=lambda: rows, source=stripe, metrics=Metrics(), grace_seconds=0
    )
    assert await refresher.run_cycle()
    cold_calls = stripe.calls
    assert cold_calls <= 10  # cursor + a few listing windows, no per-order retrieve

    stripe.complete("cs_1")
    stripe.now += 86400 + 1  # every open session times out
    before = stripe.calls
    assert await refresher.run_cycle()

    assert stripe.calls - before == 1  # only the events feed
    counts = refresher.counts
    assert counts is not None
    assert sum(counts.expired.values()) == 499  # all but the one paid
    assert counts.completed["monthly"] == 1
