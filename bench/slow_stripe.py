"""Ordering while Stripe is slow: many parents order at once while every Stripe call takes seconds.

Run: ``python -m bench.slow_stripe`` (``make bench-ordering``). Options: ``--orders 60
--latency 15 --wait 20 --database sqlite|postgresql|both --out bench/out``.

- the API is one ``basketball-api serve`` process on a fresh database, the Stripe sandbox
  another process with ``--latency`` seconds added to every Stripe call;
- ``--orders`` ``POST /orders`` at once; ``ORDER_WAIT_SECONDS`` is ``--wait`` and the SDK's
  timeout long enough to hear Stripe's answer;
- ``GET /health`` every 100 ms throughout, on its own connection;
- after the answers, the service's clean-up expires every session Stripe made for an order it
  did not keep: two latencies later, no open session may lack a saved order (an orphan).

Targets: no 5xx but 503, every 503 with ``Retry-After``, no orphaned session,
``/health`` under 1 s throughout. Prints a table, writes ``<out>/slow_stripe.json``; exits 1 when
a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from sqlalchemy import select
from tests.procs import start_api, start_sandbox, temporary_postgres
from tests.standard_catalogue import migrate_with_catalogue

from basketball_api.db import make_engine
from basketball_api.models import CheckoutLink
from stripe_sandbox.control import SandboxControl

BODY = {"product_id": 1, "parent_email": "bench@example.org", "player_name": "Bench"}


def kept_sessions(database_url: str) -> set[str]:
    engine = make_engine(database_url)
    with engine.connect() as conn:
        ids = set(conn.execute(select(CheckoutLink.stripe_checkout_session_id)).scalars())
    engine.dispose()
    return ids


async def order_at_once(url: str, n: int) -> list[tuple[int, str | None, float]]:
    limits = httpx.Limits(max_connections=n + 5)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:

        async def one() -> tuple[int, str | None, float]:
            started = time.monotonic()
            r = await http.post("/orders", json=BODY)
            return r.status_code, r.headers.get("retry-after"), time.monotonic() - started

        return list(await asyncio.gather(*(one() for _ in range(n))))


def probe_health(url: str, halt: threading.Event, times: list[float]) -> None:
    with httpx.Client(base_url=url, timeout=60) as http:
        while not halt.is_set():
            started = time.monotonic()
            http.get("/health").raise_for_status()
            times.append(time.monotonic() - started)
            halt.wait(0.1)


def run(args: argparse.Namespace, database_url: str, workdir: Path) -> dict[str, object]:
    sandbox = start_sandbox(workdir, "sandbox", "--latency", str(args.latency))
    try:
        api = start_api(
            workdir,
            "api",
            database_url=database_url,
            stripe_api_base=sandbox.url,
            stripe_timeout_seconds=args.latency * 2,
            stripe_max_network_retries=0,
            order_wait_seconds=args.wait,
            order_rate_limit="100000/minute",
        )
        try:
            times: list[float] = []
            halt = threading.Event()
            prober = threading.Thread(target=probe_health, args=(api.url, halt, times))
            prober.start()
            started = time.monotonic()
            answers = asyncio.run(order_at_once(api.url, args.orders))
            answered = time.monotonic() - started
            # Calls in flight at the deadline are answered within one latency, and the sessions
            # they made are expired within another.
            time.sleep(2 * args.latency + 5)
            with SandboxControl(sandbox.url) as control:
                orphans = set(control.sessions(status="open")) - kept_sessions(database_url)
                made = len(control.sessions())
            halt.set()
            prober.join()
        finally:
            api.stop()
    finally:
        sandbox.stop()
    statuses = Counter(status for status, _, _ in answers)
    times.sort()
    return {
        "statuses": dict(statuses),
        "without_retry_after": sum(1 for s, ra, _ in answers if s == 503 and not ra),
        "slowest_answer_seconds": round(max(t for _, _, t in answers), 2),
        "all_answered_seconds": round(answered, 2),
        "sessions_made": made,
        "orphans": len(orphans),
        "health_checks": len(times),
        "health_p50_seconds": round(times[len(times) // 2], 3),
        "health_max_seconds": round(times[-1], 3),
    }


def missed(result: dict[str, object]) -> list[str]:
    statuses = result["statuses"]
    assert isinstance(statuses, dict)
    out = []
    if set(statuses) - {201, 503}:
        out.append(f"answers other than 201/503: {statuses}")
    if result["without_retry_after"]:
        out.append("a 503 without Retry-After")
    if result["orphans"]:
        out.append(f"{result['orphans']} orphaned sessions")
    if float(str(result["health_max_seconds"])) >= 1.0:
        out.append(f"/health took {result['health_max_seconds']} s")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=60)
    parser.add_argument("--latency", type=float, default=15.0)
    parser.add_argument("--wait", type=float, default=20.0)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args()
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="slow-stripe-") as tmp:
        workdir = Path(tmp)
        if args.database in ("sqlite", "both"):
            url = f"sqlite:///{workdir / 'bench.db'}"
            migrate_with_catalogue(url)
            results["sqlite"] = run(args, url, workdir / "sqlite")
        if args.database in ("postgresql", "both"):
            with temporary_postgres("basketball_slow_stripe") as url:
                results["postgresql"] = run(args, url, workdir / "postgresql")
    print(f"{args.orders} orders at once, Stripe answering in {args.latency} s, wait {args.wait} s")
    failures = []
    for name, result in results.items():
        print(f"{name:>10}: " + ", ".join(f"{k}={v}" for k, v in result.items()))
        failures += [f"{name}: {m}" for m in missed(result)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "slow_stripe.json").write_text(json.dumps(results, indent=2) + "\n")
    for failure in failures:
        print(f"MISSED {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
