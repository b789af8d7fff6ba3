"""Access rules: every route declares one; orders are reached by capability, never by counting.

Tried as a stranger would: walking ids reads and changes nothing, and an unknown id answers
exactly like a known one. Tried as a parent would: the token from ``POST /orders`` opens their
order, and only theirs. Names in any script are accepted, control characters are not, and
numbers JSON cannot hold are 422s naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Response
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from basketball_api import access
from basketball_api.app import create_app
from basketball_api.db import make_engine
from basketball_api.models import OrderAccessToken
from basketball_api.settings import Settings

TOKEN = "access-admin-token-0123456789"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}


def make_app(database_url: str = "sqlite://", **settings: Any) -> FastAPI:
    config = Settings(
        database_url=database_url,
        stripe_api_base="http://127.0.0.1:9",  # nothing listens: any Stripe call fails
        stripe_max_network_retries=0,
        admin_token=SecretStr(TOKEN),
        **settings,
    )
    return create_app(config, start_refresher=False)


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    with TestClient(make_app(database_url), follow_redirects=False) as c:
        yield c


def new_order(client: TestClient, **extra: Any) -> dict[str, Any]:
    body = {
        "product_id": 1,
        "parent_email": "kid.parent@example.org",
        "player_name": "Robin",
        "create_checkout": False,
        **extra,
    }
    r = client.post("/orders", json=body)
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


# -- the audit ------------------------------------------------------------------------------------


def route_rules(app: FastAPI) -> dict[str, list[str]]:
    """``"METHOD path" -> [rule, ...]`` for every route of the app."""
    return {
        f"{','.join(sorted(methods))} {path}": [r.value for r in rules]
        for path, methods, rules in access.route_rules(app)
    }


def test_every_route_declares_exactly_one_access_rule() -> None:
    table = route_rules(make_app())
    print("\n".join(f"{rules} {route}" for route, rules in sorted(table.items())))
    assert len(table) >= 15
    wrong = {route: rules for route, rules in table.items() if len(rules) != 1}
    assert wrong == {}
    rule = {route: rules[0] for route, rules in table.items()}
    assert rule["GET /orders/{order_id}"] == "operator"
    assert rule["POST /orders/{order_id}/cancel"] == "operator"
    assert rule["GET /orders/by-token/{token}"] == "order_token"
    assert rule["POST /webhooks/stripe"] == "webhook_signature"
    assert rule["POST /orders"] == "public"
    signing_in = {"POST /admin/login"}  # logging out is an operator's form (CSRF-checked)
    admin = {k: v for k, v in rule.items() if k.split()[1].startswith("/admin/")}
    assert {k for k, v in admin.items() if v != "operator"} == signing_in


def test_a_route_without_a_rule_fails_the_audit() -> None:
    app = make_app()

    @app.get("/forgotten")
    def forgotten() -> dict[str, str]:
        return {}

    @app.get("/twice", dependencies=[access.PUBLIC, access.PUBLIC])
    def twice() -> dict[str, str]:
        return {}

    app.router.add_route("/raw", lambda request: Response())
    table = route_rules(app)
    assert table["GET /forgotten"] == []
    assert table["GET /twice"] == ["public", "public"]
    assert table["GET,HEAD /raw"] == []


# -- enumeration ----------------------------------------------------------------------------------


def test_walking_ids_reads_and_changes_nothing(client: TestClient, database_url: str) -> None:
    orders = [new_order(client, parent_email=f"p{i}@example.org") for i in range(3)]
    answers = set()
    for order_id in range(1, 8):  # three that exist, four that do not
        for method, path in (
            ("GET", f"/orders/{order_id}"),
            ("POST", f"/orders/{order_id}/cancel"),
        ):
            r = client.request(method, path)
            assert r.status_code == 401, (method, path, r.text)
            assert "@example.org" not in r.text
            answers.add((method, r.status_code, r.text))
    assert len(answers) == 2  # one answer per operation, whether the id exists or not
    for order in orders:
        r = client.get(f"/orders/{order['id']}", headers=OPERATOR)
        assert r.json()["status"] == "pending"  # nothing was cancelled
    engine = make_engine(database_url)
    with engine.connect() as conn:
        digests = conn.execute(select(OrderAccessToken.token_sha256)).scalars().all()
    engine.dispose()
    assert len(digests) == 3
    assert not {o["access_token"] for o in orders} & set(digests)  # kept hashed only


def test_the_token_opens_its_own_order_and_no_other(client: TestClient) -> None:
    mine, theirs = new_order(client), new_order(client, player_name="Sasha")
    assert len(mine["access_token"]) >= 22  # at least 128 bits of base64
    assert mine["order_url"].endswith(f"/o/{mine['access_token']}")
    assert str(mine["id"]) not in mine["order_url"].split("/")
    r = client.get(f"/orders/by-token/{mine['access_token']}")
    assert r.status_code == 200
    assert r.json()["player_name"] == "Robin"
    assert "parent_email" not in r.json()
    wrong = [
        theirs["access_token"][:-1] + ("A" if theirs["access_token"][-1] != "A" else "B"),
        "x" * 32,
        "short",
        str(mine["id"]),
    ]
    bodies = set()
    for token in wrong:
        r = client.get(f"/orders/by-token/{token}")
        assert r.status_code == 404, token
        bodies.add(r.text)
        assert client.post(f"/orders/by-token/{token}/cancel").status_code == 404
    assert len(bodies) == 1  # a wrong token says nothing about which orders exist
    r = client.post(f"/orders/by-token/{mine['access_token']}/cancel")
    assert r.json()["status"] == "cancelled"
    theirs_now = client.get(f"/orders/by-token/{theirs['access_token']}").json()
    assert theirs_now["status"] == "pending"


def test_operators_still_read_and_cancel_by_id(client: TestClient) -> None:
    order = new_order(client)
    assert client.get(f"/orders/{order['id']}", headers=OPERATOR).json()["id"] == order["id"]
    r = client.post(f"/orders/{order['id']}/cancel", headers=OPERATOR)
    assert r.json()["status"] == "cancelled"
    assert client.get("/orders/4242", headers=OPERATOR).status_code == 404


# -- input ----------------------------------------------------------------------------------------

NAMES = [
    pytest.param("علی\u200cرضا", id="persian with a zero-width non-joiner"),  # noqa: RUF001
    pytest.param("क्\u200dष", id="hindi with a zero-width joiner"),
    pytest.param("\U0001f468\u200d\U0001f469\u200d\U0001f467", id="family emoji"),
    pytest.param("Zoë Ångström-Øster", id="latin with marks"),
    pytest.param("Nguyễn Thị Minh Khai", id="vietnamese"),
    pytest.param("O'Brien Jr.", id="punctuation"),
]


@pytest.mark.parametrize("name", NAMES)
def test_names_in_any_script_are_accepted(client: TestClient, name: str) -> None:
    order = new_order(client, player_name=name)
    assert order["player_name"] == name
    shown = client.get(f"/orders/by-token/{order['access_token']}").json()
    assert shown["player_name"] == name


@pytest.mark.parametrize(
    "name",
    ["Ann\x00", "Ann\nLee", "Ann\tLee", "a\x1b[31mred", "\u202eevil", "Ann\u2028Lee", "\u200d"],
    ids=["nul", "newline", "tab", "escape", "bidi override", "line separator", "joiner only"],
)
def test_control_characters_in_names_are_refused(client: TestClient, name: str) -> None:
    body = {"product_id": 1, "parent_email": "a@example.org", "player_name": name}
    r = client.post("/orders", json={**body, "create_checkout": False})
    assert r.status_code == 422, r.text
    assert any("player_name" in e["loc"] for e in r.json()["detail"])


@pytest.mark.parametrize("field", ["product_id", "quantity"])
@pytest.mark.parametrize("number", ["1e400", "-1e400", "NaN", "Infinity", "1.5", "1e19"])
def test_numbers_json_cannot_hold_are_422s_naming_the_field(
    client: TestClient, field: str, number: str
) -> None:
    body = {"product_id": 1, "parent_email": "a@example.org", "player_name": "A"}
    raw = json.dumps({**body, field: 0}).replace(f'"{field}": 0', f'"{field}": {number}')
    r = client.post("/orders", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert any(field in e["loc"] for e in r.json()["detail"])


# -- body size ------------------------------------------------------------------------------------


def test_a_10_mb_body_is_refused_unread(client: TestClient) -> None:
    big = b'{"player_name": "' + b"x" * 10_000_000 + b'"}'
    r = client.post("/orders", content=big, headers={"Content-Type": "application/json"})
    too_large = {"detail": "Content Too Large", "code": "request_entity_too_large"}
    assert (r.status_code, r.json()) == (413, too_large)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"player_name": "'
        for _ in range(100):
            yield b"x" * 100_000
        yield b'"}'

    r = client.post("/orders", content=chunks(), headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()) == (413, too_large)
