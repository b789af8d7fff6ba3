"""Webhook delivery from the Stripe sandbox: signatures, retries, and lost,
duplicated and reordered deliveries."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import stripe

from stripe_sandbox.app import create_app
from stripe_sandbox.config import SandboxConfig
from stripe_sandbox.control import SandboxControl
from stripe_sandbox.server import BackgroundServer
from stripe_sandbox.testing import WebhookReceiver

SECRET = "whsec_sandbox_webhook_tests"


@pytest.fixture(scope="module")
def receiver() -> WebhookReceiver:
    return WebhookReceiver()


@pytest.fixture(scope="module")
def receiver_server(receiver: WebhookReceiver) -> Iterator[BackgroundServer]:
    with BackgroundServer(receiver.app) as srv:
        yield srv


@pytest.fixture(scope="module")
def server(receiver_server: BackgroundServer) -> Iterator[BackgroundServer]:
    config = SandboxConfig(
        webhook_url=f"{receiver_server.url}/stripe/webhook",
        webhook_secret=SECRET,
        webhook_retry_base_seconds=0.02,
        webhook_max_attempts=4,
    )
    with BackgroundServer(create_app(config)) as srv:
        yield srv


@pytest.fixture
def control(server: BackgroundServer, receiver: WebhookReceiver) -> Iterator[SandboxControl]:
    with SandboxControl(server.url) as ctl:
        ctl.reset()
        receiver.clear()
        yield ctl


@pytest.fixture
def client(server: BackgroundServer, control: SandboxControl) -> Iterator[stripe.StripeClient]:
    http = stripe.HTTPXClient(allow_sync_methods=True, timeout=10)
    yield stripe.StripeClient(
        "sk_test_hooks", base_addresses={"api": server.url}, http_client=http, max_network_retries=0
    )
    http.close()  # type: ignore[no-untyped-call]


def open_sessions(client: stripe.StripeClient, count: int) -> list[str]:
    ids = []
    for i in range(count):
        session = client.v1.checkout.sessions.create(
            params={
                "mode": "payment",
                "line_items": [
                    {
                        "price_data": {
                            "currency": "eur",
                            "unit_amount": 1000 + i,
                            "product_data": {"name": "Training fee"},
                        },
                        "quantity": 1,
                    }
                ],
                "success_url": "https://club.example/paid",
                "metadata": {"order_id": str(i)},
            }
        )
        ids.append(session.id)
    return ids


def delivered_session_ids(receiver: WebhookReceiver) -> list[str]:
    return [json.loads(r.body)["data"]["object"]["id"] for r in receiver.accepted]


def test_delivery_is_signed_the_way_the_sdk_verifies(
    client: stripe.StripeClient, control: SandboxControl, receiver: WebhookReceiver
) -> None:
    (session_id,) = open_sessions(client, 1)
    control.pay(session_id)
    assert control.wait_for_webhooks(timeout=10)

    (delivery,) = receiver.received
    event = stripe.Webhook.construct_event(delivery.body, delivery.signature, SECRET)
    assert event.type == "checkout.session.completed"
    assert event.data.object["id"] == session_id
    assert event.data.object["payment_status"] == "paid"
    assert delivery.signature is not None
    assert delivery.signature.startswith("t=")
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(delivery.body, delivery.signature, "whsec_other")

    # Stripe's side now counts it as delivered
    listed = client.v1.events.list(params={"delivery_success": True}).data
    assert [e.id for e in listed] == [event.id]
    assert listed[0].pending_webhooks == 0
    (attempt,) = control.deliveries()
    assert attempt["outcome"] == "delivered"
    assert attempt["status_code"] == 200
    assert attempt["event_id"] == event.id


def test_clock_advance_does_not_break_signature_tolerance(
    client: stripe.StripeClient, control: SandboxControl, receiver: WebhookReceiver
) -> None:
    open_sessions(client, 2)
    assert control.advance_clock(25 * 3600) == 2
    assert control.wait_for_webhooks(timeout=10)
    for delivery in receiver.received:
        event = stripe.Webhook.construct_event(delivery.body, delivery.signature, SECRET)
        assert event.type == "checkout.session.expired"


def test_failed_deliveries_are_retried_with_backoff(
    client: stripe.StripeClient, control: SandboxControl, receiver: WebhookReceiver
) -> None:
    (session_id,) = open_sessions(client, 1)
    receiver.fail_next(2, status=503)
    control.pay(session_id)
    assert control.wait_for_webhooks(timeout=10)

    assert [r.status_code for r in receiver.received] == [503, 503, 200]
    attempts = control.deliveries()
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [
        (1, "failed"),
        (2, "failed"),
        (3, "delivered"),
    ]
    first_gap = attempts[1]["at"] - attempts[0]["at"]
    second_gap = attempts[2]["at"] - attempts[1]["at"]
    assert first_gap >= 0.02 * 0.9  # retry_base_seconds
    assert second_gap >= 0.04 * 0.9  # doubled
    assert len({r.body for r in receiver.received}) == 1  # the same event each time


def test_delivery_gives_up_after_max_attempts(
    client: stripe.StripeClient, control: SandboxControl, receiver: WebhookReceiver
) -> None:
    (session_id,) = open_sessions(client, 1)
    receiver.fail_next(10, status=500)
    control.pay(session_id)
    assert control.wait_for_webhooks(timeout=10)
    assert len(receiver.received) == 4
    failed = client.v1.events.list(params={"delivery_success": False}).data
    assert len(failed) == 1
    assert failed[0].pending_webhooks == 1
    assert client.v1.events.list(params={"delivery_success": True}).data == []


def test_unreachable_endpoint_is_retried_until_it_comes_back(
    client: stripe.StripeClient, control: SandboxControl
) -> None:
    late = WebhookReceiver()
    spare = BackgroundServer(late.app).start()
    port = spare.port
    spare.stop()  # nothing listens there now: connection refused
    control.configure_webhook(
        f"http://127.0.0.1:{port}/hook", SECRET, retry_base_seconds=0.2, max_attempts=6
    )
    (session_id,) = open_sessions(client, 1)
    control.pay(session_id)
    while not control.deliveries():  # the first attempt meets a closed port
        time.sleep(0.01)
    with BackgroundServer(late.app, port=port):
        assert control.wait_for_webhooks(timeout=15)
    outcomes = [a["outcome"] for a in control.deliveries()]
    assert outcomes[0] == "failed"
    assert outcomes[-1] == "delivered"
    assert "ConnectError" in (control.deliveries()[0]["error"] or "")
    assert len(late.accepted) == 1


def test_lost_webhooks_are_never_delivered_but_stay_in_the_events_feed(
    client: stripe.StripeClient, control: SandboxControl, receiver: WebhookReceiver
) -> None:
    ids = open_sessions(client, 3)
    control.drop_next_webhooks(2)
    for session_id in ids:
        control.pay(session_id)
    assert control.wait_for_webhooks(timeout=10)
    assert delivered_session_ids(receiver) == [ids[2]]
    assert [a["outcome"] for a in control.deliveries()] == ["dropped", "dropped", "delivered"]
    feed = client.v1.events.list(params={"type": "checkout.session.completed"}).data
    assert sorted(e.data.object["id"] for e in feed) == sorted(ids)


def test_lost_webhooks_can_stay_pending(
    client: stripe.StripeClient, control: SandboxControl
) -> None:
    (session_id,) = open_sessions(client, 1)
    control.drop_next_webhooks(1, mark_delivered=False)
    control.pay(session_id)
    assert control.wait_for_webhooks(timeout=10)
    pending = client.v1.events.list(params={"delivery_success": False}).data
    assert [e.data.object["id"] for e in pending] == [session_id]


def test_duplicated_webhooks_arrive_twice(
    client: stripe.StripeClient, control: SandboxControl, receiver: WebhookReceiver
) -> None:
    ids = open_sessions(client, 2)
    control.duplicate_next_webhooks(1)
    for session_id in ids:
        control.pay(session_id)
    assert control.wait_for_webhooks(timeout=10)
    assert delivered_session_ids(receiver) == [ids[0], ids[0], ids[1]]
    first, second = receiver.accepted[:2]
    assert first.body == second.body


def test_reordered_webhooks_arrive_newest_first(
    client: stripe.StripeClient, control: SandboxControl, receiver: WebhookReceiver
) -> None:
    ids = open_sessions(client, 4)
    control.reorder_next_webhooks(3)
    for session_id in ids[:3]:
        control.pay(session_id)
    assert control.wait_for_webhooks(timeout=10)
    assert delivered_session_ids(receiver) == [ids[2], ids[1], ids[0]]

    receiver.clear()
    control.reorder_next_webhooks(5)
    control.pay(ids[3])
    assert control.wait_for_webhooks(timeout=10)
    assert receiver.received == []  # held until 5 are held, or flushed
    assert control.flush_webhooks() == 1
    assert control.wait_for_webhooks(timeout=10)
    assert delivered_session_ids(receiver) == [ids[3]]


def test_async_payment_events_are_delivered_in_order(
    client: stripe.StripeClient, control: SandboxControl, receiver: WebhookReceiver
) -> None:
    ok, ko = open_sessions(client, 2)
    control.pay(ok, delayed=True)
    control.pay(ko, delayed=True)
    control.complete_async(ok, succeeded=True)
    control.complete_async(ko, succeeded=False)
    assert control.wait_for_webhooks(timeout=10)
    types = [json.loads(r.body)["type"] for r in receiver.accepted]
    assert types == [
        "checkout.session.completed",
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
    ]


def test_no_endpoint_means_no_delivery(
    client: stripe.StripeClient, control: SandboxControl, receiver: WebhookReceiver
) -> None:
    control.configure_webhook(None, None)
    (session_id,) = open_sessions(client, 1)
    control.pay(session_id)
    assert control.wait_for_webhooks(timeout=5)
    assert receiver.received == []
    assert control.deliveries() == []
    assert control.webhook_status()["url"] is None
