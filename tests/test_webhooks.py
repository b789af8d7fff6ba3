"""Webhooks: signatures fail closed, each event applies once, expiry leaves orders pending."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx2
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from tests.fakes import Money, app_sessions, own_links, session_event, sign

from basketball_api.app import create_app
from basketball_api.settings import Settings

SECRET = "whsec_test_secret"
TOKEN = "webhooks-admin-token-0123456789"


def make_client(database_url: str, secret: str | None = SECRET) -> TestClient:
    settings = Settings(
        database_url=database_url,
        stripe_webhook_secret=None if secret is None else SecretStr(secret),
        stripe_api_base="http://127.0.0.1:9",  # no Stripe needed here
        admin_token=SecretStr(TOKEN),
    )
    # As an operator: orders are read back by id.
    headers = {"Authorization": f"Bearer {TOKEN}"}
    return TestClient(create_app(settings, start_refresher=False), headers=headers)


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    with make_client(database_url) as c:
        yield c


def pending_order(client: TestClient, *session_ids: str) -> int:
    """A pending order whose own links are ``session_ids`` (the last one current)."""
    body = {
        "product_id": 1,
        "parent_email": "a@example.org",
        "player_name": "Ann",
        "create_checkout": False,
    }
    r = client.post("/orders", json=body)
    assert r.status_code == 201, r.text
    order_id = int(r.json()["id"])
    if session_ids:
        own_links(app_sessions(client), order_id, *session_ids)
    return order_id


#: What product 1's order (quantity 1) costs: a session carrying it pays the order.
MONEY: Money = {"amount_total": 15000, "currency": "usd"}


def deliver(
    client: TestClient, event: dict[str, object], secret: str = SECRET, **kw: int
) -> httpx2.Response:
    payload = json.dumps(event).encode()
    headers = {
        "Stripe-Signature": sign(payload, secret, kw.get("t")),
        "Content-Type": "application/json",
    }
    return client.post("/webhooks/stripe", content=payload, headers=headers)


def metric_line(client: TestClient, prefix: str) -> str:
    return next(x for x in client.get("/metrics").text.splitlines() if x.startswith(prefix))


def test_completed_and_paid_marks_the_order_paid_once(client: TestClient) -> None:
    order_id = pending_order(client, "cs_x")
    event = session_event(
        "evt_1", "checkout.session.completed", session_id="cs_x", order_id=order_id, **MONEY
    )
    first = deliver(client, event)
    again = deliver(client, event)

    assert (first.status_code, first.json()) == (200, {"status": "applied"})
    assert again.json() == {"status": "duplicate"}
    order = client.get(f"/orders/{order_id}").json()
    assert order["status"] == "paid"
    assert order["paid_at"] is not None


def test_expired_session_leaves_the_order_pending(client: TestClient) -> None:
    order_id = pending_order(client, "cs_y")
    event = session_event(
        "evt_2",
        "checkout.session.expired",
        session_id="cs_y",
        order_id=order_id,
        status="expired",
        payment_status="unpaid",
    )
    assert deliver(client, event).status_code == 200
    assert client.get(f"/orders/{order_id}").json()["status"] == "pending"


def test_async_payment_paths(client: TestClient) -> None:
    order_id = pending_order(client, "cs_z")
    unpaid = session_event(
        "evt_3",
        "checkout.session.completed",
        session_id="cs_z",
        order_id=order_id,
        payment_status="unpaid",
        **MONEY,
    )
    deliver(client, unpaid)
    assert client.get(f"/orders/{order_id}").json()["status"] == "pending"
    succeeded = session_event(
        "evt_4",
        "checkout.session.async_payment_succeeded",
        session_id="cs_z",
        order_id=order_id,
        **MONEY,
    )
    deliver(client, succeeded)
    assert client.get(f"/orders/{order_id}").json()["status"] == "paid"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing_signature"),
        ({"Stripe-Signature": "garbage"}, "bad_signature"),
        ({"Stripe-Signature": sign(b"{}", "whsec_other")}, "bad_signature"),
        ({"Stripe-Signature": sign(b"{}", SECRET, int(time.time()) - 301)}, "stale_timestamp"),
    ],
)
def test_bad_signatures_are_refused_and_counted(
    client: TestClient, headers: dict[str, str], reason: str
) -> None:
    r = client.post("/webhooks/stripe", content=b"{}", headers=headers)
    assert r.status_code == 400
    assert r.json()["code"] == reason
    assert metric_line(
        client, f'basketball_api_webhook_errors_total{{reason="{reason}"}}'
    ).endswith(" 1.0")


def test_rotated_secret_with_several_v1_values_is_accepted(client: TestClient) -> None:
    order_id = pending_order(client, "cs_r")
    event = session_event(
        "evt_5", "checkout.session.completed", session_id="cs_r", order_id=order_id, **MONEY
    )
    payload = json.dumps(event).encode()
    t = int(time.time())
    good = sign(payload, SECRET, t).split(",")[1]
    header = f"t={t},v1={'0' * 64},{good}"
    r = client.post("/webhooks/stripe", content=payload, headers={"Stripe-Signature": header})
    assert r.status_code == 200


def test_oversized_bodies_are_refused(client: TestClient) -> None:
    payload = b"{" + b" " * (300 * 1024) + b"}"
    r = client.post(
        "/webhooks/stripe", content=payload, headers={"Stripe-Signature": sign(payload, SECRET)}
    )
    assert r.status_code == 413
    assert r.json()["code"] == "request_entity_too_large"


def test_without_a_secret_nothing_is_accepted(database_url: str) -> None:
    with make_client(database_url, secret=None) as client:
        order_id = pending_order(client)
        event = session_event(
            "evt_6", "checkout.session.completed", session_id="cs_n", order_id=order_id
        )
        r = deliver(client, event)
        assert r.status_code == 503
        assert r.json()["code"] == "no_secret"
        assert client.get(f"/orders/{order_id}").json()["status"] == "pending"


def test_signed_but_unrelated_events_are_ignored(client: TestClient) -> None:
    r = deliver(
        client,
        {
            "id": "evt_7",
            "object": "event",
            "type": "customer.created",
            "data": {"object": {"object": "customer"}},
        },
    )
    assert r.json() == {"status": "ignored"}
