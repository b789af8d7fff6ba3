"""Time and order in the Stripe sandbox as Stripe has them: events purged after 30 days (and
both answers to a cursor naming a purged one), late visibility, idempotency keys pruned after
24 hours, ``created`` in whole seconds with several events per second."""

from __future__ import annotations

from collections import Counter
from typing import Any, Unpack

import pytest
import stripe
from stripe.params import EventListParams

from stripe_sandbox.control import SandboxControl, SandboxControlError

DAY = 24 * 3600


def new_session(client: stripe.StripeClient, **extra: Any) -> stripe.checkout.Session:
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
    }
    params.update(extra)
    options: Any = {}
    key = params.pop("idempotency_key", None)
    if key is not None:
        options["idempotency_key"] = key
    return client.v1.checkout.sessions.create(params=params, options=options)  # type: ignore[arg-type]


def paid_event(client: stripe.StripeClient, control: SandboxControl) -> stripe.Event:
    session = new_session(client)
    control.pay(session.id)
    event = client.v1.events.list(params={"limit": 1}).data[0]
    assert event.data.object["id"] == session.id
    return event


def event_ids(client: stripe.StripeClient, **params: Unpack[EventListParams]) -> list[str]:
    return [e.id for e in client.v1.events.list(params={"limit": 100, **params}).data]


def test_events_older_than_30_days_are_purged(
    client: stripe.StripeClient, control: SandboxControl
) -> None:
    old = paid_event(client, control)
    control.advance_clock(29 * DAY)
    recent = paid_event(client, control)
    assert event_ids(client) == [recent.id, old.id]

    control.advance_clock(DAY + 2)
    assert event_ids(client) == [recent.id]
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.events.retrieve(old.id)
    assert caught.value.http_status == 404
    assert caught.value.code == "resource_missing"
    assert client.v1.events.retrieve(recent.id).id == recent.id


def at(cursor: str, event_id: str) -> EventListParams:
    """``{cursor: event_id}``, for either cursor."""
    if cursor == "ending_before":
        return {"ending_before": event_id}
    assert cursor == "starting_after", cursor
    return {"starting_after": event_id}


@pytest.mark.parametrize("cursor", ["ending_before", "starting_after"])
def test_a_cursor_naming_a_purged_event_is_an_invalid_request_by_default(
    client: stripe.StripeClient, control: SandboxControl, cursor: str
) -> None:
    old = paid_event(client, control)
    control.advance_clock(31 * DAY)
    paid_event(client, control)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.events.list(params=at(cursor, old.id))
    assert caught.value.http_status == 400
    assert caught.value.code == "resource_missing"
    assert caught.value.param == cursor


@pytest.mark.parametrize("cursor", ["ending_before", "starting_after"])
def test_a_cursor_naming_a_purged_event_can_answer_an_empty_page(
    client: stripe.StripeClient, control: SandboxControl, cursor: str
) -> None:
    control.configure(purged_event_cursor="empty")
    old = paid_event(client, control)
    control.advance_clock(31 * DAY)
    paid_event(client, control)
    page = client.v1.events.list(params=at(cursor, old.id))
    assert page.data == []
    assert page.has_more is False
    # an id that never existed is still an error
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.events.list(params=at(cursor, "evt_doesnotexist"))
    control.reset()
    assert control.status()["purged_event_cursor"] == "error"


def test_purged_event_cursor_mode_is_checked(control: SandboxControl) -> None:
    with pytest.raises(SandboxControlError):
        control.configure(purged_event_cursor="maybe")


def test_an_expiry_event_is_dated_when_the_session_expired(
    client: stripe.StripeClient, control: SandboxControl
) -> None:
    now = int(control.now())
    session = new_session(client, expires_at=now + 3600)
    control.advance_clock(2 * DAY)
    (event,) = client.v1.events.list().data
    assert event.type == "checkout.session.expired"
    assert event.created == session.expires_at


def test_a_late_event_is_listed_after_later_ones_and_an_overlap_reread_finds_it(
    client: stripe.StripeClient, control: SandboxControl
) -> None:
    first = paid_event(client, control)
    control.delay_next_events(1, seconds=30)
    late_session = new_session(client)
    control.pay(late_session.id)
    later = paid_event(client, control)
    # not listed yet, though it exists (its webhook goes out at once)
    assert event_ids(client) == [later.id, first.id]
    assert event_ids(client, ending_before=first.id) == [later.id]
    assert control.status()["events_not_yet_visible"] == 1

    control.advance_clock(31)
    listed = client.v1.events.list(params={"limit": 100}).data
    late_event = next(e for e in listed if e.data.object["id"] == late_session.id)
    assert late_event.created <= later.created
    assert [e.id for e in listed] == [later.id, late_event.id, first.id]
    assert client.v1.events.retrieve(late_event.id).id == late_event.id
    # a reader that moved its cursor to `later` never sees it after that cursor ...
    assert event_ids(client, ending_before=later.id) == []
    # ... a re-read of the last seconds by `created` does
    assert late_event.id in event_ids(client, created={"gte": late_event.created - 5})


def test_idempotency_keys_are_pruned_after_24_hours(
    client: stripe.StripeClient, control: SandboxControl
) -> None:
    first = new_session(client, idempotency_key="order-17")
    control.advance_clock(DAY - 60)
    assert new_session(client, idempotency_key="order-17").id == first.id
    with pytest.raises(stripe.IdempotencyError):
        new_session(client, idempotency_key="order-17", client_reference_id="other")

    control.advance_clock(61)
    fresh = new_session(client, idempotency_key="order-17", client_reference_id="other")
    assert fresh.id != first.id
    assert new_session(client, idempotency_key="order-17", client_reference_id="other").id == (
        fresh.id
    )


def test_created_is_whole_seconds_with_several_events_in_one_second_and_cursors_lose_none(
    client: stripe.StripeClient, control: SandboxControl
) -> None:
    sessions = [new_session(client) for _ in range(8)]
    for s in sessions:
        control.pay(s.id)
    events = client.v1.events.list(params={"limit": 100}).data
    assert len(events) == 8
    assert all(type(e.created) is int for e in events)
    assert max(Counter(e.created for e in events).values()) >= 2
    assert [e.data.object["id"] for e in events] == [s.id for s in reversed(sessions)]

    backwards: list[str] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        page = client.v1.events.list(params=params)  # type: ignore[arg-type]
        backwards += [e.id for e in page.data]
        if not page.has_more:
            break
        params["starting_after"] = page.data[-1].id
    assert backwards == [e.id for e in events]

    forwards = [events[-1].id]
    while True:
        page = client.v1.events.list(params={"limit": 3, "ending_before": forwards[-1]})
        if not page.data:
            break
        forwards += [e.id for e in reversed(page.data)]
    assert forwards == [e.id for e in reversed(events)]
