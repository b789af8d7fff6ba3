"""Webhooks are applied exactly once: duplicates, races between replicas, a replica killed
mid-request, and events arriving in the wrong order.

The two-process runs are ``bench.exactly_once`` scaled down (``make reliability`` runs 10,000
deliveries); the ordering cases run in-process on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from bench.exactly_once import run_mode
from fastapi.testclient import TestClient
from pydantic import SecretStr
from tests.fakes import (
    SessionState,
    app_sessions,
    deliver_signed,
    own_links,
    session_event,
    sign,
)
from tests.procs import temporary_postgres

from basketball_api.app import create_app
from basketball_api.settings import Settings
from stripe_sandbox.server import BackgroundServer

SECRET = "whsec_exactly_once_tests"
TOKEN = "exactly-once-admin-token-0123456789"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}
COMPLETED = "checkout.session.completed"
EXPIRED = "checkout.session.expired"
UNPAID: SessionState = {"payment_status": "unpaid"}


# -- two API processes on one PostgreSQL --------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["steady", "kill"])
def test_two_replicas_apply_every_event_once(mode: str, tmp_path: Path) -> None:
    with temporary_postgres("basketball_exactly_once") as url:
        outcome = run_mode(mode, url, tmp_path, deliveries=600, concurrency=16)
    assert outcome.ok, outcome.problems
    assert outcome.recorded_ids == outcome.distinct
    assert outcome.missing_ids == 0
    assert outcome.wrong_orders == 0
    if mode == "kill":
        assert outcome.failed_first_pass > 0  # the kill did cut requests off
        assert outcome.redelivered == outcome.failed_first_pass


# -- in-process: ordering and concurrent duplicates, on both databases ---------------------------


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    settings = Settings(
        database_url=database_url,
        stripe_webhook_secret=SecretStr(SECRET),
        stripe_api_base="http://127.0.0.1:9",  # no Stripe needed here
        admin_token=SecretStr(TOKEN),
    )
    with TestClient(create_app(settings, start_refresher=False), headers=OPERATOR) as c:
        yield c


def new_order(client: TestClient) -> int:
    body = {
        "product_id": 1,
        "parent_email": "o@example.org",
        "player_name": "Order",
        "create_checkout": False,
    }
    r = client.post("/orders", json=body)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def deliver(client: TestClient, event: dict[str, object]) -> str:
    return deliver_signed(client, dict(event), SECRET)


@pytest.mark.parametrize(
    ("events", "final"),
    [
        # one session: Stripe never sends both, but a test harness or a replay might
        pytest.param(
            [(COMPLETED, "a", {}), (EXPIRED, "a", {"status": "expired", **UNPAID})],
            "paid",
            id="expired-after-completed-same-session",
        ),
        pytest.param(
            [(EXPIRED, "a", {"status": "expired", **UNPAID}), (COMPLETED, "a", {})],
            "paid",
            id="completed-after-expired-same-session",
        ),
        # a reissued link: the old one expired, the new one was paid; either arrives first
        pytest.param(
            [(COMPLETED, "b", {}), (EXPIRED, "a", {"status": "expired", **UNPAID})],
            "paid",
            id="old-link-expired-after-new-link-paid",
        ),
        pytest.param(
            [(EXPIRED, "a", {"status": "expired", **UNPAID}), (COMPLETED, "b", {})],
            "paid",
            id="new-link-paid-after-old-link-expired",
        ),
        pytest.param(
            [("checkout.session.async_payment_succeeded", "a", {}), (COMPLETED, "a", UNPAID)],
            "paid",
            id="async-success-before-completed-unpaid",
        ),
        pytest.param(
            [("checkout.session.async_payment_failed", "a", UNPAID), (COMPLETED, "a", UNPAID)],
            "pending",
            id="async-failure-before-completed-unpaid",
        ),
    ],
)
def test_out_of_order_events_end_in_the_right_state(
    client: TestClient, events: list[tuple[str, str, SessionState]], final: str
) -> None:
    order_id = new_order(client)
    money = own_links(app_sessions(client), order_id, "cs_a", "cs_b")
    for i, (kind, session, extra) in enumerate(events):
        event = session_event(
            f"evt_order_{i}", kind, session_id=f"cs_{session}", order_id=order_id, **money, **extra
        )
        assert deliver(client, event) == "applied"
        assert deliver(client, event) == "duplicate"  # and a retry of each changes nothing
    order = client.get(f"/orders/{order_id}").json()
    assert order["status"] == final
    assert (order["paid_at"] is not None) is (final == "paid")


def test_concurrent_copies_of_one_event_apply_once(database_url: str) -> None:
    """Eight copies of each of 20 events at the same moment: 20 applied, 140 duplicates."""
    settings = Settings(
        database_url=database_url,
        stripe_webhook_secret=SecretStr(SECRET),
        stripe_api_base="http://127.0.0.1:9",
        admin_token=SecretStr(TOKEN),
    )
    app = create_app(settings, start_refresher=False)
    with (
        BackgroundServer(app) as server,
        httpx.Client(base_url=server.url, headers=OPERATOR, timeout=60) as http,
    ):
        ids = []
        for _ in range(20):
            body = {
                "product_id": 2,
                "parent_email": "c@example.org",
                "player_name": "Copy",
                "create_checkout": False,
            }
            ids.append(http.post("/orders", json=body).json()["id"])
        factory = app.state.services.sessions
        money = [own_links(factory, oid, f"cs_c{i}") for i, oid in enumerate(ids)]
        payloads = [
            json.dumps(
                session_event(
                    f"evt_copy_{i}", COMPLETED, session_id=f"cs_c{i}", order_id=oid, **money[i]
                )
            ).encode()
            for i, oid in enumerate(ids)
        ]

        def send(payload: bytes) -> str:
            r = http.post(
                "/webhooks/stripe",
                content=payload,
                headers={"Stripe-Signature": sign(payload, SECRET)},
            )
            assert r.status_code == 200, r.text
            status: str = r.json()["status"]
            return status

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(send, [p for p in payloads for _ in range(8)]))
        assert answers.count("applied") == 20
        assert answers.count("duplicate") == 140
        assert {http.get(f"/orders/{i}").json()["status"] for i in ids} == {"paid"}
        metrics = http.get("/metrics").text
        assert (
            'basketball_api_webhook_events_total{result="applied",'
            'type="checkout.session.completed"} 20.0' in metrics
        )
