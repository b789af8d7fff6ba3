"""Throughput of the Stripe sandbox through the official SDK.

Run: ``python -m bench.sandbox_throughput`` (``make bench-sandbox``).

Starts the sandbox with uvicorn on loopback in its own process (so the client's
work does not share a GIL with the server), then measures:

- Checkout Sessions created per second through the async SDK, with bounded
  concurrency, and through the sync SDK one at a time;
- seeding 100,000 sessions through the control endpoint;
- list pages per second (``limit=100``) through the sync SDK: newest pages, a
  status filter, and cursors deep in the 100,000, plus the same deep pages over
  raw HTTP to show how much of the time is the SDK building objects.

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Unpack

import anyio
import httpx
import psutil  # type: ignore[import-untyped]
import stripe
from stripe.params.checkout import SessionCreateParams, SessionListParams

from stripe_sandbox.control import SandboxControl

KEY = "sk_test_bench"
SESSION_PARAMS: SessionCreateParams = {
    "mode": "payment",
    "line_items": [
        {
            "price_data": {
                "currency": "eur",
                "unit_amount": 2500,
                "product_data": {"name": "Season membership"},
            },
            "quantity": 1,
        }
    ],
    "success_url": "https://club.example/paid?session_id={CHECKOUT_SESSION_ID}",
    "cancel_url": "https://club.example/cart",
    "metadata": {"order_id": "bench"},
}

# stripe-python's HTTPXClient posts ``data=<str>``, which httpx 0.28 deprecates.
warnings.filterwarnings(
    "ignore", message=r"Use 'content=<\.\.\.>' to upload", category=DeprecationWarning
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def sandbox_process() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A sandbox served by uvicorn in a child process; yields its URL."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stripe_sandbox", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{url}/_sandbox/status", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the sandbox did not start") from None
                time.sleep(0.05)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(10)


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, int, float, str]] = []

    def add(self, what: str, count: int, seconds: float, unit: str) -> None:
        self.rows.append((what, count, seconds, unit))
        print(f"  {what}: {count / seconds:,.0f} {unit}/s", file=sys.stderr, flush=True)

    def render(self) -> str:
        lines = [
            "| measurement | count | seconds | rate |",
            "| --- | ---: | ---: | ---: |",
        ]
        for what, count, seconds, unit in self.rows:
            lines.append(
                f"| {what} | {count:,} | {seconds:.2f} | {count / seconds:,.0f} {unit}/s |"
            )
        return "\n".join(lines)


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


async def create_concurrently(url: str, total: int, concurrency: int) -> None:
    http = stripe.HTTPXClient(timeout=30)
    client = stripe.StripeClient(
        KEY, base_addresses={"api": url}, http_client=http, max_network_retries=0
    )
    limiter = anyio.CapacityLimiter(concurrency)

    async def one() -> None:
        async with limiter:
            await client.v1.checkout.sessions.create_async(params=SESSION_PARAMS)

    try:
        async with anyio.create_task_group() as group:
            for _ in range(total):
                group.start_soon(one)
    finally:
        await http.close_async()  # type: ignore[no-untyped-call]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--creates", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=100_000)
    parser.add_argument("--pages", type=int, default=200)
    args = parser.parse_args(argv)
    table = Table()
    rng = random.Random(7)

    with sandbox_process() as (url, proc), SandboxControl(url, timeout=300) as control:
        http = stripe.HTTPXClient(allow_sync_methods=True, timeout=30)
        client = stripe.StripeClient(
            KEY, base_addresses={"api": url}, http_client=http, max_network_retries=0
        )
        sessions = client.v1.checkout.sessions
        try:
            print(f"sandbox at {url} (pid {proc.pid}), {os.cpu_count()} CPUs", file=sys.stderr)
            seconds = timed(
                lambda: anyio.run(create_concurrently, url, args.creates, args.concurrency)
            )
            table.add(
                f"create, async SDK, {args.concurrency} in flight",
                args.creates,
                seconds,
                "sessions",
            )
            sequential = args.creates // 4
            seconds = timed(
                lambda: [sessions.create(params=SESSION_PARAMS) for _ in range(sequential)]
            )
            table.add("create, sync SDK, one at a time", sequential, seconds, "sessions")

            control.reset()
            seeded: list[dict[str, Any]] = []
            seconds = timed(
                lambda: seeded.extend(
                    control.seed(
                        args.seed,
                        created_spread_seconds=20 * 3600,
                        statuses=["open", "open", "complete", "expired"],
                        metadata={"source": "bench"},
                    )
                )
            )
            table.add("seed via /_sandbox/seed", args.seed, seconds, "sessions")
            rss = psutil.Process(proc.pid).memory_info().rss / 2**20
            ids = [s["id"] for s in seeded]

            def walk(pages: int, **filters: Unpack[SessionListParams]) -> None:
                page = sessions.list(params={"limit": 100, **filters})
                for _ in range(pages - 1):
                    page = sessions.list(
                        params={"limit": 100, "starting_after": page.data[-1].id, **filters}
                    )

            n = args.pages
            table.add("list, newest pages by cursor", n, timed(lambda: walk(n)), "pages")
            table.add(
                "list, status=open, by cursor",
                n,
                timed(lambda: walk(n, status="open")),
                "pages",
            )
            deep = [ids[rng.randrange(0, len(ids) // 2)] for _ in range(n)]
            table.add(
                "list, starting_after deep (random, older half)",
                n,
                timed(
                    lambda: [
                        sessions.list(params={"limit": 100, "starting_after": c}) for c in deep
                    ]
                ),
                "pages",
            )
            table.add(
                "list, status=complete, ending_before deep",
                n,
                timed(
                    lambda: [
                        sessions.list(
                            params={"limit": 100, "ending_before": c, "status": "complete"}
                        )
                        for c in deep
                    ]
                ),
                "pages",
            )
            with httpx.Client(base_url=url, auth=(KEY, "")) as raw:
                table.add(
                    "list, starting_after deep, raw HTTP (no SDK objects)",
                    n,
                    timed(
                        lambda: [
                            raw.get(
                                "/v1/checkout/sessions",
                                params={"limit": 100, "starting_after": c},
                            ).raise_for_status()
                            for c in deep
                        ]
                    ),
                    "pages",
                )
            counts = control.request_counts()
        finally:
            http.close()  # type: ignore[no-untyped-call]

    print()
    print(table.render())
    print()
    print(
        f"Sandbox process RSS after seeding {args.seed:,} sessions: {rss:,.0f} MiB. "
        f"Stripe calls counted: {sum(counts.values()):,}. "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, client and server on loopback."
    )


if __name__ == "__main__":
    main()
