"""Load: sustained signed webhooks and Prometheus scrapes against one API process on loopback.

Run: ``python -m bench.load`` (part of ``make reliability``). Options: ``--webhooks 20000
--scrapes 10000 --concurrency 16 --seconds 90 --database postgresql|sqlite --out bench/out``.

- the API is one ``basketball-api serve`` process (production's one worker per pod) on a
  fresh database, its refresher talking to a Stripe sandbox in another process;
- ``POST /webhooks/stripe``: ``--distinct`` signed ``checkout.session.completed`` events for
  pending orders, then redeliveries of them, each freshly signed (Stripe retries and
  duplicates): the first pass applies, the rest are recognised as duplicates;
- ``GET /metrics``: a scraper that never stops;
- each phase is an ``httpx`` async client with ``--concurrency`` requests in flight, a fixed
  count and a time cap (``--seconds``); every answer must be a 200;
- connection leak: the server process's open file descriptors and TCP connections before the
  load and after it (client closed, one second later) must be the same.

Prints a table, writes ``<out>/load.md``; exits 1 on any error or leak.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import httpx
import psutil  # type: ignore[import-untyped]
from tests.fakes import own_links, session_event, sign
from tests.procs import ApiProcess, start_api, start_sandbox, temporary_postgres
from tests.standard_catalogue import migrate_with_catalogue

from basketball_api.db import make_engine, make_session_factory

SECRET = "whsec_load_0123456789"


@dataclass
class Phase:
    name: str
    requests: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    errors: int = 0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else 0.0


@dataclass
class Snapshot:
    fds: int
    connections: int
    rss: int


class Resources(TypedDict):
    before: Snapshot
    after: Snapshot
    health: int  # the status /health answered with after the load
    alive: bool


def snapshot(pid: int) -> Snapshot:
    p = psutil.Process(pid)
    established = [c for c in p.net_connections(kind="tcp") if c.status != psutil.CONN_LISTEN]
    return Snapshot(p.num_fds(), len(established), p.memory_info().rss)


async def drive(
    name: str,
    url: str,
    count: int,
    concurrency: int,
    seconds: float,
    request: Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]],
) -> Phase:
    """``count`` requests, ``concurrency`` in flight, stopping early after ``seconds``."""
    phase = Phase(name)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    next_index = 0
    deadline = time.monotonic() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < count and time.monotonic() < deadline:
            i = next_index
            next_index += 1
            t0 = time.perf_counter()
            try:
                r = await request(client, i)
            except httpx.HTTPError as e:
                phase.errors += 1
                phase.answers[type(e).__name__] += 1
                continue
            phase.latencies.append(time.perf_counter() - t0)
            phase.requests += 1
            if r.status_code != 200:
                phase.errors += 1
                phase.answers[f"http {r.status_code}"] += 1
            elif name == "webhooks":
                phase.answers[r.json()["status"]] += 1
            else:
                phase.answers["200"] += 1

    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        phase.seconds = time.perf_counter() - started
    return phase


async def create_orders(url: str, n: int) -> list[int]:
    sem = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def one(i: int) -> int:
            body = {
                "product_id": 1 + i % 3,
                "parent_email": f"load{i}@example.org",
                "player_name": f"Load {i}",
                "create_checkout": False,
            }
            async with sem:
                r = await client.post("/orders", json=body)
            r.raise_for_status()
            return int(r.json()["id"])

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def run(
    args: argparse.Namespace, database_url: str, workdir: Path
) -> tuple[list[Phase], Resources]:
    sandbox = start_sandbox(workdir)
    api: ApiProcess | None = None
    try:
        api = start_api(
            workdir,
            "api",
            database_url=database_url,
            stripe_api_base=sandbox.url,
            stripe_webhook_secret=SECRET,
            stripe_max_network_retries=0,
            log_format="json",
        )
        order_ids = asyncio.run(create_orders(api.url, args.distinct))
        engine = make_engine(database_url)
        try:  # the sessions the events carry are the orders' own links
            factory = make_session_factory(engine)
            money = [own_links(factory, oid, f"cs_l{i}") for i, oid in enumerate(order_ids)]
        finally:
            engine.dispose()
        payloads = [
            json.dumps(
                session_event(
                    f"evt_load_{i}",
                    "checkout.session.completed",
                    session_id=f"cs_l{i}",
                    order_id=oid,
                    **money[i],
                )
            ).encode()
            for i, oid in enumerate(order_ids)
        ]
        time.sleep(1)
        before = snapshot(api.pid)

        async def webhook(client: httpx.AsyncClient, i: int) -> httpx.Response:
            payload = payloads[i % len(payloads)]
            headers = {
                "Stripe-Signature": sign(payload, SECRET),
                "Content-Type": "application/json",
            }
            return await client.post("/webhooks/stripe", content=payload, headers=headers)

        async def scrape(client: httpx.AsyncClient, _: int) -> httpx.Response:
            return await client.get("/metrics")

        phases = []
        peak = before
        for name, count, fn in (
            ("webhooks", args.webhooks, webhook),
            ("metrics", args.scrapes, scrape),
        ):
            phases.append(
                asyncio.run(drive(name, api.url, count, args.concurrency, args.seconds, fn))
            )
            now = snapshot(api.pid)
            peak = Snapshot(
                max(peak.fds, now.fds),
                max(peak.connections, now.connections),
                max(peak.rss, now.rss),
            )
        time.sleep(1)
        after = snapshot(api.pid)
        health = httpx.get(f"{api.url}/health", timeout=5).status_code
        return phases, {"before": before, "after": after, "health": health, "alive": api.alive}
    finally:
        if api is not None:
            api.stop()
        sandbox.stop()


def table(phases: list[Phase], resources: Resources, args: argparse.Namespace) -> str:
    lines = [
        "| endpoint | requests | seconds | requests/s | p50 ms | p99 ms | max ms | errors "
        "| answers |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in phases:
        answers = ", ".join(f"{k} {v}" for k, v in sorted(p.answers.items()))
        path = "POST /webhooks/stripe" if p.name == "webhooks" else "GET /metrics"
        lines.append(
            f"| {path} | {p.requests} | {p.seconds:.1f} | {p.rate:.0f} "
            f"| {p.quantile(0.5) * 1000:.1f} | {p.quantile(0.99) * 1000:.1f} "
            f"| {max(p.latencies, default=0) * 1000:.1f} | {p.errors} | {answers} |"
        )
    b, a = resources["before"], resources["after"]
    mib = 1024 * 1024
    lines += [
        "",
        "| server process | before | after |",
        "|---|---|---|",
        f"| open file descriptors | {b.fds} | {a.fds} |",
        f"| TCP connections (not listening) | {b.connections} | {a.connections} |",
        f"| RSS | {b.rss / mib:.1f} MiB | {a.rss / mib:.1f} MiB |",
        f"| /health after the load | | {resources['health']} |",
    ]
    return "\n".join(lines)


@contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    if kind == "sqlite":
        url = f"sqlite:///{workdir / 'load.db'}"
        migrate_with_catalogue(url)
        yield url
        return
    with temporary_postgres("basketball_load") as url:
        yield url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--webhooks", type=int, default=20_000)
    parser.add_argument("--distinct", type=int, default=1_000)
    parser.add_argument("--scrapes", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=90.0, help="time cap per phase")
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="load-") as tmp,
        database(args.database, Path(tmp)) as url,
    ):
        phases, resources = run(args, url, Path(tmp))
    text = (
        f"Load: one API process on {args.database}, loopback, {args.concurrency} requests in "
        f"flight, {args.distinct} distinct events then duplicates\n\n"
        f"{table(phases, resources, args)}\n"
    )
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "load.md").write_text(text)
    b, a = resources["before"], resources["after"]
    leak = a.fds > b.fds or a.connections > b.connections
    failed = any(p.errors for p in phases) or leak or resources["health"] != 200
    if leak:
        print(f"connection leak: {b} -> {a}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
