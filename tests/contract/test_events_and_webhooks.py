"""Contract: the events feed and webhook signatures, as Stripe documents them. The events feed is
what the service polls (types, created, cursors); expiring a session is the one way to make a
Checkout Session event through the API alone, so it drives these tests on both targets."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, Unpack

import pytest
import stripe
from stripe.params import EventListParams
from tests.contract.support import Target, eventually, session_params

from basketball_api.stripe_gateway import SessionEvent, StripeGateway
from stripe_sandbox.server import BackgroundServer
from stripe_sandbox.testing import WebhookReceiver

EXPIRED = "checkout.session.expired"
T = TypeVar("T")


async def eventually_async(check: Callable[[], Awaitable[T | None]], what: str) -> T:
    """Poll ``check`` until it returns something (30 s at most)."""
    timeout = 30.0
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        result = await check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout:.0f} s: {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


def expired_session(client: stripe.StripeClient) -> stripe.checkout.Session:
    order = f"contract-{uuid.uuid4().hex[:12]}"
    session = client.v1.checkout.sessions.create(params=session_params(order))
    return client.v1.checkout.sessions.expire(session.id)


def events_about(
    client: stripe.StripeClient, ids: set[str], **params: Unpack[EventListParams]
) -> list[stripe.Event]:
    page = client.v1.events.list(params={"limit": 100, **params})
    return [e for e in page.data if e.data.object["id"] in ids]


@pytest.mark.anyio
async def test_the_service_finds_an_event_by_created_newest_first(
    gateway: StripeGateway, client: stripe.StripeClient
) -> None:
    start = int(time.time()) - 2
    session = expired_session(client)

    async def since(created_gte: int) -> list[SessionEvent]:
        pages = gateway.event_pages(created_gte=created_gte, types=[EXPIRED])
        return [e async for page in pages for e in page]

    async def found() -> SessionEvent | None:
        return next((e for e in await since(start) if e.session.id == session.id), None)

    event = await eventually_async(found, f"{EXPIRED} for {session.id}")
    assert event.type == EXPIRED
    assert event.id.startswith("evt_")
    assert event.session.status == "expired"
    assert event.created >= start
    events = await since(start)
    assert [e.created for e in events] == sorted((e.created for e in events), reverse=True)
    assert event.id not in [e.id for e in await since(event.created + 1)]


def test_events_list_filters_and_cursors(client: stripe.StripeClient) -> None:
    start = int(time.time()) - 2
    sessions = [expired_session(client) for _ in range(3)]
    ids = {s.id for s in sessions}

    def all_three() -> list[stripe.Event] | None:
        found = events_about(client, ids, types=[EXPIRED], created={"gte": start})
        return found if len(found) == 3 else None

    events = eventually(all_three, "three expiry events")
    assert [e.created for e in events] == sorted((e.created for e in events), reverse=True)
    for event in events:
        assert event.object == "event"
        assert event.type == EXPIRED
        assert type(event.created) is int
        assert event.data.object["object"] == "checkout.session"
        assert event.data.object["status"] == "expired"
        assert event.livemode is False
    assert {e.id for e in events_about(client, ids, type="checkout.session.*")} == {
        e.id for e in events
    }
    assert events_about(client, ids, types=["checkout.session.completed"]) == []
    assert events_about(client, ids, created={"lt": start}) == []

    walked: list[str] = []
    params: EventListParams = {"limit": 1, "types": [EXPIRED], "created": {"gte": start}}
    while True:
        page = client.v1.events.list(params=params)
        walked += [e.id for e in page.data]
        if not page.has_more:
            break
        params["starting_after"] = page.data[-1].id
    assert [i for i in walked if i in {e.id for e in events}] == [e.id for e in events]
    newest = events[0]
    newer = client.v1.events.list(params={"ending_before": newest.id, "types": [EXPIRED]})
    assert not ({e.id for e in newer.data} & {e.id for e in events})
    assert client.v1.events.retrieve(newest.id).id == newest.id


@pytest.mark.parametrize(
    "params",
    [
        {"starting_after": "evt_" + "0" * 24},
        {"types": [f"checkout.session.t{i}" for i in range(21)]},
        {"limit": 101},
        {"type": EXPIRED, "types": [EXPIRED]},
    ],
)
def test_bad_event_list_requests_are_refused(
    client: stripe.StripeClient, params: dict[str, Any]
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.events.list(params=params)  # type: ignore[arg-type]
    # Stripe documents the error type, not the status, for a cursor naming no event.
    assert caught.value.http_status in ((400, 404) if "starting_after" in params else (400,))


def test_webhooks_are_signed_as_stripe_documents(
    target: Target, client: stripe.StripeClient
) -> None:
    control = target.needs_sandbox(
        "Stripe delivers webhooks only to a public HTTPS endpoint (use `stripe listen` to "
        "forward them to the service)"
    )
    secret = "whsec_contract_suite"
    receiver = WebhookReceiver()
    with BackgroundServer(receiver.app, lifespan="off") as hook:
        control.configure_webhook(f"{hook.url}/stripe/webhook", secret, retry_base_seconds=0.05)
        try:
            session = expired_session(client)
            assert control.wait_for_webhooks(timeout=10)
        finally:
            control.configure_webhook(None, None)
    delivery = next(r for r in receiver.accepted if session.id in r.text)
    assert delivery.signature is not None
    parts = dict(p.split("=", 1) for p in delivery.signature.split(","))
    signed = f"{parts['t']}.{delivery.text}".encode()
    assert parts["v1"] == hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    assert abs(int(parts["t"]) - time.time()) < 300
    event = stripe.Webhook.construct_event(delivery.text, delivery.signature, secret)
    assert event.type == EXPIRED
    assert json.loads(delivery.text)["data"]["object"]["id"] == session.id
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(delivery.text + " ", delivery.signature, secret)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(delivery.text, delivery.signature, "whsec_other")
