"""Stripe calls do not grow with pending orders: call counts through the real sandbox at 2,000.

Counts, not timings (timings are reported by ``make bench``): a cold refresh lists sessions a
page of 100 at a time (at most 1.1 x ceil(N/100) + 10 calls), a warm one reads the events feed
(at most 2), a webhook moves the gauge with no call at all, and a restarted process, its memory
empty, learns everything again cold. Sessions created after a sync are learnt with no call,
and never wrongly (checked against an in-memory Stripe at the end).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import insert, select
from tests.fakes import FakeStripe
from tests.stack import ADMIN_TOKEN, Stack, running_stack

from basketball_api.app import create_app
from basketball_api.db import make_engine, make_session_factory, transaction
from basketball_api.metrics import CATEGORIES, Metrics
from basketball_api.models import Order, Product
from basketball_api.orders import load_pending_rows
from basketball_api.refresher import Refresher
from basketball_api.session_sync import PendingRow
from basketball_api.stripe_gateway import SessionSnapshot, StripeUnavailable
from stripe_sandbox.server import BackgroundServer

N = 2_000
HOUR = 3600


def cold_budget(n: int) -> float:
    return 1.1 * math.ceil(n / 100) + 10


@dataclass
class Seeded:
    categories: dict[str, str]  # session id -> category of its pending order
    times: dict[str, tuple[int, int]]  # session id -> (created, expires_at)
    soon: list[str]  # open sessions that expire within 1 h


def seed(stack: Stack, database_url: str, n: int = N) -> Seeded:
    """n sessions seeded in bulk (30 % expired, 1 % expiring within the hour, the rest open
    for 6 h or more) and one pending order per session, inserted straight into the database."""
    control = stack.sandbox
    expired = round(n * 0.3)
    soon = max(1, n // 100)
    batches = [
        control.seed(expired, created_spread_seconds=18 * HOUR, statuses=["expired"]),
        control.seed(soon, created_spread_seconds=600, expires_in_seconds=HOUR),
        control.seed(n - expired - soon, created_spread_seconds=18 * HOUR),
    ]
    sessions = list(itertools.chain.from_iterable(batches))
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            products = {
                c.value: pid for pid, c in conn.execute(select(Product.id, Product.category))
            }
            rows = []
            for i, s in enumerate(sessions):
                category = CATEGORIES[i % len(CATEGORIES)]
                rows.append(
                    {
                        "product_id": products[category],
                        "status": "pending",
                        "quantity": 1,
                        "amount": 1000,
                        "currency": "usd",
                        "parent_email": f"parent{i}@example.org",
                        "player_name": f"Player {i}",
                        "stripe_checkout_session_id": s["id"],
                        "checkout_session_created_at": datetime.fromtimestamp(s["created"], UTC),
                        "checkout_session_expires_at": datetime.fromtimestamp(s["expires_at"], UTC),
                    }
                )
            conn.execute(insert(Order), rows)
    finally:
        engine.dispose()
    return Seeded(
        {s["id"]: CATEGORIES[i % len(CATEGORIES)] for i, s in enumerate(sessions)},
        {s["id"]: (int(s["created"]), int(s["expires_at"])) for s in sessions},
        [s["id"] for s in batches[1]],
    )


def truth(stack: Stack, seeded: Seeded) -> dict[str, int]:
    """Pending orders per category whose session the sandbox says is expired (every seeded
    order is pending)."""
    counts = dict.fromkeys(CATEGORIES, 0)
    for session_id in stack.sandbox.sessions(status="expired"):
        if session_id in seeded.categories:
            counts[seeded.categories[session_id]] += 1
    return counts


def calls(stack: Stack) -> int:
    return sum(v for k, v in stack.sandbox.request_counts().items() if " /v1/" in k)


@pytest.fixture
def stack(database_url: str) -> Iterator[Stack]:
    with running_stack(database_url) as s:
        yield s


def test_cold_then_warm_refresh_costs_pages_then_one_call(stack: Stack, database_url: str) -> None:
    seeded = seed(stack, database_url)
    stack.sandbox.configure_webhook(None, None)  # the refresher alone must find everything

    stack.sandbox.reset_request_counts()
    assert stack.refresh() == truth(stack, seeded)
    cold = calls(stack)
    assert cold <= cold_budget(N), stack.sandbox.request_counts()

    # Two hours on: the 1 % expire at Stripe, and nothing tells the service.
    assert stack.sandbox.advance_clock(2 * HOUR) == len(seeded.soon)
    stack.sandbox.reset_request_counts()
    expected = truth(stack, seeded)
    assert stack.refresh() == expected
    assert calls(stack) <= 2, stack.sandbox.request_counts()
    assert sum(expected.values()) == round(N * 0.3) + len(seeded.soon)


def test_the_pending_query_returns_each_sessions_own_times(stack: Stack, database_url: str) -> None:
    seeded = seed(stack, database_url, 300)
    engine = make_engine(database_url)
    try:
        with transaction(make_session_factory(engine)) as db:
            rows = load_pending_rows(db)
    finally:
        engine.dispose()
    assert len(rows) == 300
    for row in rows:
        assert row.category == seeded.categories[row.session_id]
        assert (row.session_created_at, row.session_expires_at) == seeded.times[row.session_id]


def test_a_webhook_moves_the_gauge_with_no_call(stack: Stack, database_url: str) -> None:
    seeded = seed(stack, database_url)
    assert stack.refresh() == truth(stack, seeded)
    before = stack.gauge()
    open_session = next(s for s in stack.sandbox.sessions(status="open") if s in seeded.categories)
    stack.sandbox.reset_request_counts()

    stack.sandbox.expire(open_session)  # by hand, as in the dashboard (an uncounted call)
    assert stack.sandbox.wait_for_webhooks(timeout=10)

    after = stack.gauge()
    category = seeded.categories[open_session]
    assert after[category] == before[category] + 1
    assert calls(stack) == 0


def test_new_orders_after_a_sync_are_learnt_with_no_call(stack: Stack, database_url: str) -> None:
    seeded = seed(stack, database_url)
    stack.refresh()
    stack.sandbox.advance_clock(5)  # created after the feed position noted by that refresh
    new = [stack.order(CATEGORIES[i % 3]) for i in range(30)]

    stack.sandbox.configure_webhook(None, None)
    stack.sandbox.reset_request_counts()
    assert stack.refresh() == truth(stack, seeded)
    counts = stack.sandbox.request_counts()
    assert counts == {"GET /v1/events": 1}, counts
    opened = stack.gauge("basketball_api_pending_orders_with_open_session")
    assert sum(opened.values()) == N - round(N * 0.3) + len(new)


def test_a_restarted_process_learns_everything_again_cold(stack: Stack, database_url: str) -> None:
    seeded = seed(stack, database_url)
    stack.refresh()
    stack.sandbox.advance_clock(2 * HOUR)
    expected = truth(stack, seeded)
    assert stack.refresh() == expected

    # A second process (a new app, its knowledge empty) on the same database and Stripe.
    settings = stack.app.state.services.settings
    with BackgroundServer(create_app(settings, start_refresher=False)) as server:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as api:
            stack.sandbox.reset_request_counts()
            body = api.post("/admin/refresh").json()
    assert body["succeeded"]
    assert body["expired"] == expected
    assert calls(stack) <= cold_budget(N), stack.sandbox.request_counts()
    assert stack.sandbox.request_counts().get("GET /v1/checkout/sessions", 0) >= N // 100


# -- sessions created after a sync: learnt with no call, never wrongly ---------------------------


class RetrieveFailsOnce(FakeStripe):
    """A Stripe whose first retrieve fails (after the cold sync noted the events feed)."""

    failed = False

    async def retrieve_session(self, session_id: str) -> SessionSnapshot:
        if not self.failed:
            self.failed = True
            self.calls += 1
            raise StripeUnavailable(
                "Stripe failed on GET /v1/checkout/sessions/{id}", "server_error"
            )
        return await super().retrieve_session(session_id)


def fake_rows(stripe: FakeStripe, count: int) -> list[PendingRow]:
    rows = []
    for i in range(count):
        snap = stripe.add(f"cs_{i}", created=int(stripe.now) - 100 - i)
        rows.append(PendingRow(snap.id, CATEGORIES[i % 3], snap.created, snap.expires_at))
    return rows


@pytest.mark.anyio
async def test_a_session_created_after_a_warm_sync_is_learnt_without_a_call() -> None:
    stripe = FakeStripe()
    rows = fake_rows(stripe, 50)
    refresher = Refresher(
        load_pending=lambda: rows, source=stripe, metrics=Metrics(), grace_seconds=0
    )
    assert await refresher.run_cycle()
    stripe.now += 60
    paid = stripe.add("cs_paid")  # created after that sync, then paid with its webhook lost
    stripe.complete("cs_paid")
    fresh = stripe.add("cs_fresh")
    rows += [PendingRow(s.id, "jersey", s.created, s.expires_at) for s in (paid, fresh)]
    before = stripe.calls

    assert await refresher.run_cycle()

    assert stripe.calls - before == 1  # the events feed only
    counts = refresher.counts
    assert counts is not None
    assert counts.completed["jersey"] == 1  # seen in the feed, not taken for open
    assert sum(counts.open.values()) == 51


@pytest.mark.anyio
async def test_a_cold_sync_retried_after_failing_asks_again_instead_of_guessing() -> None:
    stripe = RetrieveFailsOnce()
    rows = fake_rows(stripe, 5)  # few: retrieved one by one
    refresher = Refresher(
        load_pending=lambda: rows, source=stripe, metrics=Metrics(), grace_seconds=0
    )
    assert not await refresher.run_cycle()  # noted the feed, then a retrieve failed

    stripe.now += 60
    paid = stripe.add("cs_paid")  # created and paid before the retry notes the feed again
    stripe.complete("cs_paid")
    rows.append(PendingRow(paid.id, "monthly", paid.created, paid.expires_at))

    assert await refresher.run_cycle()
    counts = refresher.counts
    assert counts is not None
    assert counts.completed["monthly"] == 1
