"""Security: forged or malformed webhooks never apply, every admin route needs the token, and no
personal data or secret reaches the logs or ``/metrics``.

``tests/test_webhooks.py`` covers the basic signature refusals (missing, malformed, wrong
secret, stale, rotation, oversized, no secret); this module adds what an attacker or a broken
sender would try beyond those.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import httpx2
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import SecretStr
from tests.fakes import app_sessions, own_links, session_event, sign
from tests.procs import start_api

from basketball_api import access, admin
from basketball_api.app import create_app
from basketball_api.settings import Settings
from stripe_sandbox.app import create_app as create_sandbox
from stripe_sandbox.config import SandboxConfig
from stripe_sandbox.control import SandboxControl
from stripe_sandbox.server import BackgroundServer

SECRET = "whsec_security_test_secret"
TOKEN = "security-admin-token-0123456789"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}


def make_client(database_url: str, **settings: Any) -> TestClient:
    config = Settings(
        database_url=database_url,
        stripe_webhook_secret=SecretStr(SECRET),
        stripe_api_base="http://127.0.0.1:9",  # nothing listens: any Stripe call fails
        stripe_max_network_retries=0,
        **settings,
    )
    return TestClient(create_app(config, start_refresher=False), follow_redirects=False)


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    # Many wrong tokens in a row here: the failed-login throttle (tested elsewhere) stays out.
    with make_client(
        database_url, admin_token=TOKEN, operator_login_failure_limit="1000/minute"
    ) as c:
        yield c


def pending_order(client: TestClient) -> int:
    body = {
        "product_id": 1,
        "parent_email": "s@example.org",
        "player_name": "Sec",
        "create_checkout": False,
    }
    r = client.post("/orders", json=body)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def post_webhook(client: TestClient, payload: bytes, header: str) -> httpx2.Response:
    return client.post("/webhooks/stripe", content=payload, headers={"Stripe-Signature": header})


def refusals(client: TestClient, reason: str) -> float:
    prefix = f'basketball_api_webhook_errors_total{{reason="{reason}"}} '
    line = next(x for x in client.get("/metrics").text.splitlines() if x.startswith(prefix))
    return float(line.rsplit(" ", 1)[1])


# -- signatures beyond the basics -----------------------------------------------------------------


def completed_payload(client: TestClient, order_id: int, event_id: str = "evt_sec") -> bytes:
    money = own_links(app_sessions(client), order_id, "cs_sec")
    event = session_event(
        event_id, "checkout.session.completed", session_id="cs_sec", order_id=order_id, **money
    )
    return json.dumps(event).encode()


@pytest.mark.parametrize(
    ("ahead", "status", "reason"),
    [(24 * 3600, 400, "stale_timestamp"), (301, 400, "stale_timestamp"), (200, 200, None)],
)
def test_a_signature_dated_in_the_future_is_refused_beyond_the_tolerance(
    client: TestClient, ahead: int, status: int, reason: str | None
) -> None:
    order_id = pending_order(client)
    payload = completed_payload(client, order_id)
    r = post_webhook(client, payload, sign(payload, SECRET, int(time.time()) + ahead))
    assert r.status_code == status, r.text
    expected = "pending" if reason else "paid"
    assert client.get(f"/orders/{order_id}", headers=OPERATOR).json()["status"] == expected
    if reason:
        assert r.json()["code"] == reason
        assert refusals(client, reason) == 1.0


@pytest.mark.parametrize(
    "alter",
    [
        pytest.param(lambda b: b.replace(b'"paid"', b'"PAID"'), id="a value changed"),
        pytest.param(lambda b: b + b" ", id="whitespace appended"),
        pytest.param(lambda b: b.replace(b"cs_sec", b"cs_evil"), id="another session"),
        pytest.param(lambda b: b[:-1], id="truncated"),
    ],
)
def test_a_body_altered_after_signing_is_refused(client: TestClient, alter: Any) -> None:
    order_id = pending_order(client)
    payload = completed_payload(client, order_id)
    header = sign(payload, SECRET)
    r = post_webhook(client, alter(payload), header)
    assert (r.status_code, r.json()["code"]) == (400, "bad_signature")
    assert client.get(f"/orders/{order_id}", headers=OPERATOR).json()["status"] == "pending"
    assert post_webhook(client, payload, header).json() == {"status": "applied"}  # original ok


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(lambda p: sign(p, SECRET).replace("v1=", "v0="), id="v0 scheme only"),
        pytest.param(lambda p: f"t={int(time.time())}", id="timestamp, no signature"),
        pytest.param(lambda p: sign(p, SECRET).split(",")[1], id="signature, no timestamp"),
        pytest.param(lambda p: sign(p, SECRET).replace("t=", "t=x"), id="timestamp not a number"),
        pytest.param(lambda p: sign(p, SECRET)[:-2], id="signature cut short"),
        pytest.param(lambda p: sign(p, SECRET.upper()), id="secret in another case"),
    ],
)
def test_forged_signature_headers_are_refused(client: TestClient, header: Any) -> None:
    order_id = pending_order(client)
    payload = completed_payload(client, order_id)
    r = post_webhook(client, payload, header(payload))
    assert (r.status_code, r.json()["code"]) == (400, "bad_signature")
    assert client.get(f"/orders/{order_id}", headers=OPERATOR).json()["status"] == "pending"


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"[]", id="a list"),
        pytest.param(b'"evt"', id="a string"),
        pytest.param(b"42", id="a number"),
        pytest.param(b"{", id="not JSON"),
        pytest.param(b"\xff\xfe{}", id="not UTF-8"),
        pytest.param(b'{"type": "checkout.session.completed"}', id="no id"),
        pytest.param(b'{"id": 7, "type": "checkout.session.completed"}', id="id not a string"),
        pytest.param(json.dumps({"id": "e" * 256, "type": "x"}).encode(), id="id too long"),
        pytest.param(b'{"id": "evt_\\u0000", "type": "x"}', id="NUL in the id"),
        pytest.param(json.dumps({"id": "evt_t", "type": "t" * 101}).encode(), id="long type"),
        pytest.param(
            b'{"id": "evt_d", "type": "checkout.session.completed", "data": "x"}',
            id="data not an object",
        ),
        pytest.param(
            b'{"id": "evt_o", "type": "checkout.session.completed", "data": {"object": []}}',
            id="object not an object",
        ),
        pytest.param(
            b'{"id": "evt_s", "type": "checkout.session.completed",'
            b' "data": {"object": {"object": "checkout.session", "id": {"$ne": null}}}}',
            id="session id not a string",
        ),
    ],
)
def test_signed_payloads_that_cannot_be_events_are_refused_not_failed(
    client: TestClient, payload: bytes
) -> None:
    r = post_webhook(client, payload, sign(payload, SECRET))
    assert (r.status_code, r.json()["code"]) == (400, "bad_payload"), r.text
    assert r.json()["detail"]
    assert refusals(client, "processing_error") == 0.0


@pytest.mark.parametrize(
    "reference",
    ["9" * 40, "\u0661\u0662", "12abc", "-1", ""],
    ids=["huge", "arabic-indic digits", "not digits", "negative", "empty"],
)
def test_odd_client_reference_ids_find_nothing_and_fail_nothing(
    client: TestClient, reference: str
) -> None:
    event = session_event("evt_ref", "checkout.session.completed", session_id="cs_r", order_id=1)
    event["data"]["object"]["client_reference_id"] = reference
    del event["data"]["object"]["metadata"]
    payload = json.dumps(event).encode()
    r = post_webhook(client, payload, sign(payload, SECRET))
    assert r.json() == {"status": "ignored"}, r.text


# -- the admin token ------------------------------------------------------------------------------


def admin_operations(client: TestClient) -> list[tuple[str, str]]:
    """Every (method, path) in the OpenAPI schema whose declared rule is the operator's (all of
    /admin, and orders by id), ids filled in."""
    operator = {
        (method, path)
        for path, methods, rules in access.route_rules(client.app)  # type: ignore[arg-type]
        for method in methods
        if rules == [access.Rule.operator]
    }
    out = []
    for path, item in client.app.openapi()["paths"].items():  # type: ignore[attr-defined]
        for method in item:
            if (method.upper(), path) in operator:
                out.append((method.upper(), path.replace("{order_id}", "1")))
    assert ("GET", "/orders/1") in out
    assert ("POST", "/orders/1/cancel") in out
    return out


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no token"),
        pytest.param({"Authorization": "Bearer wrong-token-0123456789"}, id="wrong token"),
        pytest.param({"Authorization": f"Bearer {TOKEN[:-1]}"}, id="token minus a character"),
        pytest.param({"Authorization": f"Bearer {TOKEN}x"}, id="token plus a character"),
        pytest.param({"Authorization": f"Basic {TOKEN}"}, id="another scheme"),
        pytest.param({"Authorization": TOKEN}, id="no scheme"),
        pytest.param({"Authorization": "Bearer "}, id="empty token"),
        pytest.param({"Cookie": f"basketball_admin={TOKEN}"}, id="page cookie on the JSON API"),
    ],
)
def test_every_admin_operation_needs_the_token(client: TestClient, headers: dict[str, str]) -> None:
    operations = admin_operations(client)
    assert len(operations) >= 5
    for method, path in operations:
        r = client.request(method, path, headers=headers)
        if "Cookie" in headers and r.status_code != 401:
            pytest.fail(f"{method} {path} accepted the page cookie instead of the bearer token")
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        assert r.json()["detail"], (method, path)


def test_without_a_configured_token_admin_is_closed(database_url: str) -> None:
    with make_client(database_url) as client:
        for method, path in admin_operations(client):
            r = client.request(method, path, headers={"Authorization": "Bearer anything-at-all"})
            assert r.status_code == 401, (method, path)
            assert "ADMIN_TOKEN" in r.json()["detail"]
        r = client.post("/admin/login", data={"token": ""})
        assert "basketball_admin" not in r.headers.get("set-cookie", "")


def page_routes() -> list[tuple[str, str]]:
    """The HTML page's form routes (the admin router's POST routes not in the schema)."""
    return [
        ("POST", route.path.replace("{order_id}", "1"))
        for route in admin.router.routes
        if isinstance(route, APIRoute)
        and not route.include_in_schema
        and "POST" in (route.methods or ())
    ]


@pytest.mark.parametrize(
    "cookie", [None, "wrong-token-0123456789", TOKEN[:-1]], ids=["none", "wrong", "truncated"]
)
def test_the_admin_page_forms_do_nothing_without_the_token(
    client: TestClient, cookie: str | None
) -> None:
    order_id = pending_order(client)
    assert order_id == 1
    before = client.get(f"/orders/{order_id}", headers=OPERATOR).json()
    routes = page_routes()
    assert ("POST", "/admin/page/orders/1/reissue") in routes
    for method, path in routes:
        client.cookies.clear()
        if cookie is not None:
            client.cookies.set("basketball_admin", cookie)
        r = client.request(method, path, data={"token": cookie or ""})
        # Refused the HTML way: back to the login page, no session granted, nothing done.
        assert r.status_code in (303, 401, 403, 422), (path, r.status_code)
        if r.status_code == 303:
            assert r.headers["location"].split("?")[0] == "/admin", (path, r.headers)
            assert "outcome" not in r.headers["location"]
        granted = r.cookies.get("basketball_admin")
        assert not granted, (path, "a cookie was granted")
    client.cookies.clear()
    if cookie is not None:
        client.cookies.set("basketball_admin", cookie)
    page = client.get("/admin")
    assert "s@example.org" not in page.text  # the login form only
    assert "s***@" not in page.text
    assert client.get(f"/orders/{order_id}", headers=OPERATOR).json() == before


# -- no personal data, no secret, in logs or metrics ----------------------------------------------

EMAIL = "zebra.quokka.7731@example.org"
NAME = "Xanthippe Quenby-Marlowe"
KEY = "sk_test_SecurityKeyNeverLogged0123456789"
HOOK_SECRET = "whsec_SecurityHookSecretNeverLogged0123"
ADMIN = "AdminTokenNeverLogged-0123456789abcdef"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_no_personal_data_or_secret_reaches_logs_or_metrics(
    database_url: str, tmp_path: Path, log_format: str
) -> None:
    app = create_sandbox(SandboxConfig(webhook_secret=HOOK_SECRET, webhook_retry_base_seconds=0.05))
    with BackgroundServer(app) as sandbox, SandboxControl(sandbox.url) as control:
        control.configure(api_key=KEY)
        api = start_api(
            tmp_path,
            f"pii-{log_format}",
            database_url=database_url,
            stripe_api_base=sandbox.url,
            stripe_api_key=KEY,
            stripe_webhook_secret=HOOK_SECRET,
            admin_token=ADMIN,
            expiry_grace_seconds=0,
            stripe_max_network_retries=0,
            smtp_host="127.0.0.1",
            smtp_port=closed_port(),  # emailing the new link fails, and says so
            log_level="DEBUG",
            log_format=log_format,
        )
        try:
            control.configure_webhook(f"{api.url}/webhooks/stripe", HOOK_SECRET)
            metrics = exercise(api.url, control)
        finally:
            api.stop()
    logs = api.log_text()
    for expected in ("refresh_succeeded", "refresh_failed", "order_transition", "webhook_refused"):
        assert expected in logs, f"the run did not exercise {expected}"
    tokens = [line.split()[1] for line in metrics.splitlines() if line.startswith("#token ")]
    assert len(tokens) == 4
    for secret in (EMAIL, EMAIL.split("@")[0], NAME, NAME.split()[0], KEY, HOOK_SECRET, ADMIN):
        assert secret not in logs, f"{secret!r} appears in the logs"
        assert secret not in metrics, f"{secret!r} appears in /metrics"
    for token in tokens:  # an order's access token is a capability: never logged
        assert token not in logs
        assert token[:12] not in logs
    assert "/pay/" in logs  # the pay link was logged, without its token
    assert KEY[-12:] not in logs
    assert HOOK_SECRET[-12:] not in logs


def exercise(url: str, control: SandboxControl) -> str:
    """Every path that handles an order's personal data; returns the final /metrics."""
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=url, timeout=30) as http:
        products = {p["category"]: p["id"] for p in http.get("/products").json()}
        body = {"parent_email": EMAIL, "player_name": NAME}
        orders = []
        for category in ("tournament", "monthly", "jersey", "tournament"):
            r = http.post("/orders", json={**body, "product_id": products[category]})
            assert r.status_code == 201, r.text
            orders.append(r.json())
        assert http.post("/orders", json={**body, "product_id": 1, "quantity": 99}).is_error
        assert http.post("/orders", json={**body, "product_id": 1, "nope": EMAIL}).is_error
        assert http.post("/admin/refresh", headers=admin).json()["succeeded"]

        control.pay(orders[0]["checkout_session_id"], email=EMAIL)
        control.expire(orders[1]["checkout_session_id"])
        assert control.wait_for_webhooks(timeout=30)
        assert http.get("/admin/stranded-orders", headers=admin).status_code == 200
        r = http.post(f"/admin/orders/{orders[1]['id']}/reissue?email=true", headers=admin)
        assert r.status_code == 200, r.text
        cancel = f"/orders/by-token/{orders[2]['access_token']}/cancel"
        assert http.post(cancel).status_code == 200
        control.advance_clock(24 * 3600 + 60)
        assert control.wait_for_webhooks(timeout=30)
        assert http.post("/admin/refresh", headers=admin).json()["succeeded"]

        # Refusals and failures carry the data too: a forged webhook, Stripe down, a bad key.
        forged = json.dumps({"id": "evt_forged", "type": "x", "email": EMAIL}).encode()
        headers = {"Stripe-Signature": sign(forged, "whsec_attacker")}
        assert http.post("/webhooks/stripe", content=forged, headers=headers).status_code == 400
        control.inject_fault("POST /v1/checkout/sessions", "server_error")
        assert http.post("/orders", json={**body, "product_id": 2}).status_code == 503
        control.configure(api_key="sk_test_another_key_entirely")
        assert not http.post("/admin/refresh", headers=admin).json()["succeeded"]
        cancel = f"/orders/by-token/{orders[3]['access_token']}/cancel"
        assert http.post(cancel).status_code == 502
        control.configure(api_key=KEY)
        assert http.get("/admin/stranded-orders", headers={"Authorization": "Bearer x"}).is_error
        http.post("/admin/login", data={"token": "not-the-token"}, headers={"Origin": url})

        # The treasurer searches by name and email: the words searched stay out of the logs.
        for query in (NAME, EMAIL):
            assert http.get("/admin/orders", params={"q": query}, headers=admin).json()["rows"]
            csv = http.get("/admin/orders.csv", params={"q": query}, headers=admin)
            assert NAME in csv.text
        r = http.post(f"/admin/orders/{orders[3]['id']}/resend-link", headers=admin)
        assert r.json()["email"] == "failed"
        http.post("/admin/login", data={"token": ADMIN}, headers={"Origin": url})
        assert NAME in http.get("/admin/page/orders", params={"q": NAME.split()[0]}).text
        back = urlencode({"q": NAME})
        http.post(f"/admin/page/orders/{orders[3]['id']}/resend", data={"back": back})
        for order in orders:  # the parent's own pages, by token
            assert http.get(f"/o/{order['access_token']}").status_code == 200
            assert http.get(f"/pay/{order['access_token']}").status_code in (303, 503)
        assert http.get("/pay/not-a-token-at-all").status_code == 404
        tokens = "".join(f"\n#token {o['access_token']}" for o in orders)
        return http.get("/metrics").text + http.get("/health").text + tokens
