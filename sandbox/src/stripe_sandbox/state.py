"""The sandbox as a whole: its clock, sessions, events, webhooks and traffic
control, and the operations that touch several of them (a payment completes a
session and emits an event that a webhook delivers)."""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass
from typing import Any

from .clock import SandboxClock
from .config import SandboxConfig
from .errors import authentication, invalid_request
from .events import EventRecord, EventStore
from .faults import TrafficControl
from .forms import Params
from .idempotency import IdempotencyCache
from .ids import new_id, new_session_id
from .session_params import MAX_EXPIRY_SECONDS, build_session
from .sessions import STATUSES, LineItem, SessionRecord
from .store import SessionStore
from .webhooks import WebhookDispatcher

#: How long a recovery URL stays valid after the session expired.
RECOVERY_SECONDS = 30 * 24 * 60 * 60


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """The API request that caused an event (``event.request``)."""

    id: str | None = None
    idempotency_key: str | None = None


def api_key_from_header(authorization: str | None) -> str | None:
    """The key of ``Authorization: Bearer <key>`` or ``Basic base64(<key>:)``."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value).decode()
        except (binascii.Error, UnicodeDecodeError):
            return value
        return decoded.partition(":")[0] or None
    return authorization


class Sandbox:
    """All state of one sandbox. Not thread-safe: use it from the server's event loop
    (through HTTP, or from handlers)."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.clock = SandboxClock()
        self.sessions = SessionStore()
        self.events = EventStore(self.config.api_version, self.config.purged_event_cursor)
        self.traffic = TrafficControl(
            self.config.latency_seconds, self.config.rate_limit_per_second
        )
        self.idempotency = IdempotencyCache(self.clock.now)
        self.webhooks = WebhookDispatcher(
            self.events.get,
            url=self.config.webhook_url,
            secret=self.config.webhook_secret,
            retry_base_seconds=self.config.webhook_retry_base_seconds,
            max_attempts=self.config.webhook_max_attempts,
            timeout_seconds=self.config.webhook_timeout_seconds,
        )
        self.api_key = self.config.api_key
        self.public_url = self.config.public_url
        self._recovered: dict[str, str] = {}
        self._late_count = 0
        self._late_seconds = 0.0

    # -- requests ----------------------------------------------------------------------

    def page_base(self, request_base: str) -> str:
        """Base URL of the hosted pages: the public URL if set, else the request's."""
        return (self.public_url or request_base).rstrip("/")

    def check_api_key(self, authorization: str | None) -> None:
        """Stripe's 401 unless the request carries an accepted secret key."""
        key = api_key_from_header(authorization)
        if key is None:
            raise authentication(None)
        accepted = key == self.api_key if self.api_key else key.startswith("sk_test_")
        if not accepted or len(key) <= len("sk_test_"):
            raise authentication(key)

    # -- time --------------------------------------------------------------------------

    def sweep(self) -> int:
        """Expire every open session whose ``expires_at`` has come (its event dated
        then), show late events whose time has come, purge events older than 30 days;
        returns how many sessions expired."""
        now = self.clock.now()
        due = self.sessions.pop_due(int(now))
        for record in due:
            self._expire(record, record.expires_at, RequestInfo())
        self.events.advance(now)
        return len(due)

    def advance_clock(self, seconds: float) -> tuple[float, int]:
        """Move the clock forward and expire what is due: ``(now, expired)``."""
        now = self.clock.advance(seconds)
        return now, self.sweep()

    async def run_ticker(self) -> None:
        """Sweep every ``tick_seconds`` until cancelled."""
        while True:
            await asyncio.sleep(self.config.tick_seconds)
            self.sweep()

    # -- sessions ----------------------------------------------------------------------

    def create_session(self, params: Params, request_base: str) -> SessionRecord:
        """``POST /v1/checkout/sessions``."""
        record = build_session(
            params,
            self.clock.now_int(),
            self.sessions.next_seq(),
            self.page_base(request_base),
        )
        self.sessions.add(record)
        return record

    def expire_session(self, session_id: str, request: RequestInfo) -> SessionRecord:
        """``POST /v1/checkout/sessions/{id}/expire``: open sessions only."""
        record = self.sessions.require(session_id)
        if record.status != "open":
            raise invalid_request(
                'Only Checkout Sessions with a status in ["open"] can be expired. This '
                f"Checkout Session has a status of `{record.status}`."
            )
        self._expire(record, self.clock.now(), request)
        return record

    def _expire(self, record: SessionRecord, at: float, request: RequestInfo) -> None:
        self.sessions.set_status(record, "expired")
        if record.recovery_enabled:
            record.recovery_url = f"{record.page_base}/recover/{record.id}"
            record.recovery_expires_at = int(at) + RECOVERY_SECONDS
        self._emit("checkout.session.expired", record, request, at)

    def complete_session(
        self, session_id: str, delayed: bool = False, email: str | None = None
    ) -> SessionRecord:
        """The customer pays: ``status=complete`` and ``payment_status=paid``, or with
        ``delayed`` (a bank debit, say) ``unpaid`` until :meth:`settle_async`."""
        record = self.sessions.require(session_id)
        if record.status != "open":
            raise invalid_request(
                f"This Checkout Session is {record.status}, it cannot be paid.", "id"
            )
        record.payment_status = "unpaid" if delayed else "paid"
        record.payment_intent = new_id("pi")
        record.customer_details = {
            "address": None,
            "business_name": None,
            "email": email or record.customer_email or "customer@example.com",
            "individual_name": None,
            "name": None,
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
        }
        self.sessions.set_status(record, "complete")
        self._emit("checkout.session.completed", record, RequestInfo())
        return record

    def settle_async(self, session_id: str, succeeded: bool) -> SessionRecord:
        """A delayed payment settles: ``async_payment_succeeded`` (now ``paid``) or
        ``async_payment_failed`` (stays ``unpaid``)."""
        record = self.sessions.require(session_id)
        if record.status != "complete" or record.payment_status != "unpaid":
            raise invalid_request(
                "Only a complete Checkout Session whose payment is still pending "
                f"(payment_status=unpaid) can settle; this one is {record.status}/"
                f"{record.payment_status}.",
                "id",
            )
        if succeeded:
            record.payment_status = "paid"
            self._emit("checkout.session.async_payment_succeeded", record, RequestInfo())
        else:
            self._emit("checkout.session.async_payment_failed", record, RequestInfo())
        return record

    def recover(self, session_id: str) -> SessionRecord:
        """Open the recovery URL of an expired session: a new session with the same
        items (``recovered_from`` set); the same one again while it is open."""
        old = self.sessions.require(session_id)
        if old.status != "expired" or not old.recovery_enabled:
            raise invalid_request("This Checkout Session cannot be recovered.", "id")
        now = self.clock.now_int()
        if old.recovery_expires_at is not None and now > old.recovery_expires_at:
            raise invalid_request("The recovery link of this Checkout Session has expired.")
        previous = self.sessions.get(self._recovered.get(session_id, ""))
        if previous is not None and previous.status == "open":
            return previous
        record = SessionRecord(
            id=new_session_id(),
            seq=self.sessions.next_seq(),
            created=now,
            expires_at=now + MAX_EXPIRY_SECONDS,
            currency=old.currency,
            line_items=old.line_items,
            metadata=old.metadata,
            page_base=old.page_base,
            client_reference_id=old.client_reference_id,
            customer_email=old.customer_email,
            success_url=old.success_url,
            cancel_url=old.cancel_url,
            mode=old.mode,
            recovery_enabled=old.recovery_enabled,
            recovery_allow_promotion_codes=old.recovery_allow_promotion_codes,
            recovered_from=old.id,
        )
        self.sessions.add(record)
        self._recovered[session_id] = record.id
        return record

    def seed(
        self,
        count: int,
        created_spread_seconds: float = 0.0,
        expires_in_seconds: int = MAX_EXPIRY_SECONDS,
        metadata: dict[str, str] | None = None,
        statuses: list[str] | None = None,
        amount: int = 2500,
        currency: str = "eur",
        product_name: str = "Season membership",
        page_base: str = "http://127.0.0.1",
    ) -> list[SessionRecord]:
        """Create ``count`` sessions at once, ``created`` spread evenly over the last
        ``created_spread_seconds``, each expiring ``expires_in_seconds`` after its
        creation; ``statuses`` are cycled through (``open`` by default). No events
        are emitted for them; those already past ``expires_at`` expire (with events)
        on the next sweep."""
        if count < 0 or count > 1_000_000:
            raise ValueError("count must be between 0 and 1,000,000")
        cycle = statuses or ["open"]
        for status in cycle:
            if status not in STATUSES:
                raise ValueError(f"unknown status {status!r}")
        now = self.clock.now_int()
        spread = max(0, int(created_spread_seconds))
        shared_metadata = dict(metadata or {})
        items = (
            LineItem(
                id=new_id("li"),
                price_id=new_id("price"),
                product_id=new_id("prod", 14),
                name=product_name,
                currency=currency,
                unit_amount=amount,
                quantity=1,
            ),
        )
        records: list[SessionRecord] = []
        for i in range(count):
            created = now - spread + (i * spread) // max(1, count)
            status = cycle[i % len(cycle)]
            record = SessionRecord(
                id=new_session_id(),
                seq=self.sessions.next_seq(),
                created=created,
                expires_at=created + expires_in_seconds,
                currency=currency,
                line_items=items,
                metadata=shared_metadata,
                page_base=page_base.rstrip("/"),
                success_url="https://example.com/success?session_id={CHECKOUT_SESSION_ID}",
                cancel_url="https://example.com/cancel",
                status=status,
            )
            if status == "complete":
                record.payment_status = "paid"
                record.payment_intent = new_id("pi")
            records.append(record)
        self.sessions.add_many(records)
        return records

    # -- events ------------------------------------------------------------------------

    def delay_next_events(self, count: int, seconds: float) -> None:
        """The next ``count`` events show in ``GET /v1/events`` only ``seconds`` (sandbox
        time) after they were created, so events created after them are listed
        first (webhooks are sent at once, as usual)."""
        if count < 0 or seconds < 0:
            raise ValueError("count and seconds must be >= 0")
        self._late_count, self._late_seconds = count, seconds

    def _emit(
        self,
        event_type: str,
        record: SessionRecord,
        request: RequestInfo,
        at: float | None = None,
    ) -> EventRecord:
        late = 0.0
        if self._late_count > 0:
            self._late_count -= 1
            late = self._late_seconds
        event = self.events.add(
            event_type,
            record,
            self.clock.now() if at is None else at,
            request_id=request.id,
            idempotency_key=request.idempotency_key,
            visible_after=late,
        )
        self.webhooks.enqueue(event)
        return event

    # -- control -----------------------------------------------------------------------

    def reset(self) -> None:
        """Back to the start-up state: no sessions, events, deliveries, faults or
        counters; the clock at real time; settings from the start-up config."""
        self.clock.reset()
        self.sessions.clear()
        self.events.clear()
        self.idempotency.clear()
        self.webhooks.reset()
        self.webhooks.configure(
            self.config.webhook_url,
            self.config.webhook_secret,
            self.config.webhook_retry_base_seconds,
            self.config.webhook_max_attempts,
        )
        self.traffic.reset()
        self.traffic.latency_seconds = self.config.latency_seconds
        self.traffic.set_rate_limit(self.config.rate_limit_per_second)
        self.api_key = self.config.api_key
        self.public_url = self.config.public_url
        self.events.purged_cursor = self.config.purged_event_cursor
        self._recovered.clear()
        self._late_count, self._late_seconds = 0, 0.0

    def describe(self) -> dict[str, Any]:
        """A summary for ``GET /_sandbox/status``."""
        return {
            "now": self.clock.now(),
            "clock_offset": self.clock.offset,
            "sessions": len(self.sessions),
            "events": len(self.events),
            "events_not_yet_visible": self.events.hidden,
            "late_events_pending": self._late_count,
            "purged_event_cursor": self.events.purged_cursor,
            "webhooks": self.webhooks.status(),
            "latency_seconds": self.traffic.latency_seconds,
            "rate_limit_per_second": (
                None if self.traffic.limiter is None else self.traffic.limiter.per_second
            ),
            "fault_rules": [rule.to_dict() for rule in self.traffic.rules],
            "api_key_set": self.api_key is not None,
            "public_url": self.public_url,
        }
