"""Soak: thousands of refresh cycles against a Stripe that fails 30 % of the time.

Run: ``python -m bench.soak`` (part of ``make reliability``). Options: ``--cycles 2000
--fault-rate 0.3 --orders 100 --pause 0.005 --out bench/out``.

- the Stripe sandbox and the API run as processes of their own (the API only to create and
  cancel orders the way production does), so this process holds nothing but the refresher
  under test, built exactly as the app builds it (real gateway, real database reads) and
  driven by calling ``Refresher.run_cycle()`` in its event loop, ``--pause`` apart;
- faults on every endpoint the refresher calls, fired at random with a total probability of
  ``--fault-rate`` per request: 500, 503, 429 (each ``Stripe-Rate-Limited-Reason``), a
  malformed body, and hangs past the client timeout; the SDK and the gateway do not retry,
  so a fault fails its cycle;
- the world moves between cycles: the sandbox clock advances a minute per cycle (links time
  out over the run), parents pay, orders are created and cancelled;
- after every successful cycle the three gauges are compared with the truth computed from
  the database and the sandbox's own session states (uncounted); every log line is counted:
  exactly one WARNING per failed cycle, nothing else at WARNING or above;
- memory: ``tracemalloc`` and the process RSS after a warm-up and at the end;
- at the end the real supervised loop (``Refresher.start``) runs for a few hundred more
  cycles under the same faults, and must still be alive.

Prints a table, writes ``<out>/soak.md``; exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]
import structlog
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from tests.procs import start_api, start_sandbox
from tests.standard_catalogue import migrate_with_catalogue

from basketball_api.db import make_engine, make_session_factory, transaction
from basketball_api.lease import Lease
from basketball_api.link_state import epoch
from basketball_api.metrics import CATEGORIES, Metrics
from basketball_api.ops import make_refresher
from basketball_api.settings import Settings
from basketball_api.stripe_gateway import StripeGateway
from stripe_sandbox.control import SandboxControl

GAUGES = {
    "expired": "basketball_api_pending_orders_with_expired_session",
    "completed": "basketball_api_pending_orders_with_completed_session",
    "open": "basketball_api_pending_orders_with_open_session",
}
REFRESHER_ENDPOINTS = (
    "GET /v1/events",
    "GET /v1/checkout/sessions",
    "GET /v1/checkout/sessions/{id}",
)
RATE_LIMIT_REASONS = (
    "global-concurrency",
    "global-rate",
    "endpoint-concurrency",
    "endpoint-rate",
    "resource-specific",
)
TOKEN = "soak-admin-token-0123456789"


@dataclass
class Report:
    cycles: int = 0
    succeeded: int = 0
    failed: int = 0
    raised: int = 0
    mismatches: list[str] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    stripe_calls: int = 0
    pending_start: int = 0
    pending_end: int = 0
    tracked_after_warmup: int = 0
    tracked_end: int = 0
    traced_after_warmup: int = 0
    traced_end: int = 0
    rss_after_warmup: int = 0
    rss_end: int = 0
    seconds: float = 0.0
    loop_cycles: int = 0
    loop_alive: bool = False
    world: Counter[str] = field(default_factory=Counter)
    logged: Counter[tuple[str, str]] = field(default_factory=Counter)
    durations: list[float] = field(default_factory=list)  # of successful cycles

    @property
    def problems(self) -> list[str]:
        out = []
        if self.raised:
            out.append(f"run_cycle raised {self.raised} times")
        if self.mismatches:
            out.append(f"{len(self.mismatches)} cycles off the truth, e.g. {self.mismatches[0]}")
        if not self.loop_alive:
            out.append("the supervised loop died")
        if self.succeeded == 0:
            out.append("no cycle succeeded")
        loud = {k: v for k, v in self.logged.items() if k[0] in ("warning", "error", "critical")}
        if loud != {("warning", "refresh_failed"): self.failed}:
            out.append(f"WARNING lines {loud} for {self.failed} failed cycles")
        return out


class LogCounter:
    """A structlog processor that counts lines by (level, event) and drops them."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def __call__(
        self, _logger: object, method: str, event: MutableMapping[str, Any]
    ) -> Mapping[str, Any]:
        self.counts[(method, str(event.get("event")))] += 1
        raise structlog.DropEvent


def inject_faults(control: SandboxControl, rate: float, hang_seconds: float) -> None:
    """Rules whose probabilities add up to about ``rate`` per request (first match fires)."""
    kinds: list[tuple[str, dict[str, object]]] = [
        ("server_error", {}),
        ("unavailable", {}),
        *(("rate_limit", dict[str, object](reason=r)) for r in RATE_LIMIT_REASONS),
        ("malformed", {}),
        ("hang", {"seconds": hang_seconds}),
    ]
    # n rules each firing with probability p (independently, in order) fail a request with
    # probability 1 - (1 - p)^n; pick p for the asked total.
    p = 1 - (1 - rate) ** (1 / len(kinds))
    for endpoint in REFRESHER_ENDPOINTS:
        for kind, extra in kinds:
            control.inject_fault(endpoint, kind, rate=p, **extra)  # type: ignore[arg-type]


def published(metrics: Metrics) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {k: {} for k in GAUGES}
    names = {v: k for k, v in GAUGES.items()}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            if s.name in names:
                out[names[s.name]][s.labels["category"]] = int(s.value)
    return out


def truth(factory: object, control: SandboxControl) -> dict[str, dict[str, int]]:
    sessions = control.sessions()
    out = {k: dict.fromkeys(CATEGORIES, 0) for k in GAUGES}
    from sqlalchemy import select

    from basketball_api.models import Order, OrderStatus, Product

    stmt = (
        select(Order.stripe_checkout_session_id, Product.category)
        .join(Product, Product.id == Order.product_id)
        .where(Order.status == OrderStatus.pending)
        .where(Order.stripe_checkout_session_id.is_not(None))
    )
    with transaction(factory) as db:  # type: ignore[arg-type]
        rows = [(str(sid), category.value) for sid, category in db.execute(stmt)]
    for session_id, category in rows:
        s = sessions[session_id]
        if s["status"] == "expired":
            out["expired"][category] += 1
        elif s["status"] == "complete" and s["payment_status"] == "paid":
            out["completed"][category] += 1
        elif s["status"] == "open":
            out["open"][category] += 1
    return out


def pending_sessions(factory: object) -> list[tuple[int, str]]:
    from sqlalchemy import select

    from basketball_api.models import Order, OrderStatus

    with transaction(factory) as db:  # type: ignore[arg-type]
        stmt = select(Order.id, Order.stripe_checkout_session_id).where(
            Order.status == OrderStatus.pending
        )
        return [(i, s) for i, s in db.execute(stmt) if s]


class World:
    """Moves the world between cycles, through the API and the sandbox's control."""

    def __init__(
        self, api: httpx.Client, control: SandboxControl, factory: object, rng: random.Random
    ) -> None:
        self.api = api
        self.control = control
        self.factory = factory
        self.rng = rng
        self.products = [p["id"] for p in api.get("/products").json()]
        self.counts: Counter[str] = Counter()

    def new_order(self) -> None:
        body = {
            "product_id": self.rng.choice(self.products),
            "parent_email": "soak@example.org",
            "player_name": "Soak",
        }
        r = self.api.post("/orders", json=body)
        self.counts["orders created" if r.status_code == 201 else "order create failed"] += 1

    def step(self, cycle: int) -> None:
        if cycle % 10 == 0:
            self.new_order()
        if cycle % 15 == 0 or cycle % 40 == 0:
            sessions = self.control.sessions(status="open")
            candidates = [(o, s) for o, s in pending_sessions(self.factory) if s in sessions]
            if candidates:
                order_id, session_id = self.rng.choice(candidates)
                if cycle % 15 == 0:
                    self.control.pay(session_id)
                    self.counts["paid"] += 1
                else:
                    r = self.api.post(f"/orders/{order_id}/cancel")
                    self.counts["cancelled" if r.status_code == 200 else "cancel refused"] += 1
        self.advance(60)

    def advance(self, seconds: int) -> None:
        """Move the clock, then on past any pending link that would expire within 2 s of the
        new time: the service reads Stripe's clock from a whole-second ``Date`` header, so
        exactly at a link's expiry the truth and the gauge may disagree for a second."""
        self.control.advance_clock(seconds)
        for _ in range(10):
            now = self.control.now()
            if not any(now - 2 <= e <= now + 2 for e in pending_expiries(self.factory)):
                return
            self.control.advance_clock(5)
            self.counts["clock nudged past an expiry"] += 1


def pending_expiries(factory: object) -> list[int]:
    from sqlalchemy import select

    from basketball_api.models import Order, OrderStatus

    with transaction(factory) as db:  # type: ignore[arg-type]
        stmt = select(Order.checkout_session_expires_at).where(Order.status == OrderStatus.pending)
        return [epoch(e) for e in db.scalars(stmt) if e is not None]


async def soak(args: argparse.Namespace, workdir: Path) -> Report:
    report = Report()
    rng = random.Random(args.seed)
    database_url = f"sqlite:///{workdir / 'soak.db'}"
    migrate_with_catalogue(database_url)
    sandbox = start_sandbox(workdir)
    settings = Settings(
        database_url=database_url,
        stripe_api_base=sandbox.url,
        admin_token=SecretStr(TOKEN),
        expiry_grace_seconds=0,
        stripe_max_network_retries=0,
        stripe_rate_limit_retries=0,
        stripe_timeout_seconds=args.timeout,
        refresh_deadline_seconds=10,
    )
    api_server = start_api(
        workdir,
        "api",
        database_url=database_url,
        stripe_api_base=sandbox.url,
        stripe_max_network_retries=0,
    )
    counter = LogCounter()
    structlog.configure(processors=[counter])
    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    metrics = Metrics()
    gateway = StripeGateway.from_settings(settings, metrics)
    refresher = make_refresher(settings, factory, gateway, metrics, Lease(engine))
    refresher.interval = args.pause
    control = SandboxControl(sandbox.url)
    # As an operator: orders are cancelled by id.
    headers = {"Authorization": f"Bearer {TOKEN}"}
    api = httpx.Client(base_url=api_server.url, headers=headers, timeout=30)
    process = psutil.Process()
    try:
        world = World(api, control, factory, rng)
        for _ in range(args.orders):
            world.new_order()
        report.pending_start = len(pending_sessions(factory))
        inject_faults(control, args.fault_rate, hang_seconds=args.timeout * 3)
        tracemalloc.start()
        started = time.perf_counter()
        for cycle in range(1, args.cycles + 1):
            calls = gateway.calls
            t0 = time.perf_counter()
            try:
                ok = await refresher.run_cycle()
            except BaseException as e:  # run_cycle must never raise
                report.raised += 1
                ok = False
                print(f"cycle {cycle}: run_cycle raised {e!r}", file=sys.stderr)
            report.stripe_calls += gateway.calls - calls
            report.cycles += 1
            if ok:
                report.durations.append(time.perf_counter() - t0)
                report.succeeded += 1
                # Faults off while reading the truth: control calls are never faulted anyway.
                expected = truth(factory, control)
                got = published(metrics)
                if got != expected:
                    report.mismatches.append(f"cycle {cycle}: {got} != {expected}")
            else:
                report.failed += 1
            if cycle == args.warmup:
                gc.collect()
                report.traced_after_warmup = tracemalloc.get_traced_memory()[0]
                report.rss_after_warmup = process.memory_info().rss
                report.tracked_after_warmup = len(pending_sessions(factory))
            world.step(cycle)
            await asyncio.sleep(args.pause)
        report.seconds = time.perf_counter() - started
        gc.collect()
        report.traced_end = tracemalloc.get_traced_memory()[0]
        report.rss_end = process.memory_info().rss
        report.tracked_end = len(pending_sessions(factory))
        tracemalloc.stop()
        report.pending_end = len(pending_sessions(factory))
        report.world = world.counts
        report.logged = counter.counts.copy()
        for family in text_string_to_metric_families(metrics.render().decode()):
            for s in family.samples:
                if s.name == "basketball_api_pending_orders_refresh_errors_total":
                    report.reasons[s.labels["reason"]] = int(s.value)

        # The real supervised loop, same faults, a few hundred cycles: it must not die.
        before = report_refreshes(metrics)
        task = refresher.start()
        deadline = time.monotonic() + args.loop_seconds
        while time.monotonic() < deadline and not task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        report.loop_alive = not task.done()
        report.loop_cycles = report_refreshes(metrics) - before
        await refresher.stop()
    finally:
        api.close()  # noqa: ASYNC212
        control.close()
        await gateway.aclose()
        engine.dispose()
        api_server.stop()
        sandbox.stop()
    return report


def report_refreshes(metrics: Metrics) -> int:
    total = 0
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            if s.name == "basketball_api_pending_orders_refreshes_total":
                total += int(s.value)
    return total


def table(r: Report, args: argparse.Namespace) -> str:
    mib = 1024 * 1024
    rows = [
        ("refresh cycles (run_cycle)", f"{r.cycles} in {r.seconds:.0f} s"),
        ("succeeded / failed", f"{r.succeeded} / {r.failed} ({r.failed / max(1, r.cycles):.0%})"),
        ("failures by reason", ", ".join(f"{k} {v}" for k, v in sorted(r.reasons.items()))),
        ("run_cycle raised", str(r.raised)),
        (
            "successful cycle duration p50 / p99 / max",
            " / ".join(f"{q * 1000:.1f}" for q in _quantiles(r.durations)) + " ms",
        ),
        ("successful cycles off the truth", str(len(r.mismatches))),
        (
            "Stripe calls (incl. failed)",
            f"{r.stripe_calls} ({r.stripe_calls / r.cycles:.2f}/cycle)",
        ),
        (
            "WARNING lines",
            ", ".join(f"{e} {n}" for (lvl, e), n in sorted(r.logged.items()) if lvl == "warning"),
        ),
        ("pending orders start → end", f"{r.pending_start} → {r.pending_end}"),
        ("world changes", ", ".join(f"{k} {v}" for k, v in sorted(r.world.items()))),
        ("pending orders after warm-up → end", f"{r.tracked_after_warmup} → {r.tracked_end}"),
        (
            f"traced Python memory after {args.warmup} cycles → end",
            f"{r.traced_after_warmup / mib:.2f} → {r.traced_end / mib:.2f} MiB "
            f"({(r.traced_end - r.traced_after_warmup) / 1024:+.0f} KiB, "
            f"{(r.traced_end - r.traced_after_warmup) / max(1, r.cycles - args.warmup):+.0f} "
            "B/cycle)",
        ),
        (
            "process RSS after warm-up → end",
            f"{r.rss_after_warmup / mib:.1f} → {r.rss_end / mib:.1f} MiB",
        ),
        ("supervised loop afterwards", f"{r.loop_cycles} cycles, alive: {r.loop_alive}"),
        ("verdict", "ok" if not r.problems else "; ".join(r.problems)),
    ]
    head = "| measure | value |\n|---|---|\n"
    return head + "\n".join(f"| {k} | {v} |" for k, v in rows)


def _quantiles(values: list[float]) -> tuple[float, float, float]:
    if not values:
        return (0.0, 0.0, 0.0)
    ordered = sorted(values)
    return (
        ordered[len(ordered) // 2],
        ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        ordered[-1],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--fault-rate", type=float, default=0.3)
    parser.add_argument("--orders", type=int, default=100)
    parser.add_argument("--pause", type=float, default=0.005)
    parser.add_argument("--timeout", type=float, default=0.2, help="Stripe client timeout")
    parser.add_argument("--loop-seconds", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        report = asyncio.run(soak(args, Path(tmp)))
    text = (
        f"Soak: {args.cycles} refresh cycles, {args.fault_rate:.0%} of Stripe requests faulted, "
        f"SQLite, {args.pause * 1000:.0f} ms between cycles\n\n{table(report, args)}\n"
    )
    print(text)
    for line in report.mismatches[:5]:
        print(line)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.md").write_text(text)
    return 0 if not report.problems else 1


if __name__ == "__main__":
    sys.exit(main())
