"""Test doubles for the refresher's collaborators."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, TypedDict

from sqlalchemy.orm import Session, sessionmaker

from basketball_api.poller import SessionSource
from basketball_api.stripe_gateway import (
    SessionEvent,
    SessionSnapshot,
    StripeFailure,
    StripeRejected,
)

EVENTS_KEPT_SECONDS = 30 * 24 * 3600


class FakeStripe:
    """An in-memory ``SessionSource``: sessions, an events feed (kept 30 days, each event
    visible from a time of its own), a call counter, failures on demand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now
        self.sessions: dict[str, SessionSnapshot] = {}
        self.events: list[SessionEvent] = []
        self.visible_at: dict[str, float] = {}
        self.calls = 0
        self.listings = 0  # GET /v1/checkout/sessions pages
        self.fail_with: StripeFailure | None = None
        self.clock_floor = 0.0

    def add(
        self,
        sid: str,
        status: str = "open",
        *,
        created: int | None = None,
        payment_status: str = "unpaid",
        lifetime: int = 86400,
    ) -> SessionSnapshot:
        created = int(self.now) if created is None else created
        snap = SessionSnapshot(sid, status, payment_status, created, created + lifetime)
        self.sessions[sid] = snap
        return snap

    def _emit(self, kind: str, snap: SessionSnapshot, *, late_by: float = 0.0) -> None:
        event = SessionEvent(f"evt_{len(self.events)}", kind, int(self.now), snap)
        self.events.append(event)
        self.visible_at[event.id] = self.now + late_by

    def _set(self, sid: str, status: str, payment_status: str) -> SessionSnapshot:
        old = self.sessions[sid]
        snap = SessionSnapshot(sid, status, payment_status, old.created, old.expires_at)
        self.sessions[sid] = snap
        return snap

    def complete(self, sid: str, payment_status: str = "paid", *, late_by: float = 0.0) -> None:
        snap = self._set(sid, "complete", payment_status)
        self._emit("checkout.session.completed", snap, late_by=late_by)

    def settle(self, sid: str, *, succeeded: bool) -> None:
        """A delayed payment's outcome (Stripe's snapshot stays complete/unpaid on failure)."""
        snap = self._set(sid, "complete", "paid" if succeeded else "unpaid")
        kind = "succeeded" if succeeded else "failed"
        self._emit(f"checkout.session.async_payment_{kind}", snap)

    def expire(self, sid: str, *, late_by: float = 0.0) -> None:
        """Expired early (the dashboard, another integration): an event, maybe no webhook."""
        snap = self._set(sid, "expired", self.sessions[sid].payment_status)
        self._emit("checkout.session.expired", snap, late_by=late_by)

    def forget(self, sid: str) -> None:
        """Stripe no longer knows the session (a data reset, another account's key)."""
        del self.sessions[sid]

    def _call(self) -> None:
        self.calls += 1
        if self.fail_with is not None:
            raise self.fail_with

    def stripe_now(self) -> float:
        self.clock_floor = max(self.clock_floor, self.now)
        return self.clock_floor

    def clock_at_least(self, moment: float) -> None:
        self.clock_floor = max(self.clock_floor, moment)

    async def event_pages(
        self, *, created_gte: int, types: Sequence[str]
    ) -> AsyncIterator[list[SessionEvent]]:
        assert len(types) <= 20
        visible = [
            e
            for e in reversed(self.events)
            if e.created >= created_gte
            and e.type in types
            and self.visible_at[e.id] <= self.now
            and e.created > self.now - EVENTS_KEPT_SECONDS
        ]
        for start in range(0, max(1, len(visible)), 100):
            self._call()
            page = visible[start : start + 100]
            if page:
                yield page

    async def session_pages(
        self, *, created_gte: int, created_lte: int
    ) -> AsyncIterator[list[SessionSnapshot]]:
        found = sorted(
            (s for s in self.sessions.values() if created_gte <= s.created <= created_lte),
            key=lambda s: -s.created,
        )
        for start in range(0, max(1, len(found)), 100):
            self._call()
            self.listings += 1
            page = found[start : start + 100]
            if page:
                yield page

    async def retrieve_session(self, session_id: str) -> SessionSnapshot:
        self._call()
        snap = self.sessions.get(session_id)
        if snap is None:
            raise StripeRejected("No such checkout.session", "not_found", missing=True)
        return snap


_: type[SessionSource] = FakeStripe


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header value in Stripe's scheme."""
    import hashlib
    import hmac
    import time

    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


class Money(TypedDict):
    """What a session of an order carries besides its state, to spread into
    :func:`session_event`."""

    amount_total: int
    currency: str


class SessionState(TypedDict, total=False):
    """A session's state, as keywords to spread into :func:`session_event`."""

    status: str
    payment_status: str


def session_event(
    event_id: str,
    kind: str,
    *,
    session_id: str,
    order_id: int,
    status: str = "complete",
    payment_status: str = "paid",
    amount_total: int | None = None,
    currency: str | None = None,
    recovered_from: str | None = None,
) -> dict[str, Any]:
    """A Stripe event carrying a Checkout Session snapshot.

    A payment applies only to an order whose own link the session is (see :func:`own_links`)
    and only with the order's amount and currency.
    """
    extra = {
        k: v
        for k, v in (
            ("amount_total", amount_total),
            ("currency", currency),
            ("recovered_from", recovered_from),
        )
        if v is not None
    }
    return {
        "id": event_id,
        "object": "event",
        "type": kind,
        "created": 1_800_000_000,
        "data": {
            "object": {
                "id": session_id,
                "object": "checkout.session",
                "status": status,
                "payment_status": payment_status,
                "client_reference_id": str(order_id),
                "created": 1_800_000_000,
                "expires_at": 1_800_086_400,
                "metadata": {"order_id": str(order_id)},
                **extra,
            }
        },
    }


def own_links(factory: sessionmaker[Session], order_id: int, *session_ids: str) -> dict[str, Any]:
    """Make ``session_ids`` the order's links (the last one current), as creating their
    Checkout Sessions would; returns the ``amount_total``/``currency`` its sessions carry."""
    from datetime import UTC, datetime

    from sqlalchemy import update

    from basketball_api.db import transaction
    from basketball_api.models import CheckoutLink, Order
    from basketball_api.orders import attach_session

    with transaction(factory) as db:
        order = db.get(Order, order_id)
        assert order is not None
        for sid in session_ids:
            db.execute(  # a reissue retires the link it replaces
                update(CheckoutLink)
                .where(CheckoutLink.order_id == order_id)
                .values(replaced_at=datetime.now(UTC))
            )
            attach_session(
                db, order, SessionSnapshot(sid, "open", "unpaid", 1_800_000_000, 1_800_086_400)
            )
            db.flush()
        return {"amount_total": order.amount, "currency": order.currency}


def app_sessions(client: Any) -> sessionmaker[Session]:
    """The session factory of a running app (a ``TestClient`` inside its ``with``)."""
    factory: sessionmaker[Session] = client.app.state.services.sessions
    return factory


def deliver_signed(client: Any, event: dict[str, Any], secret: str) -> str:
    """POST ``event`` to the webhook signed with ``secret``; the 200 answer's ``status``."""
    import json

    payload = json.dumps(event).encode()
    r = client.post(
        "/webhooks/stripe", content=payload, headers={"Stripe-Signature": sign(payload, secret)}
    )
    assert r.status_code == 200, r.text
    status: str = r.json()["status"]
    return status
