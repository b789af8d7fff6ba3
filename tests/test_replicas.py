"""Two API processes on one PostgreSQL report the same truth; only one of them polls Stripe.

Stripe's webhooks go to one replica only (a Service routes each delivery to one pod); the
other reads the same facts from the database. After each replica's refresh both must export
identical gauges equal to the truth; the replica holding the polling lease makes the Stripe
calls (a warm refresh: one or two), the other none; a dead holder's lease passes on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.procs import ApiProcess, api_processes, temporary_postgres

from stripe_sandbox.app import create_app as create_sandbox
from stripe_sandbox.config import SandboxConfig
from stripe_sandbox.control import SandboxControl
from stripe_sandbox.server import BackgroundServer

pytestmark = pytest.mark.postgres

SECRET = "whsec_replicas_0123456789"
TOKEN = "replicas-admin-token-0123456789"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}
DAY = 24 * 3600
GAUGES = (
    "basketball_api_pending_orders_with_expired_session",
    "basketball_api_pending_orders_with_completed_session",
    "basketball_api_pending_orders_with_open_session",
)
LEASE = "basketball_api_poller_lease_held"
CATEGORIES = ("tournament", "monthly", "jersey")


def lease_held(api: ApiProcess) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{api.url}/metrics").text):
        for s in family.samples:
            if s.name == LEASE:
                return s.value
    raise AssertionError("no lease gauge")


def gauges(api: ApiProcess) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {g: {} for g in GAUGES}
    for family in text_string_to_metric_families(httpx.get(f"{api.url}/metrics").text):
        for s in family.samples:
            if s.name in out:
                out[s.name][s.labels["category"]] = s.value
    return out


def refresh(api: ApiProcess, control: SandboxControl) -> int:
    """One refresh on ``api``; returns the Stripe calls it made (counted by the sandbox)."""
    control.reset_request_counts()
    r = httpx.post(
        f"{api.url}/admin/refresh", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
    )
    assert r.status_code == 200, r.text
    assert r.json()["succeeded"], r.text
    return sum(control.request_counts().values())


def truth(
    api: ApiProcess, control: SandboxControl, order_ids: list[int]
) -> dict[str, dict[str, float]]:
    """The gauges computed from the database (via the API) and Stripe's own state."""
    sessions = control.sessions()
    out: dict[str, dict[str, float]] = {g: dict.fromkeys(CATEGORIES, 0.0) for g in GAUGES}
    for order_id in order_ids:
        order = httpx.get(f"{api.url}/orders/{order_id}", headers=OPERATOR).json()
        if order["status"] != "pending":
            continue
        session = sessions[order["checkout_session_id"]]
        if session["status"] == "expired":
            out[GAUGES[0]][order["category"]] += 1
        elif session["status"] == "complete" and session["payment_status"] == "paid":
            out[GAUGES[1]][order["category"]] += 1
        elif session["status"] == "open":
            out[GAUGES[2]][order["category"]] += 1
    return out


@pytest.fixture
def sandbox() -> Iterator[tuple[BackgroundServer, SandboxControl]]:
    app = create_sandbox(SandboxConfig(webhook_secret=SECRET, webhook_retry_base_seconds=0.05))
    with BackgroundServer(app) as server, SandboxControl(server.url) as control:
        yield server, control


def test_two_replicas_report_the_same_truth_and_only_the_lease_holder_polls(
    sandbox: tuple[BackgroundServer, SandboxControl], tmp_path: Path
) -> None:
    server, control = sandbox
    with (
        temporary_postgres("basketball_replicas") as url,
        api_processes(
            tmp_path,
            2,
            database_url=url,
            stripe_api_base=server.url,
            stripe_webhook_secret=SECRET,
            admin_token=TOKEN,
            expiry_grace_seconds=0,
            stripe_max_network_retries=0,
        ) as (a, b),
    ):
        control.configure_webhook(f"{a.url}/webhooks/stripe", SECRET)  # one pod gets them
        products = {p["category"]: p["id"] for p in httpx.get(f"{a.url}/products").json()}
        orders = []
        for i in range(24):
            api = (a, b)[i % 2]
            body = {
                "product_id": products[CATEGORIES[i % 3]],
                "parent_email": f"r{i}@example.org",
                "player_name": f"Replica {i}",
            }
            r = httpx.post(f"{api.url}/orders", json=body, timeout=30)
            assert r.status_code == 201, r.text
            orders.append(r.json())
        ids = [o["id"] for o in orders]
        for api in (a, b):
            refresh(api, control)  # the new links are known open: no listing
        assert gauges(a) == gauges(b) == truth(a, control, ids)
        assert (lease_held(a), lease_held(b)) == (1.0, 0.0)

        # Before: with no webhook, nine links expired early at Stripe made one replica publish
        # 9 stranded orders and the other 0.
        control.drop_next_webhooks(9)
        for o in orders[15:24]:
            control.expire(o["checkout_session_id"])
        assert control.wait_for_webhooks(timeout=30)
        for api in (a, b):
            refresh(api, control)
        early = truth(a, control, ids)
        assert sum(early[GAUGES[0]].values()) == 9
        assert gauges(a) == gauges(b) == early

        # The world moves: payments (one webhook lost), a cancellation through the other
        # replica, a link expired by hand, then a day passes and the rest of the links die.
        for o in orders[:4]:
            control.pay(o["checkout_session_id"])
        control.drop_next_webhooks(1)
        control.pay(orders[4]["checkout_session_id"])
        cancel = f"{b.url}/orders/{ids[5]}/cancel"
        assert httpx.post(cancel, headers=OPERATOR, timeout=30).status_code == 200
        control.expire(orders[6]["checkout_session_id"])
        control.advance_clock(DAY + 60)
        assert control.wait_for_webhooks(timeout=30)

        calls = {name: refresh(api, control) for name, api in (("a", a), ("b", b))}
        expected = truth(a, control, ids)
        assert gauges(a) == gauges(b) == expected
        assert expected[GAUGES[1]] == {"tournament": 0, "monthly": 0, "jersey": 0} | {
            orders[4]["category"]: 1.0
        }
        print("warm refresh calls per replica:", calls)
        assert calls["a"] <= 2, calls
        assert calls["b"] == 0, calls

        # Nothing new: the holder's refresh is one call to the events feed, the other's none.
        steady = {name: refresh(api, control) for name, api in (("a", a), ("b", b))}
        assert steady == {"a": 1, "b": 0}
        assert gauges(a) == gauges(b) == expected

        # The holder dies: the other replica takes the lease at its next refresh and polls.
        a.kill()
        assert refresh(b, control) == 1
        assert lease_held(b) == 1.0
        assert gauges(b) == expected
