"""Checkout Sessions in the Stripe sandbox, driven by the official SDK over HTTP."""

from __future__ import annotations

import re
from typing import Any, Unpack

import httpx
import pytest
import stripe
from stripe.params.checkout import SessionCreateParams

from stripe_sandbox.control import SandboxControl
from stripe_sandbox.server import BackgroundServer

KEY = "sk_test_sandbox_sessions"

# stripe-python's HTTPXClient posts its form body as ``data=<str>``, which httpx 0.28
# deprecates; that warning is not about the sandbox.


def params(**extra: Unpack[SessionCreateParams]) -> SessionCreateParams:
    base: SessionCreateParams = {
        "mode": "payment",
        "line_items": [
            {
                "price_data": {
                    "currency": "eur",
                    "unit_amount": 4500,
                    "product_data": {"name": "Summer camp U12"},
                },
                "quantity": 2,
            },
            {
                "price_data": {
                    "currency": "eur",
                    "unit_amount": 1500,
                    "product_data": {"name": "Club jersey"},
                },
                "quantity": 1,
            },
        ],
        "success_url": "https://club.example/paid?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://club.example/cart",
        "client_reference_id": "order-17",
        "customer_email": "parent@example.com",
        "metadata": {"order_id": "17"},
    }
    base.update(extra)
    return base


def test_create_returns_a_stripe_shaped_open_session(
    client: stripe.StripeClient, server: BackgroundServer
) -> None:
    session = client.v1.checkout.sessions.create(params=params())

    assert re.fullmatch(r"cs_test_[0-9A-Za-z]{58}", session.id)
    assert session.object == "checkout.session"
    assert (session.status, session.payment_status, session.mode) == ("open", "unpaid", "payment")
    assert (session.amount_subtotal, session.amount_total, session.currency) == (
        10500,
        10500,
        "eur",
    )
    assert session.expires_at == session.created + 24 * 3600
    assert session.url == f"{server.url}/checkout/{session.id}"
    assert session.metadata is not None
    assert session.metadata["order_id"] == "17"
    assert session.client_reference_id == "order-17"
    assert session.customer_email == "parent@example.com"
    assert session.livemode is False
    assert session.after_expiration is None
    assert session.payment_intent is None
    assert isinstance(session, stripe.checkout.Session)


def test_retrieve_and_unknown_id(client: stripe.StripeClient) -> None:
    created = client.v1.checkout.sessions.create(params=params())
    fetched = client.v1.checkout.sessions.retrieve(created.id)
    assert fetched.id == created.id
    assert fetched.amount_total == created.amount_total

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.checkout.sessions.retrieve("cs_test_missing")
    err = caught.value
    assert err.http_status == 404
    assert (err.code, err.param) == ("resource_missing", "id")
    assert err.user_message == "No such checkout.session: 'cs_test_missing'"
    assert err.json_body == {
        "error": {
            "type": "invalid_request_error",
            "code": "resource_missing",
            "doc_url": "https://stripe.com/docs/error-codes/resource-missing",
            "param": "id",
            "message": "No such checkout.session: 'cs_test_missing'",
        }
    }


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"line_items": None}, "line_items"),
        ({"success_url": None}, "success_url"),
        ({"mode": "subscription_please"}, "mode"),
        ({"line_items": [{"price_data": {"currency": "eur", "unit_amount": 100}, "quantity": 1}]},
         "line_items[0][price_data][product_data][name]"),
        ({"surprise": "x"}, "surprise"),
    ],
)  # fmt: skip
def test_create_rejects_missing_or_unknown_params(
    client: stripe.StripeClient, change: dict[str, Any], param: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.checkout.sessions.create(params=params(**change))
    assert caught.value.http_status == 400
    assert caught.value.param == param


def test_expires_at_must_be_30_minutes_to_24_hours_away(
    client: stripe.StripeClient, control: SandboxControl
) -> None:
    now = int(control.now())
    for bad in (now + 29 * 60, now + 24 * 3600 + 120):
        with pytest.raises(stripe.InvalidRequestError) as caught:
            client.v1.checkout.sessions.create(params=params(expires_at=bad))
        assert (caught.value.http_status, caught.value.param) == (400, "expires_at")
    ok = client.v1.checkout.sessions.create(params=params(expires_at=now + 3600))
    assert ok.expires_at == now + 3600


def test_list_filters_by_status_and_created(
    client: stripe.StripeClient, control: SandboxControl
) -> None:
    first = client.v1.checkout.sessions.create(params=params())
    control.advance_clock(10)
    second = client.v1.checkout.sessions.create(params=params())
    control.advance_clock(10)
    third = client.v1.checkout.sessions.create(params=params())
    control.pay(second.id)

    everything = client.v1.checkout.sessions.list()
    assert [s.id for s in everything.data] == [third.id, second.id, first.id]
    assert everything["object"] == "list"
    assert everything.url == "/v1/checkout/sessions"
    assert everything.has_more is False

    open_ones = client.v1.checkout.sessions.list(params={"status": "open"})
    assert [s.id for s in open_ones.data] == [third.id, first.id]
    complete = client.v1.checkout.sessions.list(params={"status": "complete"})
    assert [s.id for s in complete.data] == [second.id]

    window = client.v1.checkout.sessions.list(
        params={"created": {"gte": second.created, "lt": third.created}}
    )
    assert [s.id for s in window.data] == [second.id]
    exact = client.v1.checkout.sessions.list(params={"created": first.created})
    assert [s.id for s in exact.data] == [first.id]
    later = client.v1.checkout.sessions.list(params={"created": {"gt": first.created}})
    assert [s.id for s in later.data] == [third.id, second.id]


@pytest.mark.parametrize("limit", [0, 101])
def test_limit_out_of_range_is_a_400(client: stripe.StripeClient, limit: int) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.checkout.sessions.list(params={"limit": limit})
    assert (caught.value.http_status, caught.value.param) == (400, "limit")


def test_pagination_over_more_than_100_sessions(
    client: stripe.StripeClient, control: SandboxControl
) -> None:
    seeded = control.seed(250, created_spread_seconds=3600, statuses=["open", "complete"])
    newest_first = [s["id"] for s in reversed(seeded)]

    page = client.v1.checkout.sessions.list(params={"limit": 100})
    assert page.has_more is True
    assert len(page.data) == 100
    assert [s.id for s in page.data] == newest_first[:100]

    walked = [
        s.id for s in client.v1.checkout.sessions.list(params={"limit": 100}).auto_paging_iter()
    ]
    assert walked == newest_first

    open_ids = [s["id"] for s in reversed(seeded) if s["status"] == "open"]
    walked_open = [
        s.id
        for s in client.v1.checkout.sessions.list(
            params={"limit": 40, "status": "open"}
        ).auto_paging_iter()
    ]
    assert walked_open == open_ids

    # ending_before: the items just newer than the cursor, still newest first
    cursor = newest_first[150]
    newer = client.v1.checkout.sessions.list(params={"limit": 10, "ending_before": cursor})
    assert [s.id for s in newer.data] == newest_first[140:150]
    assert newer.has_more is True
    top = client.v1.checkout.sessions.list(params={"limit": 10, "ending_before": newest_first[5]})
    assert [s.id for s in top.data] == newest_first[:5]
    assert top.has_more is False

    after = client.v1.checkout.sessions.list(
        params={"limit": 100, "starting_after": newest_first[199]}
    )
    assert [s.id for s in after.data] == newest_first[200:]
    assert after.has_more is False

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.checkout.sessions.list(params={"starting_after": "cs_test_unknown"})
    assert caught.value.param == "starting_after"


@pytest.mark.anyio
async def test_async_client_creates_lists_and_pages(server: BackgroundServer) -> None:
    http = stripe.HTTPXClient(timeout=10)
    client = stripe.StripeClient(
        KEY, base_addresses={"api": server.url}, http_client=http, max_network_retries=0
    )
    try:
        with SandboxControl(server.url) as control:
            control.reset()
            control.seed(120, created_spread_seconds=600)
        created = await client.v1.checkout.sessions.create_async(params=params())
        fetched = await client.v1.checkout.sessions.retrieve_async(created.id)
        assert fetched.status == "open"
        first = await client.v1.checkout.sessions.list_async(params={"limit": 100})
        ids = [s.id async for s in first.auto_paging_iter()]
        assert len(ids) == 121
        assert ids[0] == created.id
        assert len(set(ids)) == 121
        expired = await client.v1.checkout.sessions.expire_async(created.id)
        assert expired.status == "expired"
    finally:
        await http.close_async()  # type: ignore[no-untyped-call]


def test_expire_only_open_sessions(client: stripe.StripeClient, control: SandboxControl) -> None:
    session = client.v1.checkout.sessions.create(params=params())
    expired = client.v1.checkout.sessions.expire(session.id)
    assert expired.status == "expired"
    assert expired.url is None
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.checkout.sessions.expire(session.id)
    assert caught.value.http_status == 400

    paid = client.v1.checkout.sessions.create(params=params())
    control.pay(paid.id)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.expire(paid.id)
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.checkout.sessions.expire("cs_test_nope")
    assert missing.value.http_status == 404


def test_sessions_expire_when_the_clock_passes_expires_at(
    client: stripe.StripeClient, control: SandboxControl
) -> None:
    # Margins of seconds: the sandbox clock runs on while the test does.
    now = int(control.now())
    short = client.v1.checkout.sessions.create(params=params(expires_at=now + 1860))
    long = client.v1.checkout.sessions.create(params=params())

    control.advance_clock(1850)
    assert client.v1.checkout.sessions.retrieve(short.id).status == "open"
    assert control.advance_clock(20) == 1
    assert client.v1.checkout.sessions.retrieve(short.id).status == "expired"
    assert client.v1.checkout.sessions.retrieve(long.id).status == "open"
    assert control.sessions()[short.id] == {"status": "expired", "payment_status": "unpaid"}
    assert control.sessions(status="open") == {
        long.id: {"status": "open", "payment_status": "unpaid"}
    }


def test_recovery_url_offers_a_new_checkout(
    client: stripe.StripeClient, control: SandboxControl, server: BackgroundServer
) -> None:
    session = client.v1.checkout.sessions.create(
        params=params(after_expiration={"recovery": {"enabled": True}})
    )
    assert session.after_expiration is not None
    assert session.after_expiration.recovery is not None
    assert session.after_expiration.recovery.url is None

    control.advance_clock(24 * 3600)
    expired = client.v1.checkout.sessions.retrieve(session.id)
    recovery = expired.after_expiration.recovery  # type: ignore[union-attr]
    assert expired.status == "expired"
    assert recovery is not None
    assert recovery.enabled is True
    assert recovery.url == f"{server.url}/recover/{session.id}"
    assert recovery.expires_at == session.expires_at + 30 * 24 * 3600

    with httpx.Client() as browser:
        page = browser.get(recovery.url)
        assert page.status_code == 200
        assert "Start a new checkout" in page.text
        restarted = browser.post(recovery.url)
    assert restarted.status_code == 303
    new_id = restarted.headers["location"].rsplit("/", 1)[1]
    fresh = client.v1.checkout.sessions.retrieve(new_id)
    assert fresh.status == "open"
    assert fresh.recovered_from == session.id
    assert fresh.amount_total == session.amount_total
    assert fresh.metadata == session.metadata


def test_line_items_expand_and_endpoint(client: stripe.StripeClient) -> None:
    session = client.v1.checkout.sessions.create(params=params(expand=["line_items"]))
    assert session.line_items is not None
    assert [item.description for item in session.line_items.data] == [
        "Summer camp U12",
        "Club jersey",
    ]
    items = client.v1.checkout.sessions.line_items.list(session.id)
    assert [(i.quantity, i.amount_total) for i in items.data] == [(2, 9000), (1, 1500)]


def test_idempotent_retry_replays_the_same_session(client: stripe.StripeClient) -> None:
    first = client.v1.checkout.sessions.create(params=params(), options={"idempotency_key": "k-1"})
    again = client.v1.checkout.sessions.create(params=params(), options={"idempotency_key": "k-1"})
    assert again.id == first.id
    assert again.last_response is not None
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    with pytest.raises(stripe.IdempotencyError):
        client.v1.checkout.sessions.create(
            params=params(client_reference_id="other"), options={"idempotency_key": "k-1"}
        )
    assert len(client.v1.checkout.sessions.list().data) == 1


def test_api_key_is_checked(server: BackgroundServer, control: SandboxControl) -> None:
    with httpx.Client(base_url=server.url) as raw:
        missing = raw.get("/v1/checkout/sessions")
        assert missing.status_code == 401
        assert missing.json()["error"]["type"] == "invalid_request_error"
        wrong = raw.get("/v1/checkout/sessions", headers={"Authorization": "Bearer pk_test_x"})
        assert wrong.status_code == 401
        assert wrong.json()["error"]["message"].startswith("Invalid API Key provided: ")
        basic = raw.get("/v1/checkout/sessions", auth=("sk_test_curl", ""))
        assert basic.status_code == 200
        unknown = raw.get("/v1/customers", auth=("sk_test_curl", ""))
        assert unknown.status_code == 404
        assert "Unrecognized request URL" in unknown.json()["error"]["message"]

    control.configure(api_key="sk_test_only_this_one")
    http = stripe.HTTPXClient(allow_sync_methods=True)
    try:
        other = stripe.StripeClient(
            KEY, base_addresses={"api": server.url}, http_client=http, max_network_retries=0
        )
        with pytest.raises(stripe.AuthenticationError):
            other.v1.checkout.sessions.list()
        right = stripe.StripeClient(
            "sk_test_only_this_one",
            base_addresses={"api": server.url},
            http_client=http,
            max_network_retries=0,
        )
        assert right.v1.checkout.sessions.list().data == []
    finally:
        http.close()  # type: ignore[no-untyped-call]


def test_public_url_sets_the_hosted_page_base(
    client: stripe.StripeClient, control: SandboxControl
) -> None:
    control.configure(public_url="http://localhost:12111/")
    session = client.v1.checkout.sessions.create(params=params())
    assert session.url == f"http://localhost:12111/checkout/{session.id}"
