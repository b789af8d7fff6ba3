"""The stranded-orders alert, end to end: a real Prometheus scrapes the running service and
evaluates the shipped rules; the alert fires after links expire and resolves once paid."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from tests.prometheus_server import PrometheusServer, promtool_check_metrics
from tests.rules_io import write_rules_file
from tests.stack import running_stack
from tests.standard_catalogue import migrate_with_catalogue

pytestmark = pytest.mark.prometheus


def migrated_sqlite(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'e2e.db'}"
    migrate_with_catalogue(url)
    return url


def test_the_service_metrics_pass_promtool_lint(tmp_path: Path) -> None:
    with running_stack(migrated_sqlite(tmp_path)) as stack:
        stack.order("jersey")
        stack.refresh()
        text = stack.api.get("/metrics").text
    assert "basketball_api_pending_orders_with_expired_session" in text
    result = promtool_check_metrics(text)
    assert result.returncode == 0, result.stdout + result.stderr


def test_stranded_orders_alert_fires_and_resolves(tmp_path: Path) -> None:
    database = migrated_sqlite(tmp_path)
    rules = write_rules_file(tmp_path, for_duration="1s")
    with running_stack(database, start_refresher=True, refresh_interval_seconds=1) as stack:
        a = stack.order("tournament")
        b = stack.order("tournament")
        stack.order("monthly")  # a live link: must not page
        target = urlsplit(stack.api_url).netloc
        with PrometheusServer([target], [rules], scrape_interval="1s") as prom:
            prom.wait_for_scrape()
            prom.wait_for_alert("BasketballApiStrandedOrders", "inactive", timeout=10)

            for order in (a, b):
                stack.sdk.v1.checkout.sessions.expire(order["checkout_session_id"])
            stack.sandbox.wait_for_webhooks(timeout=10)

            alert = prom.wait_for_alert(
                "BasketballApiStrandedOrders", "firing", {"category": "tournament"}, timeout=60
            )
            assert alert is not None
            assert alert["value"].startswith("2")
            assert "tournament" in alert["annotations"]["description"]
            assert alert["annotations"]["runbook_url"]
            assert not [
                x
                for x in prom.alerts()
                if x["labels"].get("alertname") == "BasketballApiStrandedOrders"
                and x["labels"].get("category") != "tournament"
            ]

            # The parents pay through reissued links: the orders leave pending.
            for order in (a, b):
                fresh = stack.api.post(f"/admin/orders/{order['id']}/reissue").json()
                assert fresh["created"] is True
                stack.sandbox.pay(fresh["order"]["checkout_session_id"])
            stack.sandbox.wait_for_webhooks(timeout=10)
            assert {stack.api.get(f"/orders/{o['id']}").json()["status"] for o in (a, b)} == {
                "paid"
            }

            prom.wait_for_alert("BasketballApiStrandedOrders", "inactive", timeout=60)
            values = prom.query_values(
                "max by (category) (basketball_api_pending_orders_with_expired_session)"
            )
            assert set(values.values()) == {0.0}
