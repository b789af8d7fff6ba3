"""Contract: the Checkout Session calls the service makes, as Stripe documents them. Runs against
the sandbox in ``make test`` and against Stripe's test mode with ``make contract``."""

from __future__ import annotations

import time
import uuid

import pytest
import stripe
from tests.contract.support import Target, session_params

from basketball_api.stripe_gateway import StripeGateway, StripeRejected

pytestmark = pytest.mark.anyio


def order_id() -> str:
    return f"contract-{uuid.uuid4().hex[:12]}"


async def test_create_returns_an_open_session_carrying_what_was_asked(
    gateway: StripeGateway, client: stripe.StripeClient
) -> None:
    expires_at = int(time.time()) + 2 * 3600
    snap = await gateway.create_checkout_session(
        order_id=17, category="tournament", product_name="Contract suite: entry",
        unit_amount=4500, quantity=2, currency="eur", customer_email="parent@example.com",
        success_url="https://club.example/paid?session_id={CHECKOUT_SESSION_ID}",
        cancel_url="https://club.example/cancelled", expires_at=expires_at,
    )  # fmt: skip
    assert snap.id.startswith("cs_test_")
    assert (snap.status, snap.payment_status, snap.expires_at) == ("open", "unpaid", expires_at)
    assert snap.metadata == {"order_id": "17", "category": "tournament"}
    session = client.v1.checkout.sessions.retrieve(snap.id)
    assert (session.amount_total, session.currency) == (9000, "eur")
    assert session.object == "checkout.session"
    assert session.livemode is False
    assert session.mode == "payment"
    assert session.payment_status == "unpaid"
    assert session.expires_at == expires_at
    assert session.url is not None
    assert session.metadata is not None
    assert session.metadata["order_id"] == "17"
    assert session.client_reference_id == "17"
    assert session.after_expiration is not None
    assert session.after_expiration.recovery is not None
    assert session.after_expiration.recovery.enabled is True
    assert session.after_expiration.recovery.url is None  # only once expired


async def test_retrieve_of_an_unknown_session_is_resource_missing(
    gateway: StripeGateway, client: stripe.StripeClient
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.checkout.sessions.retrieve("cs_test_" + "a" * 58)
    assert caught.value.http_status == 404
    assert caught.value.code == "resource_missing"
    with pytest.raises(StripeRejected) as rejected:
        await gateway.retrieve_session("cs_test_" + "b" * 58)
    assert rejected.value.missing is True


async def test_list_by_created_window_newest_first_with_cursors(
    gateway: StripeGateway, client: stripe.StripeClient
) -> None:
    start = int(time.time()) - 2
    made = [client.v1.checkout.sessions.create(params=session_params(order_id())) for _ in range(3)]
    ids = [s.id for s in made]
    end = int(time.time()) + 2

    listed = [
        s async for page in gateway.session_pages(created_gte=start, created_lte=end) for s in page
    ]
    mine = [s.id for s in listed if s.id in ids]
    assert mine == list(reversed(ids))  # newest first
    assert all(s.status == "open" for s in listed if s.id in ids)

    walked: list[str] = []
    params: dict[str, object] = {"limit": 1, "created": {"gte": start, "lte": end}}
    while True:
        page = client.v1.checkout.sessions.list(params=params)  # type: ignore[arg-type]
        assert len(page.data) <= 1
        walked += [s.id for s in page.data]
        if not page.has_more:
            break
        params["starting_after"] = page.data[-1].id
    assert [i for i in walked if i in ids] == list(reversed(ids))

    newer = client.v1.checkout.sessions.list(params={"ending_before": ids[0], "limit": 100})
    assert ids[1] in [s.id for s in newer.data]
    assert ids[0] not in [s.id for s in newer.data]
    with pytest.raises(stripe.InvalidRequestError) as both:
        client.v1.checkout.sessions.list(params={"starting_after": ids[0], "ending_before": ids[1]})
    assert both.value.http_status == 400


async def test_expire_ends_an_open_session_once(
    gateway: StripeGateway, client: stripe.StripeClient
) -> None:
    session = client.v1.checkout.sessions.create(params=session_params(order_id()))
    snap = await gateway.expire_session(session.id)
    assert snap.status == "expired"
    assert snap.recovery_url is not None
    again = client.v1.checkout.sessions.retrieve(session.id)
    assert again.status == "expired"
    assert again.url is None
    assert again.after_expiration is not None
    assert again.after_expiration.recovery is not None
    assert again.after_expiration.recovery.url is not None
    with pytest.raises(StripeRejected) as rejected:
        await gateway.expire_session(session.id)
    assert rejected.value.reason == "invalid_request"
    listed = [
        s
        async for page in gateway.session_pages(
            created_gte=session.created, created_lte=session.created
        )
        for s in page
    ]
    assert (session.id, "expired") in [(s.id, s.status) for s in listed]


def test_an_idempotency_key_replays_the_first_answer(client: stripe.StripeClient) -> None:
    key = f"contract-{uuid.uuid4()}"
    params = session_params(order_id())
    first = client.v1.checkout.sessions.create(params=params, options={"idempotency_key": key})
    again = client.v1.checkout.sessions.create(params=params, options={"idempotency_key": key})
    assert again.id == first.id
    with pytest.raises(stripe.IdempotencyError):
        client.v1.checkout.sessions.create(
            params=session_params(order_id()),
            options={"idempotency_key": key},
        )


@pytest.mark.parametrize(
    ("change", "param", "code"),
    [
        ({"line_items": [{"price_data": {"currency": "eur", "unit_amount": 4500,
                                         "product_data": {"nmae": "x"}}, "quantity": 1}]},
         "line_items[0][price_data][product_data][nmae]", "parameter_unknown"),
        ({"surprise": "x"}, "surprise", "parameter_unknown"),
        ({"line_items": [{"price_data": {"currency": "eur", "unit_amount": 4500},
                          "quantity": 1}]},
         "line_items[0][price_data][product_data]", "parameter_missing"),
        ({"expires_at": "soon"}, "expires_at", "parameter_invalid_integer"),
        ({"customer": "cus_doesnotexist"}, "customer", "resource_missing"),
    ],
)  # fmt: skip
def test_refusals_have_stripes_error_shape(
    client: stripe.StripeClient, change: dict[str, object], param: str, code: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.checkout.sessions.create(params=session_params(order_id(), **change))  # type: ignore[arg-type]
    error = caught.value
    assert error.http_status == 400
    assert error.code == code
    assert error.param is not None
    assert error.param.startswith(param)
    body = error.json_body
    assert isinstance(body, dict)
    assert body["error"]["type"] == "invalid_request_error"
    assert error.request_id is not None


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"locale": "xx-nope"}, "locale"),
        ({"submit_type": "bogus"}, "submit_type"),
        ({"allow_promotion_codes": "maybe"}, "allow_promotion_codes"),
        ({"line_items": [{"price_data": {"currency": "xyz", "unit_amount": 4500,
                                         "product_data": {"name": "x"}}, "quantity": 1}]},
         "line_items[0][price_data][currency]"),
        ({"expires_at": 1}, "expires_at"),
    ],
)  # fmt: skip
def test_invalid_values_are_refused(
    client: stripe.StripeClient, change: dict[str, object], param: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.checkout.sessions.create(params=session_params(order_id(), **change))  # type: ignore[arg-type]
    assert caught.value.http_status == 400
    assert caught.value.param == param


def test_a_total_below_the_currency_minimum_is_refused(client: stripe.StripeClient) -> None:
    small = [{"price_data": {"currency": "eur", "unit_amount": 10,
                             "product_data": {"name": "x"}}, "quantity": 1}]  # fmt: skip
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.checkout.sessions.create(params=session_params(order_id(), line_items=small))  # type: ignore[arg-type]
    assert caught.value.http_status == 400


def test_a_wrong_key_is_an_authentication_error(target: Target) -> None:
    wrong = Target(target.name, target.api_base, "sk_test_" + "x" * 24, None)
    with wrong.client() as bad, pytest.raises(stripe.AuthenticationError) as caught:
        bad.v1.checkout.sessions.list(params={"limit": 1})
    assert caught.value.http_status == 401
