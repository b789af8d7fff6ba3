"""Learns from Stripe what webhooks missed, and writes it to the links' rows as it goes.

In steady state a poll is one read of ``GET /v1/events`` (every Checkout event type, expiries
included) from the persisted cursor, re-reading a short overlap so that an event Stripe makes
visible late is not skipped; re-read events change nothing (facts only move forward). Links are
listed only when their state is not known: links that predate this version, or, when the cursor
is older than the events Stripe keeps, the links that may have changed meanwhile. A link no
listing shows is retrieved; a 404 makes it ``missing``.

Everything learnt is written as it comes, so a poll cut by its deadline keeps what it wrote and
the next one continues (the pages listed but not written yet, 16 at most, are listed again).
The database side is :class:`~basketball_api.poller_store.Store`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import structlog
from sqlalchemy.exc import SQLAlchemyError

from basketball_api.link_state import CHECKOUT_EVENT_TYPES, Fact, advance, fact_of
from basketball_api.models import Learnt, LinkState
from basketball_api.poller_store import Store
from basketball_api.stripe_gateway import SessionEvent, SessionSnapshot, StripeRejected

log = structlog.get_logger("basketball_api.poller")

#: Events created this long before the cursor are read again: Stripe may list an event a few
#: seconds after its ``created`` time (one-second resolution, eventual consistency).
OVERLAP_SECONDS = 10
EVENTS_WINDOW_SECONDS = 29 * 24 * 3600  # Stripe keeps events 30 days; stay inside it
RETRIEVE_AT_MOST = 10  # this many links to learn or fewer: retrieve them one by one
COLD_WINDOWS = 8  # at most this many created-time windows listed concurrently
SESSIONS_PER_WINDOW = 200  # fewer links to learn: fewer windows (each costs a page or more)
LISTED_PAGES_IN_FLIGHT = 16  # pages listed and not written yet, at most (then listings wait)
WRITE_AT_MOST = 1_000  # listed sessions written in one transaction, at most
TIDY_AFTER_LISTED = 10_000  # a listing changed this many links: vacuum (see Store.tidy)
MISSING_WARNING_AT = 10  # this many links answered 404 in one poll: a wrong key or account?


class SessionSource(Protocol):
    """The Stripe calls the poller makes (implemented by ``StripeGateway``)."""

    @property
    def calls(self) -> int: ...

    def stripe_now(self) -> float: ...
    def clock_at_least(self, moment: float) -> None: ...
    def event_pages(
        self, *, created_gte: int, types: Sequence[str]
    ) -> AsyncIterator[list[SessionEvent]]: ...
    def session_pages(
        self, *, created_gte: int, created_lte: int
    ) -> AsyncIterator[list[SessionSnapshot]]: ...
    async def retrieve_session(self, session_id: str) -> SessionSnapshot: ...


@dataclass
class PollResult:
    events: int = 0  # events read (the overlap included)
    relisting: bool = False
    listed: int = 0  # links learnt from listings
    retrieved: int = 0
    missing: int = 0  # links Stripe answered 404 for


async def poll(store: Store, source: SessionSource) -> PollResult:
    """One poll: the events feed from the cursor, then listings of links not learnt yet."""
    result = PollResult()
    cursor = await asyncio.to_thread(store.cursor)
    if cursor.stripe_clock_at is not None:
        source.clock_at_least(cursor.stripe_clock_at)
    started = source.stripe_now()
    relisting_since = cursor.relisting_since
    newest: SessionEvent | None = None
    position = cursor.event_created_at
    if position is None or position - OVERLAP_SECONDS < started - EVENTS_WINDOW_SECONDS:
        # First start, or a cursor older than the events Stripe keeps: what happened meanwhile
        # cannot be read. Note the feed position first (the next poll reads from here), then
        # list every link that may have changed.
        relisting_since = time.time()
        await asyncio.to_thread(store.begin_relisting, started, relisting_since)
        if position is not None:
            log.warning("events_cursor_too_old", cursor_age_seconds=round(started - position))
    else:
        read_started = time.monotonic()
        newest = await _read_feed(store, source, int(position) - OVERLAP_SECONDS, result)
        # The feed position is Stripe's time when the read began, on the clock as its answers
        # just set it (a clock read before the first answer of a process can be stale).
        started = source.stripe_now() - (time.monotonic() - read_started)
    result.relisting = relisting_since is not None
    repaired = await asyncio.to_thread(store.repair_copies)
    if repaired:
        log.warning("order_copies_repaired", count=repaired, hint="written by an older replica?")
    await _learn_links(store, source, relisting_since, result)
    if result.listed >= TIDY_AFTER_LISTED:  # in the background: nothing waits for it
        task = asyncio.get_running_loop().create_task(_tidy(store))
        _tidying.add(task)
        task.add_done_callback(_tidying.discard)
    if result.missing >= MISSING_WARNING_AT:
        log.warning(
            "links_missing_at_stripe",
            count=result.missing,
            hint="Stripe answers 404 for these links: is the API key of the right account?",
        )
    await asyncio.to_thread(
        store.finish, position=started, newest=newest, stripe_clock=source.stripe_now()
    )
    return result


_tidying: set[asyncio.Task[None]] = set()


async def _tidy(store: Store) -> None:
    try:
        await asyncio.to_thread(store.tidy)
    except SQLAlchemyError as e:  # only slower recounts until autovacuum runs
        log.warning("vacuum_failed", error=str(e).splitlines()[0])


async def _read_feed(
    store: Store, source: SessionSource, created_gte: int, result: PollResult
) -> SessionEvent | None:
    """Every event from ``created_gte`` on, each page written as it comes; the newest one."""
    newest: SessionEvent | None = None
    seen: set[str] = set()
    async for page in source.event_pages(created_gte=created_gte, types=CHECKOUT_EVENT_TYPES):
        if newest is None and page:
            newest = page[0]
        facts: dict[str, Fact] = {}
        for event in reversed(page):  # oldest first: a later fact is offered after an earlier
            if event.id in seen:
                continue
            seen.add(event.id)
            fact = fact_of(event.session, event.type)
            known = facts.get(event.session.id)
            facts[event.session.id] = fact if known is None else (advance(known, fact) or known)
        result.events += len(facts)
        await asyncio.to_thread(store.learn, facts, Learnt.events)
    return newest


def listing_windows(created: Sequence[int], hi: int) -> list[tuple[int, int]]:
    """Contiguous created-time windows [lo, hi] holding about as many of ``created`` each.

    Cut at quantiles of the creation times of the links to learn, not at equal spans of time,
    so no window is left with most of the pages to walk alone.
    """
    ordered = sorted(created)
    n = len(ordered)
    count = max(1, min(COLD_WINDOWS, math.ceil(n / SESSIONS_PER_WINDOW)))
    lo = ordered[0] - 5
    hi = max(hi, ordered[-1] + 5)
    cuts = sorted({ordered[(i * n) // count] for i in range(1, count)} - {ordered[0]})
    return list(zip([lo, *cuts], [c - 1 for c in cuts] + [hi], strict=True))


async def _learn_links(
    store: Store, source: SessionSource, relisting_since: float | None, result: PollResult
) -> None:
    """Learn the links the store says are not known: listings by created time (when there are
    more than a few), then retrieves of the ones no listing showed. Sibling requests of a failed
    one are cancelled.

    The listings only read Stripe; one writer task writes what they found, several pages per
    transaction, so no listing waits for the database (nor for another listing's write: on
    SQLite they would queue for its one write lock). Nothing per session is kept in memory: what
    is still to learn afterwards is asked of the database again."""
    created = await asyncio.to_thread(store.to_learn_created, relisting_since)
    if len(created) > RETRIEVE_AT_MOST:
        windows = listing_windows(created, int(source.stripe_now()) + 5)
        del created
        pages: asyncio.Queue[dict[str, Fact] | None] = asyncio.Queue(LISTED_PAGES_IN_FLIGHT)
        confirm = relisting_since is not None
        async with _tasks() as tg:
            tg.create_task(_write_listed(store, pages, confirm, result))
            async with asyncio.TaskGroup() as listing:
                for lo, hi in windows:
                    listing.create_task(_list_window(source, lo, hi, pages))
            await pages.put(None)
    targets = await asyncio.to_thread(store.to_learn, relisting_since)
    async with _tasks() as tg:
        for session_id in targets:
            tg.create_task(_retrieve(store, source, session_id, result))


@asynccontextmanager
async def _tasks() -> AsyncIterator[asyncio.TaskGroup]:
    """A TaskGroup (a failed task cancels its siblings) that raises the first failure as a
    plain exception, not as a group: the refresher reports it by its type."""
    try:
        async with asyncio.TaskGroup() as tg:
            yield tg
    except BaseExceptionGroup as group:
        error: BaseException = group
        while isinstance(error, BaseExceptionGroup):
            error = error.exceptions[0]
        raise error  # noqa: B904 (its own cause is what the log names)


async def _list_window(
    source: SessionSource,
    created_gte: int,
    created_lte: int,
    pages: asyncio.Queue[dict[str, Fact] | None],
) -> None:
    async for page in source.session_pages(created_gte=created_gte, created_lte=created_lte):
        await pages.put({s.id: fact_of(s) for s in page})


async def _write_listed(
    store: Store, pages: asyncio.Queue[dict[str, Fact] | None], confirm: bool, result: PollResult
) -> None:
    """Write listed pages as they come, all those waiting in one transaction, until None."""
    done = False
    while not done:
        facts = await pages.get()
        if facts is None:
            return
        while not pages.empty() and len(facts) < WRITE_AT_MOST:
            more = pages.get_nowait()
            if more is None:
                done = True
                break
            facts.update(more)
        changed = await asyncio.to_thread(store.learn, facts, Learnt.listing, confirm)
        result.listed += len(changed)


async def _retrieve(
    store: Store, source: SessionSource, session_id: str, result: PollResult
) -> None:
    try:
        fact = fact_of(await source.retrieve_session(session_id))
    except StripeRejected as e:
        if not e.missing:
            raise
        fact = Fact(LinkState.missing)
        result.missing += 1
    result.retrieved += 1
    await asyncio.to_thread(store.learn, {session_id: fact}, Learnt.retrieve)
