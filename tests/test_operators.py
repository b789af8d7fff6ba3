"""Operators: named credentials whose names reach the audit log, a signed expiring session
cookie, CSRF and Origin checks on every form, throttled failed logins, and an OpenAPI schema
that declares the security scheme and every error an operator route answers."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import httpx2
import pytest
import structlog
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from tests.stack import running_stack

from basketball_api import admin, catalogue_admin, operators, reviews
from basketball_api.app import create_app
from basketball_api.settings import Settings

TREASURER = "treasurer-token-0123456789abcdef"
COACH = "coach-token-0123456789abcdef0000"
TOKENS = {"treasurer": TREASURER, "coach": "sha256:" + hashlib.sha256(COACH.encode()).hexdigest()}
SITE = "http://testserver"


def make_client(database_url: str, **settings: Any) -> TestClient:
    config = Settings(
        database_url=database_url,
        stripe_api_base="http://127.0.0.1:9",
        stripe_max_network_retries=0,
        **{"operator_tokens": TOKENS, **settings},
    )
    return TestClient(create_app(config, start_refresher=False))


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    with make_client(database_url) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def log_in(client: TestClient, token: str, **headers: str) -> httpx2.Response:
    return client.post(
        "/admin/login",
        data={"token": token},
        headers={"Origin": SITE, **headers},
        follow_redirects=False,
    )


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "the page's forms carry no CSRF token"
    return match.group(1)


# -- named credentials -----------------------------------------------------------------------


def test_each_operator_signs_in_with_their_own_token(client: TestClient) -> None:
    for token in (TREASURER, COACH):
        assert client.get("/admin/payments-needing-review", headers=bearer(token)).is_success
    for wrong in ("sha256:" + hashlib.sha256(COACH.encode()).hexdigest(), TREASURER[:-1], ""):
        r = client.get("/admin/payments-needing-review", headers=bearer(wrong))
        assert r.status_code == 401, wrong


def test_admin_token_still_works_as_the_operator_named_admin(database_url: str) -> None:
    legacy = "legacy-admin-token-0123456789"
    with make_client(database_url, operator_tokens={}, admin_token=legacy) as client:
        r = client.post("/admin/orders/1/reissue", headers=bearer(legacy))
        assert r.status_code == 404  # signed in; the order does not exist
        assert log_in(client, legacy).status_code == 303
        assert "signed in as <b>admin</b>" in client.get("/admin").text


def test_the_audit_log_of_a_reissue_names_the_operator(database_url: str) -> None:
    with running_stack(database_url, operator_tokens=TOKENS) as stack:
        order = stack.order("tournament")
        stack.sandbox.expire(order["checkout_session_id"])
        with structlog.testing.capture_logs() as logs:
            r = httpx.post(
                f"{stack.api_url}/admin/orders/{order['id']}/reissue", headers=bearer(COACH)
            )
        assert r.status_code == 200, r.text
        [line] = [e for e in logs if e["event"] == "link_reissued"]
        assert line["operator"] == "coach"
        assert line["order_id"] == order["id"]


# -- the session cookie ----------------------------------------------------------------------


def test_the_cookie_is_a_signed_session_never_the_token(client: TestClient) -> None:
    r = log_in(client, TREASURER)
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert TREASURER not in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    assert value
    assert TREASURER not in value
    attributes = cookie.lower()
    assert "httponly" in attributes
    assert "samesite=strict" in attributes
    assert "max-age=28800" in attributes
    assert "path=/admin" in attributes
    assert "secure" not in attributes  # plain http, no trusted proxy
    assert "signed in as <b>treasurer</b>" in client.get("/admin").text


def test_the_cookie_is_secure_behind_a_trusted_tls_proxy(database_url: str) -> None:
    with make_client(database_url, forwarded_allow_ips="*") as client:
        r = log_in(
            client, TREASURER, **{"X-Forwarded-Proto": "https", "Origin": "https://testserver"}
        )
        assert r.status_code == 303, r.text
        assert "secure" in r.headers["set-cookie"].lower()
    with make_client(database_url) as client:  # the same header from an untrusted peer
        r = log_in(client, TREASURER, **{"X-Forwarded-Proto": "https"})
        assert "secure" not in r.headers["set-cookie"].lower()
    with make_client(database_url, public_base_url="https://club.example") as client:
        r = log_in(client, TREASURER)
        assert "secure" in r.headers["set-cookie"].lower()


def use_cookie(client: TestClient, value: str) -> None:
    client.cookies.clear()
    client.cookies.set(operators.COOKIE, value)


def test_expired_tampered_and_revoked_sessions_open_nothing(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_client(database_url) as client:
        log_in(client, TREASURER)
        cookie = client.cookies[operators.COOKIE]
        assert "signed in as" in client.get("/admin").text

        use_cookie(client, cookie[:-2] + "xx")
        assert 'name="token"' in client.get("/admin").text  # tampered: the login form

        later = time.time() + 8 * 3600 + 1
        use_cookie(client, cookie)
        monkeypatch.setattr("itsdangerous.timed.time.time", lambda: later)  # the clock it reads
        assert 'name="token"' in client.get("/admin").text  # expired
        monkeypatch.undo()
        assert "signed in as" in client.get("/admin").text
    # The treasurer's token is changed: the old session no longer opens the page.
    rotated = {**TOKENS, "treasurer": "a-new-treasurer-token-0123456789"}
    with make_client(database_url, operator_tokens=rotated) as client:
        use_cookie(client, cookie)
        assert 'name="token"' in client.get("/admin").text


# -- forms: CSRF and Origin ------------------------------------------------------------------


def test_a_cross_site_form_post_changes_nothing(database_url: str) -> None:
    with running_stack(database_url, operator_tokens=TOKENS) as stack:
        order = stack.order("tournament")
        stack.sandbox.expire(order["checkout_session_id"])
        stack.refresh()
        own = {"Origin": stack.api_url}
        with httpx.Client(base_url=stack.api_url, timeout=30) as browser:
            login = browser.post("/admin/login", data={"token": TREASURER}, headers=own)
            assert login.status_code == 303
            page = browser.get("/admin")
            token = csrf_of(page.text)
            action = f"/admin/page/orders/{order['id']}/reissue"

            attempts = [
                ({"Origin": "https://evil.example"}, {}),  # another site, no token
                ({"Origin": "https://evil.example"}, {"csrf_token": token}),  # token leaked
                (own, {}),  # right site, no token
                (own, {"csrf_token": "forged"}),
                ({}, {"csrf_token": token}),  # no Origin or Referer at all
            ]
            for headers, data in attempts:
                r = browser.post(action, data=data, headers=headers, follow_redirects=False)
                assert r.status_code == 403, (headers, data, r.text)
            current = stack.api.get(f"/orders/{order['id']}").json()
            assert current["checkout_session_id"] == order["checkout_session_id"]

            ok = browser.post(action, data={"csrf_token": token}, headers=own)
            assert ok.status_code == 303
            assert "outcome=created" in ok.headers["location"]
            current = stack.api.get(f"/orders/{order['id']}").json()
            assert current["checkout_session_id"] != order["checkout_session_id"]


def test_every_operator_form_on_the_pages_carries_the_csrf_token(client: TestClient) -> None:
    log_in(client, TREASURER)
    for path in ("/admin", "/admin/catalogue"):
        page = client.get(path).text
        forms = re.findall(r"<form[^>]*method=\"post\"[^>]*>(.*?)</form>", page, flags=re.S)
        assert forms, path
        token = csrf_of(page)
        for form in forms:
            assert f'name="csrf_token" value="{token}"' in form, (path, form[:80])


def test_every_page_form_route_refuses_a_post_without_the_token(client: TestClient) -> None:
    log_in(client, TREASURER)
    form_routes = [
        route.path
        for router in (admin.router, catalogue_admin.router, reviews.router)
        for route in router.routes
        if isinstance(route, APIRoute)
        and not route.include_in_schema
        and "POST" in (route.methods or ())
        and route.path != "/admin/login"
    ]
    assert len(form_routes) >= 6
    for path in form_routes:
        url = re.sub(r"\{\w+\}", "1", path)
        r = client.post(url, data={"action": "refunded"}, headers={"Origin": SITE})
        assert r.status_code == 403, (path, r.status_code, r.text)


# -- failed logins -----------------------------------------------------------------------------


def test_two_hundred_wrong_logins_are_slowed(client: TestClient) -> None:
    answers = [log_in(client, f"guess-{i:04d}-0123456789abcdef") for i in range(200)]
    refused = [r for r in answers if r.status_code == 429]
    assert [r.status_code for r in answers[:10]] == [303] * 10
    assert len(refused) == 190
    assert int(refused[-1].headers["Retry-After"]) > 60
    # Throttled, the guesser's next wrong tokens still get 429, page or bearer...
    assert log_in(client, "guess-next-0123456789abcdef").status_code == 429
    r = client.get("/admin/payments-needing-review", headers=bearer("guess-next"))
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) > 0
    assert client.get("/admin/payments-needing-review").status_code == 429  # no token either


def test_a_throttled_address_still_lets_the_right_token_in(client: TestClient) -> None:
    """Everyone behind the club's one address shares its throttle: a guesser there must not
    lock the real operators out."""
    for i in range(60):
        log_in(client, f"guess-{i:04d}-0123456789abcdef")
        client.get("/admin/stranded-orders", headers=bearer(f"wrong-{i}"))
    assert log_in(client, "guess-last-0123456789abcdef").status_code == 429
    r = log_in(client, TREASURER)
    assert r.status_code == 303
    assert r.headers["location"] == "/admin"
    assert operators.COOKIE in r.cookies
    assert client.get("/admin").status_code == 200
    assert client.get("/admin/stranded-orders", headers=bearer(TREASURER)).status_code == 200
    assert client.get("/admin/stranded-orders", headers=bearer(COACH)).status_code == 200
    # ...and letting it in neither clears nor loosens the throttle for the next guess.
    assert client.get("/admin/stranded-orders", headers=bearer("wrong-again")).status_code == 429


def test_wrong_bearer_tokens_are_throttled_too(client: TestClient) -> None:
    codes = [
        client.get("/admin/stranded-orders", headers=bearer(f"wrong-{i}")).status_code
        for i in range(30)
    ]
    assert codes[:10] == [401] * 10
    assert set(codes[10:]) == {429}


def test_the_throttle_counts_each_client_behind_the_proxy(database_url: str) -> None:
    with make_client(database_url, forwarded_allow_ips="*") as client:
        guesser = {"X-Forwarded-For": "203.0.113.5"}
        for i in range(10):
            r = client.get("/admin/stranded-orders", headers={**bearer(f"g{i}"), **guesser})
            assert r.status_code == 401
        r = client.get("/admin/stranded-orders", headers={**bearer("g-next"), **guesser})
        assert r.status_code == 429
        colleague = {"X-Forwarded-For": "203.0.113.6"}
        r = client.get("/admin/stranded-orders", headers={**bearer(TREASURER), **colleague})
        assert r.status_code == 200


# -- the schema ------------------------------------------------------------------------------


def test_the_schema_declares_the_bearer_scheme_and_every_admin_error(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    [(name, scheme)] = schemes.items()
    assert scheme == {
        "type": "http",
        "scheme": "bearer",
        "description": scheme["description"],
    }
    admin_operations = [
        (path, method, op)
        for path, item in schema["paths"].items()
        if path.startswith("/admin")
        for method, op in item.items()
    ]
    assert len(admin_operations) >= 8
    for path, method, op in admin_operations:
        assert op["security"] == [{name: []}], (path, method)
        documented = set(op["responses"])
        assert {"401", "422", "429"} <= documented, (path, method)
        assert documented & {"200", "201"}, (path, method)
        if "{" in path:
            assert "404" in documented, (path, method)


def test_the_audit_log_of_a_cancel_names_the_operator(database_url: str) -> None:
    with running_stack(database_url, operator_tokens=TOKENS) as stack:
        order = stack.order("jersey")
        with structlog.testing.capture_logs() as logs:
            r = httpx.post(
                f"{stack.api_url}/orders/{order['id']}/cancel", headers=bearer(TREASURER)
            )
        assert r.status_code == 200, r.text
        [line] = [e for e in logs if e["event"] == "order_cancelled"]
        assert (line["operator"], line["order_id"]) == ("treasurer", order["id"])
