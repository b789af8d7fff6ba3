"""The expired-session gauge: the refresh function, its resilience, and the app end to end."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from structlog.testing import capture_logs
from tests.fakes import FakeStripe
from tests.links import Pending, factory_for, insert_pending, pending_of

from basketball_api.db import make_engine, make_session_factory
from basketball_api.link_state import Fact, learn
from basketball_api.metrics import Metrics
from basketball_api.models import Learnt, LinkState, Order, OrderStatus, PaymentStatus
from basketball_api.poller_store import Store
from basketball_api.refresher import Refresher
from basketball_api.stripe_gateway import StripeUnavailable

pytestmark = pytest.mark.anyio


def gauge(
    metrics: Metrics, name: str = "basketball_api_pending_orders_with_expired_session"
) -> dict[str, float]:
    """{category: value} of one labelled gauge as /metrics would show it."""
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name:
                out[sample.labels["category"]] = sample.value
    return out


@pytest.fixture
def factory(database_url: str) -> Iterator[sessionmaker[Session]]:
    f = factory_for(database_url)
    yield f
    f.kw["bind"].dispose()


def make_refresher(
    factory: sessionmaker[Session], stripe: FakeStripe, rows: list[Pending]
) -> tuple[Refresher, Metrics]:
    insert_pending(factory, rows)
    metrics = Metrics()
    refresher = Refresher(store=Store(factory), source=stripe, metrics=metrics, grace_seconds=0)
    return refresher, metrics


async def test_two_pending_orders_one_expired_gives_one_for_its_category(
    factory: sessionmaker[Session],
) -> None:
    stripe = FakeStripe()
    a = stripe.add("cs_a", "expired")
    b = stripe.add("cs_b", "open")
    refresher, metrics = make_refresher(
        factory, stripe, [pending_of(a, "tournament"), pending_of(b, "monthly")]
    )

    assert await refresher.run_cycle() is True

    assert gauge(metrics) == {"tournament": 1.0, "monthly": 0.0, "jersey": 0.0}


async def test_no_value_is_invented_before_the_first_successful_refresh(
    factory: sessionmaker[Session],
) -> None:
    stripe = FakeStripe()
    stripe.fail_with = StripeUnavailable("down", "connection")
    a = stripe.add("cs_a")
    refresher, metrics = make_refresher(factory, stripe, [pending_of(a, "jersey")])

    await refresher.run_cycle()

    assert gauge(metrics) == {}
    assert "basketball_api_pending_orders_refresh_last_success_timestamp_seconds 0.0" in (
        metrics.render().decode()
    )


async def test_stripe_failure_mid_refresh_warns_keeps_the_gauge_and_recovers(
    factory: sessionmaker[Session],
) -> None:
    stripe = FakeStripe()
    a = stripe.add("cs_a", "expired")
    b = stripe.add("cs_b", "open")
    refresher, metrics = make_refresher(
        factory, stripe, [pending_of(a, "tournament"), pending_of(b, "tournament")]
    )
    assert await refresher.run_cycle()

    # A new order arrives whose session must be learnt, and Stripe is down.
    c = stripe.add("cs_c", "expired")
    insert_pending(factory, [pending_of(c, "tournament")])
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
    stripe = FakeStripe()
    metrics = Metrics()
    engine = make_engine("sqlite:////nonexistent-dir/none.db")
    broken = Store(make_session_factory(engine))
    refresher = Refresher(store=broken, source=stripe, metrics=metrics)
    with capture_logs() as logs:
        assert await refresher.run_cycle() is False
    assert [e["reason"] for e in logs if e["log_level"] == "warning"] == ["database"]


async def test_a_payment_webhook_after_the_grace_period_never_drives_a_gauge_negative(
    factory: sessionmaker[Session],
) -> None:
    # Before: the webhook's bucket was computed now and subtracted from counts computed at the
    # last refresh: a payment arriving after expires_at + grace drove the expired gauge to -1.
    stripe = FakeStripe()
    a = stripe.add("cs_a")
    refresher, metrics = make_refresher(factory, stripe, [pending_of(a, "monthly")])
    assert await refresher.run_cycle()
    stripe.now = a.expires_at + 600  # the link is dead by time now, not yet recounted
    with factory() as db:
        order = db.scalars(select(Order)).one()
        order.status = OrderStatus.paid  # what the webhook's transaction does
        learn(db, {"cs_a": Fact(LinkState.complete, PaymentStatus.paid)}, Learnt.webhook)
        db.commit()
    refresher.request_recount()
    refresher.request_recount()  # a burst: one recount
    await asyncio.sleep(0.3)
    assert gauge(metrics) == {"tournament": 0.0, "monthly": 0.0, "jersey": 0.0}
    assert gauge(metrics, "basketball_api_pending_orders_with_open_session")["monthly"] == 0.0


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

        # The webhook moved it before any refresh.
        assert stack.wait_gauge(lambda g: g["monthly"] == 1.0)["monthly"] == 1.0
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

        # Both webhooks were lost; the events feed has the manual expiry and the payment.
        # (Before: the expiry was only counted once the link's own expires_at had passed.)
        assert stack.refresh()["tournament"] == 1
        completed = stack.gauge("basketball_api_pending_orders_with_completed_session")
        assert completed["jersey"] == 1.0

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
