"""The poller's database side: its cursor row, the links it must learn, the facts it writes.

Synchronous methods, each one transaction; the poller runs them in a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Select,
    Table,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from basketball_api import link_state
from basketball_api.db import insert_unless_present, transaction
from basketball_api.gauges import Counts, count_pending
from basketball_api.link_state import Fact, current_link, epoch, from_epoch
from basketball_api.models import CheckoutLink, Learnt, LinkState, Order, OrderStatus, PollerCursor
from basketball_api.stripe_gateway import SessionEvent

CURSOR_ID = 1
REPAIR_EVERY_SECONDS = 600.0  # how often a poll checks the orders' copies (see repair_copies)


@dataclass(frozen=True)
class Cursor:
    """The cursor row as Unix seconds (None: not set yet)."""

    event_id: str | None = None
    event_created_at: float | None = None
    stripe_clock_at: float | None = None
    polled_at: float | None = None
    relisting_since: float | None = None


def _seconds(moment: datetime | None) -> float | None:
    return None if moment is None else float(epoch(moment))


def _cursor_of(row: PollerCursor | None) -> Cursor:
    if row is None:
        return Cursor()
    return Cursor(
        row.event_id,
        _seconds(row.event_created_at),
        _seconds(row.stripe_clock_at),
        _seconds(row.polled_at),
        _seconds(row.relisting_since),
    )


def _row(db: Session) -> PollerCursor:
    """The cursor row, locked; created if absent.

    Created with INSERT … ON CONFLICT DO NOTHING: a poll cut off by its deadline leaves its
    worker thread running, and that thread may create the row while the next poll does too.
    """
    row = db.get(PollerCursor, CURSOR_ID, with_for_update=True)
    if row is None:
        insert_unless_present(db, cast(Table, PollerCursor.__table__), ["id"], {"id": CURSOR_ID})
        row = db.get(PollerCursor, CURSOR_ID, with_for_update=True, populate_existing=True)
    assert row is not None
    return row


def _later(old: datetime | None, new: float) -> datetime:
    """``new`` unless ``old`` is later: the cursor and the clock never move backwards."""
    moment = from_epoch(new)
    return moment if old is None or epoch(old) < new else old


class Store:
    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.factory = factory
        # The first repair comes one period after start: migration 0009 has just filled the
        # copies, and the first (cold) poll has enough to do.
        self._repaired_at = time.monotonic()

    def cursor(self) -> Cursor:
        with transaction(self.factory) as db:
            return _cursor_of(db.get(PollerCursor, CURSOR_ID))

    def begin_relisting(self, position: float, since: float) -> None:
        """Note the feed position before relisting, and since when links are relisted."""
        with transaction(self.factory) as db:
            row = _row(db)
            row.event_created_at = _later(row.event_created_at, position)
            if row.relisting_since is None:
                row.relisting_since = from_epoch(since)

    def _to_learn(self, relisting_since: float | None) -> Select[str | None, datetime]:
        """Pending orders' current links to learn: those never learnt and, during a relisting,
        those that may have changed since it began (unresolved, not confirmed since)."""
        if relisting_since is None:  # the orders' copy of their link's state is enough
            return (
                select(
                    Order.stripe_checkout_session_id,
                    func.coalesce(Order.checkout_session_created_at, Order.created_at),
                )
                .where(Order.status == OrderStatus.pending)
                .where(Order.stripe_checkout_session_id.is_not(None))
                .where(Order.link_state.is_(None))
            )
        since = from_epoch(relisting_since)
        stale = link_state.unresolved() & or_(
            CheckoutLink.learnt_at.is_(None), CheckoutLink.learnt_at < since
        )
        return (
            select(CheckoutLink.stripe_checkout_session_id, CheckoutLink.created_at)
            .join(Order, current_link())
            .where(Order.status == OrderStatus.pending)
            .where(or_(CheckoutLink.state.is_(None), stale))
        )

    def to_learn_created(self, relisting_since: float | None) -> list[int]:
        """When each link to learn was created (Unix seconds), in order: where to list."""
        with transaction(self.factory) as db:
            rows = db.execute(self._to_learn(relisting_since))
            return sorted(epoch(created) for _, created in rows)

    def to_learn(self, relisting_since: float | None) -> list[str]:
        """The session ids of the links to learn."""
        with transaction(self.factory) as db:
            return [sid for sid, _ in db.execute(self._to_learn(relisting_since)) if sid]

    def learn(self, facts: Mapping[str, Fact], how: Learnt, confirm: bool = False) -> list[str]:
        """Write what moves links forward (``confirm``: and note that Stripe confirmed the
        others, so a relisting does not ask for them again); the session ids that changed."""
        if not facts:
            return []
        with transaction(self.factory) as db:
            link_state.take_write_lock(db)
            return link_state.learn(db, facts, how, confirm=confirm)

    def repair_copies(self, every_seconds: float = REPAIR_EVERY_SECONDS) -> int:
        """Copy their current link's state onto pending orders whose copy differs from it;
        how many (0 as well when the last repair is less than ``every_seconds`` old). None
        should differ: every path of this version writes both in one transaction. But a
        replica of an older version (a rolling update) writes the link alone, and a wrong
        copy is otherwise only corrected when that link changes again. One statement, a
        correlated check per pending order: 0.5-1 s at 100,000, so not every poll."""
        now = time.monotonic()
        if now - self._repaired_at < every_seconds:
            return 0
        self._repaired_at = now
        orders = cast(Table, Order.__table__)
        links = cast(Table, CheckoutLink.__table__).alias("l")
        of_order = links.c.stripe_checkout_session_id == orders.c.stripe_checkout_session_id

        def current(column: ColumnElement[Any]) -> Any:
            return select(column).where(of_order).scalar_subquery()

        differs = (
            select(links.c.id)
            .where(of_order)
            .where(
                links.c.state.is_distinct_from(orders.c.link_state)
                | links.c.payment_status.is_distinct_from(orders.c.link_payment_status)
                | (
                    links.c.expires_at.is_not(None)
                    & links.c.expires_at.is_distinct_from(orders.c.checkout_session_expires_at)
                )
            )
            .exists()
        )
        stmt = (
            update(orders)
            .where(orders.c.status == OrderStatus.pending.value)
            .where(differs)
            .values(
                link_state=current(links.c.state),
                link_payment_status=current(links.c.payment_status),
                checkout_session_expires_at=func.coalesce(
                    current(links.c.expires_at), orders.c.checkout_session_expires_at
                ),
                updated_at=orders.c.updated_at,
            )
        )
        with transaction(self.factory) as db:
            return int(cast(CursorResult[Any], db.execute(stmt)).rowcount or 0)

    def tidy(self) -> None:
        """After a listing rewrote many rows: PostgreSQL's ``VACUUM (ANALYZE)`` of the two
        tables, so the gauge query reads ``ix_orders_gauge`` alone again (index-only scans need
        the visibility map a vacuum sets: 100 ms at 100,000 pending before, 37 ms after) without
        waiting for autovacuum. SQLite needs nothing."""
        engine = self.factory.kw["bind"]
        if engine.dialect.name != "postgresql":
            return
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM (ANALYZE) orders, checkout_links"))

    def finish(self, *, position: float, newest: SessionEvent | None, stripe_clock: float) -> None:
        """A poll ended well: move the cursor and the clock forward, end any relisting."""
        with transaction(self.factory) as db:
            row = _row(db)
            row.event_created_at = _later(row.event_created_at, position)
            if newest is not None:
                row.event_id = newest.id
            row.stripe_clock_at = _later(row.stripe_clock_at, stripe_clock)
            row.polled_at = row.stripe_clock_at
            row.relisting_since = None

    def recount(self, *, now: float, grace: float) -> tuple[Counts, Cursor]:
        """The gauges' counts and the cursor, read in one transaction."""
        with transaction(self.factory) as db:
            cursor = _cursor_of(db.get(PollerCursor, CURSOR_ID))
            if cursor.stripe_clock_at is not None:
                now = max(now, cursor.stripe_clock_at)
            return count_pending(db, now=now, grace=grace), cursor

    def paid_pending_sessions(self) -> list[str]:
        """Current links of pending orders that Stripe says are paid (a lost webhook)."""
        stmt = (
            select(Order.stripe_checkout_session_id)
            .where(Order.status == OrderStatus.pending)
            .where(Order.link_state == LinkState.complete)
            .where(Order.link_payment_status.in_(list(link_state.PAID_STATUSES)))
        )
        with transaction(self.factory) as db:
            return [sid for (sid,) in db.execute(stmt) if sid]
