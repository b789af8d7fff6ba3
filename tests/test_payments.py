"""A payment lands only on the order it pays for; money that lands elsewhere is kept for review.

Against the sandbox through the Stripe SDK (a second integration on the same account, recovery
URLs, reissued links, both links paid) and with signed events for what the sandbox cannot
produce (a wrong amount or currency on an order's own link). SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select
from tests.fakes import app_sessions, deliver_signed, own_links, session_event
from tests.stack import ADMIN_TOKEN, Stack, running_stack

from basketball_api.app import create_app
from basketball_api.db import make_engine, make_session_factory
from basketball_api.models import CheckoutLink, LinkToExpire, PaymentNeedingReview
from basketball_api.settings import Settings

COMPLETED = "checkout.session.completed"
SECRET = "whsec_payments_tests"


def review_gauge(metrics_text: str) -> dict[str, float]:
    out = {}
    for line in metrics_text.splitlines():
        if line.startswith("basketball_api_payments_needing_review{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('reason="')[1].split('"')[0]] = float(value)
    return out


def reviews(database_url: str) -> list[PaymentNeedingReview]:
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as db:
            return list(db.scalars(select(PaymentNeedingReview).order_by(PaymentNeedingReview.id)))
    finally:
        engine.dispose()


def links(database_url: str, order_id: int) -> dict[str, CheckoutLink]:
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as db:
            rows = db.scalars(select(CheckoutLink).where(CheckoutLink.order_id == order_id))
            return {r.stripe_checkout_session_id: r for r in rows}
    finally:
        engine.dispose()


def pay(stack: Stack, session_id: str) -> None:
    stack.sandbox.pay(session_id)
    assert stack.sandbox.wait_for_webhooks(timeout=15)


def recover(stack: Stack, expired_session_id: str) -> str:
    """What a parent does with Stripe's recovery URL of an expired link: a new session."""
    url = stack.sandbox.session(expired_session_id)["after_expiration"]["recovery"]["url"]
    r = httpx.post(url, follow_redirects=False)
    assert r.status_code == 303, r.text
    new_id = r.headers["location"].rstrip("/").rsplit("/", 1)[1]
    assert stack.sandbox.session(new_id)["recovered_from"] == expired_session_id
    return new_id


def order_status(stack: Stack, order_id: int) -> str:
    status: str = stack.api.get(f"/orders/{order_id}").json()["status"]
    return status


def foreign_session(stack: Stack, order_id: int, amount: int, currency: str) -> str:
    """A session another integration on the same Stripe account creates, naming our order."""
    session = stack.sdk.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "line_items": [
                {
                    "price_data": {
                        "currency": currency,
                        "unit_amount": amount,
                        "product_data": {"name": "Raffle ticket"},
                    },
                    "quantity": 1,
                }
            ],
            "success_url": "https://shop.example/thanks",
            "client_reference_id": str(order_id),
        }
    )
    return session.id


@pytest.mark.parametrize(("amount", "currency"), [(100, "eur"), (300, "usd")])
def test_a_foreign_session_naming_an_order_is_recorded_never_applied(
    database_url: str, amount: int, currency: str
) -> None:
    with running_stack(database_url) as stack:
        order = stack.order("tournament")  # 150 USD
        foreign = foreign_session(stack, order["id"], amount, currency)
        pay(stack, foreign)

        assert order_status(stack, order["id"]) == "pending"
        assert stack.sandbox.session(order["checkout_session_id"])["status"] == "open"
        [review] = reviews(database_url)
        assert review.reason == "unknown_order"
        assert review.order_id == order["id"]
        assert review.stripe_checkout_session_id == foreign
        assert review.stripe_payment_intent_id is not None
        assert (review.amount_total, review.currency) == (amount, currency)
        assert review.resolved_at is None
        assert review_gauge(stack.api.get("/metrics").text)["unknown_order"] == 1.0


def test_a_recovery_session_of_the_orders_own_link_pays_it(database_url: str) -> None:
    with running_stack(database_url) as stack:
        order = stack.order("monthly")
        link = order["checkout_session_id"]
        stack.sandbox.expire(link)
        recovered = recover(stack, link)
        pay(stack, recovered)

        assert order_status(stack, order["id"]) == "paid"
        assert reviews(database_url) == []
        known = links(database_url, order["id"])
        assert known[recovered].recovered_from == link
        assert review_gauge(stack.api.get("/metrics").text).get("unknown_order", 0) == 0


def test_paying_a_recovery_session_expires_the_orders_other_live_link(database_url: str) -> None:
    """The parent recovered the old link while an operator had reissued a new one: the first
    payment wins, and the other link is expired at Stripe so it cannot be paid as well."""
    with running_stack(database_url) as stack:
        order = stack.order("tournament")
        old = order["checkout_session_id"]
        stack.sandbox.expire(old)
        reissued = stack.api.post(f"/admin/orders/{order['id']}/reissue").json()
        new = reissued["order"]["checkout_session_id"]
        recovered = recover(stack, old)  # opened after the reissue: both are live
        pay(stack, recovered)

        assert order_status(stack, order["id"]) == "paid"
        assert stack.sandbox.session(new)["status"] == "expired"
        assert reviews(database_url) == []


def test_a_reissue_leaves_no_recovery_session_payable_beside_the_new_link(
    database_url: str,
) -> None:
    with running_stack(database_url) as stack:
        order = stack.order("tournament")
        old = order["checkout_session_id"]
        stack.sandbox.expire(old)
        recovered = recover(stack, old)  # the parent opened Stripe's recovery link
        reissued = stack.api.post(f"/admin/orders/{order['id']}/reissue")
        assert reissued.status_code == 200, reissued.text
        new = reissued.json()["order"]["checkout_session_id"]

        assert stack.sandbox.session(recovered)["status"] == "expired"
        assert stack.sandbox.session(new)["status"] == "open"
        payable = [
            sid
            for sid, s in stack.sandbox.sessions(status="open").items()
            if sid in (old, recovered, new)
        ]
        assert payable == [new]
        assert links(database_url, order["id"])[recovered].recovered_from == old


def test_a_second_paid_link_is_recorded_not_applied_twice(database_url: str) -> None:
    with running_stack(database_url) as stack:
        order = stack.order("tournament")
        old = order["checkout_session_id"]
        stack.sandbox.expire(old)
        reissued = stack.api.post(f"/admin/orders/{order['id']}/reissue").json()
        new = reissued["order"]["checkout_session_id"]
        recovered = recover(stack, old)  # opened after the reissue: both are live
        # Stripe fails every expiry for a while, so nothing stops the second payment.
        stack.sandbox.inject_fault(
            "POST /v1/checkout/sessions/{id}/expire", "unavailable", count=50
        )
        pay(stack, recovered)
        pay(stack, new)

        assert order_status(stack, order["id"]) == "paid"
        [review] = reviews(database_url)
        assert (review.reason, review.order_id) == ("second_payment", order["id"])
        assert review.stripe_checkout_session_id == new
        assert review_gauge(stack.api.get("/metrics").text)["second_payment"] == 1.0


def test_money_for_a_cancelled_order_is_kept_for_review(database_url: str) -> None:
    with running_stack(database_url) as stack:
        order = stack.order("jersey")
        assert stack.api.post(f"/orders/{order['id']}/cancel").status_code == 200
        recovered = recover(stack, order["checkout_session_id"])
        pay(stack, recovered)

        assert order_status(stack, order["id"]) == "cancelled"
        [review] = reviews(database_url)
        assert (review.reason, review.order_id) == ("cancelled_order", order["id"])
        assert review_gauge(stack.api.get("/metrics").text)["cancelled_order"] == 1.0


# -- what the sandbox cannot produce: signed events --------------------------------------------


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    settings = Settings(
        database_url=database_url,
        stripe_webhook_secret=SecretStr(SECRET),
        stripe_api_base="http://127.0.0.1:9",
        stripe_max_network_retries=0,
        admin_token=SecretStr(ADMIN_TOKEN),
    )
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with TestClient(create_app(settings, start_refresher=False), headers=auth) as c:
        yield c


def deliver(client: TestClient, event: dict[str, Any]) -> str:
    return deliver_signed(client, dict(event), SECRET)


def new_order(client: TestClient, *session_ids: str) -> tuple[int, dict[str, Any]]:
    body = {"product_id": 1, "parent_email": "m@example.org", "player_name": "Mia"}
    r = client.post("/orders", json={**body, "create_checkout": False})
    order_id = int(r.json()["id"])
    return order_id, own_links(app_sessions(client), order_id, *session_ids)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"amount_total": 100}, "amount_mismatch"),
        ({"amount_total": 14999}, "amount_mismatch"),
        ({"amount_total": None}, "amount_mismatch"),
        ({"currency": "eur"}, "currency_mismatch"),
        ({"currency": "eur", "amount_total": 100}, "currency_mismatch"),
    ],
)
def test_the_orders_own_link_with_another_amount_or_currency_is_not_applied(
    client: TestClient, change: dict[str, Any], reason: str
) -> None:
    order_id, money = new_order(client, "cs_own")
    event = session_event("evt_m", COMPLETED, session_id="cs_own", order_id=order_id, **money)
    event["data"]["object"].update(change)
    if change.get("amount_total", 0) is None:
        del event["data"]["object"]["amount_total"]

    assert deliver(client, event) == "needs_review"
    assert deliver(client, {**event, "id": "evt_m2"}) == "needs_review"  # once per session
    assert client.get(f"/orders/{order_id}").json()["status"] == "pending"
    gauge = review_gauge(client.get("/metrics").text)
    assert gauge[reason] == 1.0
    assert sum(gauge.values()) == 1.0


def test_a_repeated_payment_of_the_paying_session_is_no_second_payment(
    client: TestClient,
) -> None:
    order_id, money = new_order(client, "cs_a")
    for i in range(3):
        event = session_event(f"evt_{i}", COMPLETED, session_id="cs_a", order_id=order_id, **money)
        assert deliver(client, event) == "applied"
    assert client.get(f"/orders/{order_id}").json()["status"] == "paid"
    assert sum(review_gauge(client.get("/metrics").text).values()) == 0


def test_paid_by_one_link_queues_the_other_live_link_for_expiry(
    client: TestClient, database_url: str
) -> None:
    order_id, money = new_order(client, "cs_first")
    own_links(app_sessions(client), order_id, "cs_second")
    factory = app_sessions(client)
    with factory() as db:  # the first link was replaced: only a live one needs expiring
        db.query(CheckoutLink).filter_by(stripe_checkout_session_id="cs_first").update(
            {"replaced_at": None}
        )
        db.commit()
    event = session_event("evt_p", COMPLETED, session_id="cs_first", order_id=order_id, **money)
    assert deliver(client, event) == "applied"
    with factory() as db:
        [queued] = db.scalars(select(LinkToExpire))
        # Stripe is unreachable here: the attempt is counted and left for the upkeep loop.
        assert (queued.stripe_checkout_session_id, queued.cause) == ("cs_second", "order_paid")
        assert queued.done_at is None
        assert queued.attempts == 1


def test_a_session_naming_no_order_of_ours_is_left_alone(client: TestClient) -> None:
    event = session_event("evt_x", COMPLETED, session_id="cs_shop", order_id=1)
    obj = event["data"]["object"]
    obj["client_reference_id"] = "shop-cart-17"
    obj["metadata"] = {"cart": "17"}
    assert deliver(client, event) == "ignored"
    assert sum(review_gauge(client.get("/metrics").text).values()) == 0


def test_a_session_naming_an_order_that_does_not_exist_is_recorded(client: TestClient) -> None:
    event = session_event("evt_y", COMPLETED, session_id="cs_lost", order_id=4242)
    assert deliver(client, event) == "needs_review"
    assert review_gauge(client.get("/metrics").text)["unknown_order"] == 1.0


def test_a_healed_order_takes_its_late_webhook_as_the_same_payment(client: TestClient) -> None:
    from basketball_api.db import transaction
    from basketball_api.recovery import heal_paid_orders

    order_id, money = new_order(client, "cs_lost")
    with transaction(app_sessions(client)) as db:  # the refresher healed the lost webhook
        assert heal_paid_orders(db, ["cs_lost"]) == ["cs_lost"]
    late = session_event("evt_late", COMPLETED, session_id="cs_lost", order_id=order_id, **money)
    assert deliver(client, late) == "applied"
    assert sum(review_gauge(client.get("/metrics").text).values()) == 0
