"""Stamp every response with the sandbox clock in the ``Date`` header, as Stripe stamps its own.

Clients that track the provider's clock (to know when a session's ``expires_at`` has passed)
then follow the sandbox clock when a test moves it forward.
"""

from __future__ import annotations

from collections.abc import Callable
from email.utils import formatdate

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class SandboxDateHeader:
    def __init__(self, app: ASGIApp, now: Callable[[], float]) -> None:
        self.app = app
        self.now = now

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"date"]
                headers.append((b"date", formatdate(self.now(), usegmt=True).encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, stamped)
