"""Webhook delivery: signed POSTs of events to one endpoint, from a background
coroutine, with retries, and with the faults a real network has (lost, duplicated and
reordered deliveries) on demand.

Signatures follow Stripe's scheme: ``Stripe-Signature: t=<unix>,v1=<hex>`` where
``<hex>`` is HMAC-SHA256 of ``"{t}.{body}"`` keyed by the whole ``whsec_...``
string, so ``stripe.Webhook.construct_event`` accepts them. ``t`` is real time
(not the sandbox clock), because receivers check it against their own clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from .events import EventRecord

MAX_KEPT_ATTEMPTS = 100_000


def sign(body: str, secret: str, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header value for ``body``."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


@dataclass(slots=True)
class DeliveryAttempt:
    """One try at delivering one event. ``outcome`` is ``delivered`` (2xx),
    ``failed`` (other status or connection error) or ``dropped`` (lost on purpose)."""

    event_id: str
    event_type: str
    attempt: int
    outcome: str
    status_code: int | None
    error: str | None
    at: float
    url: str | None
    duplicate: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(slots=True)
class _Job:
    event_id: str
    attempt: int = 1
    copies: int = 1


class WebhookDispatcher:
    """Queues events for delivery and delivers them one at a time, in order."""

    def __init__(
        self,
        lookup: Callable[[str], EventRecord | None],
        *,
        url: str | None = None,
        secret: str | None = None,
        retry_base_seconds: float = 0.5,
        max_attempts: int = 8,
        timeout_seconds: float = 5.0,
    ) -> None:
        self._lookup = lookup
        self.url = url
        self.secret = secret
        self.retry_base_seconds = retry_base_seconds
        self.max_attempts = max_attempts
        self.timeout_seconds = timeout_seconds
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._idle = asyncio.Event()
        self._idle.set()
        self._outstanding = 0
        self._in_flight = 0
        self._timers: dict[asyncio.TimerHandle, _Job] = {}
        self._parked: list[_Job] = []
        self._held: list[_Job] = []
        self.attempts: deque[DeliveryAttempt] = deque(maxlen=MAX_KEPT_ATTEMPTS)
        self.drop_next = 0
        self.drop_marks_delivered = True
        self.duplicate_next = 0
        self.reorder_next = 0
        self._generation = 0  # bumped by reset(): late results of older work are ignored

    # -- configuration and faults -------------------------------------------------

    def configure(
        self,
        url: str | None,
        secret: str | None,
        retry_base_seconds: float | None = None,
        max_attempts: int | None = None,
    ) -> None:
        """Set (or with ``url=None`` remove) the endpoint and the retry policy."""
        self.url = url or None
        self.secret = secret or None
        if retry_base_seconds is not None:
            self.retry_base_seconds = retry_base_seconds
        if max_attempts is not None:
            self.max_attempts = max(1, max_attempts)

    def drop(self, count: int, mark_delivered: bool = True) -> None:
        """Lose the next ``count`` events: never delivered, never retried. With
        ``mark_delivered`` Stripe believes they were delivered (the receiver lost
        them); otherwise they stay pending (``delivery_success=false``)."""
        self.drop_next = count
        self.drop_marks_delivered = mark_delivered

    def duplicate(self, count: int) -> None:
        """Deliver each of the next ``count`` events twice."""
        self.duplicate_next = count

    def reorder(self, count: int) -> None:
        """Hold the next ``count`` events and deliver them newest first once all are
        held (or on :meth:`flush`)."""
        self.reorder_next = count

    def flush(self) -> int:
        """Release held events, newest first; returns how many."""
        held, self._held = self._held, []
        self.reorder_next = 0
        for job in reversed(held):
            self._put(job)
        return len(held)

    # -- queueing --------------------------------------------------------------------

    def enqueue(self, event: EventRecord) -> None:
        """Send ``event`` to the endpoint (called as the event is created)."""
        if self.url is None:
            event.pending_webhooks = 0
            return
        event.pending_webhooks = 1
        if self.drop_next > 0:
            self.drop_next -= 1
            if self.drop_marks_delivered:
                event.pending_webhooks = 0
            self._record_dropped(event)
            return
        job = _Job(event.id)
        if self.duplicate_next > 0:
            self.duplicate_next -= 1
            job.copies = 2
        if self.reorder_next > 0:
            self._held.append(job)
            self.reorder_next -= 1
            if self.reorder_next == 0:
                self.flush()
            return
        self._put(job)

    def _put(self, job: _Job) -> None:
        self._outstanding += 1
        self._idle.clear()
        self._queue.put_nowait(job)

    def _finish(self) -> None:
        self._outstanding -= 1
        if self._outstanding <= 0:
            self._outstanding = 0
            self._idle.set()

    def _schedule_retry(self, job: _Job) -> None:
        delay = self.retry_base_seconds * (2 ** (job.attempt - 1))
        retry = _Job(job.event_id, job.attempt + 1)
        self._outstanding += 1
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.pop(handle, None)
            self._queue.put_nowait(retry)

        handle = loop.call_later(delay, fire)
        self._timers[handle] = retry

    async def wait_idle(self, seconds: float) -> bool:
        """Wait until nothing is queued, being delivered or waiting for a retry
        (held events do not count); ``False`` if ``seconds`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def status(self) -> dict[str, Any]:
        """What the dispatcher is doing, for the control endpoint."""
        return {
            "url": self.url,
            "secret_set": self.secret is not None,
            "retry_base_seconds": self.retry_base_seconds,
            "max_attempts": self.max_attempts,
            "outstanding": self._outstanding,
            "queued": self._queue.qsize(),
            "in_flight": self._in_flight,
            "retries_scheduled": len(self._timers),
            "held": len(self._held),
            "drop_next": self.drop_next,
            "duplicate_next": self.duplicate_next,
            "reorder_next": self.reorder_next,
            "attempts": len(self.attempts),
        }

    def reset(self) -> None:
        """Forget queued, held and scheduled deliveries, faults and the attempt log."""
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        while not self._queue.empty():
            self._queue.get_nowait()
        self._parked.clear()
        self._held.clear()
        self.attempts.clear()
        self.drop_next = self.duplicate_next = self.reorder_next = 0
        self._generation += 1
        self._outstanding = self._in_flight
        if self._outstanding == 0:
            self._idle.set()

    # -- delivering ------------------------------------------------------------------

    def _bind(self) -> None:
        """Take the queue over to the running event loop (the app may be served
        again after a stop), carrying over what was queued or parked."""
        carried = list(self._parked)
        self._parked.clear()
        while not self._queue.empty():
            carried.append(self._queue.get_nowait())
        self._queue = asyncio.Queue()
        self._idle = asyncio.Event()
        self._outstanding = 0
        self._idle.set()
        for job in carried:
            self._put(job)

    async def run(self) -> None:
        """The delivery loop; runs until cancelled. Deliveries cut short and retries
        not yet due are parked and resumed by the next :meth:`run`."""
        self._bind()
        async with httpx.AsyncClient(timeout=self.timeout_seconds) as client:
            try:
                while True:
                    job = await self._queue.get()
                    self._in_flight += 1
                    try:
                        await self._deliver(client, job)
                    except asyncio.CancelledError:
                        self._parked.append(job)
                        raise
                    finally:
                        self._in_flight -= 1
                        self._finish()
            finally:
                for handle, retry in self._timers.items():
                    handle.cancel()
                    self._parked.append(retry)
                self._timers.clear()

    async def _deliver(self, client: httpx.AsyncClient, job: _Job) -> None:
        event = self._lookup(job.event_id)
        url = self.url
        if event is None or url is None:
            return
        generation = self._generation
        body = event.to_json()
        delivered = False
        for copy in range(job.copies):
            attempt = await self._post(client, url, body, event, job.attempt, duplicate=copy > 0)
            if self._generation != generation:  # reset while in flight: forget it
                return
            self.attempts.append(attempt)
            delivered = delivered or attempt.outcome == "delivered"
        if delivered:
            event.pending_webhooks = 0
        elif job.attempt < self.max_attempts:
            self._schedule_retry(job)

    async def _post(
        self,
        client: httpx.AsyncClient,
        url: str,
        body: str,
        event: EventRecord,
        attempt: int,
        duplicate: bool,
    ) -> DeliveryAttempt:
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            "Cache-Control": "no-cache",
        }
        if self.secret is not None:
            headers["Stripe-Signature"] = sign(body, self.secret)
        status_code: int | None = None
        error: str | None = None
        try:
            response = await client.post(url, content=body.encode(), headers=headers)
            status_code = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        ok = status_code is not None and 200 <= status_code < 300
        return DeliveryAttempt(
            event_id=event.id,
            event_type=event.type,
            attempt=attempt,
            outcome="delivered" if ok else "failed",
            status_code=status_code,
            error=error,
            at=time.time(),
            url=url,
            duplicate=duplicate,
        )

    def _record_dropped(self, event: EventRecord) -> None:
        self.attempts.append(
            DeliveryAttempt(
                event_id=event.id,
                event_type=event.type,
                attempt=1,
                outcome="dropped",
                status_code=None,
                error=None,
                at=time.time(),
                url=self.url,
            )
        )
