"""Events in the Stripe sandbox: what is emitted, listing with filters and cursors."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from stripe_sandbox.control import SandboxControl


def new_session(client: stripe.StripeClient, order: str, **extra: Any) -> stripe.checkout.Session:
    params: dict[str, Any] = {
        "mode": "payment",
        "line_items": [
            {
                "price_data": {
                    "currency": "eur",
                    "unit_amount": 3000,
                    "product_data": {"name": "Tournament entry"},
                },
                "quantity": 1,
            }
        ],
        "success_url": "https://club.example/paid",
        "metadata": {"order_id": order},
    }
    params.update(extra)
    return client.v1.checkout.sessions.create(params=params)  # type: ignore[arg-type]


def test_each_transition_emits_its_event_with_a_snapshot(
    client: stripe.StripeClient, control: SandboxControl
) -> None:
    paid = new_session(client, "1")
    delayed_ok = new_session(client, "2")
    delayed_ko = new_session(client, "3")
    expiring = new_session(client, "4")
    assert client.v1.events.list().data == []

    control.pay(paid.id)
    control.pay(delayed_ok.id, delayed=True)
    control.pay(delayed_ko.id, delayed=True)
    control.complete_async(delayed_ok.id, succeeded=True)
    control.complete_async(delayed_ko.id, succeeded=False)
    control.advance_clock(24 * 3600)

    events = list(reversed(client.v1.events.list(params={"limit": 100}).data))
    assert [(e.type, e.data.object["id"]) for e in events] == [
        ("checkout.session.completed", paid.id),
        ("checkout.session.completed", delayed_ok.id),
        ("checkout.session.completed", delayed_ko.id),
        ("checkout.session.async_payment_succeeded", delayed_ok.id),
        ("checkout.session.async_payment_failed", delayed_ko.id),
        ("checkout.session.expired", expiring.id),
    ]
    first = events[0]
    assert first.id.startswith("evt_")
    assert first.object == "event"
    assert first.livemode is False
    assert first.api_version == "2026-10-28.endive"
    assert first.pending_webhooks == 0
    assert first.request is not None
    assert first.request.id is None
    assert first.data.object["payment_status"] == "paid"
    assert first.data.object["metadata"]["order_id"] == "1"
    assert isinstance(first, stripe.Event)

    # snapshots keep the state of their moment
    delayed_completed = events[1].data.object
    assert (delayed_completed["status"], delayed_completed["payment_status"]) == (
        "complete",
        "unpaid",
    )
    assert events[3].data.object["payment_status"] == "paid"
    assert events[4].data.object["payment_status"] == "unpaid"
    assert events[5].data.object["status"] == "expired"

    again = client.v1.events.retrieve(first.id)
    assert again.to_dict() == first.to_dict()
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.events.retrieve("evt_missing")
    assert caught.value.http_status == 404
    assert caught.value.user_message == "No such event: 'evt_missing'"


def test_expire_through_the_api_names_the_request(client: stripe.StripeClient) -> None:
    session = new_session(client, "9")
    client.v1.checkout.sessions.expire(session.id, options={"idempotency_key": "expire-9"})
    (event,) = client.v1.events.list().data
    assert event.type == "checkout.session.expired"
    assert event.request is not None
    assert event.request.idempotency_key == "expire-9"
    assert event.request.id is not None
    assert event.request.id.startswith("req_")


def test_type_types_and_created_filters(
    client: stripe.StripeClient, control: SandboxControl
) -> None:
    a = new_session(client, "a")
    b = new_session(client, "b")
    c = new_session(client, "c")
    control.pay(a.id)
    control.advance_clock(60)
    control.pay(b.id, delayed=True)
    control.complete_async(b.id, succeeded=True)
    control.advance_clock(60)
    control.expire(c.id)

    def types(**params: Any) -> list[str]:
        return [e.type for e in client.v1.events.list(params=params).data]  # type: ignore[arg-type]

    assert types(type="checkout.session.completed") == ["checkout.session.completed"] * 2
    assert types(type="checkout.session.*") == [
        "checkout.session.expired",
        "checkout.session.async_payment_succeeded",
        "checkout.session.completed",
        "checkout.session.completed",
    ]
    assert types(
        types=["checkout.session.expired", "checkout.session.async_payment_succeeded"]
    ) == [
        "checkout.session.expired",
        "checkout.session.async_payment_succeeded",
    ]
    newest = client.v1.events.list(params={"limit": 1}).data[0]
    assert types(created={"gte": newest.created}) == ["checkout.session.expired"]
    assert len(types(created={"lt": newest.created})) == 3

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.events.list(params={"types": [f"t{i}" for i in range(21)]})
    assert caught.value.param == "types"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.events.list(params={"limit": 101})


def test_ending_before_walks_forward_in_time(
    client: stripe.StripeClient, control: SandboxControl
) -> None:
    sessions = [new_session(client, str(i)) for i in range(25)]
    for session in sessions[:12]:
        control.pay(session.id)
    # a consumer that remembers the newest event it has seen ...
    seen = client.v1.events.list(params={"limit": 1}).data[0]
    for session in sessions[12:]:
        control.pay(session.id)

    # ... and asks for what is newer, page by page, oldest page first
    collected: list[str] = []
    cursor = seen.id
    while True:
        page = client.v1.events.list(params={"ending_before": cursor, "limit": 5})
        collected.extend(e.data.object["id"] for e in reversed(page.data))
        if not page.data:
            break
        cursor = page.data[0].id
        if not page.has_more:
            break
    assert collected == [s.id for s in sessions[12:]]
    in_time_order = [
        e.data.object["id"]
        for e in client.v1.events.list(
            params={"ending_before": seen.id, "limit": 5}
        ).auto_paging_iter()
    ]
    assert in_time_order == [s.id for s in sessions[12:]]


def test_delivery_success_filter_without_endpoint(
    client: stripe.StripeClient, control: SandboxControl
) -> None:
    control.pay(new_session(client, "x").id)
    assert len(client.v1.events.list(params={"delivery_success": True}).data) == 1
    assert client.v1.events.list(params={"delivery_success": False}).data == []
