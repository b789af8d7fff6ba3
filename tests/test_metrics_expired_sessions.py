"""The expired-session gauge: the refresh function, its resilience, and the app end to end."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs
from tests.fakes import FakeStripe

from basketball_api.metrics import Metrics
from basketball_api.refresher import Refresher
from basketball_api.session_sync import PendingRow
from basketball_api.stripe_gateway import StripeUnavailable

pytestmark = pytest.mark.anyio


def gauge(metrics: Metrics, name: str = "basketball_api_pending_orders_with_expired_session"):
    """{category: value} of one labelled gauge as /metrics would show it."""
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name:
                out[sample.labels["category"]] = sample.value
    return out


def make_refresher(stripe: FakeStripe, rows: list[PendingRow]) -> tuple[Refresher, Metrics]:
    metrics = Metrics()
    refresher = Refresher(
        load_pending=lambda: list(rows), source=stripe, metrics=metrics, grace_seconds=0
    )
    return refresher, metrics


async def test_two_pending_orders_one_expired_gives_one_for_its_category() -> None:
    stripe = FakeStripe()
    stripe.add("cs_a", "expired")
    stripe.add("cs_b", "open")
    rows = [
        PendingRow("cs_a", "tournament", int(stripe.now)),
        PendingRow("cs_b", "monthly", int(stripe.now)),
    ]
    refresher, metrics = make_refresher(stripe, rows)

    assert await refresher.run_cycle() is True

    assert gauge(metrics) == {"tournament": 1.0, "monthly": 0.0, "jersey": 0.0}


async def test_no_value_is_invented_before_the_first_successful_refresh() -> None:
    stripe = FakeStripe()
    stripe.fail_with = StripeUnavailable("down", "connection")
    refresher, metrics = make_refresher(stripe, [PendingRow("cs_a", "jersey", 0)])

    await refresher.run_cycle()

    assert gauge(metrics) == {}
    assert "basketball_api_pending_orders_refresh_last_success_timestamp_seconds 0.0" in (
        metrics.render().decode()
    )


async def test_stripe_failure_mid_refresh_warns_keeps_the_gauge_and_recovers() -> None:
    stripe = FakeStripe()
    stripe.add("cs_a", "expired")
    stripe.add("cs_b", "open")
    rows = [
        PendingRow("cs_a", "tournament", int(stripe.now)),
        PendingRow("cs_b", "tournament", int(stripe.now)),
    ]
    refresher, metrics = make_refresher(stripe, rows)
    assert await refresher.run_cycle()

    # A new order arrives whose session must be fetched, and Stripe is down.
    stripe.add("cs_c", "expired")
    rows.append(PendingRow("cs_c", "tournament", int(stripe.now)))
    stripe.fail_with = StripeUnavailable("Stripe failed on GET /v1/events: 500", "server_error")
    with capture_logs() as logs:
        ok = await refresher.run_cycle()  # must not raise

    assert ok is False
    assert gauge(metrics)["tournament"] == 1.0  # last good value kept
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["event"] == "refresh_failed"
    assert warnings[0]["reason"] == "stripe_server_error"
    text = metrics.render().decode()
    assert 'basketball_api_pending_orders_refreshes_total{result="error"} 1.0' in text

    stripe.fail_with = None
    assert await refresher.run_cycle()
    assert gauge(metrics)["tournament"] == 2.0


async def test_a_database_failure_is_survived_the_same_way() -> None:
    from sqlalchemy.exc import OperationalError

    stripe = FakeStripe()
    metrics = Metrics()

    def broken() -> list[PendingRow]:
        raise OperationalError("SELECT", {}, Exception("database is locked"))

    refresher = Refresher(load_pending=broken, source=stripe, metrics=metrics)
    with capture_logs() as logs:
        assert await refresher.run_cycle() is False
    assert [e["reason"] for e in logs if e["log_level"] == "warning"] == ["database"]


# -- end to end: the app and the sandbox over HTTP with the real SDK --------------------------


def test_expiring_a_session_raises_the_gauge_and_paying_an_order_does_not_count(
    database_url: str,
) -> None:
    from tests.stack import running_stack

    with running_stack(database_url) as stack:
        stranded = stack.order("monthly")
        paid = stack.order("monthly")
        open_ = stack.order("jersey")
        assert stack.refresh() == {"tournament": 0, "monthly": 0, "jersey": 0}

        stack.sdk.v1.checkout.sessions.expire(stranded["checkout_session_id"])
        stack.sandbox.pay(paid["checkout_session_id"])
        stack.sandbox.wait_for_webhooks(timeout=10)

        assert stack.gauge()["monthly"] == 1.0  # the webhook moved it before any refresh
        assert stack.refresh() == {"tournament": 0, "monthly": 1, "jersey": 0}
        assert stack.api.get(f"/orders/{paid['id']}").json()["status"] == "paid"
        assert stack.api.get(f"/orders/{stranded['id']}").json()["status"] == "pending"
        assert stack.gauge("basketball_api_pending_orders_with_open_session")["jersey"] == 1.0
        assert open_["pay_url"].startswith(f"{stack.api_url}/pay/")


def test_lost_webhooks_are_caught_by_the_next_refresh(database_url: str) -> None:
    from tests.stack import running_stack

    with running_stack(database_url) as stack:
        a = stack.order("tournament")
        b = stack.order("jersey")
        stack.refresh()
        stack.sandbox.drop_next_webhooks(2)
        stack.sdk.v1.checkout.sessions.expire(a["checkout_session_id"])
        stack.sandbox.pay(b["checkout_session_id"])
        stack.sandbox.wait_for_webhooks(timeout=10)

        assert stack.refresh()["tournament"] == 0  # the manual expiry's webhook was lost...
        completed = stack.gauge("basketball_api_pending_orders_with_completed_session")
        assert completed["jersey"] == 1.0  # ...but the lost payment is seen in the events feed

        # Once the feed has a cursor, later refreshes walk forward from it.
        c = stack.order("jersey")
        stack.refresh()
        stack.sandbox.drop_next_webhooks(1)
        stack.sandbox.pay(c["checkout_session_id"])
        stack.sandbox.wait_for_webhooks(timeout=10)
        stack.sandbox.reset_request_counts()
        stack.refresh()
        completed = stack.gauge("basketball_api_pending_orders_with_completed_session")
        assert completed["jersey"] == 2.0
        assert stack.sandbox.request_counts() == {"GET /v1/events": 1}


def test_links_that_time_out_are_counted_without_asking_stripe_about_each(
    database_url: str,
) -> None:
    from tests.stack import running_stack

    with running_stack(database_url) as stack:
        orders = [stack.order(c) for c in ("tournament", "tournament", "monthly", "jersey")]
        stack.refresh()
        stack.sandbox.pay(orders[3]["checkout_session_id"])
        stack.sandbox.wait_for_webhooks(timeout=10)
        stack.sandbox.advance_clock(25 * 3600)  # every other link times out
        stack.sandbox.reset_request_counts()

        assert stack.refresh() == {"tournament": 2, "monthly": 1, "jersey": 0}
        assert sum(stack.sandbox.request_counts().values()) == 1  # the events feed, nothing else
