"""The sandbox as an ASGI application."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import api, checkout_page, control_api
from .config import SandboxConfig
from .date_header import SandboxDateHeader
from .state import Sandbox


async def _index(request: Request) -> Response:
    return JSONResponse(
        {
            "name": "stripe-sandbox",
            "api": "/v1/checkout/sessions, /v1/events",
            "control": "/_sandbox/status",
        }
    )


def create_app(config: SandboxConfig | None = None) -> Starlette:
    """A new sandbox app with its own state (``app.state.sandbox``). Its lifespan runs
    the expiry ticker and the webhook delivery loop; serve it with uvicorn, e.g. via
    :class:`stripe_sandbox.server.BackgroundServer`. It may be served again after a
    stop (state is kept)."""
    sandbox = Sandbox(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(sandbox.run_ticker(), name="sandbox-expiry-ticker"),
            asyncio.create_task(sandbox.webhooks.run(), name="sandbox-webhook-delivery"),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    app = Starlette(
        routes=[
            Route("/", _index, methods=["GET"]),
            *api.routes(),
            *control_api.routes(),
            *checkout_page.routes(),
        ],
        lifespan=lifespan,
        middleware=[Middleware(SandboxDateHeader, now=sandbox.clock.now)],
    )
    app.state.sandbox = sandbox
    return app
