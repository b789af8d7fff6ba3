"""Stripe calls do not grow with pending orders: call counts through the real sandbox at 2,000.

Counts, not timings (timings are reported by ``make bench``): the first refresh lists links
whose state is not known yet a page of 100 at a time (at most 1.1 x ceil(N/100) + 10 calls), a
warm one reads the events feed (at most 2), a webhook moves the gauge with no call at all, a
restarted process or a new replica makes no listing, and new orders are learnt with no call.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from tests.links import Pending, factory_for, insert_pending
from tests.stack import ADMIN_TOKEN, Stack, running_stack

from basketball_api.app import create_app
from basketball_api.metrics import CATEGORIES
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
    factory = factory_for(database_url)
    try:
        insert_pending(
            factory,
            [
                Pending(s["id"], CATEGORIES[i % len(CATEGORIES)], s["created"], s["expires_at"])
                for i, s in enumerate(sessions)
            ],
        )
    finally:
        factory.kw["bind"].dispose()
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


def test_a_webhook_moves_the_gauge_with_no_call(stack: Stack, database_url: str) -> None:
    seeded = seed(stack, database_url)
    assert stack.refresh() == truth(stack, seeded)
    before = stack.gauge()
    open_session = next(s for s in stack.sandbox.sessions(status="open") if s in seeded.categories)
    stack.sandbox.reset_request_counts()

    stack.sandbox.expire(open_session)  # by hand, as in the dashboard (an uncounted call)
    assert stack.sandbox.wait_for_webhooks(timeout=10)

    category = seeded.categories[open_session]
    after = stack.wait_gauge(lambda g: g[category] == before[category] + 1)
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


def test_a_restarted_process_or_a_new_replica_makes_no_listing(
    stack: Stack, database_url: str
) -> None:
    # Before: every restart and every replica started cold and listed every session again.
    seeded = seed(stack, database_url)
    stack.refresh()
    stack.sandbox.advance_clock(2 * HOUR)
    expected = truth(stack, seeded)
    assert stack.refresh() == expected

    # A second process on the same database and Stripe.
    settings = stack.app.state.services.settings
    with BackgroundServer(create_app(settings, start_refresher=False)) as server:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as api:
            stack.sandbox.reset_request_counts()
            body = api.post("/admin/refresh").json()
    assert body["succeeded"]
    assert body["expired"] == expected
    counts = stack.sandbox.request_counts()
    assert counts.get("GET /v1/checkout/sessions", 0) == 0, counts
    assert calls(stack) <= 1, counts
