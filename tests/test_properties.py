"""Property: after every successful refresh the gauges equal the truth, on every replica.

Random interleavings of order creation, payments (immediate and delayed, delayed ones that
succeed or fail), expiry by the clock and early by hand, cancellations, lost / duplicated /
reordered webhooks, refreshes that fail half-way on a Stripe endpoint, and restarts of either
of two replicas on one database run against the real apps and the Stripe sandbox over HTTP.
Webhooks go to the first replica. A refresh step refreshes both replicas (the one holding the
polling lease first, as the loops do within an interval); after it, each replica's five
pending-order gauges must equal what the sandbox's own state (``SandboxControl.sessions``), the
delayed payments known to have failed and the orders' statuses in the database say.

Early expiries by hand may lose their webhook too: the events feed carries them.

Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from sqlalchemy import select
from tests.links import copies_out_of_step
from tests.standard_catalogue import migrate_with_catalogue

from basketball_api.app import create_app
from basketball_api.db import make_engine
from basketball_api.metrics import CATEGORIES
from basketball_api.models import Order, OrderStatus, Product
from basketball_api.settings import Settings
from stripe_sandbox.app import create_app as create_sandbox
from stripe_sandbox.config import SandboxConfig
from stripe_sandbox.control import SandboxControl
from stripe_sandbox.server import BackgroundServer

SECRET = "whsec_property_secret"
ADMIN = "property-admin-token-0123456789"
# The clock moves in steps of 2 h 7 min: no number of steps lands within 40 minutes of a
# session's 24 h lifetime, so no expiry falls inside the second or so that separates
# Stripe's clock from the service's estimate of it (the Date header has 1 s resolution).
CLOCK_STEP = 7_620
GAUGES = {
    "expired": "basketball_api_pending_orders_with_expired_session",
    "completed": "basketball_api_pending_orders_with_completed_session",
    "open": "basketball_api_pending_orders_with_open_session",
    "failed": "basketball_api_pending_orders_with_failed_payment",
    "missing": "basketball_api_pending_orders_with_missing_session",
}
LEASE = "basketball_api_poller_lease_held"

ORDER = st.integers(0, 10_000)  # which existing order, modulo how many there are
CREATE = st.tuples(st.just("create"), st.sampled_from(CATEGORIES), st.sampled_from([1, 1, 1, 0]))
REFRESH = st.just(("refresh",))
STEP = st.one_of(
    CREATE,
    CREATE,
    REFRESH,
    REFRESH,
    st.tuples(st.just("pay"), ORDER, st.booleans(), st.booleans()),  # delayed, webhook lost
    st.tuples(st.just("pay"), ORDER, st.booleans(), st.just(True)),
    st.tuples(st.just("settle"), ORDER, st.booleans(), st.booleans()),  # succeeded, lost
    st.tuples(st.just("expire"), ORDER, st.sampled_from(["once", "twice", "reordered", "lost"])),
    st.tuples(st.just("cancel"), ORDER),
    st.tuples(st.just("advance"), st.integers(1, 12), st.booleans()),  # steps, webhooks lost
    st.tuples(st.just("restart"), st.sampled_from([0, 1, 2])),  # replica 0, 1, or both
    st.tuples(  # a refresh that fails on one Stripe endpoint (a body that is not JSON)
        st.just("failing_refresh"),
        st.sampled_from(
            ["GET /v1/events", "GET /v1/checkout/sessions", "GET /v1/checkout/sessions/{id}"]
        ),
    ),
)


class Replica:
    """One app process: a server and an operator client."""

    def __init__(self, settings: Settings) -> None:
        self.server = BackgroundServer(create_app(settings, start_refresher=False)).start()
        self.api = httpx.Client(
            base_url=self.server.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30
        )

    def stop(self) -> None:
        self.api.close()
        self.server.stop()

    def metrics(self) -> str:
        return self.api.get("/metrics").text


class World:
    """The sandbox (shared, reset per example) and two replicas that can be restarted."""

    def __init__(self, sandbox_url: str, control: SandboxControl, database_url: str) -> None:
        self.sandbox_url = sandbox_url
        self.control = control
        self.database_url = database_url
        self.engine = make_engine(database_url)
        self.orders: list[dict[str, Any]] = []
        self.failed: set[str] = set()  # sessions whose delayed payment failed
        self.products: dict[str, int] = {}
        self.settings = Settings(
            database_url=self.database_url,
            stripe_api_base=self.sandbox_url,
            stripe_webhook_secret=SecretStr(SECRET),
            admin_token=SecretStr(ADMIN),
            expiry_grace_seconds=0,
            stripe_timeout_seconds=5,
        )
        self.replicas = [Replica(self.settings), Replica(self.settings)]
        self._webhooks_to_first()
        self.products = {p["category"]: p["id"] for p in self.api.get("/products").json()}

    @property
    def api(self) -> httpx.Client:
        return self.replicas[0].api

    def _webhooks_to_first(self) -> None:
        self.control.configure_webhook(f"{self.replicas[0].server.url}/webhooks/stripe", SECRET)

    def close(self) -> None:
        for replica in self.replicas:
            replica.stop()
        self.engine.dispose()

    def settle_webhooks(self) -> None:
        self.control.flush_webhooks()
        assert self.control.wait_for_webhooks(timeout=20)

    def restart(self, which: int) -> None:
        self.settle_webhooks()
        for i in (0, 1) if which == 2 else (which,):
            self.replicas[i].stop()
            self.replicas[i] = Replica(self.settings)
        self._webhooks_to_first()

    # -- steps ---------------------------------------------------------------------------

    def pick(self, index: int) -> dict[str, Any] | None:
        with_session = [o for o in self.orders if o["checkout_session_id"]]
        return with_session[index % len(with_session)] if with_session else None

    def session(self, order: dict[str, Any]) -> dict[str, Any]:
        return self.control.session(order["checkout_session_id"])

    def apply(self, step: tuple[Any, ...]) -> None:
        kind, *args = step
        control = self.control
        assert self.api is not None
        if kind == "create":
            category, with_checkout = args
            r = self.api.post(
                "/orders",
                json={
                    "product_id": self.products[category],
                    "parent_email": "parent@example.org",
                    "player_name": "Sam",
                    "create_checkout": bool(with_checkout),
                },
            )
            assert r.status_code == 201, r.text
            self.orders.append(r.json())
        elif kind == "pay":
            order = self.pick(args[0])
            if order is None or self.session(order)["status"] != "open":
                return
            delayed, lost = args[1], args[2]
            control.drop_next_webhooks(1 if lost else 0)
            control.pay(order["checkout_session_id"], delayed=delayed)
            control.drop_next_webhooks(0)
        elif kind == "settle":
            order = self.pick(args[0])
            if order is None:
                return
            session = self.session(order)
            if session["status"] != "complete" or session["payment_status"] != "unpaid":
                return
            if order["checkout_session_id"] in self.failed:
                return  # Stripe settles a delayed payment once (the sandbox would again)
            succeeded, lost = args[1], args[2]
            control.drop_next_webhooks(1 if lost else 0)
            control.complete_async(order["checkout_session_id"], succeeded)
            control.drop_next_webhooks(0)
            if not succeeded:
                self.failed.add(order["checkout_session_id"])
        elif kind == "expire":
            order = self.pick(args[0])
            if order is None or self.session(order)["status"] != "open":
                return
            if args[1] == "twice":
                control.duplicate_next_webhooks(1)
            elif args[1] == "reordered":
                control.reorder_next_webhooks(2)  # held until the next event, or the flush
            elif args[1] == "lost":
                control.drop_next_webhooks(1)
            control.expire(order["checkout_session_id"])
            control.duplicate_next_webhooks(0)
            control.drop_next_webhooks(0)
        elif kind == "cancel":
            order = self.pick(args[0])
            if order is None:
                return
            r = self.api.post(f"/orders/{order['id']}/cancel")
            assert r.status_code in (200, 409), r.text
        elif kind == "advance":
            steps, lost = args
            control.drop_next_webhooks(1_000_000 if lost else 0)  # every timeout's webhook
            control.advance_clock(steps * CLOCK_STEP)
            control.drop_next_webhooks(0)
        elif kind == "restart":
            self.restart(args[0])
        elif kind == "refresh":
            self.refresh_and_check()
        elif kind == "failing_refresh":
            self.settle_webhooks()
            control.inject_fault(args[0], "malformed", count=1)
            r = self.holder().api.post("/admin/refresh")  # fails if it needed that endpoint
            assert r.status_code == 200, r.text
            control.clear_faults()
        else:  # pragma: no cover - the strategy has no other kinds
            raise AssertionError(kind)

    # -- the property --------------------------------------------------------------------

    def truth(self) -> dict[str, dict[str, int]]:
        sessions = self.control.sessions()
        stmt = (
            select(Order.stripe_checkout_session_id, Product.category)
            .join(Product, Product.id == Order.product_id)
            .where(Order.status == OrderStatus.pending)
        )
        out = {name: dict.fromkeys(CATEGORIES, 0) for name in GAUGES}
        with self.engine.connect() as conn:
            for session_id, category in conn.execute(stmt):
                if session_id is None:
                    continue
                s = sessions[session_id]
                if s["status"] == "expired":
                    out["expired"][category.value] += 1
                elif s["status"] == "open":
                    out["open"][category.value] += 1
                elif s["payment_status"] == "paid":
                    out["completed"][category.value] += 1
                elif session_id in self.failed:
                    out["failed"][category.value] += 1
        return out

    def holder(self) -> Replica:
        """The replica holding the polling lease (the first if none yet: it takes it)."""
        for replica in self.replicas:
            if f"{LEASE} 1.0" in replica.metrics().splitlines():
                return replica
        return self.replicas[0]

    def gauges(self, replica: Replica) -> dict[str, dict[str, int]]:
        text = replica.metrics()
        out: dict[str, dict[str, int]] = {name: {} for name in GAUGES}
        for line in text.splitlines():
            for name, metric in GAUGES.items():
                if line.startswith(metric + "{"):
                    labels, value = line.rsplit(" ", 1)
                    category = labels.split('category="')[1].split('"')[0]
                    out[name][category] = int(float(value))
        return out

    def refresh_and_check(self) -> None:
        self.settle_webhooks()
        first = self.holder()
        truth = self.truth()
        for replica in [first, *(r for r in self.replicas if r is not first)]:
            r = replica.api.post("/admin/refresh")
            assert r.status_code == 200, r.text
            assert r.json()["succeeded"], r.json()
        for replica in self.replicas:
            assert self.gauges(replica) == truth
        assert copies_out_of_step(self.engine) == []


@pytest.fixture(scope="module")
def sandbox() -> Iterator[tuple[str, SandboxControl]]:
    app = create_sandbox(SandboxConfig(webhook_secret=SECRET, webhook_retry_base_seconds=0.05))
    with BackgroundServer(app) as server, SandboxControl(server.url) as control:
        yield server.url, control


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file, copied for every example (migrating each time is slower)."""
    path = tmp_path_factory.mktemp("property") / "template.db"
    migrate_with_catalogue(f"sqlite:///{path}")
    return path


def fresh_database(engine: str, request: pytest.FixtureRequest, template: Path) -> str:
    """An empty migrated database for one example."""
    if engine == "sqlite":
        db = request.getfixturevalue("tmp_path_factory").mktemp("example") / "orders.db"
        shutil.copyfile(template, db)
        return f"sqlite:///{db}"
    url: str = request.getfixturevalue("postgres_url")
    db_engine = make_engine(url)
    try:
        with db_engine.begin() as conn:
            conn.exec_driver_sql(
                "TRUNCATE orders, processed_webhook_events, poller_cursor RESTART IDENTITY CASCADE"
            )
    finally:
        db_engine.dispose()
    return url


@pytest.mark.parametrize(
    "engine", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    first=st.lists(CREATE, min_size=1, max_size=4),
    steps=st.lists(STEP, min_size=4, max_size=30),
)
def test_gauges_equal_the_truth_after_every_refresh(
    engine: str,
    first: list[tuple[Any, ...]],
    steps: list[tuple[Any, ...]],
    sandbox: tuple[str, SandboxControl],
    template_db: Path,
    request: pytest.FixtureRequest,
) -> None:
    sandbox_url, control = sandbox
    control.reset()
    world = World(sandbox_url, control, fresh_database(engine, request, template_db))
    try:
        for step in [*first, ("refresh",), *steps]:  # a cold refresh first, warm ones after
            world.apply(step)
        world.refresh_and_check()  # and once more at the end, whatever the steps were
    finally:
        world.close()
