"""The refresher's fault matrix: every way Stripe or the database can fail, before and after a
first successful refresh, through the real SDK against the sandbox and a real database.

For each fault the process must live, ``/health`` must answer 200, the expired-session gauge
must keep its last good value (or stay unreported before any success), the failed refresh must
log exactly one WARNING naming a bounded cause that is also counted in
``basketball_api_pending_orders_refresh_errors_total{reason}``, and the next good cycle must
publish the truth again. The matrix is printed at the end of the run (``tests/fault_report``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url
from structlog.testing import capture_logs
from tests import fault_report
from tests.fault_report import ROWS, Row
from tests.procs import TcpProxy
from tests.standard_catalogue import migrate_with_catalogue

from basketball_api.app import create_app
from basketball_api.db import make_engine
from basketball_api.settings import Settings
from stripe_sandbox.app import create_app as create_sandbox
from stripe_sandbox.config import SandboxConfig
from stripe_sandbox.control import SandboxControl
from stripe_sandbox.server import BackgroundServer

TOKEN = "fault-matrix-admin-token-0123456789"
EXPIRED = "basketball_api_pending_orders_with_expired_session"
COMPLETED = "basketball_api_pending_orders_with_completed_session"
ERRORS = "basketball_api_pending_orders_refresh_errors_total"
DAY = 24 * 3600

# The defaults of every case: no SDK retries and no 429 backoff, so a fault fails the cycle
# at once; short timeouts so a hang costs well under a second.
BASE_SETTINGS: dict[str, Any] = {
    "admin_token": TOKEN,
    "expiry_grace_seconds": 0,
    "stripe_max_network_retries": 0,
    "stripe_rate_limit_retries": 0,
    "stripe_timeout_seconds": 2.0,
    "refresh_deadline_seconds": 5.0,
}


# -- the world a case runs in -----------------------------------------------------------------


@dataclass
class SandboxHolder:
    """The sandbox app and the server in front of it (replaced when a case restarts it)."""

    app: Any
    server: BackgroundServer

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module", autouse=True)
def _print_the_matrix_at_the_end(pytestconfig: pytest.Config) -> None:
    """Register the plugin that prints :data:`ROWS` in the terminal summary."""
    if not pytestconfig.pluginmanager.is_registered(fault_report):
        pytestconfig.pluginmanager.register(fault_report, "fault_report")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHolder]:
    app = create_sandbox(SandboxConfig())
    holder = SandboxHolder(app, BackgroundServer(app).start())
    try:
        yield holder
    finally:
        holder.server.stop()


@pytest.fixture
def control(sandbox: SandboxHolder) -> Iterator[SandboxControl]:
    with SandboxControl(sandbox.url) as ctl:
        ctl.reset()
        yield ctl
        ctl.reset()


@dataclass
class World:
    sandbox: SandboxHolder
    control: SandboxControl
    database_url: str
    proxy: TcpProxy | None = None
    held: list[sqlite3.Connection] = field(default_factory=list)


@dataclass(frozen=True)
class Case:
    name: str
    inject: Callable[[World], None]
    heal: Callable[[World], None]
    reason: str | None  # None: the refresh is expected to succeed despite the "fault"
    settings: dict[str, Any] = field(default_factory=dict)
    database: str = "sqlite"  # or "postgresql" (through a TCP proxy we can cut)
    names: str = ""  # the WARNING's error text must contain this


def nothing(_: World) -> None:
    pass


def clear_faults(w: World) -> None:
    w.control.clear_faults()


def fault(kind: str, **kw: Any) -> Callable[[World], None]:
    def inject(w: World) -> None:
        w.control.inject_fault("*", kind, **kw)

    return inject


def stop_sandbox(w: World) -> None:
    w.sandbox.server.stop()


def start_sandbox_on_same_port(w: World) -> None:
    port = w.sandbox.server.port
    w.sandbox.server = BackgroundServer(w.sandbox.app, port=port).start()


def other_api_key(w: World) -> None:
    w.control.configure(api_key="sk_test_somebody_else")


def any_api_key(w: World) -> None:
    w.control.configure(api_key=None)


def slow_stripe(w: World) -> None:
    w.control.set_latency(1.0)


def fast_stripe(w: World) -> None:
    w.control.set_latency(0)


def cut_database(w: World) -> None:
    assert w.proxy is not None
    w.proxy.cut()


def restore_database(w: World) -> None:
    assert w.proxy is not None
    w.proxy.restore()


def _sqlite_path(w: World) -> str:
    path = make_url(w.database_url).database
    assert path
    return path


def hold_exclusive_lock(w: World) -> None:
    conn = sqlite3.connect(_sqlite_path(w), isolation_level=None, timeout=5)
    conn.execute("BEGIN EXCLUSIVE")
    conn.execute("UPDATE products SET name = name")
    w.held.append(conn)


def release_lock(w: World) -> None:
    while w.held:
        conn = w.held.pop()
        conn.execute("ROLLBACK")
        conn.close()


def hide_orders_table(w: World) -> None:
    with sqlite3.connect(_sqlite_path(w), isolation_level=None, timeout=5) as conn:
        conn.execute("ALTER TABLE orders RENAME TO orders_away")


def bring_orders_back(w: World) -> None:
    with sqlite3.connect(_sqlite_path(w), isolation_level=None, timeout=5) as conn:
        conn.execute("ALTER TABLE orders_away RENAME TO orders")


RATE_LIMIT_REASONS = (
    "global-concurrency",
    "global-rate",
    "endpoint-concurrency",
    "endpoint-rate",
    "resource-specific",
)

CASES = [
    Case("Stripe 500", fault("server_error"), clear_faults, "stripe_server_error"),
    Case("Stripe 503", fault("unavailable"), clear_faults, "stripe_server_error"),
    *(
        Case(
            f"Stripe 429 {r}",
            fault("rate_limit", reason=r),
            clear_faults,
            "stripe_rate_limited",
            names=r,  # Stripe-Rate-Limited-Reason
        )
        for r in RATE_LIMIT_REASONS
    ),
    Case(
        "Stripe hangs past the client timeout",
        fault("hang", seconds=1.5),
        clear_faults,
        "stripe_connection",
        {"stripe_timeout_seconds": 0.3},
        names="ReadTimeout",
    ),
    Case(
        "Stripe connection refused",
        stop_sandbox,
        start_sandbox_on_same_port,
        "stripe_connection",
        names="ConnectError",
    ),
    Case(
        "Stripe 401 (API key refused)", other_api_key, any_api_key, "stripe_auth", names="API key"
    ),
    Case(
        "Stripe malformed body",
        fault("malformed"),
        clear_faults,
        "stripe_bad_response",
        names="Invalid response body",
    ),
    Case(
        "Stripe slower than the refresh deadline",
        slow_stripe,
        fast_stripe,
        "deadline",
        {"refresh_deadline_seconds": 0.5, "stripe_timeout_seconds": 5.0},
    ),
    Case(
        "PostgreSQL down (proxy cut)",
        cut_database,
        restore_database,
        "database",
        database="postgresql",
        names="connection failed",
    ),
    Case(
        "SQLite orders table gone",
        hide_orders_table,
        bring_orders_back,
        "database",
        names="no such table",
    ),
    # A refresh writes what it learns (link states, the cursor): it waits for a held write lock
    # until its deadline (shorter here than SQLite's busy timeout), and the next cycle continues.
    Case(
        "SQLite write-locked (BEGIN EXCLUSIVE held)",
        hold_exclusive_lock,
        release_lock,
        "deadline",
        names="TimeoutError",
    ),
    # The faults the service absorbs: one 500 retried by the SDK, one 429 by the gateway.
    Case(
        "Stripe 500 once, SDK retries (max_network_retries=2)",
        fault("server_error", count=1),
        clear_faults,
        None,
        {"stripe_max_network_retries": 2},
    ),
    Case(
        "Stripe 429 once, gateway backoff (rate_limit_retries=2)",
        fault("rate_limit", count=1, reason="endpoint-rate"),
        clear_faults,
        None,
        {"stripe_rate_limit_retries": 2},
    ),
]


# -- reading the app --------------------------------------------------------------------------


def samples(api: httpx.Client, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(api.get("/metrics").text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def by_category(api: httpx.Client, name: str = EXPIRED) -> dict[str, int]:
    return {dict(k)["category"]: int(v) for k, v in samples(api, name).items()}


def error_count(api: httpx.Client, reason: str) -> float:
    return samples(api, ERRORS).get((("reason", reason),), 0.0)


def show(gauge: dict[str, int]) -> str:
    if not gauge:
        return "absent"
    return " ".join(f"{c[0]}={gauge[c]}" for c in ("tournament", "monthly", "jersey"))


@contextmanager
def running_app(world: World, **overrides: Any) -> Iterator[httpx.Client]:
    settings = Settings(
        database_url=world.database_url,
        stripe_api_base=world.sandbox.url,
        **{**BASE_SETTINGS, **overrides},
    )
    app = create_app(settings, start_refresher=False)
    with (
        BackgroundServer(app) as server,
        httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        ) as api,
    ):
        yield api


def order(api: httpx.Client, category: str) -> str:
    products = {p["category"]: p["id"] for p in api.get("/products").json()}
    body = {"product_id": products[category], "parent_email": "p@example.org", "player_name": "Q"}
    r = api.post("/orders", json=body)
    assert r.status_code == 201, r.text
    session_id: str = r.json()["checkout_session_id"]
    return session_id


def faulted_refresh(
    api: httpx.Client, world: World, case: Case, phase: str, before: dict[str, int]
) -> Row:
    """Inject the fault, run one refresh, check everything the contract promises, heal."""
    errors_before = error_count(api, case.reason) if case.reason else 0.0
    with capture_logs() as logs:
        case.inject(world)
        try:
            body = api.post("/admin/refresh").json()
            health = api.get("/health")
            during = by_category(api)
            if case.reason is None and world.sandbox.server.running:
                assert world.control.faults() == []  # an injected one-off fault did fire
        finally:
            case.heal(world)
    warnings = [e for e in logs if e["log_level"] in ("warning", "error", "critical")]
    assert health.status_code == 200
    if case.reason is None:
        assert body["succeeded"] is True, body
        assert warnings == []
        reason = "-"
    else:
        assert body["succeeded"] is False, body
        assert len(warnings) == 1, warnings
        assert warnings[0]["event"] == "refresh_failed"
        assert warnings[0]["reason"] == case.reason, warnings[0]
        assert case.names in warnings[0]["error"], warnings[0]
        assert error_count(api, case.reason) == errors_before + 1
        assert during == before  # the last good value, or nothing before the first success
        assert health.json()["refresh"]["succeeded_once"] is bool(before)
        reason = case.reason
    return Row(
        fault=case.name,
        phase=phase,
        refresh="succeeded" if body["succeeded"] else "failed",
        reason=reason,
        warnings=len(warnings),
        gauge=show(during) + (" (kept)" if before and during == before and case.reason else ""),
        health=health.status_code,
        recovered=False,
        logged=_short(warnings[0].get("error", "")) if warnings else "",
    )


def _short(text: str, limit: int = 80) -> str:
    """The start of the error text and its root cause, e.g. ``… (cause: ReadTimeout)``."""
    text = text.replace("StripeUnavailable: ", "").replace("StripeRejected: ", "")
    head, sep, cause = text.partition(" (cause: ")
    tail = sep + cause
    room = limit - len(tail)
    return (head if len(head) <= room else head[: room - 1] + "…") + tail


@contextmanager
def world_for(case: Case, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    sandbox: SandboxHolder = request.getfixturevalue("sandbox")
    control: SandboxControl = request.getfixturevalue("control")
    if case.database == "sqlite":
        url = f"sqlite:///{tmp_path / 'faults.db'}"
        migrate_with_catalogue(url)
        yield World(sandbox, control, url)
        return
    direct = make_url(request.getfixturevalue("postgres_url"))
    engine = make_engine(direct.render_as_string(hide_password=False))
    with engine.begin() as conn:
        conn.exec_driver_sql(
            # CASCADE: every table that refers to orders (links, reviews, …) goes too
            "TRUNCATE orders, processed_webhook_events, poller_cursor RESTART IDENTITY CASCADE"
        )
    engine.dispose()
    proxy = TcpProxy(direct.host or "127.0.0.1", direct.port or 5432)
    try:
        url = direct.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        yield World(sandbox, control, url, proxy)
    finally:
        proxy.close()


def _param(case: Case) -> Any:
    marks = [pytest.mark.postgres] if case.database == "postgresql" else []
    return pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_refresher_survives(case: Case, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    with world_for(case, request, tmp_path) as world, running_app(world, **case.settings) as api:
        control = world.control
        tournament, _monthly, jersey = (order(api, c) for c in ("tournament", "monthly", "jersey"))
        control.expire(tournament)

        # Before any success: nothing may be reported, then the first good cycle tells the truth.
        cold = faulted_refresh(api, world, case, "cold", {})
        if case.reason is not None:
            assert api.post("/admin/refresh").json()["succeeded"] is True
        first_truth = {"tournament": 1, "monthly": 0, "jersey": 0}
        assert by_category(api) == first_truth
        ROWS.append(_recovered(cold))

        # The world moves on: a payment (a polled event) and a day (the monthly link times out).
        control.pay(jersey)
        control.advance_clock(DAY + 60)
        warm = faulted_refresh(api, world, case, "warm", first_truth)
        if case.reason is not None:
            assert by_category(api) == first_truth
            assert api.post("/admin/refresh").json()["succeeded"] is True
        assert by_category(api) == {"tournament": 1, "monthly": 1, "jersey": 0}
        assert by_category(api, COMPLETED) == {"tournament": 0, "monthly": 0, "jersey": 1}
        assert api.get("/health").json()["refresh"]["succeeded_once"] is True
        ROWS.append(_recovered(warm))


def _recovered(row: Row) -> Row:
    return Row(**{**row.__dict__, "recovered": True})
