"""The stranded-order lifecycle: stranded → the parent emailed a working link once → cancelled
after the configured time, unless an operator snoozed or dealt with the order.

The decisions (``plan``) are tested as a plain function; ``run_once`` on SQLite and
PostgreSQL; the whole path through the running service and the sandbox, whose clock is moved
seven days, end to end."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy.orm import Session, sessionmaker
from structlog.testing import capture_logs
from tests.operator_page import OperatorPage
from tests.stack import ADMIN_TOKEN, running_stack
from tests.test_cli_ops import run as run_cli
from tests.test_cli_ops import wide_quiet_cli  # noqa: F401 (a fixture, used below)
from tests.test_notify import Sink, free_port

from basketball_api import lifecycle
from basketball_api.db import make_engine, make_session_factory, transaction
from basketball_api.lifecycle import DAY, Policy, Tracked, plan, run_once
from basketball_api.metrics import Metrics
from basketball_api.models import Order, OrderStatus
from basketball_api.orders import transition

T0 = 1_800_000_000.0
WEEK = Policy(cancel_after_seconds=7 * DAY, email=True)


# -- the decisions, as a plain function ---------------------------------------------------


def test_a_dead_link_strands_the_order_and_emails_the_parent() -> None:
    todo = plan([Tracked(1, "jersey", dead=True), Tracked(2, "monthly", dead=False)], WEEK, T0)

    assert (todo.strand, todo.email, todo.cancel, todo.recover) == ([1], [1], [], [])


def test_an_order_is_cancelled_after_the_configured_time_and_not_before() -> None:
    stranded = Tracked(1, "jersey", dead=True, stranded_at=T0, emailed_at=T0)

    assert plan([stranded], WEEK, T0 + 7 * DAY - 1).cancel == []
    assert plan([stranded], WEEK, T0 + 7 * DAY).cancel == [1]
    assert plan([stranded], WEEK, T0 + 7 * DAY).email == []  # never twice
    never = Policy(cancel_after_seconds=0, email=True)
    assert plan([stranded], never, T0 + 365 * DAY).cancel == []


def test_a_snoozed_order_is_neither_emailed_nor_cancelled_and_counts_as_snoozed() -> None:
    snoozed = Tracked(1, "tournament", dead=True, stranded_at=T0, snoozed_until=T0 + 10 * DAY)

    todo = plan([snoozed], WEEK, T0 + 8 * DAY)
    assert (todo.email, todo.cancel) == ([], [])
    assert todo.snoozed == {"tournament": 1, "monthly": 0, "jersey": 0}
    after = plan([snoozed], WEEK, T0 + 10 * DAY)
    assert after.cancel == [1]
    assert after.snoozed["tournament"] == 0


def test_without_email_the_order_is_still_cancelled_in_the_end() -> None:
    quiet = Policy(cancel_after_seconds=7 * DAY, email=False)
    stranded = Tracked(1, "jersey", dead=True, stranded_at=T0)

    assert plan([stranded], quiet, T0).email == []
    assert plan([stranded], quiet, T0 + 7 * DAY).cancel == [1]


def test_a_live_link_again_takes_the_order_out_of_the_lifecycle() -> None:
    relinked = Tracked(1, "jersey", dead=False, stranded_at=T0, snoozed_until=T0 + DAY)

    todo = plan([relinked], WEEK, T0 + 8 * DAY)
    assert (todo.recover, todo.cancel, todo.email) == ([1], [], [])


# -- applied to the database --------------------------------------------------------------


@pytest.fixture
def factory(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def _order(factory: sessionmaker[Session], product_id: int, n: int) -> int:
    with transaction(factory) as db:
        order = Order(
            product_id=product_id,
            amount=5000,
            currency="usd",
            parent_email=f"parent{n}@example.org",
            player_name="Jordan",
            stripe_checkout_session_id=f"cs_test_{n}",
        )
        db.add(order)
        db.flush()
        return order.id


def _status(factory: sessionmaker[Session], order_id: int) -> OrderStatus:
    with transaction(factory) as db:
        return db.get_one(Order, order_id).status


class Mailer:
    def __init__(self, *, fail_first: int = 0) -> None:
        self.sent: list[int] = []
        self.fail_first = fail_first

    def __call__(self, order_id: int) -> bool:
        if self.fail_first:
            self.fail_first -= 1
            return False
        self.sent.append(order_id)
        return True


def _count(metrics: Metrics, transition_name: str) -> float:
    value = metrics.registry.get_sample_value(
        "basketball_api_stranded_order_transitions_total", {"transition": transition_name}
    )
    return value or 0.0


def test_stranded_emailed_once_then_cancelled_after_a_week(
    factory: sessionmaker[Session],
) -> None:
    jersey, tournament, live = (_order(factory, p, n) for n, p in enumerate((3, 1, 1)))
    dead = {jersey: "jersey", tournament: "tournament"}
    mailer, metrics = Mailer(), Metrics()

    def once(now: float) -> lifecycle.Outcome:
        return run_once(factory, dead, policy=WEEK, now=now, send_link=mailer, metrics=metrics)

    first = once(T0)
    assert sorted(first.stranded) == sorted(dead)
    assert sorted(mailer.sent) == sorted(dead)
    assert once(T0 + DAY).stranded == []
    assert once(T0 + 6 * DAY).auto_cancelled == []
    assert sorted(mailer.sent) == sorted(dead), "a parent is emailed once, never twice"

    with capture_logs() as logs:
        week = once(T0 + 7 * DAY)
    assert sorted(week.auto_cancelled) == sorted(dead)
    assert {_status(factory, o) for o in dead} == {OrderStatus.cancelled}
    assert _status(factory, live) == OrderStatus.pending
    audit = [e for e in logs if e["event"] == "stranded_order_auto_cancelled"]
    assert sorted(e["order_id"] for e in audit) == sorted(dead)
    assert {e["stranded_days"] for e in audit} == {7.0}
    assert "order_transition" in {e["event"] for e in logs}  # through the state machine

    assert once(T0 + 8 * DAY) == lifecycle.Outcome()  # cancelled is the end: counted once
    assert (_count(metrics, "stranded"), _count(metrics, "emailed")) == (2, 2)
    assert (_count(metrics, "auto_cancelled"), _count(metrics, "cancelled")) == (2, 0)


def test_two_replicas_running_the_lifecycle_email_each_parent_once(
    factory: sessionmaker[Session],
) -> None:
    orders = {_order(factory, 2, n): "monthly" for n in range(3)}
    mailer = Mailer()
    replicas = [Metrics(), Metrics()]

    for metrics in replicas:  # the same moment, one after the other
        run_once(factory, orders, policy=WEEK, now=T0, send_link=mailer, metrics=metrics)

    assert sorted(mailer.sent) == sorted(orders)
    assert sum(_count(m, "emailed") for m in replicas) == 3
    assert sum(_count(m, "stranded") for m in replicas) == 3


def test_an_email_that_failed_is_sent_at_the_next_run(factory: sessionmaker[Session]) -> None:
    order = _order(factory, 3, 1)
    mailer = Mailer(fail_first=1)

    first = run_once(factory, {order: "jersey"}, policy=WEEK, now=T0, send_link=mailer)
    second = run_once(factory, {order: "jersey"}, policy=WEEK, now=T0 + 300, send_link=mailer)
    third = run_once(factory, {order: "jersey"}, policy=WEEK, now=T0 + 600, send_link=mailer)

    assert (first.emailed, second.emailed, third.emailed) == ([], [order], [])
    assert mailer.sent == [order]


def test_a_snooze_holds_the_cancellation_and_shows_in_the_gauge(
    factory: sessionmaker[Session],
) -> None:
    order = _order(factory, 1, 1)
    dead, metrics = {order: "tournament"}, Metrics()
    run_once(factory, dead, policy=WEEK, now=T0, send_link=Mailer(), metrics=metrics)
    with transaction(factory) as db:
        lifecycle.snooze(db, order, until=T0 + 10 * DAY, by="coach")

    held = run_once(
        factory, dead, policy=WEEK, now=T0 + 8 * DAY, send_link=Mailer(), metrics=metrics
    )
    assert held.auto_cancelled == []
    assert (
        metrics.registry.get_sample_value(
            "basketball_api_pending_orders_snoozed", {"category": "tournament"}
        )
        == 1
    )
    ended = run_once(
        factory, dead, policy=WEEK, now=T0 + 10 * DAY, send_link=Mailer(), metrics=metrics
    )
    assert ended.auto_cancelled == [order]
    assert (
        metrics.registry.get_sample_value(
            "basketball_api_pending_orders_snoozed", {"category": "tournament"}
        )
        == 0
    )


def test_someone_elses_cancellation_is_counted_once(factory: sessionmaker[Session]) -> None:
    order = _order(factory, 3, 1)
    metrics = Metrics()
    run_once(factory, {order: "jersey"}, policy=WEEK, now=T0, send_link=Mailer(), metrics=metrics)
    with transaction(factory) as db:  # an operator, the CLI or the order API cancels it
        transition(db.get_one(Order, order), OrderStatus.cancelled, cause="cancel_request")

    for later in (T0 + 60, T0 + 120):
        run_once(factory, {}, policy=WEEK, now=later, send_link=Mailer(), metrics=metrics)

    assert _count(metrics, "cancelled") == 1


def test_a_relinked_order_that_dies_again_is_stranded_again_but_not_emailed_again(
    factory: sessionmaker[Session],
) -> None:
    order = _order(factory, 3, 1)
    mailer, metrics = Mailer(), Metrics()
    run_once(factory, {order: "jersey"}, policy=WEEK, now=T0, send_link=mailer, metrics=metrics)
    run_once(factory, {}, policy=WEEK, now=T0 + DAY, send_link=mailer, metrics=metrics)
    again = run_once(factory, {order: "jersey"}, policy=WEEK, now=T0 + 2 * DAY, send_link=mailer)
    week = run_once(factory, {order: "jersey"}, policy=WEEK, now=T0 + 8 * DAY, send_link=mailer)
    last = run_once(factory, {order: "jersey"}, policy=WEEK, now=T0 + 9 * DAY, send_link=mailer)

    assert again.stranded == [order]
    assert mailer.sent == [order]
    assert week.auto_cancelled == []  # a week from the second death, not the first
    assert last.auto_cancelled == [order]


def test_snoozing_a_paid_order_is_refused(factory: sessionmaker[Session]) -> None:
    order = _order(factory, 1, 1)
    with transaction(factory) as db:
        transition(db.get_one(Order, order), OrderStatus.paid, cause="test")

    with pytest.raises(Exception, match="only pending orders snooze"), transaction(factory) as db:
        lifecycle.snooze(db, order, until=T0 + DAY, by="coach")


# -- through the running service, the sandbox's clock moved a week ------------------------


@pytest.fixture
def mail() -> Iterator[Sink]:
    handler = Sink(port=free_port())
    controller = Controller(handler, hostname="127.0.0.1", port=handler.port)
    controller.start()
    yield handler
    controller.stop()


def _transitions(text: str) -> dict[str, float]:
    found = re.findall(
        r'^basketball_api_stranded_order_transitions_total\{transition="(\w+)"\} (\S+)$',
        text,
        flags=re.M,
    )
    return {name: float(value) for name, value in found}


def _pay_link(message: Any) -> str:
    body = message.get_payload(decode=True).decode()
    (link,) = re.findall(r"http://\S+/pay/[A-Za-z0-9_-]+", body)
    return str(link)


def test_a_stranded_order_is_emailed_then_cancelled_a_week_later(
    database_url: str, mail: Sink
) -> None:
    settings: dict[str, Any] = {"smtp_host": "127.0.0.1", "smtp_port": mail.port}
    with running_stack(database_url, **settings) as stack:
        abandoned = stack.order("jersey", parent_email="sam@example.org")
        waiting = stack.order("tournament", parent_email="kim@example.org")
        for o in (abandoned, waiting):
            stack.sdk.v1.checkout.sessions.expire(o["checkout_session_id"])
        stack.sandbox.wait_for_webhooks(timeout=10)
        assert stack.refresh() == {"tournament": 1, "monthly": 0, "jersey": 1}

        first = stack.api.post("/admin/stranded-orders/lifecycle").json()
        assert first["ran"] is True
        assert sorted(first["stranded"]) == sorted([abandoned["id"], waiting["id"]])
        assert sorted(first["emailed"]) == sorted([abandoned["id"], waiting["id"]])
        emails = {m["To"]: m for m in mail.messages}
        assert sorted(emails) == ["kim@example.org", "sam@example.org"]
        again = stack.api.post("/admin/stranded-orders/lifecycle").json()
        assert (again["emailed"], len(mail.messages)) == ([], 2), "never emailed twice"

        # Kim opens the pay link from the email: a fresh Checkout page, so no longer stranded.
        opened = httpx.get(_pay_link(emails["kim@example.org"]), follow_redirects=False)
        assert opened.status_code == 303
        assert "/checkout/" in opened.headers["location"]
        assert stack.refresh() == {"tournament": 0, "monthly": 0, "jersey": 1}
        stack.api.post("/admin/stranded-orders/lifecycle")

        # A week on: Sam never paid and is cancelled; Kim's new link died meanwhile (a day),
        # so that order is stranded again, but not emailed again, and the club snoozes it.
        stack.sandbox.advance_clock(7 * 86400 + 60)
        stack.refresh()  # learns Stripe's clock from its answers
        week = stack.api.post("/admin/stranded-orders/lifecycle").json()
        assert week["auto_cancelled"] == [abandoned["id"]]
        assert week["stranded"] == [waiting["id"]]
        assert week["emailed"] == []
        assert stack.api.get(f"/orders/{abandoned['id']}").json()["status"] == "cancelled"
        snoozed = stack.api.post(f"/admin/orders/{waiting['id']}/snooze?days=14")
        assert snoozed.status_code == 200, snoozed.text
        assert stack.api.get(f"/orders/{waiting['id']}").json()["status"] == "pending"
        assert stack.refresh() == {"tournament": 1, "monthly": 0, "jersey": 0}

        text = stack.api.get("/metrics").text
        assert _transitions(text) == {
            "stranded": 3.0,
            "emailed": 2.0,
            "auto_cancelled": 1.0,
            "snoozed": 1.0,
            "cancelled": 0.0,
        }
        assert 'basketball_api_pending_orders_snoozed{category="tournament"} 1.0' in text


@pytest.mark.usefixtures("wide_quiet_cli")
def test_operators_snooze_and_cancel_from_the_command_line(database_url: str) -> None:
    with running_stack(database_url) as stack:
        snoozed = stack.order("tournament")
        cancelled = stack.order("monthly")

        out = run_cli(stack, database_url, "snooze", str(snoozed["id"]), "--days", "3")
        assert out.exit_code == 0, out.output
        assert f"order {snoozed['id']} snoozed until" in out.output
        out = run_cli(stack, database_url, "cancel", str(cancelled["id"]))
        assert out.exit_code == 0, out.output

        assert stack.api.get(f"/orders/{cancelled['id']}").json()["status"] == "cancelled"
        engine = make_engine(database_url)
        try:
            with transaction(make_session_factory(engine)) as db:
                order = db.get_one(Order, snoozed["id"])
                assert (order.snoozed_by, order.status) == ("cli", OrderStatus.pending)
        finally:
            engine.dispose()
        again = run_cli(stack, database_url, "snooze", str(cancelled["id"]))
        assert again.exit_code == 1
        assert "only pending orders snooze" in again.output


def test_a_category_is_urgent_in_the_week_before_its_event(
    factory: sessionmaker[Session],
) -> None:
    """The standard catalogue's tournament entry is for 16 January 2027."""

    def urgent(day: str, days: int = 7, configured: frozenset[str] = frozenset()) -> set[str]:
        now = datetime.fromisoformat(f"{day}T12:00:00+00:00").timestamp()
        with transaction(factory) as db:
            return set(
                lifecycle.urgent_categories(
                    db, now=now, days_before_event=days, configured=configured
                )
            )

    assert urgent("2026-12-01") == set()
    assert urgent("2027-01-09") == {"tournament"}
    assert urgent("2027-01-16") == {"tournament"}
    assert urgent("2027-01-17") == set()  # the event is over
    assert urgent("2027-01-10", days=0) == set()
    assert urgent("2026-12-01", configured=frozenset({"jersey"})) == {"jersey"}


def test_fifteen_hundred_dead_links_at_once(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as db:
        orders = [
            Order(
                product_id=2,
                amount=6000,
                currency="usd",
                parent_email=f"p{n}@example.org",
                player_name="Jordan",
                stripe_checkout_session_id=f"cs_test_bulk_{n}",
            )
            for n in range(2000)
        ]
        db.add_all(orders)
        db.flush()
        dead = {o.id: "monthly" for o in orders[:1500]}

    outcome = run_once(factory, dead, policy=WEEK, now=T0, send_link=Mailer())

    assert len(outcome.stranded) == 1500
    assert len(outcome.emailed) == 1500


def test_the_operator_page_snoozes_and_cancels_with_its_csrf_token(database_url: str) -> None:
    with running_stack(database_url) as stack:
        snoozed, cancelled = stack.order("tournament"), stack.order("jersey")
        for o in (snoozed, cancelled):
            stack.sdk.v1.checkout.sessions.expire(o["checkout_session_id"])
        stack.sandbox.wait_for_webhooks(timeout=10)
        stack.refresh()
        with httpx.Client(base_url=stack.api_url) as browser:
            page = OperatorPage(browser, ADMIN_TOKEN)
            listing = page.get("/admin").text
            assert f"/admin/page/stranded/{snoozed['id']}/snooze" in listing
            assert f"/admin/page/stranded/{cancelled['id']}/cancel" in listing

            forged = browser.post(f"/admin/page/stranded/{snoozed['id']}/snooze")
            assert forged.status_code == 403  # no CSRF token: nothing happens
            done = page.post(f"/admin/page/stranded/{snoozed['id']}/snooze")
            assert done.status_code == 303
            assert "outcome=snoozed" in done.headers["location"]
            gone = page.post(f"/admin/page/stranded/{cancelled['id']}/cancel")
            assert "outcome=cancelled" in gone.headers["location"]

        assert stack.api.get(f"/orders/{cancelled['id']}").json()["status"] == "cancelled"
        engine = make_engine(database_url)
        try:
            with transaction(make_session_factory(engine)) as db:
                order = db.get_one(Order, snoozed["id"])
                assert (order.snoozed_by, order.status) == ("admin", OrderStatus.pending)
        finally:
            engine.dispose()
        text = stack.api.get("/metrics").text
        assert 'basketball_api_pending_orders_snoozed{category="tournament"} 1.0' in text
