"""Events: what happened to Checkout Sessions, as ``GET /v1/events`` lists them
and as webhooks deliver them. Each event carries a snapshot of the session.

Time and order as Stripe has them: ``created`` is in whole seconds (several events
share one), events older than 30 days are purged, and an event may become visible
in the list a little after later ones (:meth:`EventStore.add` with
``visible_after``). What Stripe answers for a cursor naming a purged event is not
documented; ``purged_cursor`` chooses an invalid-request error or an empty page."""

from __future__ import annotations

import fnmatch
import itertools
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from sortedcontainers import SortedList

from .errors import invalid_request, resource_missing
from .forms import CreatedRange
from .ids import new_id
from .paging import Key, check_cursors, page
from .sessions import SessionRecord

EVENT_TYPES = (
    "checkout.session.completed",
    "checkout.session.expired",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
)

#: How long Stripe keeps events.
RETENTION_SECONDS = 30 * 24 * 60 * 60
#: Ids of purged events remembered (to tell a purged cursor from an unknown one).
MAX_PURGED_IDS = 100_000

PurgedCursor = Literal["error", "empty"]
PURGED_CURSOR_MODES: tuple[PurgedCursor, ...] = ("error", "empty")


@dataclass(slots=True)
class EventRecord:
    """One event. ``pending_webhooks`` counts endpoints that have not yet
    acknowledged it (0 or 1: the sandbox has at most one endpoint)."""

    id: str
    seq: int
    type: str
    created: int
    snapshot: SessionRecord
    api_version: str
    pending_webhooks: int = 0
    request_id: str | None = None
    idempotency_key: str | None = None
    visible_at: float = 0.0  # sandbox time from which the list shows it
    _json: str | None = field(default=None, repr=False)

    @property
    def key(self) -> Key:
        """Position in the sorted indexes: ``(created, seq, id)``."""
        return (self.created, self.seq, self.id)

    @property
    def delivery_success(self) -> bool:
        """Whether every webhook endpoint got it (true when there is none)."""
        return self.pending_webhooks == 0

    def _head(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "event",
            "api_version": self.api_version,
            "created": self.created,
            "livemode": False,
            "pending_webhooks": self.pending_webhooks,
            "request": {"id": self.request_id, "idempotency_key": self.idempotency_key},
            "type": self.type,
        }

    def to_dict(self) -> dict[str, Any]:
        """The ``event`` object as Stripe's API returns it."""
        data = self._head()
        data["data"] = {"object": self.snapshot.to_dict()}
        return data

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text (the session snapshot is encoded once)."""
        if self._json is None:
            self._json = self.snapshot.to_json()
        return json.dumps(self._head())[:-1] + ', "data": {"object": ' + self._json + "}}"


class EventStore:
    """All events of the sandbox, newest last in the sorted indexes. Events not yet
    visible wait outside the indexes (they can be retrieved by id already)."""

    def __init__(self, api_version: str, purged_cursor: PurgedCursor = "error") -> None:
        self.api_version = api_version
        self.purged_cursor: PurgedCursor = purged_cursor
        self.clear()

    def clear(self) -> None:
        """Forget every event."""
        self._by_id: dict[str, EventRecord] = {}
        self._all: SortedList[Key] = SortedList()
        self._by_type: dict[str, SortedList[Key]] = {t: SortedList() for t in EVENT_TYPES}
        self._hidden: list[EventRecord] = []
        self._purged: OrderedDict[str, None] = OrderedDict()
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._by_id)

    def add(
        self,
        event_type: str,
        session: SessionRecord,
        created: float,
        request_id: str | None = None,
        idempotency_key: str | None = None,
        visible_after: float = 0.0,
    ) -> EventRecord:
        """Record a new event about ``session`` (copied as it is now) at sandbox time
        ``created`` (shown in whole seconds); the list shows it ``visible_after``
        seconds later, after events created in between."""
        event = EventRecord(
            id=new_id("evt"),
            seq=next(self._seq),
            type=event_type,
            created=int(created),
            snapshot=session.snapshot(),
            api_version=self.api_version,
            request_id=request_id,
            idempotency_key=idempotency_key,
            visible_at=created + visible_after,
        )
        self._by_id[event.id] = event
        if visible_after > 0:
            self._hidden.append(event)
        else:
            self._index(event)
        return event

    def _index(self, event: EventRecord) -> None:
        self._all.add(event.key)
        self._by_type[event.type].add(event.key)

    def advance(self, now: float) -> int:
        """Show the hidden events whose time has come and purge those older than the
        retention; returns how many were purged."""
        if self._hidden:
            due = [e for e in self._hidden if e.visible_at <= now]
            if due:
                self._hidden = [e for e in self._hidden if e.visible_at > now]
                for event in due:
                    self._index(event)
        cutoff = int(now) - RETENTION_SECONDS
        purged = 0
        while self._all and self._all[0][0] < cutoff:
            key = self._all.pop(0)
            event = self._by_id.pop(key[2])
            self._by_type[event.type].remove(key)
            self._forget(event.id)
            purged += 1
        old_hidden = [e for e in self._hidden if e.created < cutoff]
        for event in old_hidden:
            self._hidden.remove(event)
            del self._by_id[event.id]
            self._forget(event.id)
        return purged + len(old_hidden)

    def _forget(self, event_id: str) -> None:
        self._purged[event_id] = None
        while len(self._purged) > MAX_PURGED_IDS:
            self._purged.popitem(last=False)

    @property
    def hidden(self) -> int:
        """Events created but not yet visible in the list."""
        return len(self._hidden)

    def get(self, event_id: str) -> EventRecord | None:
        """The event, or ``None``."""
        return self._by_id.get(event_id)

    def require(self, event_id: str, param: str = "id", status: int = 404) -> EventRecord:
        """The event, or Stripe's ``resource_missing`` error."""
        event = self._by_id.get(event_id)
        if event is None:
            raise resource_missing("event", event_id, param, status)
        return event

    def _cursor(self, event_id: str | None, param: str) -> EventRecord | None:
        """The event a cursor names; ``None`` when there is no cursor."""
        if not event_id:
            return None
        return self.require(event_id, param, 400)

    def list(
        self,
        *,
        type_filter: str | None,
        types: list[str] | None,
        created: CreatedRange,
        delivery_success: bool | None,
        limit: int,
        starting_after: str | None,
        ending_before: str | None,
    ) -> tuple[list[EventRecord], bool]:
        """One page of ``GET /v1/events``: newest first, and ``has_more``."""
        check_cursors(starting_after, ending_before)
        if type_filter and types:
            raise invalid_request(
                "You may only specify one of these parameters: type, types.", "types"
            )
        if types is not None and len(types) > 20:
            raise invalid_request("You may pass at most 20 values in `types`.", "types")
        cursor = starting_after or ending_before
        if cursor and cursor in self._purged and self.purged_cursor == "empty":
            return [], False
        after = self._cursor(starting_after, "starting_after")
        before = self._cursor(ending_before, "ending_before")
        checks: list[Callable[[EventRecord], bool]] = []
        index = self._all
        if type_filter:
            if "*" in type_filter:
                pattern = type_filter
                checks.append(lambda e: fnmatch.fnmatchcase(e.type, pattern))
            else:
                index = self._by_type.get(type_filter) or SortedList()
        if types:
            wanted = frozenset(types)
            checks.append(lambda e: e.type in wanted)
        if delivery_success is not None:
            flag = delivery_success
            checks.append(lambda e: e.delivery_success == flag)
        by_id = self._by_id
        predicate = None if not checks else (lambda eid: all(check(by_id[eid]) for check in checks))
        ids, has_more = page(
            index,
            created,
            limit,
            starting_after=None if after is None else after.key,
            ending_before=None if before is None else before.key,
            predicate=predicate,
        )
        return [by_id[i] for i in ids], has_more
