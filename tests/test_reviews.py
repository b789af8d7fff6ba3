"""Payments needing review, as operators see and resolve them: listed with what to do,
resolved by a named operator (refunded, applied by hand, dismissed), the gauge following."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from fastapi.testclient import TestClient
from pydantic import SecretStr
from tests.fakes import app_sessions, deliver_signed, own_links, session_event

from basketball_api.app import create_app
from basketball_api.settings import Settings

SECRET = "whsec_reviews_tests"
TOKEN = "treasurer-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
COMPLETED = "checkout.session.completed"


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    settings = Settings(
        database_url=database_url,
        stripe_webhook_secret=SecretStr(SECRET),
        stripe_api_base="http://127.0.0.1:9",
        stripe_max_network_retries=0,
        operator_tokens={"treasurer": SecretStr(TOKEN)},
    )
    with TestClient(create_app(settings, start_refresher=False), headers=AUTH) as c:
        yield c


def deliver(client: TestClient, event: dict[str, Any]) -> str:
    return deliver_signed(client, dict(event), SECRET)


def order_with_link(client: TestClient, session_id: str) -> tuple[int, dict[str, Any]]:
    body = {"product_id": 1, "parent_email": "r@example.org", "player_name": "Rae"}
    order_id = int(client.post("/orders", json={**body, "create_checkout": False}).json()["id"])
    return order_id, own_links(app_sessions(client), order_id, session_id)


def gauge(client: TestClient) -> dict[str, float]:
    pattern = r'^basketball_api_payments_needing_review\{reason="(\w+)"\} (\S+)$'
    return {k: float(v) for k, v in re.findall(pattern, client.get("/metrics").text, re.M)}


def listing(client: TestClient, **params: str) -> dict[str, Any]:
    r = client.get("/admin/payments-needing-review", headers=AUTH, params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_each_kind_is_listed_with_what_to_do(client: TestClient) -> None:
    order_id, money = order_with_link(client, "cs_own")
    short = {**money, "amount_total": 100}
    deliver(client, session_event("e1", COMPLETED, session_id="cs_own", order_id=order_id, **short))
    deliver(client, session_event("e2", COMPLETED, session_id="cs_else", order_id=order_id))

    body = listing(client)
    assert [i["reason"] for i in body["items"]] == ["unknown_order", "amount_mismatch"]
    assert body["open"]["unknown_order"] == body["open"]["amount_mismatch"] == 1
    for item in body["items"]:
        assert item["order_id"] == order_id
        assert item["what_to_do"]
        assert item["resolved_at"] is None
    assert "refund" in body["items"][0]["what_to_do"].lower()
    assert gauge(client)["unknown_order"] == 1.0


def test_refunded_leaves_the_count_and_names_the_operator(client: TestClient) -> None:
    order_id, _money = order_with_link(client, "cs_a")
    deliver(client, session_event("e1", COMPLETED, session_id="cs_x", order_id=order_id))
    [item] = listing(client)["items"]

    with structlog.testing.capture_logs() as logs:
        r = client.post(
            f"/admin/payments-needing-review/{item['id']}/resolve",
            headers=AUTH,
            json={"action": "refunded", "note": "refunded in the dashboard"},
        )
    assert r.status_code == 200, r.text
    assert r.json()["resolved_by"] == "treasurer"
    [line] = [e for e in logs if e["event"] == "payment_review_resolved"]
    assert (line["operator"], line["resolution"]) == ("treasurer", "refunded")
    assert gauge(client)["unknown_order"] == 0.0
    assert listing(client)["items"] == []
    assert [i["resolution"] for i in listing(client, status="resolved")["items"]] == ["refunded"]
    assert client.get(f"/orders/{order_id}").json()["status"] == "pending"

    again = client.post(
        f"/admin/payments-needing-review/{item['id']}/resolve",
        headers=AUTH,
        json={"action": "refunded"},
    )
    assert again.status_code == 409


def test_applying_by_hand_pays_a_pending_order_only(client: TestClient) -> None:
    order_id, money = order_with_link(client, "cs_a")
    short = {**money, "amount_total": 14000}
    deliver(client, session_event("e1", COMPLETED, session_id="cs_a", order_id=order_id, **short))
    [item] = listing(client)["items"]
    r = client.post(
        f"/admin/payments-needing-review/{item['id']}/resolve",
        headers=AUTH,
        json={"action": "applied", "note": "club accepts the discount"},
    )
    assert r.status_code == 200, r.text
    order = client.get(f"/orders/{order_id}").json()
    assert order["status"] == "paid"
    assert sum(gauge(client).values()) == 0.0
    # The same session again is that payment, not a second one.
    assert (
        deliver(
            client, session_event("e2", COMPLETED, session_id="cs_a", order_id=order_id, **short)
        )
        == "applied"
    )
    assert listing(client)["items"] == []

    other, _ = order_with_link(client, "cs_b")
    deliver(client, session_event("e3", COMPLETED, session_id="cs_c", order_id=order_id))
    [paid_twice] = listing(client)["items"]
    refused = client.post(
        f"/admin/payments-needing-review/{paid_twice['id']}/resolve",
        headers=AUTH,
        json={"action": "applied"},
    )
    assert refused.status_code == 409  # order_id's order is paid already
    assert client.get(f"/orders/{other}").json()["status"] == "pending"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"action": "dismissed"}, 422),  # a dismissal says whose money it is
        ({"action": "maybe"}, 422),
        ({"action": "refunded", "extra": 1}, 422),
    ],
)
def test_bad_resolutions_are_refused(client: TestClient, body: dict[str, Any], status: int) -> None:
    deliver(client, session_event("e1", COMPLETED, session_id="cs_q", order_id=999))
    [item] = listing(client)["items"]
    r = client.post(f"/admin/payments-needing-review/{item['id']}/resolve", headers=AUTH, json=body)
    assert r.status_code == status, r.text
    assert (
        client.post(
            "/admin/payments-needing-review/12345/resolve",
            headers=AUTH,
            json={"action": "refunded"},
        ).status_code
        == 404
    )


def test_the_page_lists_them_and_its_buttons_resolve_them(client: TestClient) -> None:
    order_id, _money = order_with_link(client, "cs_a")
    deliver(client, session_event("e1", COMPLETED, session_id="cs_x", order_id=order_id))
    login = client.post(
        "/admin/login", data={"token": TOKEN}, headers={"Origin": "http://testserver"}
    )
    assert login.status_code == 200  # followed to the page
    page = client.get("/admin").text
    assert 'data-reason="unknown_order"' in page
    assert f"apply to order {order_id}" in page
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    item = listing(client)["items"][0]["id"]

    r = client.post(
        f"/admin/page/payments-needing-review/{item}/resolve",
        data={"action": "refunded", "csrf_token": token},
        headers={"Origin": "http://testserver"},
    )
    assert r.status_code == 200
    assert "No payment needs review." in r.text
    [done] = listing(client, status="resolved")["items"]
    assert (done["resolved_by"], done["resolution"]) == ("treasurer", "refunded")
