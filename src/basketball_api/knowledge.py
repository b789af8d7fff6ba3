"""What the service knows about the Checkout Session of each pending order.

Plain data and plain functions: no I/O. One small int per tracked session packs the session's
state, the pending order's category and the session's ``expires_at``, so memory stays at a few
hundred bytes per pending order.

Rules that keep Stripe traffic flat:
- ``expired`` and ``complete`` are terminal: once learnt, never asked again.
- An open session cannot expire by timeout before ``expires_at``; after it (plus a grace period)
  and with no completion seen in the events feed, it is expired. So timeouts need no call at all.

Every pass over all sessions (``mark``, ``sweep``, ``tally``) works on a slice the caller
chooses, so the refresher can yield to the event loop between slices at 100,000 sessions.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field

from basketball_api.metrics import CATEGORIES

_CATEGORY_INDEX = {c: i for i, c in enumerate(CATEGORIES)}


class SessionState(enum.IntEnum):
    OPEN = 0
    EXPIRED = 1
    PAID = 2  # complete and paid
    PROCESSING = 3  # complete, payment still processing (delayed methods)
    FAILED = 4  # complete, delayed payment failed
    MISSING = 5  # Stripe does not know the session
    UNKNOWN = 7  # not learnt yet


_TERMINAL = frozenset({SessionState.EXPIRED, SessionState.PAID, SessionState.FAILED})
_UNKNOWN = int(SessionState.UNKNOWN)
_CATEGORY_BITS = 0b11000


def state_from(status: str, payment_status: str, event_type: str | None = None) -> SessionState:
    """The state a session snapshot (or the event that carried it) tells."""
    if event_type == "checkout.session.async_payment_succeeded":
        return SessionState.PAID
    if event_type == "checkout.session.async_payment_failed":
        return SessionState.FAILED
    if status == "expired":
        return SessionState.EXPIRED
    if status == "complete":
        if payment_status in ("paid", "no_payment_required"):
            return SessionState.PAID
        return SessionState.PROCESSING
    return SessionState.OPEN


def may_replace(old: SessionState, new: SessionState) -> bool:
    """Facts only move forward: late or duplicated snapshots never undo a terminal state."""
    if old in _TERMINAL or new == SessionState.UNKNOWN:
        return False
    if old == SessionState.PROCESSING:
        return new in _TERMINAL
    return True


@dataclass
class Counts:
    """Pending orders per category, by what their session says."""

    expired: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    completed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    open: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))

    def bucket(self, name: str) -> dict[str, int]:
        return {"expired": self.expired, "completed": self.completed, "open": self.open}[name]


def _pack(state: SessionState, category: int, expires_at: int) -> int:
    return (expires_at << 5) | (category << 3) | int(state)


class SessionKnowledge:
    """Facts about the sessions of pending orders, plus the events-feed cursor."""

    def __init__(self) -> None:
        self._facts: dict[str, int] = {}
        self.events_cursor: str | None = None
        self.synced_at: float | None = None  # Stripe time of the last cold or warm sync
        # Stripe time after which every event of a newly created session is still ahead of
        # the cursor: such a session, unseen in the feed, is open until its expires_at.
        self.fresh_after: float | None = None
        self.changes = 0  # bumped by every write; lets a sliced count notice a concurrent one

    def __len__(self) -> int:
        return len(self._facts)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._facts

    def reset(self) -> None:
        self._facts.clear()
        self.events_cursor = None
        self.synced_at = None
        self.fresh_after = None
        self.changes += 1

    def track(self, pending: Iterable[tuple[str, str]]) -> list[str]:
        """Track exactly these (session id, category) pairs; returns the ones not learnt yet."""
        pairs = list(pending)
        unknown = self.mark(pairs)
        self.sweep({session_id for session_id, _ in pairs}, list(self._facts))
        return unknown

    def mark(self, pending: Iterable[tuple[str, str]]) -> list[str]:
        """Track these (session id, category) pairs too; returns the ones not learnt yet.

        In place, so a webhook's fact recorded between two slices is never lost.
        """
        facts = self._facts
        index = _CATEGORY_INDEX
        unknown: list[str] = []
        for session_id, category in pending:
            cat = index[category] << 3
            packed = facts.get(session_id)
            if packed is None:
                facts[session_id] = cat | _UNKNOWN
                unknown.append(session_id)
                continue
            if packed & _CATEGORY_BITS != cat:
                facts[session_id] = (packed & ~_CATEGORY_BITS) | cat
            if packed & 0b111 == _UNKNOWN:
                unknown.append(session_id)
        self.changes += 1
        return unknown

    def sweep(self, keep: Container[str], candidates: Iterable[str]) -> int:
        """Stop tracking those ``candidates`` not in ``keep``; returns how many were dropped.

        ``candidates`` is a slice of a ``list(...)`` of the tracked ids taken beforehand.
        """
        facts = self._facts
        dropped = 0
        for session_id in candidates:
            if session_id not in keep and facts.pop(session_id, None) is not None:
                dropped += 1
        if dropped:
            self.changes += 1
        return dropped

    def tracked_ids(self) -> list[str]:
        return list(self._facts)

    def ensure(self, session_id: str, category: str) -> None:
        """Start tracking one more session (a webhook saw it before any refresh did)."""
        if session_id not in self._facts:
            self._facts[session_id] = _pack(SessionState.UNKNOWN, _CATEGORY_INDEX[category], 0)
            self.changes += 1

    def learn(self, session_id: str, state: SessionState, expires_at: int) -> bool:
        """Record a fact about a tracked session; returns whether anything changed."""
        packed = self._facts.get(session_id)
        if packed is None:
            return False
        old = SessionState(packed & 0b111)
        if old != SessionState.UNKNOWN and not may_replace(old, state):
            return False
        updated = _pack(state, (packed >> 3) & 0b11, expires_at or packed >> 5)
        self._facts[session_id] = updated
        if updated == packed:
            return False
        self.changes += 1
        return True

    def forget(self, session_id: str) -> None:
        if self._facts.pop(session_id, None) is not None:
            self.changes += 1

    def is_unknown(self, session_id: str) -> bool:
        """Tracked and not learnt yet."""
        packed = self._facts.get(session_id)
        return packed is not None and packed & 0b111 == _UNKNOWN

    def sessions_in(self, state: SessionState) -> list[str]:
        return [s for s, p in self._facts.items() if p & 0b111 == state]

    def unknown(self) -> list[str]:
        return [s for s, p in self._facts.items() if p & 0b111 == _UNKNOWN]

    def category(self, session_id: str) -> str | None:
        packed = self._facts.get(session_id)
        return None if packed is None else CATEGORIES[(packed >> 3) & 0b11]

    def state(self, session_id: str, now: float, grace: float = 0.0) -> SessionState | None:
        packed = self._facts.get(session_id)
        if packed is None:
            return None
        return _effective(packed, now, grace)

    def bucket(self, session_id: str, now: float, grace: float = 0.0) -> tuple[str, str] | None:
        """(category, gauge name) the session's pending order counts in, if any."""
        packed = self._facts.get(session_id)
        if packed is None:
            return None
        name = _BUCKETS.get(_effective(packed, now, grace))
        return None if name is None else (CATEGORIES[(packed >> 3) & 0b11], name)

    def packed_values(self) -> list[int]:
        """A copy of every session's packed fact, for :func:`tally` in slices."""
        return list(self._facts.values())

    def counts(self, now: float, grace: float = 0.0) -> Counts:
        totals = new_tally()
        tally(self.packed_values(), now, grace, totals)
        return counts_of(totals)


def new_tally() -> list[int]:
    """Sessions per (state, category) key, ``state | category << 3``."""
    return [0] * 32


def tally(packed: Sequence[int], now: float, grace: float, totals: list[int]) -> None:
    """Add these packed facts to ``totals``; an open session whose ``expires_at + grace`` has
    passed is counted as expired. A few tens of nanoseconds per session."""
    # OPEN is 0, so an open session's packed value is below this exactly when
    # expires_at <= now - grace.
    limit = (math.floor(now - grace) + 1) << 5
    expired = int(SessionState.EXPIRED)
    for p in packed:
        key = p & 31
        if not key & 0b111 and p < limit:
            key |= expired
        totals[key] += 1


def counts_of(totals: Sequence[int]) -> Counts:
    counts = Counts()
    for state, name in _BUCKETS.items():
        bucket = counts.bucket(name)
        for index, category in enumerate(CATEGORIES):
            bucket[category] = totals[int(state) | index << 3]
    return counts


_BUCKETS = {
    SessionState.EXPIRED: "expired",
    SessionState.PAID: "completed",
    SessionState.OPEN: "open",
}


def _effective(packed: int, now: float, grace: float) -> SessionState:
    state = SessionState(packed & 0b111)
    if state == SessionState.OPEN and (packed >> 5) + grace <= now:
        return SessionState.EXPIRED
    return state
