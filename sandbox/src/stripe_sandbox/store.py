"""Where Checkout Sessions live: by id, in sorted indexes for listing (one overall,
one per status) and in a heap of open sessions by ``expires_at``."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator

from sortedcontainers import SortedList

from .errors import resource_missing
from .forms import CreatedRange
from .paging import Key, check_cursors, page
from .sessions import STATUSES, SessionRecord


class SessionStore:
    """All Checkout Sessions of the sandbox, in memory."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Forget every session."""
        self._by_id: dict[str, SessionRecord] = {}
        self._all: SortedList[Key] = SortedList()
        self._by_status: dict[str, SortedList[Key]] = {s: SortedList() for s in STATUSES}
        self._expiry: list[tuple[int, int, str]] = []
        self._seq = itertools.count()

    def next_seq(self) -> int:
        """A new tie-breaker for sessions created in the same second."""
        return next(self._seq)

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[SessionRecord]:
        return iter(self._by_id.values())

    def get(self, session_id: str) -> SessionRecord | None:
        """The session, or ``None``."""
        return self._by_id.get(session_id)

    def require(self, session_id: str, param: str = "id", status: int = 404) -> SessionRecord:
        """The session, or Stripe's ``resource_missing`` error."""
        record = self._by_id.get(session_id)
        if record is None:
            raise resource_missing("checkout.session", session_id, param, status)
        return record

    def add(self, record: SessionRecord) -> None:
        """Keep a new session."""
        self._by_id[record.id] = record
        self._all.add(record.key)
        self._by_status[record.status].add(record.key)
        if record.status == "open":
            heapq.heappush(self._expiry, (record.expires_at, record.seq, record.id))

    def add_many(self, records: list[SessionRecord]) -> None:
        """Keep many new sessions at once (bulk index update, one heapify)."""
        for record in records:
            self._by_id[record.id] = record
        self._all.update(r.key for r in records)
        for status in STATUSES:
            keys = [r.key for r in records if r.status == status]
            if keys:
                self._by_status[status].update(keys)
        self._expiry.extend((r.expires_at, r.seq, r.id) for r in records if r.status == "open")
        heapq.heapify(self._expiry)

    def set_status(self, record: SessionRecord, status: str) -> None:
        """Move a session to another status (and status index)."""
        if status == record.status:
            return
        self._by_status[record.status].remove(record.key)
        record.status = status
        self._by_status[status].add(record.key)

    def pop_due(self, now: int) -> list[SessionRecord]:
        """Open sessions whose ``expires_at`` has come, oldest deadline first."""
        due: list[SessionRecord] = []
        heap = self._expiry
        while heap and heap[0][0] <= now:
            _, _, session_id = heapq.heappop(heap)
            record = self._by_id.get(session_id)
            if record is not None and record.status == "open":
                due.append(record)
        return due

    def next_expiry(self) -> int | None:
        """The earliest ``expires_at`` still in the heap, if any."""
        return self._expiry[0][0] if self._expiry else None

    def list(
        self,
        *,
        status: str | None,
        created: CreatedRange,
        limit: int,
        starting_after: str | None,
        ending_before: str | None,
        predicate: Callable[[SessionRecord], bool] | None = None,
    ) -> tuple[list[SessionRecord], bool]:
        """One page of ``GET /v1/checkout/sessions``: records newest first, ``has_more``."""
        check_cursors(starting_after, ending_before)
        index = self._all if status is None else self._by_status[status]
        after = None if not starting_after else self.require(starting_after, "starting_after", 400)
        before = None if not ending_before else self.require(ending_before, "ending_before", 400)
        by_id = self._by_id
        test = None if predicate is None else (lambda sid: predicate(by_id[sid]))
        ids, has_more = page(
            index,
            created,
            limit,
            starting_after=None if after is None else after.key,
            ending_before=None if before is None else before.key,
            predicate=test,
        )
        return [by_id[i] for i in ids], has_more

    def statuses(self) -> dict[str, dict[str, str]]:
        """``id -> {"status", "payment_status"}`` for every session."""
        return {
            r.id: {"status": r.status, "payment_status": r.payment_status}
            for r in self._by_id.values()
        }
