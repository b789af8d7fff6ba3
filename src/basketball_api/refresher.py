"""Keeps the pending-order gauges true: a plain async refresh plus a supervised loop.

``refresh_once`` is "pending orders + session knowledge -> counts per category"; it reads orders
and never changes them. ``Refresher.run`` calls it every interval, and no Stripe or database
fault can end the loop: a failed cycle logs one WARNING naming the cause, counts the error and
leaves the gauges at their last good values.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
from sqlalchemy.exc import SQLAlchemyError

from basketball_api.knowledge import Counts, SessionKnowledge, SessionState, state_from
from basketball_api.metrics import Metrics
from basketball_api.stripe_gateway import (
    EventPage,
    SessionSnapshot,
    StripeFailure,
    StripeRejected,
)

log = structlog.get_logger("basketball_api.refresher")

EVENTS_WINDOW_SECONDS = 29 * 24 * 3600  # Stripe keeps events 30 days; stay inside it
RETRIEVE_AT_MOST = 20  # fewer unknown sessions than this: retrieve them one by one
COLD_WINDOWS = 8  # created-time windows listed concurrently on a cold start


@dataclass(frozen=True, slots=True)
class PendingRow:
    session_id: str
    category: str
    session_created_at: int  # Unix time; bounds the cold-start listing


class SessionSource(Protocol):
    """The Stripe calls the refresher makes (implemented by ``StripeGateway``)."""

    calls: int

    def stripe_now(self) -> float: ...
    async def latest_event_id(self) -> str | None: ...
    async def events_after(self, cursor: str) -> EventPage: ...
    async def events_since(self, created_gte: int) -> EventPage: ...
    async def list_sessions(
        self, *, created_gte: int, created_lte: int, status: str | None = None
    ) -> list[SessionSnapshot]: ...
    async def retrieve_session(self, session_id: str) -> SessionSnapshot: ...


LoadPending = Callable[[], Sequence[PendingRow]]
HealPaid = Callable[[list[str]], Awaitable[list[str]]]


def learn_snapshot(
    knowledge: SessionKnowledge, s: SessionSnapshot, event: str | None = None
) -> bool:
    return knowledge.learn(s.id, state_from(s.status, s.payment_status, event), s.expires_at)


async def sync_knowledge(
    knowledge: SessionKnowledge, source: SessionSource, rows: Sequence[PendingRow]
) -> None:
    """Learn what the counts need, asking Stripe only what it cannot know otherwise."""
    now = source.stripe_now()
    if knowledge.synced_at is not None and now - knowledge.synced_at > EVENTS_WINDOW_SECONDS:
        knowledge.reset()  # a gap longer than the events window: start cold
    unknown = set(knowledge.track((r.session_id, r.category) for r in rows))

    if knowledge.synced_at is None:
        # Cold: note where the feed stands *before* listing, so nothing falls in between.
        knowledge.events_cursor = await source.latest_event_id()
        started = source.stripe_now()
    else:
        started = source.stripe_now()
        try:
            if knowledge.events_cursor is None:
                page = await source.events_since(int(knowledge.synced_at) - 60)
            else:
                page = await source.events_after(knowledge.events_cursor)
        except StripeRejected as e:
            if not e.missing:
                raise
            # The cursor event is gone from Stripe: start over cold in the next cycle.
            knowledge.reset()
            raise
        for event in page.events:
            learn_snapshot(knowledge, event.session, event.type)
        if page.newest_id is not None:
            knowledge.events_cursor = page.newest_id

    unknown &= set(knowledge.unknown())
    if unknown:
        await _resolve_unknown(knowledge, source, [r for r in rows if r.session_id in unknown])
    knowledge.synced_at = started


async def _resolve_unknown(
    knowledge: SessionKnowledge, source: SessionSource, rows: Sequence[PendingRow]
) -> None:
    if len(rows) > RETRIEVE_AT_MOST:
        lo = min(r.session_created_at for r in rows) - 5
        hi = int(source.stripe_now()) + 5
        step = max(1, (hi - lo) // COLD_WINDOWS + 1)
        windows = [(start, min(hi, start + step - 1)) for start in range(lo, hi + 1, step)]
        pages = await asyncio.gather(
            *(source.list_sessions(created_gte=a, created_lte=b) for a, b in windows)
        )
        for page in pages:
            for snapshot in page:
                learn_snapshot(knowledge, snapshot)
    stragglers = [
        r.session_id for r in rows if knowledge.state(r.session_id, 0) == SessionState.UNKNOWN
    ]
    results = await asyncio.gather(
        *(source.retrieve_session(s) for s in stragglers), return_exceptions=True
    )
    for session_id, result in zip(stragglers, results, strict=True):
        if isinstance(result, SessionSnapshot):
            learn_snapshot(knowledge, result)
        elif isinstance(result, StripeRejected) and result.missing:
            knowledge.learn(session_id, SessionState.MISSING, 0)
        elif isinstance(result, BaseException):
            raise result


class Refresher:
    """Owns the knowledge, the published counts and the loop that refreshes them."""

    def __init__(
        self,
        *,
        load_pending: LoadPending,
        source: SessionSource,
        metrics: Metrics,
        interval_seconds: float = 300.0,
        deadline_seconds: float = 120.0,
        grace_seconds: float = 60.0,
        knowledge: SessionKnowledge | None = None,
        heal_paid: HealPaid | None = None,
    ) -> None:
        self.heal_paid = heal_paid
        self.load_pending = load_pending
        self.source = source
        self.metrics = metrics
        self.interval = interval_seconds
        self.deadline = deadline_seconds
        self.grace = grace_seconds
        self.knowledge = knowledge or SessionKnowledge()
        self.counts: Counts | None = None  # None until the first successful refresh
        self.last_success_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        metrics.interval.set(interval_seconds)

    async def refresh_once(self) -> Counts:
        """One refresh; raises on failure and leaves the published gauges untouched."""
        rows = await asyncio.to_thread(self.load_pending)
        await sync_knowledge(self.knowledge, self.source, rows)
        counts = self.knowledge.counts(self.source.stripe_now(), self.grace)
        self.counts = counts
        self.metrics.publish_counts(counts.expired, counts.completed, counts.open)
        self.last_success_at = time.time()
        self.metrics.last_success.set(self.last_success_at)
        return counts

    async def run_cycle(self) -> bool:
        """A refresh that never raises: logs one line and counts the outcome."""
        started = time.perf_counter()
        calls_before = self.source.calls
        try:
            async with asyncio.timeout(self.deadline):
                counts = await self.refresh_once()
        except Exception as e:  # the loop must survive any fault; the cause is logged
            reason = failure_reason(e)
            self.metrics.refreshes.labels(result="error").inc()
            self.metrics.refresh_errors.labels(reason=reason).inc()
            self.metrics.duration.set(time.perf_counter() - started)
            log.warning(
                "refresh_failed",
                reason=reason,
                error=describe(e),
                duration_seconds=round(time.perf_counter() - started, 3),
                stripe_calls=self.source.calls - calls_before,
            )
            return False
        duration = time.perf_counter() - started
        self.metrics.refreshes.labels(result="success").inc()
        self.metrics.duration.set(duration)
        log.info(
            "refresh_succeeded",
            expired=counts.expired,
            completed=counts.completed,
            open=counts.open,
            tracked_sessions=len(self.knowledge),
            duration_seconds=round(duration, 3),
            stripe_calls=self.source.calls - calls_before,
        )
        if self.heal_paid is not None and any(counts.completed.values()):
            await self._heal()
        return True

    async def _heal(self) -> None:
        """Mark paid the pending orders Stripe says are paid; a separate step, not the refresh."""
        try:
            healed = await self.heal_paid(self.knowledge.sessions_in(SessionState.PAID))  # type: ignore[misc]
        except Exception as e:  # healing is retried next cycle; it must not end the loop
            log.warning("heal_failed", error=describe(e))
            return
        for session_id in healed:
            self.knowledge.forget(session_id)
        counts = self.counts = self.knowledge.counts(self.source.stripe_now(), self.grace)
        self.metrics.publish_counts(counts.expired, counts.completed, counts.open)

    async def run(self) -> None:
        """Refresh at start-up, then every interval, until :meth:`stop`."""
        while not self._stop.is_set():
            await self.run_cycle()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()

    def start(self) -> asyncio.Task[None]:
        self._stop.clear()
        self._task = asyncio.create_task(self.run(), name="pending-orders-refresher")
        self._task.add_done_callback(_report_death)
        return self._task

    def wake(self) -> None:
        """Run the next cycle now instead of at the end of the interval."""
        self._wake.set()

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def observe(
        self, snapshot: SessionSnapshot, *, category: str, order_pending: bool, event: str | None
    ) -> None:
        """Apply a webhook's fact at once, moving the gauges without waiting for the next tick."""
        now = self.source.stripe_now()
        before = self.knowledge.bucket(snapshot.id, now, self.grace)
        if order_pending:
            self.knowledge.ensure(snapshot.id, category)
            learn_snapshot(self.knowledge, snapshot, event)
        else:
            self.knowledge.forget(snapshot.id)
        after = self.knowledge.bucket(snapshot.id, now, self.grace)
        if self.counts is None or before == after:
            return
        for change, where in ((-1, before), (1, after)):
            if where is not None:
                category, name = where
                self.counts.bucket(name)[category] += change
        c = self.counts
        self.metrics.publish_counts(c.expired, c.completed, c.open)


def _report_death(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("refresher_died", error=describe(task.exception()))


def failure_reason(error: BaseException) -> str:
    """A bounded label for what made a refresh fail."""
    if isinstance(error, StripeFailure):
        return f"stripe_{error.reason}"
    if isinstance(error, TimeoutError):
        return "deadline"
    if isinstance(error, SQLAlchemyError):
        return "database"
    return "internal"


def describe(error: BaseException | None) -> str:
    if error is None:
        return ""
    text = str(error).splitlines()[0] if str(error) else ""
    root = error
    while root.__cause__ is not None:  # e.g. httpx.ReadTimeout vs ConnectError under Stripe's
        root = root.__cause__
    cause = f" (cause: {type(root).__name__})" if root is not error else ""
    return f"{type(error).__name__}: {text}"[: 300 - len(cause)] + cause
