"""The operator surface: token-protected JSON, link reissue against the sandbox (double clicks,
concurrent requests, Stripe and database failures), and the server-rendered page."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError
from tests.operator_page import OperatorPage
from tests.stack import ADMIN_TOKEN, Stack, running_stack

from basketball_api.app import create_app
from basketball_api.db import make_engine
from basketball_api.models import CheckoutLink
from basketball_api.settings import Settings

# -- the token ----------------------------------------------------------------------------


@pytest.fixture
def offline_client(tmp_path: Any) -> Iterator[TestClient]:
    from tests.standard_catalogue import migrate_with_catalogue

    url = f"sqlite:///{tmp_path / 'admin.db'}"
    migrate_with_catalogue(url)
    settings = Settings(
        database_url=url, admin_token=SecretStr(ADMIN_TOKEN), stripe_api_base="http://127.0.0.1:9"
    )
    with TestClient(create_app(settings, start_refresher=False)) as client:
        yield client


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
        {"Authorization": "Bearer "},
    ],
)
def test_every_admin_endpoint_refuses_without_the_right_token(
    offline_client: TestClient, headers: dict[str, str]
) -> None:
    for method, path in (
        ("GET", "/admin/stranded-orders"),
        ("POST", "/admin/orders/1/reissue"),
        ("POST", "/admin/refresh"),
    ):
        r = offline_client.request(method, path, headers=headers)
        assert r.status_code == 401, (method, path, r.text)
        assert r.json()["code"] == "unauthorized"


def test_admin_is_closed_when_no_token_is_configured(tmp_path: Any) -> None:
    from tests.standard_catalogue import migrate_with_catalogue

    url = f"sqlite:///{tmp_path / 'closed.db'}"
    migrate_with_catalogue(url)
    settings = Settings(database_url=url, stripe_api_base="http://127.0.0.1:9")
    with TestClient(create_app(settings, start_refresher=False)) as client:
        r = client.get("/admin/stranded-orders", headers={"Authorization": "Bearer anything"})
        assert r.status_code == 401
        assert "ADMIN_TOKEN" in r.json()["detail"]
        page = client.get("/admin")
        assert "disabled" in page.text
        assert 'name="token"' not in page.text
        tried = client.post(
            "/admin/login",
            data={"token": "anything"},
            headers={"Origin": "http://testserver"},
            follow_redirects=False,
        )
        assert tried.headers["location"] == "/admin?failed=true"
        assert "set-cookie" not in tried.headers


def test_the_listing_is_empty_and_says_so_before_any_refresh(offline_client: TestClient) -> None:
    r = offline_client.get(
        "/admin/stranded-orders", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert r.status_code == 200
    assert r.json() == {
        "totals": {"tournament": 0, "monthly": 0, "jersey": 0},
        "orders": [],
        "last_refresh_at": None,
    }


# -- with the sandbox ---------------------------------------------------------------------


def stranded(stack: Stack, category: str, n: int = 1, **extra: Any) -> list[dict[str, Any]]:
    orders = [stack.order(category, **extra) for _ in range(n)]
    for o in orders:
        stack.sdk.v1.checkout.sessions.expire(o["checkout_session_id"])
    return orders


def listing(stack: Stack, **params: str) -> dict[str, Any]:
    r = stack.api.get("/admin/stranded-orders", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def open_sessions_of(stack: Stack, order_id: int) -> list[str]:
    """Ground truth at the sandbox: the order's sessions still payable."""
    return [
        sid
        for sid in stack.sandbox.sessions(status="open")
        if stack.sandbox.session(sid)["client_reference_id"] == str(order_id)
    ]


def sessions_of(stack: Stack, order_id: int) -> list[str]:
    return [
        sid
        for sid in stack.sandbox.sessions()
        if stack.sandbox.session(sid)["client_reference_id"] == str(order_id)
    ]


def test_listing_reissue_and_the_gauge_agree(database_url: str) -> None:
    with running_stack(database_url) as stack:
        t1, t2, t3 = stranded(stack, "tournament", 3, parent_email="tess@example.org")
        [m1] = stranded(stack, "monthly")
        stack.order("jersey")  # a live link: not stranded
        paid = stack.order("jersey")
        stack.sandbox.pay(paid["checkout_session_id"])
        stack.sandbox.wait_for_webhooks(timeout=10)
        gauge = stack.refresh()
        assert gauge == {"tournament": 3, "monthly": 1, "jersey": 0}

        body = listing(stack)
        assert body["totals"] == gauge
        assert body["last_refresh_at"] is not None
        assert {o["order_id"] for o in body["orders"]} == {t1["id"], t2["id"], t3["id"], m1["id"]}
        first = next(o for o in body["orders"] if o["order_id"] == t1["id"])
        assert first["parent_email"] == "t***@example.org"
        assert first["session_id"] == t1["checkout_session_id"]
        assert first["amount"] == t1["amount"]
        assert first["recovery_url"] is None
        assert "tess@" not in str(body)
        only = listing(stack, category="monthly")
        assert [o["order_id"] for o in only["orders"]] == [m1["id"]]
        assert only["totals"] == gauge  # totals are for every category, whatever the filter
        assert stack.api.get("/admin/stranded-orders?category=shoes").status_code == 422

        old = t1["checkout_session_id"]
        r = stack.api.post(f"/admin/orders/{t1['id']}/reissue")
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["created"] is True
        assert out["emailed"] is False  # not asked, and no SMTP configured
        new = out["order"]["checkout_session_id"]
        assert new != old
        assert out["order"]["checkout_url"].startswith(stack.sandbox_url)
        assert out["pay_url"].startswith(f"{stack.api_url}/pay/")
        recovery = stack.sandbox.session(old)["after_expiration"]["recovery"]
        assert out["recovery_url"] == recovery["url"]
        assert stack.sandbox.session(new)["after_expiration"]["recovery"]["enabled"] is True
        assert open_sessions_of(stack, t1["id"]) == [new]

        # The list drops it at once; the gauge after the next refresh.
        assert listing(stack)["totals"]["tournament"] == 2
        assert stack.refresh() == {"tournament": 2, "monthly": 1, "jersey": 0}
        assert listing(stack)["totals"] == stack.refresh()

        again = stack.api.post(f"/admin/orders/{t1['id']}/reissue").json()  # a double click
        assert again["created"] is False
        assert again["order"]["checkout_session_id"] == new
        assert set(sessions_of(stack, t1["id"])) == {old, new}

        engine = make_engine(database_url)
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    CheckoutLink.stripe_checkout_session_id,
                    CheckoutLink.replaced_at,
                    CheckoutLink.recovery_url,
                )
                .where(CheckoutLink.order_id == t1["id"])
                .order_by(CheckoutLink.id)
            ).all()
        engine.dispose()
        assert [r[0] for r in rows] == [old, new]
        assert rows[0][1] is not None
        assert rows[0][2] == recovery["url"]
        assert rows[1][1] is None

        # When the new link dies too, the listing offers the old session's recovery link.
        stack.sdk.v1.checkout.sessions.expire(new)
        stack.sandbox.wait_for_webhooks(timeout=10)
        [again_stranded] = [o for o in listing(stack)["orders"] if o["order_id"] == t1["id"]]
        assert again_stranded["recovery_url"] == recovery["url"]


def test_reissue_refuses_paid_and_unknown_orders(database_url: str) -> None:
    with running_stack(database_url) as stack:
        paid = stack.order("monthly")
        stack.sandbox.drop_next_webhooks(1)  # paid at Stripe, webhook lost: still pending here
        stack.sandbox.pay(paid["checkout_session_id"])
        stack.sandbox.wait_for_webhooks(timeout=10)
        r = stack.api.post(f"/admin/orders/{paid['id']}/reissue")
        assert r.status_code == 409
        assert "healing" in r.json()["detail"]
        assert stack.api.post("/admin/orders/9999/reissue").status_code == 404
        assert sessions_of(stack, paid["id"]) == [paid["checkout_session_id"]]


def test_concurrent_reissues_create_exactly_one_session(database_url: str) -> None:
    with running_stack(database_url) as stack:
        [order] = stranded(stack, "tournament")
        stack.refresh()
        stack.sandbox.set_latency(0.1)  # a slow Stripe keeps every request in flight together
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

        def click(_: int) -> dict[str, Any]:
            with httpx.Client(base_url=stack.api_url, headers=headers, timeout=30) as c:
                r = c.post(f"/admin/orders/{order['id']}/reissue")
                assert r.status_code == 200, r.text
                body: dict[str, Any] = r.json()
                return body

        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(click, range(6)))
        stack.sandbox.set_latency(0)

        assert sum(r["created"] for r in results) == 1
        current = {r["order"]["checkout_session_id"] for r in results}
        assert len(current) == 1
        assert len(sessions_of(stack, order["id"])) == 2  # the dead one and exactly one new one
        assert open_sessions_of(stack, order["id"]) == list(current)
        assert stack.refresh()["tournament"] == 0


def test_stripe_failing_midway_leaves_the_order_as_it_was(database_url: str) -> None:
    with running_stack(database_url, stripe_max_network_retries=0) as stack:
        [order] = stranded(stack, "jersey")
        stack.refresh()
        stack.sandbox.inject_fault("POST /v1/checkout/sessions", "500", count=1)

        r = stack.api.post(f"/admin/orders/{order['id']}/reissue")

        assert r.status_code == 503
        assert r.json()["code"] == "stripe"
        now = stack.api.get(f"/orders/{order['id']}").json()
        assert now["checkout_session_id"] == order["checkout_session_id"]
        assert open_sessions_of(stack, order["id"]) == []
        assert [o["order_id"] for o in listing(stack)["orders"]] == [order["id"]]
        retry = stack.api.post(f"/admin/orders/{order['id']}/reissue").json()
        assert retry["created"] is True
        assert open_sessions_of(stack, order["id"]) == [retry["order"]["checkout_session_id"]]


def test_a_database_failure_after_creation_expires_the_new_session(database_url: str) -> None:
    with running_stack(database_url) as stack:
        [order] = stranded(stack, "tournament")
        stack.refresh()
        engine = stack.app.state.services.sessions.kw["bind"]

        def fail_insert(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if statement.startswith("INSERT INTO checkout_links"):
                raise OperationalError(statement, {}, Exception("disk I/O error"))

        event.listen(engine, "before_cursor_execute", fail_insert)
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        try:  # its own connection
            r = httpx.post(f"{stack.api_url}/admin/orders/{order['id']}/reissue", headers=headers)
        finally:
            event.remove(engine, "before_cursor_execute", fail_insert)

        assert r.status_code == 503  # the database failed: nothing kept, retry later
        assert r.headers["retry-after"]
        now = stack.api.get(f"/orders/{order['id']}").json()
        assert now["checkout_session_id"] == order["checkout_session_id"]
        made = sessions_of(stack, order["id"])
        assert len(made) == 2  # one was created at Stripe...
        assert open_sessions_of(stack, order["id"]) == []  # ...and expired again
        assert stack.api.post(f"/admin/orders/{order['id']}/reissue").json()["created"] is True
        assert len(open_sessions_of(stack, order["id"])) == 1


def test_the_refresh_a_reissue_wakes_drops_the_gauge(database_url: str) -> None:
    with running_stack(database_url, start_refresher=True) as stack:
        [order] = stranded(stack, "monthly")
        stack.sandbox.wait_for_webhooks(timeout=10)
        stack.api.post("/admin/refresh")  # the loop's own first cycle may predate the order
        assert stack.gauge()["monthly"] == 1.0

        assert stack.api.post(f"/admin/orders/{order['id']}/reissue").json()["created"]

        deadline = time.monotonic() + 10
        while stack.gauge()["monthly"] != 0.0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stack.gauge()["monthly"] == 0.0
        assert stack.gauge("basketball_api_pending_orders_with_open_session")["monthly"] == 1.0


# -- the page, over plain HTTP ------------------------------------------------------------


def totals_on(page: str) -> dict[str, int]:
    pattern = r'<span data-category="(\w+)">\w+: <b>(\d+)</b></span>'
    return {c: int(n) for c, n in re.findall(pattern, page)}


def rows_on(page: str) -> list[int]:
    return [int(n) for n in re.findall(r'<tr data-order="(\d+)">', page)]


def test_the_page_logs_in_lists_filters_and_reissues(database_url: str) -> None:
    with running_stack(database_url) as stack:
        t1, t2 = stranded(stack, "tournament", 2)
        [m1] = stranded(stack, "monthly")
        gauge = stack.refresh()
        with httpx.Client(
            base_url=stack.api_url, timeout=30, headers={"Origin": stack.api_url}
        ) as browser:
            login = browser.get("/admin")
            assert 'name="token"' in login.text
            assert rows_on(login.text) == []

            refused = browser.post("/admin/login", data={"token": "nope"}, follow_redirects=True)
            assert 'id="login-failed"' in refused.text
            assert "basketball_admin" not in browser.cookies
            # Without the cookie the page's reissue does nothing.
            blocked = browser.post(f"/admin/page/orders/{t1['id']}/reissue")
            assert blocked.status_code == 303
            assert len(sessions_of(stack, t1["id"])) == 1

            operator = OperatorPage(browser, ADMIN_TOKEN)
            page = browser.get("/admin")
            assert page.status_code == 200
            assert totals_on(page.text) == gauge == {"tournament": 2, "monthly": 1, "jersey": 0}
            assert sorted(rows_on(page.text)) == sorted([t1["id"], t2["id"], m1["id"]])
            assert "p***@example.org" in page.text
            assert "parent@example.org" not in page.text

            monthly = browser.get("/admin", params={"category": "monthly"})
            assert rows_on(monthly.text) == [m1["id"]]
            assert totals_on(monthly.text) == gauge

            done = operator.post(
                f"/admin/page/orders/{t2['id']}/reissue",
                data={"category": "tournament"},
                follow_redirects=True,
            )
            assert "New link issued for order" in done.text
            # The link to hand out is the order's pay link, never Stripe's URL.
            assert f'id="new-link" href="{stack.api_url}/pay/' in done.text
            old = stack.sandbox.session(t2["checkout_session_id"])
            assert old["after_expiration"]["recovery"]["url"] in done.text
            assert rows_on(done.text) == [t1["id"]]  # the tournament filter was kept

            twice = operator.post(f"/admin/page/orders/{t2['id']}/reissue", follow_redirects=True)
            assert "already has a live link" in twice.text

            stack.refresh()
            after = browser.get("/admin")
            assert totals_on(after.text) == {"tournament": 1, "monthly": 1, "jersey": 0}
            assert 'id="gauge"' in after.text

            operator.post("/admin/logout")
            assert 'name="token"' in browser.get("/admin").text
