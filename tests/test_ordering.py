"""Ordering holds up when Stripe is slow or fails, and when the database is busy: no bare 500,
no connection held across a Stripe call, no Checkout Session left payable for an order that was
not kept, and liveness answers throughout. Abuse limits answer 429 with ``Retry-After``."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError
from tests.stack import Stack, running_stack

from basketball_api import ordering
from basketball_api.db import make_engine
from basketball_api.models import CheckoutLink, Order


def count_rows(database_url: str, model: Any) -> int:
    engine = make_engine(database_url)
    with engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(model)).scalar_one()
    engine.dispose()
    return int(n)


def kept_session_ids(database_url: str) -> set[str]:
    engine = make_engine(database_url)
    with engine.connect() as conn:
        ids = set(conn.execute(select(CheckoutLink.stripe_checkout_session_id)).scalars())
    engine.dispose()
    return ids


def orphans(stack: Stack, database_url: str) -> set[str]:
    """Sessions open at Stripe that no saved order has: payable links to nothing."""
    return set(stack.sandbox.sessions(status="open")) - kept_session_ids(database_url)


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout} s")
        time.sleep(0.2)


def failures(stack: Stack) -> dict[str, float]:
    out = {}
    for line in stack.api.get("/metrics").text.splitlines():
        if line.startswith("basketball_api_order_creation_failures_total{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('reason="')[1].split('"')[0]] = float(value)
    return out


BODY = {"product_id": 1, "parent_email": "p@example.org", "player_name": "Quinn"}


class HealthProbe(threading.Thread):
    """``GET /health`` every 100 ms on its own connection; records each answer's time.

    Its client gives up after 5 s, as a liveness probe would: an answer stuck behind the
    worker pool shows as a failure, not as a slow number. How fast /health answers is a
    figure of ``make bench-ordering``, not an assertion here."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.times: list[float] = []
        self.statuses: list[int] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=5) as http:
            while not self.halt.is_set():
                started = time.monotonic()
                try:
                    status = http.get("/health").status_code
                except httpx.TimeoutException:
                    status = 0  # no answer within the probe's patience
                self.statuses.append(status)
                self.times.append(time.monotonic() - started)
                self.halt.wait(0.1)


async def order_at_once(url: str, n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n + 5)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        return await asyncio.gather(*(http.post("/orders", json=BODY) for _ in range(n)))


def test_sixty_orders_while_stripe_takes_15_seconds(database_url: str) -> None:
    """Sixty parents order at once while every Stripe call takes 15 s."""
    with running_stack(
        database_url,
        stripe_timeout_seconds=30,  # long enough to hear a 15 s answer
        stripe_max_network_retries=0,
        order_wait_seconds=20,
        order_rate_limit="1000/minute",
    ) as stack:
        stack.sandbox.set_latency(15)
        probe = HealthProbe(stack.api_url)
        probe.start()
        try:
            answers = asyncio.run(order_at_once(stack.api_url, 60))
            # Sessions Stripe made for orders given up are expired once it answers (15 s more).
            wait_for(lambda: ordering.cleanups_in_flight() == 0, 90, "clean-ups done")
        finally:
            probe.halt.set()
            probe.join()
        statuses = [r.status_code for r in answers]
        assert set(statuses) <= {201, 503}, statuses
        created, refused = statuses.count(201), statuses.count(503)
        assert created >= 1
        assert refused >= 1
        for r in answers:
            if r.status_code == 503:
                assert int(r.headers["retry-after"]) > 0
                assert r.json()["code"] == "stripe"
        assert count_rows(database_url, Order) == created  # nothing kept for a 503
        stack.sandbox.set_latency(0)
        assert failures(stack)["timeout"] == refused
        assert len(stack.sandbox.sessions()) > created  # some were made for given-up orders...
        assert orphans(stack, database_url) == set()  # ...and none of them is payable
        print(
            f"201: {created}, 503: {refused}, made at Stripe: {len(stack.sandbox.sessions())},"
            f" /health slowest {max(probe.times):.3f} s of {len(probe.times)}"
        )
        assert len(probe.times) > 100
        assert set(probe.statuses) == {200}, sorted(probe.times)[-5:]


def test_a_lost_answer_is_asked_again_and_its_session_expired(database_url: str) -> None:
    """Stripe makes the session but the answer never arrives (our timeout is shorter)."""
    with running_stack(
        database_url, stripe_timeout_seconds=1, stripe_max_network_retries=0
    ) as stack:
        stack.sandbox.inject_fault("POST /v1/checkout/sessions", "latency", seconds=3, count=1)
        r = stack.api.post("/orders", json=BODY)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"]
        assert count_rows(database_url, Order) == 0
        assert failures(stack)["stripe_unavailable"] == 1
        wait_for(lambda: len(stack.sandbox.sessions()) >= 1, 10, "the session made")
        wait_for(lambda: ordering.cleanups_in_flight() == 0, 20, "the lost session expired")
        assert set(stack.sandbox.sessions(status="expired")) == set(stack.sandbox.sessions())
        assert stack.api.post("/orders", json=BODY).status_code == 201  # and ordering goes on


def test_a_database_failure_after_stripe_expires_the_new_session(database_url: str) -> None:
    with running_stack(database_url) as stack:
        engine = stack.app.state.services.sessions.kw["bind"]

        def fail_insert(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if statement.startswith("INSERT INTO checkout_links"):
                raise OperationalError(statement, {}, Exception("disk I/O error"))

        event.listen(engine, "before_cursor_execute", fail_insert)
        try:
            r = httpx.post(f"{stack.api_url}/orders", json=BODY, timeout=30)
        finally:
            event.remove(engine, "before_cursor_execute", fail_insert)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"]
        assert failures(stack)["database"] == 1
        [made] = stack.sandbox.sessions()
        wait_for(lambda: ordering.cleanups_in_flight() == 0, 10, "the session expired")
        assert stack.sandbox.sessions()[made]["status"] == "expired"
        wait_for(lambda: count_rows(database_url, Order) == 0, 10, "the reservation discarded")


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    from tests.standard_catalogue import migrate_with_catalogue

    url = f"sqlite:///{tmp_path / 'locked.db'}"
    migrate_with_catalogue(url)
    return url


def test_a_sqlite_write_lock_is_a_503_not_a_bare_500(sqlite_url: str) -> None:
    with running_stack(sqlite_url) as stack:
        locker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")  # another writer holds the lock past busy_timeout
        try:
            r = httpx.post(f"{stack.api_url}/orders", json=BODY, timeout=60)
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert r.status_code == 503, r.text
        assert (r.json()["code"], r.headers["retry-after"]) == ("database", "5")
        assert failures(stack)["database"] == 1
        assert stack.sandbox.sessions() == {}  # Stripe was never asked
        assert stack.api.post("/orders", json=BODY).status_code == 201


def test_order_creation_is_rate_limited_per_client(database_url: str) -> None:
    with running_stack(database_url, order_rate_limit="3/minute") as stack:
        answers = [stack.api.post("/orders", json=BODY) for _ in range(5)]
        assert [r.status_code for r in answers] == [201, 201, 201, 429, 429]
        refused = answers[3]
        assert 0 < int(refused.headers["retry-after"]) <= 60
        assert refused.json()["code"] == "rate_limited"
        assert len(stack.sandbox.sessions()) == 3  # refused orders cost no Stripe call
        assert count_rows(database_url, Order) == 3


def test_a_refused_order_keeps_nothing_and_counts_why(database_url: str) -> None:
    with running_stack(database_url, stripe_max_network_retries=0) as stack:
        stack.sandbox.inject_fault("POST /v1/checkout/sessions", "unauthorized")
        r = stack.api.post("/orders", json=BODY)
        assert r.status_code == 502, r.text  # Stripe refused: retrying will not help
        assert "retry-after" not in r.headers
        stack.sandbox.inject_fault("POST /v1/checkout/sessions", "unavailable")
        r = stack.api.post("/orders", json=BODY)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"]
        assert count_rows(database_url, Order) == 0
        assert failures(stack) == {
            "stripe_rejected": 1,
            "stripe_unavailable": 1,
            "timeout": 0,
            "database": 0,
        }
        # A 5xx may hide a session made all the same: it is asked for again and expired.
        wait_for(lambda: ordering.cleanups_in_flight() == 0, 20, "the clean-up done")
        assert orphans(stack, database_url) == set()
