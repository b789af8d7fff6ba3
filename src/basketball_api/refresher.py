"""Keeps the pending-order gauges true: a plain async refresh plus a supervised loop.

A refresh is "poll Stripe (when this replica holds the lease), then recount from the
database". The gauges are a query (``gauges.count_pending``) published as precomputed values;
webhooks ask for a recount, and a burst of them costs one. ``Refresher.run`` refreshes every
interval and no Stripe or database fault ends the loop: a failed cycle logs one WARNING naming
the cause, counts the error and leaves the gauges at their last good values. One refresh runs
at a time; ``refresh_now`` wakes the loop and waits for its result instead of running another.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog
from sqlalchemy.exc import SQLAlchemyError

from basketball_api.gauges import Counts
from basketball_api.lease import Lease
from basketball_api.metrics import Metrics
from basketball_api.poller import PollResult, SessionSource, poll
from basketball_api.poller_store import Store
from basketball_api.stripe_gateway import StripeFailure

log = structlog.get_logger("basketball_api.refresher")

HealPaid = Callable[[list[str]], Awaitable[list[str]]]


class NotPolledYet(Exception):
    """No replica has polled Stripe yet: the database holds no truth to publish."""


class Refresher:
    """Owns the published counts, the lease, and the loop that refreshes them."""

    def __init__(
        self,
        *,
        store: Store,
        source: SessionSource,
        metrics: Metrics,
        lease: Lease | None = None,
        interval_seconds: float = 300.0,
        deadline_seconds: float = 120.0,
        grace_seconds: float = 60.0,
        heal_paid: HealPaid | None = None,
    ) -> None:
        self.store = store
        self.source = source
        self.metrics = metrics
        self.lease = lease
        self.heal_paid = heal_paid
        self.interval = interval_seconds
        self.deadline = deadline_seconds
        self.grace = grace_seconds
        self.counts: Counts | None = None  # None until a successful refresh
        self.last_success_at: float | None = None
        self.last_poll: PollResult | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._waiters: list[asyncio.Future[bool]] = []
        self._recount_task: asyncio.Task[None] | None = None
        self._recount_again = False
        self._published_seq = 0
        self._seq = 0
        metrics.interval.set(interval_seconds)

    async def refresh_once(self) -> Counts:
        """One refresh; raises on failure and leaves the published gauges untouched."""
        async with self._lock:
            holds = True if self.lease is None else await asyncio.to_thread(self.lease.hold)
            self.metrics.lease_held.set(1 if holds else 0)
            self.last_poll = await poll(self.store, self.source) if holds else None
            counts = await self.recount()
            if counts is None:
                raise NotPolledYet("no replica has polled Stripe yet")
            if holds and self.heal_paid is not None and any(counts.completed.values()):
                counts = await self._heal() or counts
            return counts

    async def recount(self) -> Counts | None:
        """Count from the database and publish; None (nothing published) before any replica
        has polled Stripe successfully."""
        self._seq += 1
        seq = self._seq
        counts, cursor = await asyncio.to_thread(
            self.store.recount, now=self.source.stripe_now(), grace=self.grace
        )
        if cursor.polled_at is None:
            return None
        if seq > self._published_seq:  # a slower, older recount never overwrites a newer one
            self._published_seq = seq
            self.counts = counts
            self.metrics.publish_counts(vars(counts))
            self.last_success_at = cursor.polled_at
            self.metrics.last_success.set(cursor.polled_at)
        return counts

    def request_recount(self) -> None:
        """Recount soon (after an applied webhook); requests made meanwhile share one recount."""
        self._recount_again = True
        if self._recount_task is None or self._recount_task.done():
            self._recount_task = asyncio.get_running_loop().create_task(self._recount_while_asked())

    async def _recount_while_asked(self) -> None:
        while self._recount_again:
            self._recount_again = False
            try:
                await self.recount()
            except Exception as e:  # the next refresh recounts anyway
                log.warning("recount_failed", error=describe(e))

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
        polled = self.last_poll
        log.info(
            "refresh_succeeded",
            expired=counts.expired,
            completed=counts.completed,
            open=counts.open,
            failed=counts.failed,
            missing=counts.missing,
            polled=polled is not None,
            events=polled.events if polled else 0,
            listed=polled.listed if polled else 0,
            duration_seconds=round(duration, 3),
            stripe_calls=self.source.calls - calls_before,
        )
        return True

    async def _heal(self) -> Counts | None:
        """Mark paid the pending orders Stripe says are paid; a separate step, not the refresh."""
        try:
            sessions = await asyncio.to_thread(self.store.paid_pending_sessions)
            await self.heal_paid(sessions)  # type: ignore[misc]
        except Exception as e:  # healing is retried next cycle; it must not end the loop
            log.warning("heal_failed", error=describe(e))
            return None
        return await self.recount()

    async def run(self) -> None:
        """Refresh at start-up, then every interval, until :meth:`stop`."""
        while not self._stop.is_set():
            self._wake.clear()
            waiters, self._waiters = self._waiters, []
            ok = await self.run_cycle()
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(ok)
            if self._waiters:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()

    async def refresh_now(self) -> bool:
        """Wake the loop and wait for the result of a cycle started after this call."""
        if self._task is None or self._task.done():
            return await self.run_cycle()
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._wake.set()
        return await waiter

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
        self._recount_again = False
        if self._recount_task is not None:  # a recount is short: let its thread finish
            await self._recount_task
        self._task = self._recount_task = None
        if self.lease is not None:
            await asyncio.to_thread(self.lease.release)
        self.metrics.lease_held.set(0)


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
    if isinstance(error, NotPolledYet):
        return "not_polled_yet"
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
