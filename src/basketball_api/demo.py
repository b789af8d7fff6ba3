"""``make demo``: the Utah Invitational snapshot on a laptop, through the real API and SDK.

Starts the Stripe sandbox (127.0.0.1:12111) and the API (127.0.0.1:8000) as two processes with
the webhook wired between them, on a fresh SQLite file, creates the club's catalogue through
``POST /admin/products``, then seeds orders through ``POST /orders`` and expires sessions
through the sandbox — never by writing states into tables.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import httpx
import stripe
from rich.console import Console

from basketball_api.catalogue import ProductIn
from basketball_api.db import upgrade_database
from basketball_api.models import Category
from basketball_api.settings import SANDBOX_API_BASE, SANDBOX_API_KEY
from stripe_sandbox.control import SandboxControl

API = "http://127.0.0.1:8000"
EXPECTED = {"tournament": 18, "monthly": 6, "jersey": 0}
# The demo club's catalogue, created through the operator API (the tests create the same one
# through the catalogue service, so products 1, 2 and 3 are these three everywhere).
CATALOGUE = (
    ProductIn(
        name="Utah Invitational entry",
        category=Category.tournament,
        unit_amount=15000,
        event_date=date(2027, 1, 16),
    ),
    ProductIn(name="Monthly dues", category=Category.monthly, unit_amount=6000),
    ProductIn(name="Club jersey", category=Category.jersey, unit_amount=4500),
)
console = Console()


class DemoError(RuntimeError):
    pass


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _wait_http(url: str, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise DemoError(f"{what} did not start at {url}")


@contextmanager
def _processes(env: dict[str, str], secret: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    cmd = [sys.executable, "-m", "basketball_api"]
    procs = [
        subprocess.Popen(
            [
                *cmd,
                "stripe-sandbox",
                f"--webhook-url={API}/webhooks/stripe",
                f"--webhook-secret={secret}",
            ],
            env=env,
        ),
        subprocess.Popen([*cmd, "serve"], env=env),
    ]
    try:
        yield procs
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def read_gauge(text: str) -> dict[str, int]:
    pattern = r'basketball_api_pending_orders_with_expired_session\{category="(\w+)"\} (\S+)'
    return {m[0]: int(float(m[1])) for m in re.findall(pattern, text)}


class _Posted(Protocol):
    def raise_for_status(self) -> object: ...


class Poster(Protocol):
    """All :func:`create_catalogue` asks of its client: an ``httpx.Client``, or the tests'
    in-process ``TestClient`` (an httpx2 one)."""

    def post(self, url: str, *, json: Any, headers: dict[str, str]) -> _Posted: ...


def create_catalogue(client: Poster, admin_token: str) -> None:
    """The club's products, through ``POST /admin/products`` as an operator would."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    for product in CATALOGUE:
        body = product.model_dump(mode="json", exclude_unset=True)
        client.post("/admin/products", json=body, headers=headers).raise_for_status()


def seed(client: httpx.Client, sdk: stripe.StripeClient, sandbox: SandboxControl) -> str:
    """The snapshot: 18 tournament + 6 monthly stranded, and decoys that must not count."""
    products = {p["category"]: p["id"] for p in client.get("/products").raise_for_status().json()}
    n = 0

    def order(category: str, *, checkout: bool = True) -> dict[str, object]:
        nonlocal n
        n += 1
        body = {
            "product_id": products[category],
            "parent_email": f"parent{n}@example.org",
            "player_name": f"Player {n}",
            "create_checkout": checkout,
        }
        result: dict[str, object] = client.post("/orders", json=body).raise_for_status().json()
        return result

    for category, count in EXPECTED.items():
        for _ in range(count):  # stranded: pending behind an expired link
            sdk.v1.checkout.sessions.expire(str(order(category)["checkout_session_id"]))
    for category in ("tournament", "monthly", "jersey"):  # decoy: paid
        for _ in range(2):
            session_id = str(order(category)["checkout_session_id"])
            sandbox.pay(session_id)
        order(category)  # decoy: pending behind a live link
        order(category, checkout=False)  # decoy: pending, no link yet
        cancelled = order(category)  # decoy: cancelled, its session expired
        # The parent cancels it, through the order's own link.
        client.post(f"/orders/by-token/{cancelled['access_token']}/cancel").raise_for_status()
    live = order("jersey")
    sandbox.wait_for_webhooks(timeout=30)
    return str(live["pay_url"])


def run_demo(*, keep_running: bool = True, workdir: Path | None = None) -> int:
    for port in (8000, 12111):
        if not _port_free(port):
            console.print(f"[red]port {port} is already in use; stop what runs there first[/red]")
            return 1
    var = (workdir or Path.cwd()) / "var"
    var.mkdir(exist_ok=True)
    db_file = var / "demo.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_file}{suffix}").unlink(missing_ok=True)
    database_url = f"sqlite:///{db_file}"
    upgrade_database(database_url)
    secret = "whsec_" + secrets.token_hex(24)
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        STRIPE_API_KEY=SANDBOX_API_KEY,
        STRIPE_API_BASE=SANDBOX_API_BASE,
        STRIPE_WEBHOOK_SECRET=secret,
        REFRESH_INTERVAL_SECONDS=env.get("REFRESH_INTERVAL_SECONDS", "15"),
        ADMIN_TOKEN=env.get("ADMIN_TOKEN", "demo-admin-token"),
        HEAL_PAID_ORDERS="false",
        # The seeding is one client placing some fifty orders in seconds.
        ORDER_RATE_LIMIT=env.get("ORDER_RATE_LIMIT", "120/minute"),
    )
    stop = False

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    with _processes(env, secret):
        try:
            _wait_http(f"{SANDBOX_API_BASE}/v1/checkout/sessions", "the Stripe sandbox")
            _wait_http(f"{API}/health", "the API")
            sdk = stripe.StripeClient(
                SANDBOX_API_KEY,
                base_addresses={"api": SANDBOX_API_BASE},
                http_client=stripe.HTTPXClient(allow_sync_methods=True),
            )
            with (
                httpx.Client(base_url=API, timeout=30) as client,
                SandboxControl(SANDBOX_API_BASE, timeout=60) as sandbox,
            ):
                create_catalogue(client, env["ADMIN_TOKEN"])
                live_link = seed(client, sdk, sandbox)
                gauge = _wait_for_gauge(client)
        except (DemoError, httpx.HTTPError, stripe.StripeError) as e:
            console.print(f"[red]demo failed:[/red] {e}")
            return 1
        _print_summary(gauge, live_link)
        try:
            while keep_running and not stop:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


def _wait_for_gauge(client: httpx.Client, timeout: float = 120.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    gauge: dict[str, int] = {}
    while time.monotonic() < deadline:
        gauge = read_gauge(client.get("/metrics").text)
        if gauge == EXPECTED:
            return gauge
        time.sleep(0.5)
    raise DemoError(f"gauge shows {gauge}, expected {EXPECTED}")


def _print_summary(gauge: dict[str, int], live_link: str) -> None:
    console.rule("Utah Invitational snapshot is live")
    console.print(
        "basketball_api_pending_orders_with_expired_session: "
        + ", ".join(f"{k}={v}" for k, v in gauge.items())
    )
    console.print(f"  API docs        {API}/docs")
    console.print(f"  metrics         {API}/metrics")
    console.print(f"  operator page   {API}/admin  (token: demo-admin-token)")
    console.print(f"  pay a live link {live_link}")
    console.print("    (that order was not stranded: the gauge stays 18 / 6 / 0 after you pay)")
    console.print("Ctrl-C stops both servers.")
