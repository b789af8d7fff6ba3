"""The whole product on loopback for integration tests: the sandbox and the API, each served
by uvicorn in a thread, the webhook wired between them, driven through real HTTP and the SDK."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import stripe
from fastapi import FastAPI
from pydantic import SecretStr

from basketball_api.app import create_app
from basketball_api.settings import Settings
from stripe_sandbox.app import create_app as create_sandbox
from stripe_sandbox.config import SandboxConfig
from stripe_sandbox.control import SandboxControl
from stripe_sandbox.server import BackgroundServer

WEBHOOK_SECRET = "whsec_integration_secret"
ADMIN_TOKEN = "integration-admin-token-0123456789"


@dataclass
class Stack:
    app: FastAPI
    api: httpx.Client  # the API, with the admin token preset
    sandbox: SandboxControl
    sdk: stripe.StripeClient
    api_url: str
    sandbox_url: str
    api_server: BackgroundServer | None = None  # stop() it for an outage; the port stays known

    def order(self, category: str = "tournament", **extra: Any) -> dict[str, Any]:
        products = {p["category"]: p["id"] for p in self.api.get("/products").json()}
        body = {
            "product_id": products[category],
            "parent_email": "parent@example.org",
            "player_name": "Jordan",
            **extra,
        }
        r = self.api.post("/orders", json=body)
        assert r.status_code == 201, r.text
        result: dict[str, Any] = r.json()
        return result

    def refresh(self) -> dict[str, int]:
        """Run one refresh in the app now; returns the expired-session gauge by category."""
        r = self.api.post("/admin/refresh")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["succeeded"], body
        expired: dict[str, int] = body["expired"]
        return expired

    def wait_gauge(
        self,
        ok: Callable[[dict[str, float]], bool],
        name: str = "basketball_api_pending_orders_with_expired_session",
        timeout: float = 1.0,
    ) -> dict[str, float]:
        """The gauge once ``ok`` says so (a webhook's recount runs just after its answer), or
        as it is after ``timeout`` seconds (the target: a webhook moves the gauge within 1 s)."""
        deadline = time.monotonic() + timeout
        while True:
            values = self.gauge(name)
            if ok(values) or time.monotonic() > deadline:
                return values
            time.sleep(0.02)

    def gauge(
        self, name: str = "basketball_api_pending_orders_with_expired_session"
    ) -> dict[str, float]:
        out = {}
        for line in self.api.get("/metrics").text.splitlines():
            if line.startswith(name + "{"):
                labels, value = line.rsplit(" ", 1)
                out[labels.split('category="')[1].split('"')[0]] = float(value)
        return out


class _BuiltOnStart:
    """An ASGI app built at its first call (the lifespan start-up), once the port is bound."""

    def __init__(self) -> None:
        self.build: Callable[[], FastAPI] | None = None
        self.app: FastAPI | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.app is None:
            assert self.build is not None
            self.app = self.build()
        await self.app(scope, receive, send)


@contextmanager
def running_stack(database_url: str, **settings: Any) -> Iterator[Stack]:
    """Sandbox + API; the API's refresher loop is off unless ``start_refresher=True``."""
    start_refresher = settings.pop("start_refresher", False)
    sandbox_app = create_sandbox(
        SandboxConfig(webhook_secret=WEBHOOK_SECRET, webhook_retry_base_seconds=0.05)
    )
    with BackgroundServer(sandbox_app) as sandbox_server:
        # The API's port is bound before its app is built, so Checkout's success and cancel
        # URLs (PUBLIC_BASE_URL) point at this very server unless a test says otherwise.
        config = Settings(
            database_url=database_url,
            stripe_api_base=sandbox_server.url,
            stripe_webhook_secret=SecretStr(WEBHOOK_SECRET),
            admin_token=SecretStr(ADMIN_TOKEN),
            **{"expiry_grace_seconds": 0, "stripe_timeout_seconds": 5, **settings},
        )
        late = _BuiltOnStart()
        api_server = BackgroundServer(late)
        if "public_base_url" not in settings:
            late.build = lambda: create_app(
                config.model_copy(update={"public_base_url": api_server.url}),
                start_refresher=start_refresher,
            )
        else:
            late.build = lambda: create_app(config, start_refresher=start_refresher)
        with api_server, SandboxControl(sandbox_server.url) as control:
            app = late.app
            assert app is not None
            control.configure_webhook(f"{api_server.url}/webhooks/stripe", WEBHOOK_SECRET)
            http_client = stripe.HTTPXClient(allow_sync_methods=True)
            sdk = stripe.StripeClient(
                "sk_test_integration",
                base_addresses={"api": sandbox_server.url},
                http_client=http_client,
            )
            headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            with httpx.Client(base_url=api_server.url, headers=headers, timeout=30) as api:
                try:
                    yield Stack(
                        app, api, control, sdk, api_server.url, sandbox_server.url, api_server
                    )
                finally:
                    http_client.close()  # type: ignore[no-untyped-call]
