"""The catalogue is data: operators create, change and take products off sale through the API and
the page; parents see and buy only what is on sale; the demo creates its catalogue the same way."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.operator_page import OperatorPage
from tests.stack import ADMIN_TOKEN
from tests.test_treasurer import AUTH, offline

from basketball_api.demo import CATALOGUE, create_catalogue

TOKEN = ADMIN_TOKEN


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    with offline(database_url) as c:
        yield c


@pytest.fixture
def empty_client(empty_database_url: str) -> Iterator[TestClient]:
    with offline(empty_database_url) as c:
        yield c


def create(client: TestClient, **fields: Any) -> dict[str, Any]:
    body = {"name": "Spring Classic entry", "category": "tournament", "unit_amount": 12000}
    r = client.post("/admin/products", json={**body, **fields}, headers=AUTH)
    assert r.status_code == 201, r.text
    result: dict[str, Any] = r.json()
    return result


def order(client: TestClient, product_id: int) -> Any:
    body = {
        "product_id": product_id,
        "parent_email": "a@example.org",
        "player_name": "Ann",
        "create_checkout": False,
    }
    return client.post("/orders", json=body)


def public_ids(client: TestClient) -> list[int]:
    return [p["id"] for p in client.get("/products").json()]


def iso(moment: datetime) -> str:
    return moment.isoformat()


def test_next_months_tournament_needs_no_developer(client: TestClient) -> None:
    product = create(client, event_date="2027-02-20", currency="USD")
    assert product["currency"] == "usd"
    assert product["on_sale"] is True
    assert product["event_date"] == "2027-02-20"
    assert public_ids(client) == [1, 2, 3, product["id"]]
    r = order(client, product["id"])
    assert r.status_code == 201, r.text
    assert r.json()["amount"] == 12000
    assert r.json()["product_name"] == "Spring Classic entry"


def test_a_deactivated_product_is_off_sale_but_kept(client: TestClient) -> None:
    product = create(client)
    r = client.post(f"/admin/products/{product['id']}/deactivate", headers=AUTH)
    assert r.status_code == 200
    assert r.json()["active"] is False
    assert product["id"] not in public_ids(client)
    refused = order(client, product["id"])
    assert refused.status_code == 422
    assert "not on sale" in refused.json()["detail"]
    listed = client.get("/admin/products", headers=AUTH).json()
    assert [p["on_sale"] for p in listed if p["id"] == product["id"]] == [False]


def test_the_sale_window_decides_what_parents_see(client: TestClient) -> None:
    now = datetime.now(UTC)
    later = create(client, name="Later", sale_starts_at=iso(now + timedelta(days=3)))
    over = create(client, name="Over", sale_ends_at=iso(now - timedelta(minutes=1)))
    current = create(
        client,
        name="Now",
        sale_starts_at=iso(now - timedelta(days=1)),
        sale_ends_at=iso(now + timedelta(days=1)),
    )
    assert (later["on_sale"], over["on_sale"], current["on_sale"]) == (False, False, True)
    assert public_ids(client) == [1, 2, 3, current["id"]]
    assert order(client, later["id"]).status_code == 422
    assert order(client, over["id"]).status_code == 422
    assert order(client, current["id"]).status_code == 201
    # Opening the window (clearing its start) puts the product on sale.
    r = client.patch(f"/admin/products/{later['id']}", json={"sale_starts_at": None}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["on_sale"] is True
    assert later["id"] in public_ids(client)


def test_a_new_price_applies_to_new_orders_only(client: TestClient) -> None:
    before = order(client, 1).json()
    r = client.patch("/admin/products/1", json={"unit_amount": 17500}, headers=AUTH)
    assert r.status_code == 200, r.text
    after = order(client, 1).json()
    assert (before["amount"], after["amount"]) == (15000, 17500)
    assert client.get(f"/orders/{before['id']}", headers=AUTH).json()["amount"] == 15000


def test_the_category_of_a_product_with_orders_stays(client: TestClient) -> None:
    assert order(client, 2).status_code == 201
    r = client.patch("/admin/products/2", json={"category": "jersey"}, headers=AUTH)
    assert r.status_code == 409
    assert "category" in r.json()["detail"]
    fresh = create(client)
    moved = client.patch(
        f"/admin/products/{fresh['id']}", json={"category": "monthly"}, headers=AUTH
    )
    assert moved.status_code == 200
    assert moved.json()["category"] == "monthly"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"category": "shoes"}, "category"),
        ({"unit_amount": 0}, "unit_amount"),
        ({"unit_amount": 10**9}, "unit_amount"),
        ({"unit_amount": 49}, "at least 0.50 USD"),  # Stripe would refuse every checkout
        ({"currency": "jpy", "unit_amount": 5000}, "two decimals"),
        ({"currency": "dollars"}, "currency"),
        ({"name": ""}, "name"),
        ({"name": "bad\x00name"}, "name"),
        ({"sale_starts_at": "2027-01-01T00:00:00"}, "sale_starts_at"),  # no time zone
        (
            {"sale_starts_at": "2027-01-02T00:00:00Z", "sale_ends_at": "2027-01-01T00:00:00Z"},
            "sale_ends_at",
        ),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_products_are_refused_with_the_field_named(
    client: TestClient, fields: dict[str, Any], named: str
) -> None:
    body = {"name": "X", "category": "tournament", "unit_amount": 100, **fields}
    r = client.post("/admin/products", json=body, headers=AUTH)
    assert r.status_code == 422, r.text
    assert named in r.text
    assert public_ids(client) == [1, 2, 3]


def test_an_update_cannot_clear_a_required_field_or_invert_the_window(client: TestClient) -> None:
    assert client.patch("/admin/products/1", json={"name": None}, headers=AUTH).status_code == 422
    cheap = client.patch("/admin/products/1", json={"unit_amount": 10}, headers=AUTH)
    assert cheap.status_code == 422
    assert "at least 0.50 USD" in cheap.json()["detail"]
    client.patch(
        "/admin/products/1", json={"sale_ends_at": "2030-01-01T00:00:00Z"}, headers=AUTH
    ).raise_for_status()
    r = client.patch(
        "/admin/products/1", json={"sale_starts_at": "2031-01-01T00:00:00Z"}, headers=AUTH
    )
    assert r.status_code == 422
    assert "sale_ends_at" in r.json()["detail"]
    assert client.patch("/admin/products/99", json={}, headers=AUTH).status_code == 404


def test_catalogue_endpoints_need_the_operator_token(client: TestClient) -> None:
    for method, path in (
        ("GET", "/admin/products"),
        ("POST", "/admin/products"),
        ("PATCH", "/admin/products/1"),
        ("POST", "/admin/products/1/deactivate"),
    ):
        r = client.request(method, path, json={})
        assert r.status_code == 401, (method, path, r.text)
    assert client.get("/admin/catalogue", follow_redirects=False).status_code == 303
    r = client.post("/admin/page/products", data={"name": "X"}, follow_redirects=False)
    assert r.status_code == 303
    assert public_ids(client) == [1, 2, 3]


def test_the_demo_creates_its_catalogue_through_the_operator_api(
    empty_client: TestClient,
) -> None:
    assert empty_client.get("/products").json() == []
    create_catalogue(empty_client, TOKEN)
    products = empty_client.get("/products").json()
    assert [(p["id"], p["name"], p["unit_amount"]) for p in products] == [
        (i + 1, p.name, p.unit_amount) for i, p in enumerate(CATALOGUE)
    ]


# -- the page -----------------------------------------------------------------------------


def logged_in(client: TestClient) -> OperatorPage:
    return OperatorPage(client, TOKEN)


def test_the_page_adds_edits_and_takes_off_sale(client: TestClient) -> None:
    page = logged_in(client)
    listing = page.get("/admin/catalogue")
    assert listing.status_code == 200
    assert "Utah Invitational entry" in listing.text
    form = {
        "name": "Winter Shootout entry",
        "category": "tournament",
        "price": "95.50",
        "currency": "usd",
        "event_date": "2027-01-30",
        "sale_starts_at": "",
        "sale_ends_at": "2027-01-25T18:00",
        "active": "true",
    }
    r = page.post("/admin/page/products", data=form, follow_redirects=False)
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/admin/catalogue?saved=4"
    created = client.get("/admin/products", headers=AUTH).json()[3]
    assert (created["unit_amount"], created["event_date"]) == (9550, "2027-01-30")
    assert created["sale_ends_at"].startswith("2027-01-25T18:00:00")
    assert 4 in public_ids(client)

    edit = page.get("/admin/catalogue?edit=4")
    assert 'value="95.50"' in edit.text
    assert 'value="2027-01-25T18:00"' in edit.text
    r = page.post("/admin/page/products/4", data={**form, "price": "99"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    assert client.get("/admin/products", headers=AUTH).json()[3]["unit_amount"] == 9900

    r = page.post("/admin/page/products/4/deactivate", follow_redirects=False)
    assert r.status_code == 303
    assert 4 not in public_ids(client)
    assert "no (deactivated)" in page.get("/admin/catalogue").text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"price": "12.345"}, "two decimals"),
        ({"price": "twelve"}, "not an amount"),
        ({"category": "shoes"}, "category"),
        ({"sale_starts_at": "2027-02-01T00:00", "sale_ends_at": "2027-01-01T00:00"}, "after"),
    ],
)
def test_the_page_says_what_is_wrong_and_keeps_the_form(
    client: TestClient, change: dict[str, str], message: str
) -> None:
    page = logged_in(client)
    form = {"name": "Typo Cup", "category": "tournament", "price": "10", "active": "true"}
    r = page.post("/admin/page/products", data={**form, **change})
    assert r.status_code == 422
    assert message in r.text
    assert 'value="Typo Cup"' in r.text
    assert public_ids(client) == [1, 2, 3]


def test_every_catalogue_change_names_the_operator(client: TestClient) -> None:
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        product = create(client)
        client.patch(
            f"/admin/products/{product['id']}", json={"unit_amount": 9900}, headers=AUTH
        ).raise_for_status()
        client.post(f"/admin/products/{product['id']}/deactivate", headers=AUTH).raise_for_status()
        page = logged_in(client)
        form = {"name": "Page Cup", "category": "jersey", "price": "20", "active": "true"}
        assert page.post("/admin/page/products", data=form).status_code == 200
    audit = [(e["event"], e.get("by")) for e in logs if e["event"].startswith("product_")]
    assert [event for event, _ in audit] == [
        "product_created",
        "product_updated",
        "product_deactivated",
        "product_created",
    ]
    assert all(by for _, by in audit), audit
