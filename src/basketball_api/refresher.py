"""Keeps the pending-order gauges true: a plain async refresh plus a supervised loop.

``refresh_once`` is "pending orders + session knowledge -> counts per category"; it reads orders
and never changes them. ``Refresher.run`` calls it every interval, and no Stripe or database
fault can end the loop: a failed cycle logs one WARNING naming the cause, counts the error and
leaves the gauges at their last good values.

What a refresh learns from Stripe, and how cheaply, is ``session_sync``'s business; the
database is read in a worker thread, so the loop serving ``/metrics`` is never blocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time

import structlog
from sqlalchemy.exc import SQLAlchemyError

from basketball_api.knowledge import (
    Counts,
    SessionKnowledge,
    SessionState,
)
from basketball_api.metrics import Metrics
from basketball_api.session_sync import (
    HealPaid,
    LoadPending,
    SessionSource,
    count_sessions,
    learn_snapshot,
    sync_knowledge,
)
from basketball_api.stripe_gateway import (
    SessionSnapshot,
    StripeFailure,
)

log = structlog.get_logger("basketball_api.refresher")


_startup_frozen = False


def freeze_startup_objects() -> None:
    """Take the objects alive at start-up out of the garbage collector's sight, once a process.

    A full collection walks every tracked object, and the app with its libraries holds
    ~150,000 of them: each full collection stalls the event loop for ~100 ms, and a refresh at
    100,000 pending orders allocates enough to set off several. Modules, the app and its
    services live as long as the process anyway; everything made later is collected as before.
    """
    global _startup_frozen
    if _startup_frozen:
        return
    _startup_frozen = True
    gc.collect()
    gc.freeze()


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
        tracked_before = self.knowledge.tracked_ids()
        rows = await asyncio.to_thread(self.load_pending)
        await sync_knowledge(self.knowledge, self.source, rows, tracked_before=tracked_before)
        counts = await count_sessions(self.knowledge, self.source.stripe_now(), self.grace)
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
        counts = await count_sessions(self.knowledge, self.source.stripe_now(), self.grace)
        self.counts = counts
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

    @property
    def alive(self) -> bool:
        """False once the loop's task has ended on its own (it never should); True before
        ``start`` and after ``stop``."""
        return self._task is None or not self._task.done()

    def wake(self) -> None:
        """Run the next cycle now instead of at the end of the interval."""
        self._wake.set()

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            # A task that died on its own was reported by _report_death; shut down anyway.
            with contextlib.suppress(asyncio.CancelledError, Exception):
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
