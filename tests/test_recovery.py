"""Stranded-order recovery: the list, link reissue (one live link per order, whatever fails or
races) and healing of payments whose webhook was lost — on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, cast

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from structlog.testing import capture_logs

from basketball_api.db import make_engine, make_session_factory, transaction
from basketball_api.errors import Conflict
from basketball_api.link_state import Fact, fact_of, learn
from basketball_api.models import CheckoutLink, Learnt, LinkState, Order, OrderStatus, Product
from basketball_api.orders import attach_session, cancel_order, reserve_order
from basketball_api.recovery import (
    heal_paid_orders,
    mask_email,
    reissue,
    stranded_orders,
)
from basketball_api.stripe_gateway import SessionSnapshot, StripeRejected, StripeUnavailable

NOW = 1_800_000_000


class FakeCheckout:
    """A thread-safe, synchronous Checkout: sessions in memory, optional slowness and failures."""

    def __init__(self, delay: float = 0.0) -> None:
        self.sessions: dict[str, SessionSnapshot] = {}
        self.delay = delay
        self.fail_create: Exception | None = None
        self.created = 0
        self._lock = threading.Lock()

    def create_checkout_session(
        self, order: Order, product: Product, return_token: str
    ) -> SessionSnapshot:
        time.sleep(self.delay)
        if self.fail_create is not None:
            raise self.fail_create
        with self._lock:
            self.created += 1
            sid = f"cs_fake_{self.created}"
            snap = SessionSnapshot(
                sid,
                "open",
                "unpaid",
                NOW,
                NOW + 86400,
                url=f"https://pay.example/c/{sid}",
                client_reference_id=str(order.id),
            )
            self.sessions[sid] = snap
        return snap

    def list_open_sessions(self, created_gte: int) -> list[SessionSnapshot]:
        with self._lock:
            return [
                s for s in self.sessions.values() if s.status == "open" and s.created >= created_gte
            ]

    def stripe_now(self) -> float:
        return NOW

    def expire_session(self, session_id: str) -> SessionSnapshot:
        with self._lock:
            snap = replace(
                self.sessions[session_id],
                status="expired",
                recovery_url=f"https://pay.example/r/{session_id}",
            )
            self.sessions[session_id] = snap
        return snap

    def pay(self, session_id: str) -> SessionSnapshot:
        snap = replace(self.sessions[session_id], status="complete", payment_status="paid")
        self.sessions[session_id] = snap
        return snap

    def retrieve_session(self, session_id: str) -> SessionSnapshot:
        time.sleep(self.delay)
        if session_id not in self.sessions:
            raise StripeRejected("No such checkout.session", "not_found", missing=True)
        return self.sessions[session_id]

    def open_for(self, order_id: int) -> list[str]:
        return [
            s.id
            for s in self.sessions.values()
            if s.status == "open" and s.client_reference_id == str(order_id)
        ]


@pytest.fixture
def factory(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def new_order(
    factory: sessionmaker[Session],
    stripe: FakeCheckout,
    category: str = "tournament",
    email: str = "parent@example.org",
    checkout: bool = True,
) -> Order:
    with transaction(factory) as db:
        product = db.scalars(select(Product).where(Product.category == category)).first()
        assert product is not None
        order = reserve_order(
            db, product_id=product.id, parent_email=email, player_name="Jordan", quantity=1
        )
        if checkout:
            attach_session(db, order, stripe.create_checkout_session(order, product, "t"))
            db.flush()
        return order


def learn_all(factory: sessionmaker[Session], stripe: FakeCheckout, orders: list[Order]) -> None:
    """What a refresh would learn: every pending order's session, as Stripe tells it."""
    facts = {
        o.stripe_checkout_session_id or "": fact_of(
            stripe.sessions[o.stripe_checkout_session_id or ""]
        )
        for o in orders
    }
    with transaction(factory) as db:
        learn(db, facts, Learnt.listing)


def links(factory: sessionmaker[Session], order_id: int) -> list[CheckoutLink]:
    with transaction(factory) as db:
        return list(
            db.scalars(
                select(CheckoutLink)
                .where(CheckoutLink.order_id == order_id)
                .order_by(CheckoutLink.id)
            )
        )


def current_session(factory: sessionmaker[Session], order_id: int) -> str | None:
    with transaction(factory) as db:
        order = db.get(Order, order_id)
        assert order is not None
        return order.stripe_checkout_session_id


@pytest.mark.parametrize(
    ("email", "masked"),
    [
        ("parent@example.org", "p***@example.org"),
        ("a@b.co", "a***@b.co"),
        ("no-at-sign", "***"),
        ("@example.org", "***"),
    ],
)
def test_mask_email_keeps_only_the_first_letter_and_the_domain(email: str, masked: str) -> None:
    assert mask_email(email) == masked


# -- the list -----------------------------------------------------------------------------


def test_stranded_lists_pending_orders_behind_dead_links_only(
    factory: sessionmaker[Session],
) -> None:
    stripe = FakeCheckout()
    dead_t = new_order(factory, stripe, "tournament", "tess@example.org")
    dead_m = new_order(factory, stripe, "monthly", "mo@example.org")
    live = new_order(factory, stripe, "tournament")
    paid = new_order(factory, stripe, "jersey")
    for o in (dead_t, dead_m):
        stripe.expire_session(o.stripe_checkout_session_id or "")
    learn_all(factory, stripe, [dead_t, dead_m, live, paid])
    stripe.pay(paid.stripe_checkout_session_id or "")
    with transaction(factory) as db:
        db.get(Order, paid.id).status = OrderStatus.paid  # type: ignore[union-attr]

    with transaction(factory) as db:
        found = stranded_orders(db, now=NOW + 7200 + 5 * 60, grace=0)
        only_monthly = stranded_orders(db, now=NOW, grace=0, category="monthly")

    assert [s.order_id for s in found] == [dead_t.id, dead_m.id]
    first = found[0]
    assert (first.category, first.parent_email, first.amount) == (
        "tournament",
        "t***@example.org",
        dead_t.amount,
    )
    assert first.session_id == dead_t.stripe_checkout_session_id
    assert first.recovery_url is None
    assert first.dead_for_seconds is None  # expired by hand: since when is unknown
    assert [s.order_id for s in only_monthly] == [dead_m.id]


def test_an_open_link_past_its_expiry_counts_as_dead_with_its_age(
    factory: sessionmaker[Session],
) -> None:
    stripe = FakeCheckout()
    new_order(factory, stripe)
    with transaction(factory) as db:
        assert stranded_orders(db, now=NOW + 86400 - 1, grace=0) == []
        assert stranded_orders(db, now=NOW + 86400 + 30, grace=60) == []
        [late] = stranded_orders(db, now=NOW + 86400 + 3 * 3600 + 120, grace=60)
    assert late.dead_for_seconds == 3 * 3600 + 120


# -- reissue ------------------------------------------------------------------------------


def test_reissue_swaps_in_one_fresh_link_and_keeps_the_old_for_audit(
    factory: sessionmaker[Session],
) -> None:
    stripe = FakeCheckout()
    order = new_order(factory, stripe)
    old = order.stripe_checkout_session_id or ""
    stripe.expire_session(old)

    result = reissue(factory, stripe, order.id, operator="treasurer")

    assert result.created
    assert result.old_session_id == old
    assert result.recovery_url == f"https://pay.example/r/{old}"
    new = current_session(factory, order.id)
    assert new != old
    assert stripe.open_for(order.id) == [new]
    assert result.order.checkout_url == f"https://pay.example/c/{new}"
    history = links(factory, order.id)
    assert [link.stripe_checkout_session_id for link in history] == [old, new]
    assert history[0].replaced_at is not None
    assert history[1].replaced_at is None
    assert history[0].recovery_url == f"https://pay.example/r/{old}"

    again = reissue(
        factory, stripe, order.id, operator="treasurer"
    )  # a double click: the live link stays
    assert not again.created
    assert current_session(factory, order.id) == new
    assert len(stripe.sessions) == 2


def test_the_listing_offers_the_recovery_url_once_the_new_link_dies_too(
    factory: sessionmaker[Session],
) -> None:
    stripe = FakeCheckout()
    order = new_order(factory, stripe)
    first = order.stripe_checkout_session_id or ""
    stripe.expire_session(first)
    reissued = reissue(factory, stripe, order.id, operator="treasurer").order
    stripe.expire_session(reissued.stripe_checkout_session_id or "")

    learn_all(factory, stripe, [reissued])
    with transaction(factory) as db:
        [s] = stranded_orders(db, now=NOW, grace=0)
    assert s.recovery_url == f"https://pay.example/r/{first}"


def test_an_order_without_a_link_gets_one(factory: sessionmaker[Session]) -> None:
    stripe = FakeCheckout()
    order = new_order(factory, stripe, checkout=False)
    result = reissue(factory, stripe, order.id, operator="treasurer")
    assert result.created
    assert result.old_session_id is None
    assert stripe.open_for(order.id) == [current_session(factory, order.id)]


def test_paid_or_cancelled_orders_and_paid_sessions_get_no_link(
    factory: sessionmaker[Session],
) -> None:
    stripe = FakeCheckout()
    paid_at_stripe = new_order(factory, stripe)
    stripe.pay(paid_at_stripe.stripe_checkout_session_id or "")
    with pytest.raises(Conflict, match="needs healing"):
        reissue(factory, stripe, paid_at_stripe.id, operator="treasurer")

    cancelled = new_order(factory, stripe)
    with transaction(factory) as db:
        db.get(Order, cancelled.id).status = OrderStatus.cancelled  # type: ignore[union-attr]
    with pytest.raises(Conflict, match="cancelled"):
        reissue(factory, stripe, cancelled.id, operator="treasurer")
    assert len(stripe.sessions) == 2


def test_stripe_failing_to_create_changes_nothing(factory: sessionmaker[Session]) -> None:
    stripe = FakeCheckout()
    order = new_order(factory, stripe)
    old = order.stripe_checkout_session_id
    stripe.expire_session(old or "")
    stripe.fail_create = StripeUnavailable("Stripe failed", "server_error")

    with pytest.raises(StripeUnavailable):
        reissue(factory, stripe, order.id, operator="treasurer")

    assert current_session(factory, order.id) == old
    assert [link.replaced_at for link in links(factory, order.id)] == [None]
    stripe.fail_create = None
    assert reissue(
        factory, stripe, order.id, operator="treasurer"
    ).created  # and the next try works


@pytest.mark.parametrize("failing", ["insert", "commit"])
def test_a_database_failure_after_creation_expires_the_new_session(
    factory: sessionmaker[Session], failing: str
) -> None:
    stripe = FakeCheckout()
    order = new_order(factory, stripe)
    old = order.stripe_checkout_session_id
    stripe.expire_session(old or "")
    engine = factory.kw["bind"]

    def fail_insert(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("INSERT INTO checkout_links"):
            raise OperationalError(statement, {}, Exception("disk I/O error"))

    def fail_commit(_conn: Any) -> None:
        raise OperationalError("COMMIT", {}, Exception("server closed the connection"))

    name, hook = ("before_cursor_execute", cast(Callable[..., None], fail_insert))
    if failing == "commit":
        name, hook = ("commit", fail_commit)
    event.listen(engine, name, hook)
    try:
        with pytest.raises(OperationalError):
            reissue(factory, stripe, order.id, operator="treasurer")
    finally:
        event.remove(engine, name, hook)

    assert current_session(factory, order.id) == old
    assert stripe.open_for(order.id) == []  # the session made for nothing is expired
    assert [s.status for s in stripe.sessions.values()] == ["expired", "expired"]
    assert reissue(factory, stripe, order.id, operator="treasurer").created


def test_concurrent_reissues_make_exactly_one_session(factory: sessionmaker[Session]) -> None:
    stripe = FakeCheckout(delay=0.05)  # a slow Stripe widens every race window
    order = new_order(factory, stripe)
    stripe.expire_session(order.stripe_checkout_session_id or "")

    with ThreadPoolExecutor(6) as pool:
        results = list(
            pool.map(lambda _: reissue(factory, stripe, order.id, operator="treasurer"), range(6))
        )

    assert sum(r.created for r in results) == 1
    assert len(stripe.sessions) == 2  # the old one and exactly one new one
    assert stripe.open_for(order.id) == [current_session(factory, order.id)]
    assert len(links(factory, order.id)) == 2


def test_a_link_stripe_does_not_know_is_dead_listed_reissued_and_cancellable(
    factory: sessionmaker[Session],
) -> None:
    # Before: such orders vanished from the list and reissue or cancel failed with a 502.
    stripe = FakeCheckout()
    gone = new_order(factory, stripe, "monthly")
    other = new_order(factory, stripe, "jersey")
    for order in (gone, other):
        del stripe.sessions[order.stripe_checkout_session_id or ""]  # a data reset at Stripe
    with transaction(factory) as db:
        learn(db, {gone.stripe_checkout_session_id or "": Fact(LinkState.missing)}, Learnt.retrieve)
        [listed] = stranded_orders(db, now=NOW, grace=0)
    assert (listed.order_id, listed.link_state) == (gone.id, "missing")

    result = reissue(factory, stripe, gone.id, operator="treasurer")
    assert result.created
    assert stripe.open_for(gone.id) == [current_session(factory, gone.id)]
    with transaction(factory) as db:
        cancelled = cancel_order(db, stripe, other.id, by="treasurer")
    assert cancelled.status == OrderStatus.cancelled
    [old] = [x for x in links(factory, other.id)]
    assert old.state == LinkState.missing


# -- healing ------------------------------------------------------------------------------


def test_heal_marks_paid_the_pending_orders_stripe_says_are_paid(
    factory: sessionmaker[Session],
) -> None:
    stripe = FakeCheckout()
    lost = new_order(factory, stripe)
    other = new_order(factory, stripe)
    sid = lost.stripe_checkout_session_id or ""
    with capture_logs() as logs, transaction(factory) as db:
        healed = heal_paid_orders(db, [sid, "cs_unknown"])
    assert healed == [sid]
    with transaction(factory) as db:
        assert db.get(Order, lost.id).status == OrderStatus.paid  # type: ignore[union-attr]
        assert db.get(Order, other.id).status == OrderStatus.pending  # type: ignore[union-attr]
    [audit] = [e for e in logs if e["event"] == "order_healed"]
    assert (audit["log_level"], audit["order_id"]) == ("warning", lost.id)
    with transaction(factory) as db:
        assert heal_paid_orders(db, [sid]) == []  # already paid: nothing twice
        assert heal_paid_orders(db, []) == []


@pytest.mark.parametrize("heal", [True, False], ids=["healing", "not-healing"])
def test_a_paid_order_whose_webhook_was_lost_is_shown_and_healed_only_when_enabled(
    database_url: str, heal: bool
) -> None:
    from tests.stack import running_stack

    with running_stack(database_url, heal_paid_orders=heal) as stack:
        lost = stack.order("tournament")
        stack.order("tournament")  # still open: neither shown nor healed
        stack.refresh()
        stack.sandbox.drop_next_webhooks(1)
        stack.sandbox.pay(lost["checkout_session_id"])
        stack.sandbox.wait_for_webhooks(timeout=10)
        assert stack.api.get(f"/orders/{lost['id']}").json()["status"] == "pending"

        with capture_logs() as logs:
            stack.refresh()

        completed = stack.gauge("basketball_api_pending_orders_with_completed_session")
        status = stack.api.get(f"/orders/{lost['id']}").json()["status"]
        healed = [e for e in logs if e["event"] == "order_healed"]
        if heal:
            assert status == "paid"
            assert completed == {"tournament": 0.0, "monthly": 0.0, "jersey": 0.0}
            [audit] = healed
            assert audit["log_level"] == "warning"
            assert audit["order_id"] == lost["id"]
            assert audit["session_id"] == lost["checkout_session_id"]
            [moved] = [e for e in logs if e["event"] == "order_transition"]
            assert (moved["old"], moved["new"], moved["cause"]) == (
                "pending",
                "paid",
                "reconciled_lost_webhook",
            )
        else:
            assert status == "pending"
            assert completed == {"tournament": 1.0, "monthly": 0.0, "jersey": 0.0}
            assert healed == []
            stack.refresh()  # and it stays so: the refresher only reads orders
            assert stack.api.get(f"/orders/{lost['id']}").json()["status"] == "pending"
        assert stack.gauge("basketball_api_pending_orders_with_open_session")["tournament"] == 1
