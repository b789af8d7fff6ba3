"""Test doubles for the refresher's collaborators."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from basketball_api.stripe_gateway import (
    EventPage,
    SessionEvent,
    SessionSnapshot,
    StripeFailure,
)


class FakeStripe:
    """An in-memory ``SessionSource``: sessions, an events feed, a call counter, failures."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now
        self.sessions: dict[str, SessionSnapshot] = {}
        self.events: list[SessionEvent] = []
        self.calls = 0
        self.fail_with: StripeFailure | None = None

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

    def complete(self, sid: str) -> None:
        old = self.sessions[sid]
        snap = SessionSnapshot(sid, "complete", "paid", old.created, old.expires_at)
        self.sessions[sid] = snap
        self.events.append(
            SessionEvent(
                f"evt_{len(self.events)}", "checkout.session.completed", int(self.now), snap
            )
        )

    def _call(self) -> None:
        self.calls += 1
        if self.fail_with is not None:
            raise self.fail_with

    def stripe_now(self) -> float:
        return self.now

    async def latest_event_id(self) -> str | None:
        self._call()
        return self.events[-1].id if self.events else None

    async def events_after(self, cursor: str) -> EventPage:
        self._call()
        ids = [e.id for e in self.events]
        newer = self.events[ids.index(cursor) + 1 :]
        return EventPage(newer, newer[-1].id if newer else cursor)

    async def events_since(self, created_gte: int) -> EventPage:
        self._call()
        newer = [e for e in self.events if e.created >= created_gte]
        return EventPage(newer, newer[-1].id if newer else None)

    async def list_sessions(
        self, *, created_gte: int, created_lte: int, status: str | None = None
    ) -> list[SessionSnapshot]:
        self._call()
        return [
            s
            for s in self.sessions.values()
            if created_gte <= s.created <= created_lte and status in (None, s.status)
        ]

    async def retrieve_session(self, session_id: str) -> SessionSnapshot:
        self._call()
        return self.sessions[session_id]


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header value in Stripe's scheme."""
    import hashlib
    import hmac
    import time

    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


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
) -> dict[str, object]:
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
