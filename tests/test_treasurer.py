"""The treasurer's view: orders a treasurer can tell apart (player, order date, amount
outstanding, link state), searched and filtered, totalled per product, exported as CSV, and the
cancel / reissue / resend-link buttons — with email that is not configured said out loud."""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import event, update
from tests.links import Pending, factory_for, insert_pending
from tests.operator_page import OperatorPage, csrf_of
from tests.procs import free_port
from tests.stack import ADMIN_TOKEN, Stack, running_stack
from tests.test_notify import Sink

from basketball_api import treasurer
from basketball_api.app import create_app
from basketball_api.db import make_engine, make_session_factory, transaction
from basketball_api.models import Order, OrderStatus
from basketball_api.orders import get_order, transition
from basketball_api.settings import Settings

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FAMILIES = [  # (product id, player, parent email)
    (1, "Jordan Lee", "mia.lee@example.org"),
    (1, "Sam Ortiz", "ortiz.family@example.net"),
    (2, "Jordan Park", "dad.park@example.org"),
    (2, "Ava Kim", "kims@example.com"),
    (3, "Noah 100% Fan", "noah@example.org"),
]


def offline(url: str, **settings: Any) -> TestClient:
    config = Settings(
        database_url=url,
        admin_token=SecretStr(ADMIN_TOKEN),
        stripe_api_base="http://127.0.0.1:9",  # no Stripe: orders are taken without a link
        stripe_max_network_retries=0,
        **settings,
    )
    return TestClient(create_app(config, start_refresher=False))


def place(client: TestClient, product: int, player: str, email: str) -> dict[str, Any]:
    body = {
        "product_id": product,
        "parent_email": email,
        "player_name": player,
        "create_checkout": False,
    }
    r = client.post("/orders", json=body)
    assert r.status_code == 201, r.text
    result: dict[str, Any] = r.json()
    return result


def set_status(url: str, order_id: int, status: OrderStatus) -> None:
    """Through the one transition function, as the webhook or a cancel would."""
    engine = make_engine(url)
    with transaction(make_session_factory(engine)) as db:
        transition(get_order(db, order_id), status, cause="test")
    engine.dispose()


def backdate(url: str, order_id: int, days: int) -> None:
    """An order taken ``days`` ago (history a test cannot wait for)."""
    engine = make_engine(url)
    with engine.begin() as conn:
        moment = datetime.now(UTC) - timedelta(days=days)
        conn.execute(update(Order).where(Order.id == order_id).values(created_at=moment))
    engine.dispose()


@pytest.fixture
def ledger(database_url: str) -> Iterator[tuple[TestClient, list[dict[str, Any]]]]:
    """Five families' orders: #1 paid, #4 cancelled, #5 taken 40 days ago, the rest pending."""
    with offline(database_url) as client:
        placed = [place(client, *family) for family in FAMILIES]
        set_status(database_url, placed[0]["id"], OrderStatus.paid)
        set_status(database_url, placed[3]["id"], OrderStatus.cancelled)
        backdate(database_url, placed[4]["id"], 40)
        yield client, placed


def listed(client: TestClient, **params: Any) -> dict[str, Any]:
    r = client.get("/admin/orders", params=params, headers=AUTH)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def ids(body: dict[str, Any]) -> list[int]:
    return [row["order_id"] for row in body["rows"]]


def test_each_order_shows_what_tells_families_apart(ledger: Any) -> None:
    client, placed = ledger
    rows = {row["order_id"]: row for row in listed(client)["rows"]}
    first, second = rows[placed[0]["id"]], rows[placed[1]["id"]]
    assert (first["player_name"], first["parent_email"]) == ("Jordan Lee", "mia.lee@example.org")
    assert (first["state"], first["outstanding"]) == ("paid", 0)
    assert (second["state"], second["amount"], second["outstanding"]) == ("pending", 15000, 15000)
    assert second["link_state"] == "none"
    assert rows[placed[3]["id"]]["outstanding"] == 0  # cancelled: nothing expected
    ordered = datetime.fromisoformat(rows[placed[4]["id"]]["ordered_at"])
    assert (datetime.now(UTC) - ordered).days == 40
    assert ids(listed(client)) == [p["id"] for p in placed[3::-1]] + [placed[4]["id"]]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"q": "jordan"}, [2, 0]),  # the player's name, any case
        ({"q": "ORTIZ.family"}, [1]),  # the parent's email
        ({"q": "100%"}, [4]),  # a literal %, not a wildcard
        ({"q": "_"}, []),
        ({"state": "pending"}, [2, 1, 4]),
        ({"state": "paid"}, [0]),
        ({"category": "monthly"}, [3, 2]),
        ({"product": 3}, [4]),
        ({"q": "jordan", "category": "tournament"}, [0]),
        ({"ordered_until": str(date.today() - timedelta(days=30))}, [4]),
        ({"ordered_from": str(date.today())}, [3, 2, 1, 0]),
        ({"ordered_from": str(date.today() + timedelta(days=1))}, []),
        ({"state": "", "category": "", "q": " "}, [3, 2, 1, 0, 4]),  # an empty form: no filter
        ({"ordered_from": "0001-01-01", "ordered_until": "9999-12-31"}, [3, 2, 1, 0, 4]),
    ],
)
def test_filters_and_search(ledger: Any, params: dict[str, Any], expected: list[int]) -> None:
    client, placed = ledger
    assert ids(listed(client, **params)) == [placed[i]["id"] for i in expected]


def test_bad_filters_are_refused_with_the_field_named(ledger: Any) -> None:
    client, _ = ledger
    for params, field in (
        ({"state": "lost"}, "state"),
        ({"category": "shoes"}, "category"),
        ({"product": "0"}, "product"),
        ({"ordered_from": "yesterday"}, "ordered_from"),
        ({"q": "x" * 201}, "q"),
        ({"q": "nul\x00byte"}, "q"),  # PostgreSQL would refuse it: a 422, not a 500
    ):
        r = client.get("/admin/orders", params=params, headers=AUTH)
        assert r.status_code == 422, (params, r.text)
        assert field in r.text


def test_totals_per_product_cover_every_matching_order(ledger: Any) -> None:
    client, _ = ledger
    body = listed(client, limit=1)
    assert len(body["rows"]) == 1
    assert body["matching"] == 5
    totals = {t["product_id"]: t for t in body["totals"]}
    assert {
        k: (t["orders"], t["cancelled"], t["paid"], t["outstanding"]) for k, t in totals.items()
    } == {
        1: (2, 0, 15000, 15000),
        2: (2, 1, 0, 6000),
        3: (1, 0, 0, 4500),
    }
    only = listed(client, q="jordan")["totals"]
    assert [(t["product_id"], t["orders"], t["outstanding"]) for t in only] == [
        (1, 1, 0),
        (2, 1, 6000),
    ]


def test_the_csv_export_has_the_same_rows_and_cannot_run_formulas(database_url: str) -> None:
    with offline(database_url) as client:
        place(client, 1, '=HYPERLINK("http://evil")', "a@example.org")
        place(client, 2, 'Ann, "Junior"', "b@example.org")
        r = client.get("/admin/orders.csv", headers=AUTH, params={"state": "pending"})
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/csv")
        assert "attachment" in r.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert [row["player"] for row in rows] == ['Ann, "Junior"', '\'=HYPERLINK("http://evil")']
        assert (rows[1]["amount"], rows[1]["outstanding"], rows[1]["currency"]) == (
            "150.00",
            "150.00",
            "USD",
        )
        assert rows[1]["link"] == "none"
        assert client.get("/admin/orders.csv", params={"q": "ann"}).status_code == 401


def test_the_treasurers_endpoints_need_the_operator(database_url: str) -> None:
    with offline(database_url) as client:
        for method, path in (
            ("GET", "/admin/orders"),
            ("GET", "/admin/orders.csv"),
            ("POST", "/admin/orders/1/resend-link"),
        ):
            assert client.request(method, path).status_code == 401, path
        for method, path in (
            ("GET", "/admin/page/orders"),
            ("GET", "/admin/page/orders.csv"),
            ("POST", "/admin/page/orders/1/cancel"),
            ("POST", "/admin/page/orders/1/relink"),
            ("POST", "/admin/page/orders/1/resend"),
        ):
            r = client.request(method, path, follow_redirects=False)
            assert (r.status_code, r.headers.get("location")) == (303, "/admin"), path


def test_the_page_filters_and_keeps_them(ledger: Any) -> None:
    client, placed = ledger
    OperatorPage(client, ADMIN_TOKEN)
    page = client.get("/admin/page/orders", params={"q": "jordan", "state": "", "category": ""})
    assert page.status_code == 200
    shown = [int(x) for x in re.findall(r'<tr data-order="(\d+)"', page.text)]
    assert shown == [placed[2]["id"], placed[0]["id"]]
    assert "Jordan Park" in page.text
    assert 'value="jordan"' in page.text
    assert 'href="/admin/page/orders.csv?q=jordan"' in page.text
    assert page.text.count('class="cancel"') == 1  # the pending one only
    total = re.search(r'<tr id="grand-total".*?</tr>', page.text, re.S)
    assert total is not None
    assert "60.00 USD" in total.group(0)  # Jordan Park's monthly dues; Jordan Lee paid
    csv_text = client.get("/admin/page/orders.csv?q=jordan").text
    assert csv_text.count("\n") == 3


# -- the buttons, against the sandbox -----------------------------------------------------


def login(stack: Stack) -> None:
    """The page's cookie on the stack's client (its bearer header stays for the JSON)."""
    OperatorPage(stack.api, ADMIN_TOKEN)


def press(stack: Stack, order_id: int, action: str, back: str = "") -> str:
    """Press a row's button; returns the notice the page shows after the redirect."""
    page = stack.api
    form = {"back": back, "csrf_token": csrf_of(page.get("/admin").text)}
    r = page.post(f"/admin/page/orders/{order_id}/{action}", data=form, follow_redirects=False)
    assert r.status_code == 303, r.text
    location = r.headers["location"]
    assert location.startswith("/admin/page/orders?")
    shown = page.get(location)
    assert shown.status_code == 200
    found = re.search(r'<div class="notice[^"]*" id="notice">(.*?)</div>', shown.text, re.S)
    assert found, shown.text
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(1))).strip()


def row_link(stack: Stack, order_id: int) -> str:
    found = next(r for r in listed_stack(stack)["rows"] if r["order_id"] == order_id)
    return str(found["link_state"])


def listed_stack(stack: Stack) -> dict[str, Any]:
    r = stack.api.get("/admin/orders")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_link_states_follow_what_the_refresh_learnt(database_url: str) -> None:
    with running_stack(database_url) as stack:
        live = stack.order("tournament")
        dead = stack.order("monthly")
        none = stack.order("jersey", create_checkout=False)
        stack.sdk.v1.checkout.sessions.expire(dead["checkout_session_id"])
        stack.sandbox.wait_for_webhooks(timeout=10)
        stack.refresh()
        states = {r["order_id"]: r["link_state"] for r in listed_stack(stack)["rows"]}
        assert states == {live["id"]: "open", dead["id"]: "dead", none["id"]: "none"}
        body = listed_stack(stack)
        url = next(r["link_url"] for r in body["rows"] if r["order_id"] == live["id"])
        assert url == stack.api.get(f"/orders/{live['id']}").json()["checkout_url"]


def test_cancel_reissue_and_resend_without_email(database_url: str) -> None:
    with running_stack(database_url) as stack:
        login(stack)
        doomed, stranded, reminded = (stack.order("tournament") for _ in range(3))
        stack.sdk.v1.checkout.sessions.expire(stranded["checkout_session_id"])
        stack.sandbox.wait_for_webhooks(timeout=10)
        stack.refresh()

        said = press(stack, doomed["id"], "cancel", back="state=pending&next=https://evil")
        assert f"Order {doomed['id']} is cancelled" in said
        assert stack.sandbox.session(doomed["checkout_session_id"])["status"] == "expired"
        assert stack.api.get(f"/orders/{doomed['id']}").json()["status"] == "cancelled"
        again = press(stack, doomed["id"], "relink")
        assert "it needs no link" in again

        said = press(stack, stranded["id"], "relink")
        assert "New link issued" in said
        assert "No email was sent" in said
        fresh = stack.api.get(f"/orders/{stranded['id']}").json()
        assert f"{stack.api_url}/pay/" in said  # the pay link, to send by hand
        assert fresh["checkout_url"] not in said
        assert stack.sandbox.session(fresh["checkout_session_id"])["status"] == "open"

        said = press(stack, reminded["id"], "resend")
        assert "No email was sent" in said
        assert "SMTP_HOST" in said
        assert f"{stack.api_url}/pay/" in said  # the pay link, to send by hand

        r = stack.api.post(f"/admin/orders/{reminded['id']}/resend-link")
        assert r.status_code == 409
        assert r.json()["code"] == "email_not_configured"
        assert "no email was sent" in r.json()["detail"]

        page = stack.api.get("/admin/page/orders")
        assert 'id="email-off"' in page.text


def test_resend_emails_the_live_link_or_a_new_one(database_url: str) -> None:
    from aiosmtpd.controller import Controller

    sink = Sink(port=free_port())
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    try:
        with running_stack(database_url, smtp_host="127.0.0.1", smtp_port=sink.port) as stack:
            login(stack)
            live = stack.order("tournament", parent_email="live@example.org")
            dead = stack.order("monthly", parent_email="dead@example.org")
            stack.sdk.v1.checkout.sessions.expire(dead["checkout_session_id"])
            stack.sandbox.wait_for_webhooks(timeout=10)
            stack.refresh()

            said = press(stack, live["id"], "resend")
            assert "emailed to the parent" in said
            r = stack.api.post(f"/admin/orders/{dead['id']}/resend-link")
            assert r.status_code == 200, r.text
            assert (r.json()["email"], r.json()["new_link"]) == ("sent", True)
            link = r.json()["link_url"]
            assert link.startswith(f"{stack.api_url}/pay/")  # the pay link, not Stripe's URL
            sent: dict[str, str] = {}
            for m in sink.messages:
                payload = m.get_payload(decode=True)
                assert isinstance(payload, bytes)
                sent[m["To"]] = payload.decode()
            assert f"{stack.api_url}/pay/" in sent["live@example.org"]
            assert "Here is the payment link" in sent["live@example.org"]
            assert link in sent["dead@example.org"]
            assert "expired" in sent["dead@example.org"]
    finally:
        controller.stop()


def test_the_stranded_list_tells_families_apart(database_url: str) -> None:
    with running_stack(database_url) as stack:
        twins = [
            stack.order("tournament", player_name=name, parent_email="parent@example.org")
            for name in ("Riley Chen", "Casey Chen")
        ]
        for o in twins:
            stack.sdk.v1.checkout.sessions.expire(o["checkout_session_id"])
        stack.sandbox.wait_for_webhooks(timeout=10)
        stack.refresh()
        body = stack.api.get("/admin/stranded-orders").json()
        rows = {o["order_id"]: o for o in body["orders"]}
        for o in twins:
            row = rows[o["id"]]
            assert row["player_name"] == o["player_name"]
            assert row["amount"] == 15000
            assert datetime.fromisoformat(row["ordered_at"]).date() == datetime.now(UTC).date()
        assert {r["player_name"] for r in rows.values()} == {"Riley Chen", "Casey Chen"}
        login(stack)
        page = stack.api.get("/admin").text
        assert "Riley Chen" in page
        assert "Casey Chen" in page
        # The reissue button on the stranded page says no email went out.
        r = stack.api.post(
            f"/admin/page/orders/{twins[0]['id']}/reissue",
            data={"csrf_token": csrf_of(page)},
            follow_redirects=False,
        )
        shown = stack.api.get(r.headers["location"]).text
        assert "No email was sent: email is not configured" in shown


def test_link_states_come_with_the_orders_in_one_query(database_url: str) -> None:
    """The listing reads each order's link state with the order (its copy of its current
    link), the gauges' bucket of it: before, one more query per pending order with a link."""
    factory = factory_for(database_url)
    now = int(time.time())
    rows = [
        Pending(f"cs_treasurer_{i:03d}", "tournament", now - 600, now + (3600 if i % 2 else -3600))
        for i in range(30)
    ]
    insert_pending(factory, rows, known_open=True)
    engine = factory.kw["bind"]
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", count)
    try:
        with transaction(factory) as db:
            listing = treasurer.search(db, treasurer.OrderFilter(), now=now, grace=60)
    finally:
        event.remove(engine, "before_cursor_execute", count)
        engine.dispose()
    states = {r.link_state.value for r in listing.rows}
    assert len(listing.rows) == 30
    assert states == {"open", "dead"}  # half of them expired by time an hour ago
    assert sum(r.link_state.value == "dead" for r in listing.rows) == 15
    assert len(statements) <= 4, statements  # the page, its count, the totals
