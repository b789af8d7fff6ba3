"""The poller against an in-memory Stripe and a real database (SQLite and PostgreSQL).

Each scenario here went wrong with the in-memory design the link state replaced; the comment
on each test says how.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from structlog.testing import capture_logs
from tests.fakes import FakeStripe
from tests.links import factory_for, insert_pending, pending_of

from basketball_api import poller, poller_store
from basketball_api.db import transaction
from basketball_api.link_state import from_epoch
from basketball_api.metrics import Metrics
from basketball_api.models import CheckoutLink, Learnt, LinkState, PaymentStatus
from basketball_api.poller import SessionSource, poll
from basketball_api.poller_store import Store
from basketball_api.refresher import Refresher
from basketball_api.stripe_gateway import SessionEvent, SessionSnapshot, StripeUnavailable

pytestmark = pytest.mark.anyio
DAY = 86400


@pytest.fixture
def factory(database_url: str) -> Iterator[sessionmaker[Session]]:
    f = factory_for(database_url)
    yield f
    bind = f.kw["bind"]
    bind.dispose()


def refresher_for(
    factory: sessionmaker[Session],
    stripe: SessionSource,
    *,
    deadline_seconds: float = 120.0,
    interval_seconds: float = 300.0,
) -> Refresher:
    return Refresher(
        store=Store(factory),
        source=stripe,
        metrics=Metrics(),
        grace_seconds=0,
        deadline_seconds=deadline_seconds,
        interval_seconds=interval_seconds,
    )


def seed(
    factory: sessionmaker[Session], stripe: FakeStripe, n: int, *, known_open: bool = False
) -> list[SessionSnapshot]:
    snaps = [stripe.add(f"cs_{i}", created=int(stripe.now) - 100 - i) for i in range(n)]
    insert_pending(
        factory,
        [pending_of(s, ("tournament", "monthly", "jersey")[i % 3]) for i, s in enumerate(snaps)],
        known_open=known_open,
    )
    return snaps


def link(factory: sessionmaker[Session], session_id: str) -> CheckoutLink:
    with factory() as db:
        row = db.scalars(
            select(CheckoutLink).where(CheckoutLink.stripe_checkout_session_id == session_id)
        ).one()
        db.expunge(row)
        return row


async def test_first_start_lists_unknown_links_then_a_warm_poll_is_one_call(
    factory: sessionmaker[Session],
) -> None:
    stripe = FakeStripe()
    seed(factory, stripe, 250)
    stripe.sessions["cs_3"] = stripe.sessions["cs_3"].__class__(
        "cs_3",
        "expired",
        "unpaid",
        stripe.sessions["cs_3"].created,
        stripe.sessions["cs_3"].expires_at,
    )
    refresher = refresher_for(factory, stripe)
    assert await refresher.run_cycle()
    assert stripe.listings >= 3
    assert refresher.counts is not None
    assert refresher.counts.expired["tournament"] == 1
    assert link(factory, "cs_3").learnt_from == Learnt.listing

    before = stripe.calls
    assert await refresher.run_cycle()
    assert stripe.calls - before == 1  # the events feed, nothing else


async def test_an_early_expiry_whose_webhook_is_lost_counts_within_one_refresh(
    factory: sessionmaker[Session],
) -> None:
    # Before: counted only once its own expires_at passed (up to a day later).
    stripe = FakeStripe()
    seed(factory, stripe, 30, known_open=True)
    refresher = refresher_for(factory, stripe)
    assert await refresher.run_cycle()
    for sid in ("cs_0", "cs_3", "cs_6"):
        stripe.expire(sid)  # by hand in the dashboard; no webhook arrives
    stripe.now += 60
    assert await refresher.run_cycle()
    assert refresher.counts is not None
    assert refresher.counts.expired == {"tournament": 3, "monthly": 0, "jersey": 0}


async def test_an_event_visible_late_is_read_in_the_overlap(
    factory: sessionmaker[Session],
) -> None:
    stripe = FakeStripe()
    seed(factory, stripe, 3, known_open=True)
    refresher = refresher_for(factory, stripe)
    assert await refresher.run_cycle()
    stripe.now += 30
    stripe.complete("cs_1", late_by=5)  # created now, listed by Stripe 5 s later
    stripe.now += 1
    assert await refresher.run_cycle()  # does not see it yet
    stripe.now += 10
    assert await refresher.run_cycle()
    assert refresher.counts is not None
    assert refresher.counts.completed["monthly"] == 1


async def test_a_retried_cold_sync_sees_a_payment_made_in_between(
    factory: sessionmaker[Session],
) -> None:
    # Before: the failed attempt's OPEN facts were kept under a new cursor, so a payment made
    # between the two attempts, its webhook lost, was never seen: open, then expired forever.
    stripe = FakeStripe()
    seed(factory, stripe, 300)
    stripe.fail_with = StripeUnavailable(
        "Stripe failed on GET /v1/checkout/sessions", "server_error"
    )
    refresher = refresher_for(factory, stripe)
    assert not await refresher.run_cycle()
    stripe.fail_with = None
    stripe.now += 60
    stripe.complete("cs_2")  # paid, webhook lost
    assert await refresher.run_cycle()
    stripe.now += 2 * DAY  # long after every link's expires_at
    assert await refresher.run_cycle()
    assert refresher.counts is not None
    assert refresher.counts.completed["jersey"] == 1
    assert sum(refresher.counts.expired.values()) == 299


async def test_a_cursor_older_than_the_events_window_relists_only_unresolved_links(
    factory: sessionmaker[Session],
) -> None:
    # Before: the cursor's age was judged by the last sync, so a purged cursor event cost a
    # failed refresh and then a full relisting.
    stripe = FakeStripe()
    snaps = seed(factory, stripe, 40, known_open=True)
    refresher = refresher_for(factory, stripe)
    assert await refresher.run_cycle()
    stripe.expire("cs_0")
    assert await refresher.run_cycle()  # cs_0 learnt expired: terminal, never listed again
    store = Store(factory)
    await asyncio.to_thread(store.finish, position=stripe.now, newest=None, stripe_clock=stripe.now)
    stripe.now += 31 * DAY
    stripe.complete("cs_1")  # an event the poller will read
    for s in snaps[2:]:
        stripe.expire(s.id)
    stripe.events.clear()  # ...and a gap: Stripe has purged everything before
    stripe.complete("cs_1")
    listed: list[list[str]] = []
    left: list[list[str]] = []
    relisting = store._to_learn

    def spy(since: float | None) -> Any:
        with transaction(factory) as db:
            listed.append([sid for sid, _ in db.execute(relisting(since)) if sid])
        return relisting(since)

    original_to_learn = store.to_learn

    def spy_left(since: float | None) -> list[str]:
        left.append(original_to_learn(since))
        return left[-1]

    store._to_learn = spy  # type: ignore[method-assign,assignment]
    store.to_learn = spy_left  # type: ignore[method-assign,assignment]
    refresher.store = store
    with capture_logs() as logs:
        assert await refresher.run_cycle()
    assert "events_cursor_too_old" in [e["event"] for e in logs]
    assert set(listed[0]) == {s.id for s in snaps[1:]}  # cs_0 is terminal: not listed again
    assert left == [[]]  # every link the listing showed was confirmed: nothing to retrieve
    assert refresher.counts is not None
    assert sum(refresher.counts.expired.values()) == 39
    assert sum(refresher.counts.completed.values()) == 1


async def test_links_stripe_does_not_know_are_missing_counted_and_kept_across_cut_offs(
    factory: sessionmaker[Session],
) -> None:
    # Before: they vanished from every gauge, and at 3,000 a refresh never finished: results
    # were kept only when all retrieves had returned.
    stripe = FakeStripe()
    seed(factory, stripe, 60)
    for i in range(0, 60, 2):
        stripe.forget(f"cs_{i}")
    slow = SlowRetrieves(stripe)
    refresher = refresher_for(factory, slow, deadline_seconds=1.0)
    with capture_logs() as first:
        assert not await refresher.run_cycle()  # cut by its deadline part-way
    with factory() as db:
        learnt = db.scalar(
            select(CheckoutLink.id).where(CheckoutLink.state == LinkState.missing).limit(1)
        )
    assert learnt is not None  # what it learnt was written as it went
    refresher.deadline = 30
    with capture_logs() as logs:
        assert await refresher.run_cycle()
    assert refresher.counts is not None
    assert sum(refresher.counts.missing.values()) == 30
    # Each link retrieved once (one more if the cut fell mid-write): the second cycle continued.
    assert 30 <= slow.retrieved <= 31
    assert "links_missing_at_stripe" in [e["event"] for e in first + logs]


class SlowRetrieves:
    """A Stripe whose retrieves take 100 ms each, one at a time."""

    def __init__(self, inner: FakeStripe) -> None:
        self.inner = inner
        self.retrieved = 0
        self._one = asyncio.Lock()

    @property
    def calls(self) -> int:
        return self.inner.calls

    def stripe_now(self) -> float:
        return self.inner.stripe_now()

    def clock_at_least(self, moment: float) -> None:
        self.inner.clock_at_least(moment)

    def event_pages(
        self, *, created_gte: int, types: Sequence[str]
    ) -> AsyncIterator[list[SessionEvent]]:
        return self.inner.event_pages(created_gte=created_gte, types=types)

    def session_pages(
        self, *, created_gte: int, created_lte: int
    ) -> AsyncIterator[list[SessionSnapshot]]:
        return self.inner.session_pages(created_gte=created_gte, created_lte=created_lte)

    async def retrieve_session(self, session_id: str) -> SessionSnapshot:
        async with self._one:
            await asyncio.sleep(0.1)
            self.retrieved += 1
            return await self.inner.retrieve_session(session_id)


async def test_a_failed_delayed_payment_has_its_own_gauge(factory: sessionmaker[Session]) -> None:
    stripe = FakeStripe()
    seed(factory, stripe, 6, known_open=True)
    refresher = refresher_for(factory, stripe)
    assert await refresher.run_cycle()
    stripe.complete("cs_1", payment_status="unpaid")  # a bank debit, still processing
    stripe.complete("cs_4", payment_status="unpaid")
    stripe.settle("cs_1", succeeded=False)
    stripe.settle("cs_4", succeeded=True)
    assert await refresher.run_cycle()
    assert refresher.counts is not None
    assert refresher.counts.failed["monthly"] == 1
    assert refresher.counts.completed["monthly"] == 1
    assert link(factory, "cs_1").payment_status == PaymentStatus.failed


async def test_one_refresh_at_a_time_and_refresh_now_waits_for_the_loop(
    factory: sessionmaker[Session],
) -> None:
    # Before: POST /admin/refresh ran a second cycle beside the loop: two cold syncs, calls
    # doubled.
    stripe = FakeStripe()
    seed(factory, stripe, 250)
    refresher = refresher_for(factory, stripe, interval_seconds=3600)
    refresher.start()
    try:
        results = await asyncio.gather(*(refresher.refresh_now() for _ in range(3)))
    finally:
        await refresher.stop()
    assert all(results)
    assert stripe.listings == 4  # one cold listing (two windows of two pages), not three


async def test_a_failed_listing_window_cancels_its_siblings(
    factory: sessionmaker[Session],
) -> None:
    # Before: the windows of a failed gather kept calling Stripe and writing after the cycle
    # had failed.
    stripe = FakeStripe()
    seed(factory, stripe, 2000)
    calls: list[int] = []

    async def pages(*, created_gte: int, created_lte: int) -> AsyncIterator[list[SessionSnapshot]]:
        calls.append(created_gte)
        if len(calls) == 1:
            raise StripeUnavailable("boom", "server_error")
        await asyncio.sleep(0.2)
        yield []

    stripe.session_pages = pages  # type: ignore[method-assign]
    with pytest.raises(StripeUnavailable):
        await poll(Store(factory), stripe)
    made = len(calls)
    await asyncio.sleep(0.4)
    assert len(calls) == made <= poller.COLD_WINDOWS


async def test_stripe_clock_never_moves_backwards(factory: sessionmaker[Session]) -> None:
    # Before: a Date header gone back more than the grace made stranded orders drop out.
    stripe = FakeStripe()
    seed(factory, stripe, 6, known_open=True)
    refresher = refresher_for(factory, stripe)
    stripe.now += 2 * DAY
    assert await refresher.run_cycle()
    assert refresher.counts is not None
    assert sum(refresher.counts.expired.values()) == 6
    stripe.now -= 3600  # a proxy's skewed Date header
    stripe.clock_floor = 0
    assert await refresher.run_cycle()
    assert sum(refresher.counts.expired.values()) == 6


def test_two_polls_creating_the_cursor_row_at_once_both_succeed(
    factory: sessionmaker[Session],
) -> None:
    """A poll cut off by its deadline leaves its worker thread running (a thread cannot be
    cancelled); blocked on the database, it creates the cursor row just as the next poll does.
    Observed: the next poll failed with a UNIQUE violation on ``poller_cursor.id``."""
    store = Store(factory)
    started, go = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def cut_off_poll() -> None:
        try:
            with transaction(factory) as db:
                row = poller_store._row(db)
                started.set()
                go.wait(10)
                row.stripe_clock_at = from_epoch(1_000)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    def next_poll() -> None:
        try:
            store.finish(position=2_000, newest=None, stripe_clock=2_000)
        except BaseException as exc:
            errors.append(exc)

    first = threading.Thread(target=cut_off_poll)
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=next_poll)
    second.start()
    time.sleep(0.3)  # the second poll is now waiting on the first one's row (or lock)
    go.set()
    first.join(20)
    second.join(20)
    assert errors == []
    assert store.cursor().stripe_clock_at == 2_000
