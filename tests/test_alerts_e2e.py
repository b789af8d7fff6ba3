"""The alerts end to end, as the club's on-call volunteer lives them: a real Prometheus
scrapes the running service and evaluates the shipped rules, a real Alertmanager routes
what fires with the shipped example configuration, and a webhook receiver in the test
counts the notifications each receiver gets.

The shipped files are used as they are, with three test-only changes: every ``for:`` is cut
to 3 s (``rules_io.write_rules_file``), Alertmanager's waits to 1 s, and the club hours are
set to "now" or to "not now", since Alertmanager reads the real clock.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from tests.prometheus_server import (
    ALERTMANAGER,
    PROMETHEUS,
    AlertmanagerServer,
    PrometheusServer,
    WebhookReceiver,
    promtool_check_metrics,
)
from tests.rules_io import REPO_ROOT, write_rules_file
from tests.stack import Stack, running_stack
from tests.standard_catalogue import migrate_with_catalogue

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.skipif(
        PROMETHEUS is None or ALERTMANAGER is None,
        reason="needs Debian's prometheus and prometheus-alertmanager",
    ),
]

ALERTMANAGER_CONFIG = REPO_ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
NAMESPACE = "basketball-api"
PAGER, CHAT = "on-call-pager", "club-chat"


def migrated_sqlite(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'e2e.db'}"
    migrate_with_catalogue(url)
    return url


def alertmanager_config(receiver: WebhookReceiver, *, club_hours_now: bool) -> dict[str, Any]:
    """The shipped configuration, posting to ``receiver``, with 1 s waits and the club hours
    moved to include the present moment, or to leave it out ("the night")."""
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    for entry in config["receivers"]:
        for hook in entry["webhook_configs"]:
            hook["url"] = receiver.url_for(entry["name"])
    waits = {"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"}
    config["route"].update(waits)
    for route in config["route"]["routes"]:
        route.update({k: v for k, v in waits.items() if k in route})
    hour = datetime.now(UTC).hour
    # A one-hour window at least two hours away from now, never wrapping midnight.
    start = 14 if hour < 12 else 1
    times = (
        [{"start_time": "00:00", "end_time": "24:00"}]
        if club_hours_now
        else [{"start_time": f"{start:02d}:00", "end_time": f"{start + 1:02d}:00"}]
    )
    (club_hours,) = [t for t in config["time_intervals"] if t["name"] == "club-hours"]
    club_hours["time_intervals"] = [{"times": times, "location": "UTC"}]
    return config


@contextmanager
def monitored(
    stack: Stack, tmp_path: Path, *, club_hours_now: bool
) -> Iterator[tuple[PrometheusServer, AlertmanagerServer, WebhookReceiver]]:
    """Prometheus scraping the stack's API (as namespace ``basketball-api``) with the shipped
    rules, sending to an Alertmanager with the shipped routing, posting to a receiver."""
    rules = write_rules_file(tmp_path, for_duration="3s")
    with WebhookReceiver() as receiver:
        config = alertmanager_config(receiver, club_hours_now=club_hours_now)
        with (
            AlertmanagerServer(config) as alertmanager,
            PrometheusServer(
                [urlsplit(stack.api_url).netloc],
                [rules],
                scrape_interval="1s",
                target_labels={"namespace": NAMESPACE},
                alertmanagers=[alertmanager.address],
            ) as prometheus,
        ):
            prometheus.wait_for_scrape()
            # Count from the moment everything is quiet: before its first scrape Prometheus
            # has no target at all, which is an outage for a moment (the shipped 5 minutes
            # cover that in a deployment; the test's 3 seconds may not).
            prometheus.wait_until(lambda: not prometheus.alerts(), what="no alert")
            receiver.wait_for(all_groups_resolved, what="start-up notifications resolved")
            receiver.clear()
            yield prometheus, alertmanager, receiver


def all_groups_resolved(seen: list[tuple[str, dict[str, Any]]]) -> bool:
    """Whether the last notification of every group that notified says "resolved"."""
    last = {(r, p["groupKey"]): p["status"] for r, p in seen}
    return all(status == "resolved" for status in last.values())


def alert_names(payload: dict[str, Any]) -> list[str]:
    return sorted(a["labels"]["alertname"] for a in payload["alerts"])


def test_the_service_metrics_pass_promtool_lint(tmp_path: Path) -> None:
    with running_stack(migrated_sqlite(tmp_path)) as stack:
        stack.order("jersey")
        stack.refresh()
        text = stack.api.get("/metrics").text
    assert "basketball_api_pending_orders_with_expired_session" in text
    result = promtool_check_metrics(text)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_stranded_order_is_one_warning_resolved_once_paid(tmp_path: Path) -> None:
    database = migrated_sqlite(tmp_path)
    with (
        running_stack(database, start_refresher=True, refresh_interval_seconds=2) as stack,
        monitored(stack, tmp_path, club_hours_now=True) as (prometheus, _, receiver),
    ):
        abandoned = stack.order("jersey")
        stack.order("monthly")  # a live link: must not count
        prometheus.wait_for_alert("BasketballApiStrandedOrders", "inactive", timeout=10)

        stack.sdk.v1.checkout.sessions.expire(abandoned["checkout_session_id"])
        stack.sandbox.wait_for_webhooks(timeout=10)

        def stranded(status: str) -> list[dict[str, Any]]:
            return [
                p
                for p in receiver.received(CHAT)
                if p["status"] == status and "BasketballApiStrandedOrders" in alert_names(p)
            ]

        receiver.wait_for(lambda _: bool(stranded("firing")), what="the stranded warning")
        (firing,) = stranded("firing")
        (alert,) = firing["alerts"]
        assert alert["labels"] == {
            "alertname": "BasketballApiStrandedOrders",
            "severity": "warning",
            "namespace": NAMESPACE,
            "category": "jersey",
        }
        assert alert["annotations"]["description"].startswith(
            "1 jersey order(s) in basketball-api are pending behind a dead payment link"
        )
        assert firing["groupLabels"] == {"namespace": NAMESPACE, "category": "jersey"}

        # The parent comes back through the order's pay link: a fresh Checkout page, paid.
        opened = httpx.get(abandoned["pay_url"], follow_redirects=False)
        assert opened.status_code == 303, opened.text
        stack.sandbox.pay(opened.headers["location"].rsplit("/", 1)[-1])
        stack.sandbox.wait_for_webhooks(timeout=10)
        assert stack.api.get(f"/orders/{abandoned['id']}").json()["status"] == "paid"

        receiver.wait_for(lambda _: bool(stranded("resolved")), what="the resolution")
        assert len(stranded("firing")) == 1
        assert len(stranded("resolved")) == 1
        assert receiver.received(PAGER) == [], "a single stranded order must never page"
        others = [
            p for p in receiver.received() if "BasketballApiStrandedOrders" not in alert_names(p)
        ]
        assert others == []


def test_at_night_a_stripe_outage_is_silent_and_a_full_outage_is_one_page(
    tmp_path: Path,
) -> None:
    database = migrated_sqlite(tmp_path)
    with (
        running_stack(database, start_refresher=True, refresh_interval_seconds=1) as stack,
        monitored(stack, tmp_path, club_hours_now=False) as (prometheus, alertmanager, receiver),
    ):
        stack.order("tournament")

        # Stripe answers 503 to everything: a warning, held until club hours.
        stack.sandbox.inject_fault("*", "unavailable", rate=1.0)
        prometheus.wait_for_alert("BasketballApiStripeUnavailable", "firing", timeout=60)
        alertmanager.wait_until(
            lambda: any(
                a["labels"]["alertname"] == "BasketballApiStripeUnavailable"
                for a in alertmanager.alerts()
            ),
            what="Alertmanager to hold the Stripe warning",
        )
        assert not [a for a in prometheus.alerts() if a["labels"]["severity"] == "critical"]

        # Then the service itself goes away: one page, and nothing else.
        assert stack.api_server is not None
        stack.api_server.stop()
        prometheus.wait_for_alert("BasketballApiDown", "firing", {"namespace": NAMESPACE})
        receiver.wait_for(lambda seen: bool(seen), what="the page")
        # Give Prometheus and Alertmanager several evaluations and group intervals to send
        # anything else they would (a second page for the missing metrics, a warning).
        time.sleep(5)

        pages = receiver.received(PAGER)
        assert [(p["status"], alert_names(p)) for p in pages] == [("firing", ["BasketballApiDown"])]
        assert pages[0]["alerts"][0]["labels"]["namespace"] == NAMESPACE
        assert receiver.received(CHAT) == [], "warnings wait for club hours"
        assert [r for r, _ in receiver.notifications] == [PAGER]
