"""Test support for code that uses the sandbox: a webhook receiver to serve with
:class:`stripe_sandbox.server.BackgroundServer`."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route


@dataclass(frozen=True, slots=True)
class ReceivedWebhook:
    """One POST the receiver got."""

    body: bytes
    signature: str | None
    at: float
    status_code: int

    @property
    def text(self) -> str:
        """The body as text."""
        return self.body.decode()


class WebhookReceiver:
    """An ASGI app that records every POST to ``/webhook`` (and to any other path).

    It answers 200, or for the next ``n`` requests the status given to
    :meth:`fail_next`. Safe to read from the test's thread while served elsewhere.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: list[ReceivedWebhook] = []
        self._failures: list[int] = []
        self.app = Starlette(
            routes=[Route("/{path:path}", self._handle, methods=["POST"])],
        )

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        with self._lock:
            status = self._failures.pop(0) if self._failures else 200
            self._received.append(
                ReceivedWebhook(body, request.headers.get("stripe-signature"), time.time(), status)
            )
        return PlainTextResponse("ok" if status < 300 else "failed", status_code=status)

    def fail_next(self, count: int, status: int = 500) -> None:
        """Answer ``status`` to the next ``count`` deliveries."""
        with self._lock:
            self._failures.extend([status] * count)

    @property
    def received(self) -> list[ReceivedWebhook]:
        """Every request so far (failed ones too), oldest first."""
        with self._lock:
            return list(self._received)

    @property
    def accepted(self) -> list[ReceivedWebhook]:
        """The requests answered 2xx, oldest first."""
        return [r for r in self.received if r.status_code < 300]

    def clear(self) -> None:
        """Forget what was received and pending failures."""
        with self._lock:
            self._received.clear()
            self._failures.clear()
