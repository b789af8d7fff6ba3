"""Learning what the gauges need about each pending order's Checkout Session.

Plain async functions over the session knowledge and a ``SessionSource`` (the Stripe gateway):
the events feed after a cursor in steady state, a windowed listing on a cold start, single
retrieves only for stragglers. They share the event loop with the HTTP server, so no pass over
the tracked sessions runs in one go: work goes in slices with a real pause between them
(``Pace``), and a scrape of ``/metrics`` waits for one slice at most.
"""

from __future__ import annotations

import asyncio
import math
import time
from array import array
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import NamedTuple, Protocol, overload

import structlog

from basketball_api.knowledge import (
    Counts,
    SessionKnowledge,
    SessionState,
    counts_of,
    new_tally,
    state_from,
    tally,
)
from basketball_api.metrics import CATEGORIES
from basketball_api.stripe_gateway import (
    EventPage,
    SessionSnapshot,
    StripeRejected,
)

log = structlog.get_logger("basketball_api.refresher")

_CATEGORY_INDEX = {c: i for i, c in enumerate(CATEGORIES)}

EVENTS_WINDOW_SECONDS = 29 * 24 * 3600  # Stripe keeps events 30 days; stay inside it
RETRIEVE_AT_MOST = 10  # this many unknown sessions or fewer: retrieve them one by one
COLD_WINDOWS = 8  # at most this many created-time windows listed concurrently
SESSIONS_PER_WINDOW = 200  # fewer sessions to learn: fewer windows (each costs a page or more)
# Sessions handled between two yields to the event loop (~1 ms of work): a request served
# meanwhile needs several turns of the loop, and it waits for one slice at each turn.
SLICE = 1_000
PAUSE_EVERY_SECONDS = 0.004  # of work on the loop, then a real wait (see Pace)
CLOCK_MARGIN_SECONDS = 2.0  # Stripe's Date header has one-second resolution


class PendingRow(NamedTuple):
    """One pending order's session."""

    session_id: str
    category: str
    session_created_at: int  # Unix time (Stripe's clock); bounds the cold-start listing
    session_expires_at: int = 0  # Unix time (Stripe's clock); 0 when not recorded


class PendingRows(Sequence[PendingRow]):
    """Many pending orders' sessions, held as columns of plain values.

    100,000 row objects would be 100,000 more objects for every full garbage collection to
    walk (tens of milliseconds with the event loop stalled); a list of ids and three arrays are
    four. Indexing builds a :class:`PendingRow`; slicing and :meth:`take` give columns again.
    """

    __slots__ = ("categories", "created", "expires", "session_ids")

    def __init__(self) -> None:
        self.session_ids: list[str] = []
        self.categories = array("B")  # index into CATEGORIES
        self.created = array("q")
        self.expires = array("q")

    @classmethod
    def of(cls, rows: Iterable[PendingRow]) -> PendingRows:
        if isinstance(rows, PendingRows):
            return rows
        out = cls()
        for row in rows:
            out.append(*row)
        return out

    def append(self, session_id: str, category: str, created: int, expires: int = 0) -> None:
        self.session_ids.append(session_id)
        self.categories.append(_CATEGORY_INDEX[category])
        self.created.append(created)
        self.expires.append(expires)

    def extend(
        self,
        session_ids: Iterable[str],
        categories: Iterable[str],
        created: Iterable[int],
        expires: Iterable[int],
    ) -> None:
        """Append whole columns (in C: no per-row Python)."""
        self.session_ids.extend(session_ids)
        self.categories.extend(map(_CATEGORY_INDEX.__getitem__, categories))
        self.created.extend(created)
        self.expires.extend(expires)

    def take(self, indices: Iterable[int]) -> PendingRows:
        out = PendingRows()
        ids, categories, created, expires = (
            self.session_ids,
            self.categories,
            self.created,
            self.expires,
        )
        for i in indices:
            out.session_ids.append(ids[i])
            out.categories.append(categories[i])
            out.created.append(created[i])
            out.expires.append(expires[i])
        return out

    def pairs(self, start: int, stop: int) -> Iterator[tuple[str, str]]:
        """(session id, category) of rows ``start`` to ``stop``."""
        return zip(
            self.session_ids[start:stop],
            [CATEGORIES[c] for c in self.categories[start:stop]],
            strict=True,
        )

    def __len__(self) -> int:
        return len(self.session_ids)

    @overload
    def __getitem__(self, index: int) -> PendingRow: ...
    @overload
    def __getitem__(self, index: slice) -> PendingRows: ...
    def __getitem__(self, index: int | slice) -> PendingRow | PendingRows:
        if isinstance(index, slice):
            out = PendingRows()
            out.session_ids = self.session_ids[index]
            out.categories = self.categories[index]
            out.created = self.created[index]
            out.expires = self.expires[index]
            return out
        return PendingRow(
            self.session_ids[index],
            CATEGORIES[self.categories[index]],
            self.created[index],
            self.expires[index],
        )


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


class Pace:
    """Yields to the event loop between two slices of a long pass; every few milliseconds of
    work it also waits for real (~1 ms).

    ``asyncio.sleep(0)`` lets the loop's other tasks run, but the loop's thread keeps the
    interpreter lock: it drops it for a zero-timeout poll and takes it straight back, before a
    thread waiting for it (a worker serving a synchronous endpoint or dependency) wakes up, and
    CPython only forces a hand-over when the lock has not changed hands for 5 ms. Such a
    worker would wait for the whole pass; ``/metrics`` took 50-100 ms during a 100,000-order
    refresh.
    """

    __slots__ = ("_since",)

    def __init__(self) -> None:
        self._since = time.perf_counter()

    async def __call__(self) -> None:
        if time.perf_counter() - self._since < PAUSE_EVERY_SECONDS:
            await asyncio.sleep(0)
            return
        await asyncio.sleep(0.001)
        self._since = time.perf_counter()


def learn_snapshot(
    knowledge: SessionKnowledge, s: SessionSnapshot, event: str | None = None
) -> bool:
    return knowledge.learn(s.id, state_from(s.status, s.payment_status, event), s.expires_at)


async def sync_knowledge(
    knowledge: SessionKnowledge,
    source: SessionSource,
    rows: Sequence[PendingRow],
    *,
    tracked_before: Sequence[str] | None = None,
) -> None:
    """Learn what the counts need, asking Stripe only what it cannot know otherwise.

    ``tracked_before`` are the sessions tracked before ``rows`` were read: only those may stop
    being tracked, so a session a webhook added meanwhile is kept.
    """
    now = source.stripe_now()
    if knowledge.synced_at is not None and now - knowledge.synced_at > EVENTS_WINDOW_SECONDS:
        knowledge.reset()  # a gap longer than the events window: start cold
    unknown = await track_rows(knowledge, PendingRows.of(rows), tracked_before)
    # Only a warm sync continues from the cursor that position belongs to; a cold one (perhaps
    # retrying a cold one that failed after noting the feed) takes a new cursor and lists.
    fresh_after = knowledge.fresh_after if knowledge.synced_at is not None else None

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
    # Every event of a session created from now on comes after the cursor just taken.
    knowledge.fresh_after = source.stripe_now() + CLOCK_MARGIN_SECONDS

    ids = unknown.session_ids
    unknown = await _select(unknown, lambda i: knowledge.is_unknown(ids[i]))
    if unknown and fresh_after is not None:
        unknown = learn_fresh(knowledge, unknown, fresh_after)
    if unknown:
        await _resolve_unknown(knowledge, source, unknown)
    knowledge.synced_at = started


async def track_rows(
    knowledge: SessionKnowledge,
    rows: PendingRows,
    tracked_before: Sequence[str] | None = None,
) -> PendingRows:
    """Track exactly the sessions of ``rows`` (in slices); returns the rows not learnt yet."""
    candidates = knowledge.tracked_ids() if tracked_before is None else tracked_before
    ids = rows.session_ids
    keep: set[str] = set()
    unknown: list[int] = []
    pace = Pace()
    for start in range(0, len(ids), SLICE):
        stop = min(len(ids), start + SLICE)
        keep.update(ids[start:stop])
        new = knowledge.mark(rows.pairs(start, stop))
        if len(new) == stop - start:
            unknown.extend(range(start, stop))
        elif new:
            wanted = set(new)
            unknown.extend(i for i in range(start, stop) if ids[i] in wanted)
        await pace()
    for start in range(0, len(candidates), 4 * SLICE):
        knowledge.sweep(keep, candidates[start : start + 4 * SLICE])
        await pace()
    return rows if len(unknown) == len(rows) else rows.take(unknown)


async def _select(rows: PendingRows, wanted: Callable[[int], bool]) -> PendingRows:
    """The rows whose index passes ``wanted``, tested in slices."""
    picked: list[int] = []
    pace = Pace()
    for start in range(0, len(rows), SLICE):
        picked += [i for i in range(start, min(len(rows), start + SLICE)) if wanted(i)]
        await pace()
    return rows if len(picked) == len(rows) else rows.take(picked)


def learn_fresh(knowledge: SessionKnowledge, rows: PendingRows, fresh_after: float) -> PendingRows:
    """Sessions created after the previous sync's feed position, unseen in the feed since,
    are open until their recorded ``expires_at``: learnt with no call. Returns the others.

    (Every event of such a session is newer than the cursor the feed was just read from, and
    the only expiry the feed does not carry, an early one by hand, comes by webhook.)
    """
    rest: list[int] = []
    for i, (session_id, created, expires) in enumerate(
        zip(rows.session_ids, rows.created, rows.expires, strict=True)
    ):
        if expires and created >= fresh_after:
            knowledge.learn(session_id, SessionState.OPEN, expires)
        else:
            rest.append(i)
    return rows.take(rest)


def listing_windows(created: Sequence[int], hi: int) -> list[tuple[int, int]]:
    """Contiguous created-time windows [lo, hi] holding about as many of ``created`` each.

    Windows are cut at quantiles of the creation times of the sessions to learn, not at equal
    spans of time, so no window is left with most of the pages to walk alone.
    """
    ordered = sorted(created)
    n = len(ordered)
    count = max(1, min(COLD_WINDOWS, math.ceil(n / SESSIONS_PER_WINDOW)))
    lo = ordered[0] - 5
    hi = max(hi, ordered[-1] + 5)
    cuts = sorted({ordered[(i * n) // count] for i in range(1, count)} - {ordered[0]})
    return list(zip([lo, *cuts], [c - 1 for c in cuts] + [hi], strict=True))


async def _learn_window(
    knowledge: SessionKnowledge, source: SessionSource, created_gte: int, created_lte: int
) -> None:
    pages = getattr(source, "session_pages", None)
    if pages is not None:  # the gateway streams pages: learn each as it comes
        async for page in pages(created_gte=created_gte, created_lte=created_lte):
            for snapshot in page:
                learn_snapshot(knowledge, snapshot)
        return
    snapshots = await source.list_sessions(created_gte=created_gte, created_lte=created_lte)
    pace = Pace()
    for start in range(0, len(snapshots), SLICE):
        for snapshot in snapshots[start : start + SLICE]:
            learn_snapshot(knowledge, snapshot)
        await pace()


async def _resolve_unknown(
    knowledge: SessionKnowledge, source: SessionSource, rows: PendingRows
) -> None:
    if len(rows) > RETRIEVE_AT_MOST:
        hi = int(source.stripe_now()) + 5
        windows = await asyncio.to_thread(listing_windows, rows.created, hi)
        await asyncio.gather(*(_learn_window(knowledge, source, a, b) for a, b in windows))
        ids = rows.session_ids
        rows = await _select(rows, lambda i: knowledge.is_unknown(ids[i]))
    stragglers = rows.session_ids
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


async def count_sessions(knowledge: SessionKnowledge, now: float, grace: float) -> Counts:
    """``knowledge.counts`` in slices; counted again at once if a webhook moved a session."""
    changes = knowledge.changes
    values = knowledge.packed_values()
    totals = new_tally()
    pace = Pace()
    for start in range(0, len(values), 4 * SLICE):
        tally(values[start : start + 4 * SLICE], now, grace, totals)
        await pace()
    if knowledge.changes != changes:
        return knowledge.counts(now, grace)
    return counts_of(totals)
