"""The orders API: clear 4xx for bad input, nothing half-written when Stripe is down."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select

from basketball_api.app import create_app
from basketball_api.db import make_engine
from basketball_api.models import Order
from basketball_api.settings import Settings

TOKEN = "orders-admin-token-0123456789"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    settings = Settings(
        database_url=database_url,
        stripe_api_base="http://127.0.0.1:9",  # nothing listens: Stripe is unreachable
        stripe_max_network_retries=0,
        stripe_timeout_seconds=2,
        admin_token=SecretStr(TOKEN),
    )
    with TestClient(create_app(settings, start_refresher=False)) as c:
        yield c


def count_orders(database_url: str) -> int:
    engine = make_engine(database_url)
    with engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(Order)).scalar_one()
    engine.dispose()
    return int(n)


def test_products_list_the_catalogue(client: TestClient) -> None:
    products = client.get("/products").json()
    assert {p["category"] for p in products} == {"tournament", "monthly", "jersey"}
    assert all(p["unit_amount"] > 0 and p["currency"] == "usd" for p in products)


def test_stripe_unavailable_gives_503_and_leaves_no_order(
    client: TestClient, database_url: str
) -> None:
    body = {"product_id": 1, "parent_email": "a@example.org", "player_name": "Ann"}
    r = client.post("/orders", json=body)
    assert r.status_code == 503
    assert "Payment provider unavailable" in r.json()["detail"]
    assert r.headers["retry-after"] == "30"
    assert count_orders(database_url) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"product_id": 1, "parent_email": "not-an-email", "player_name": "A"}, "parent_email"),
        ({"product_id": 1, "parent_email": "a@example.org", "player_name": ""}, "player_name"),
        ({"product_id": 0, "parent_email": "a@example.org", "player_name": "A"}, "product_id"),
        (
            {"product_id": 1, "parent_email": "a@example.org", "player_name": "A", "quantity": 99},
            "quantity",
        ),
        ({"product_id": 1, "parent_email": "a@example.org", "player_name": "A", "x": 1}, "x"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(
    client: TestClient, body: dict[str, object], field: str
) -> None:
    r = client.post("/orders", json=body)
    assert r.status_code == 422
    assert any(field in err["loc"] for err in r.json()["detail"])


def test_unknown_things_are_404s_that_say_what(client: TestClient) -> None:
    r = client.post(
        "/orders", json={"product_id": 99, "parent_email": "a@example.org", "player_name": "A"}
    )
    assert (r.status_code, r.json()["detail"]) == (404, "product 99 does not exist")
    assert client.get("/orders/12345", headers=OPERATOR).status_code == 404
    assert client.post("/orders/12345/cancel", headers=OPERATOR).status_code == 404


def test_an_order_without_a_link_can_be_cancelled(client: TestClient) -> None:
    body = {
        "product_id": 2,
        "parent_email": "a@example.org",
        "player_name": "Ann",
        "create_checkout": False,
    }
    order = client.post("/orders", json=body).json()
    assert order["status"] == "pending"
    assert order["checkout_session_id"] is None
    cancel = f"/orders/by-token/{order['access_token']}/cancel"
    assert client.post(cancel).json()["status"] == "cancelled"
    assert client.post(cancel).json()["status"] == "cancelled"


def test_health_and_docs_answer(client: TestClient) -> None:
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/docs").status_code == 200
    assert "/orders" in client.get("/openapi.json").json()["paths"]


def test_order_times_carry_their_offset(client: TestClient) -> None:
    body = {"product_id": 2, "parent_email": "a@example.org", "player_name": "Ann"}
    order = client.post("/orders", json={**body, "create_checkout": False}).json()
    cancelled = client.post(f"/orders/by-token/{order['access_token']}/cancel").json()
    by_id = client.get(f"/orders/{order['id']}", headers=OPERATOR).json()
    moments = [order["created_at"], cancelled["created_at"], cancelled["cancelled_at"]]
    moments += [by_id["created_at"], by_id["cancelled_at"]]
    for moment in moments:  # SQLite keeps no offset: read back without one, a client would
        assert datetime.fromisoformat(moment).utcoffset() == timedelta(0), moment
