"""The one place that calls Stripe: a thin, typed wall over ``stripe.StripeClient`` (async).

Every call passes a per-endpoint token bucket (Stripe allows 25 requests/s per endpoint), a
concurrency bound, and jittered backoff on 429 (the SDK never retries those). Stripe errors
become :class:`StripeUnavailable` or :class:`StripeRejected` here, so nothing above this module
imports ``stripe``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import stripe

from basketball_api.metrics import Metrics
from basketball_api.settings import Settings

T = TypeVar("T")

POLLED_EVENT_TYPES = (
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
)


class StripeFailure(Exception):
    """Base of the errors this wall raises; ``reason`` is a bounded label value."""

    reason = "stripe_error"
    status_code = 502


class StripeUnavailable(StripeFailure):
    """Stripe could not be reached or answered with a server-side or rate-limit failure."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.status_code = 503


class StripeRejected(StripeFailure):
    """Stripe refused the request itself (bad key, bad parameters, unknown object)."""

    def __init__(self, message: str, reason: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.missing = missing


@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    """What the service needs to know of one Checkout Session."""

    id: str
    status: str
    payment_status: str
    created: int
    expires_at: int
    url: str | None = None
    client_reference_id: str | None = None
    recovery_url: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_stripe(cls, obj: Any) -> SessionSnapshot:
        data = obj if isinstance(obj, dict) else obj.to_dict()
        recovery = ((data.get("after_expiration") or {}).get("recovery") or {}).get("url")
        return cls(
            id=data["id"],
            status=data.get("status") or "open",
            payment_status=data.get("payment_status") or "unpaid",
            created=int(data.get("created") or 0),
            expires_at=int(data.get("expires_at") or 0),
            url=data.get("url"),
            client_reference_id=data.get("client_reference_id"),
            recovery_url=recovery,
            metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
        )


@dataclass(frozen=True, slots=True)
class SessionEvent:
    id: str
    type: str
    created: int
    session: SessionSnapshot


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[SessionEvent]  # oldest first
    newest_id: str | None


class TokenBucket:
    """Allows ``rate`` acquisitions per second on average, bursts up to ``rate``."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._capacity = max(1.0, rate)
        self._tokens = self._capacity
        self._clock = clock
        self._updated = clock()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                self._tokens = min(
                    self._capacity, self._tokens + (now - self._updated) * self._rate
                )
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self._rate)


class StripeGateway:
    """Typed Stripe calls used by orders, webhooks and the refresher."""

    def __init__(
        self,
        client: stripe.StripeClient,
        *,
        rate_limit_per_second: float = 20.0,
        max_concurrency: int = 8,
        rate_limit_retries: int = 4,
        metrics: Metrics | None = None,
        http_client: stripe.HTTPXClient | None = None,
    ) -> None:
        self._client = client
        self._http_client = http_client
        self._rate = rate_limit_per_second
        self._buckets: dict[str, TokenBucket] = {}
        self._concurrency = asyncio.Semaphore(max_concurrency)
        self._rate_limit_retries = rate_limit_retries
        self._metrics = metrics
        self.calls = 0
        self.clock_offset_seconds = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics | None = None) -> StripeGateway:
        http_client = stripe.HTTPXClient(timeout=settings.stripe_timeout_seconds)
        client = stripe.StripeClient(
            settings.stripe_api_key.get_secret_value(),
            base_addresses={"api": settings.stripe_api_base},
            http_client=http_client,
            max_network_retries=settings.stripe_max_network_retries,
        )
        return cls(
            client,
            rate_limit_per_second=settings.stripe_rate_limit_per_second,
            max_concurrency=settings.stripe_max_concurrency,
            rate_limit_retries=settings.stripe_rate_limit_retries,
            metrics=metrics,
            http_client=http_client,
        )

    async def aclose(self) -> None:
        if self._http_client is not None:
            await self._http_client.close_async()  # type: ignore[no-untyped-call]

    def stripe_now(self) -> float:
        """Stripe's clock as best known: local time corrected by the last ``Date`` header."""
        return time.time() + self.clock_offset_seconds

    # -- typed calls ---------------------------------------------------------------------

    async def create_checkout_session(
        self,
        *,
        order_id: int,
        category: str,
        product_name: str,
        unit_amount: int,
        quantity: int,
        currency: str,
        customer_email: str,
        success_url: str,
        cancel_url: str,
        expires_at: int | None = None,
    ) -> SessionSnapshot:
        params: dict[str, Any] = {
            "mode": "payment",
            "line_items": [
                {
                    "price_data": {
                        "currency": currency,
                        "unit_amount": unit_amount,
                        "product_data": {"name": product_name},
                    },
                    "quantity": quantity,
                }
            ],
            "client_reference_id": str(order_id),
            "metadata": {"order_id": str(order_id), "category": category},
            "customer_email": customer_email,
            "success_url": success_url,
            "cancel_url": cancel_url,
            "after_expiration": {"recovery": {"enabled": True}},
        }
        if expires_at is not None:
            params["expires_at"] = expires_at
        obj = await self._call(
            "POST /v1/checkout/sessions",
            lambda: self._client.v1.checkout.sessions.create_async(params),  # type: ignore[arg-type]
        )
        return SessionSnapshot.from_stripe(obj)

    async def retrieve_session(self, session_id: str) -> SessionSnapshot:
        obj = await self._call(
            "GET /v1/checkout/sessions/{id}",
            lambda: self._client.v1.checkout.sessions.retrieve_async(session_id),
        )
        return SessionSnapshot.from_stripe(obj)

    async def expire_session(self, session_id: str) -> SessionSnapshot:
        obj = await self._call(
            "POST /v1/checkout/sessions/{id}/expire",
            lambda: self._client.v1.checkout.sessions.expire_async(session_id),
        )
        return SessionSnapshot.from_stripe(obj)

    async def list_sessions(
        self, *, created_gte: int, created_lte: int, status: str | None = None
    ) -> list[SessionSnapshot]:
        """Every session created in [created_gte, created_lte], 100 per page, newest first."""
        out: list[SessionSnapshot] = []
        starting_after: str | None = None
        while True:
            params: dict[str, Any] = {
                "limit": 100,
                "created": {"gte": created_gte, "lte": created_lte},
            }
            if status is not None:
                params["status"] = status
            if starting_after is not None:
                params["starting_after"] = starting_after
            page = await self._call(
                "GET /v1/checkout/sessions",
                lambda p=params: self._client.v1.checkout.sessions.list_async(p),  # type: ignore[misc]
            )
            items = [SessionSnapshot.from_stripe(s) for s in page.data]
            out.extend(items)
            if not page.has_more or not items:
                return out
            starting_after = items[-1].id

    async def latest_event_id(self, types: Sequence[str] = POLLED_EVENT_TYPES) -> str | None:
        page = await self._call(
            "GET /v1/events",
            lambda: self._client.v1.events.list_async({"limit": 1, "types": list(types)}),
        )
        return page.data[0].id if page.data else None

    async def events_after(
        self, cursor: str, types: Sequence[str] = POLLED_EVENT_TYPES
    ) -> EventPage:
        """Every event newer than ``cursor``, oldest first, walking forward 100 at a time."""
        events: list[SessionEvent] = []
        newest = cursor
        while True:
            params = {"limit": 100, "types": list(types), "ending_before": newest}
            page = await self._call(
                "GET /v1/events",
                lambda p=params: self._client.v1.events.list_async(p),  # type: ignore[misc]
            )
            if not page.data:
                break
            batch = [_event(e) for e in page.data]
            events.extend(reversed(batch))
            newest = batch[0].id
            if not page.has_more:
                break
        return EventPage(events=events, newest_id=newest)

    async def events_since(
        self, created_gte: int, types: Sequence[str] = POLLED_EVENT_TYPES
    ) -> EventPage:
        """Every event created at or after ``created_gte``, oldest first."""
        events: list[SessionEvent] = []
        starting_after: str | None = None
        while True:
            params: dict[str, Any] = {
                "limit": 100,
                "types": list(types),
                "created": {"gte": created_gte},
            }
            if starting_after is not None:
                params["starting_after"] = starting_after
            page = await self._call(
                "GET /v1/events",
                lambda p=params: self._client.v1.events.list_async(p),  # type: ignore[misc]
            )
            batch = [_event(e) for e in page.data]
            events.extend(batch)
            if not page.has_more or not batch:
                break
            starting_after = batch[-1].id
        events.reverse()
        return EventPage(events=events, newest_id=events[-1].id if events else None)

    # -- the wall ------------------------------------------------------------------------

    async def _call(self, endpoint: str, fn: Callable[[], Awaitable[T]]) -> T:
        bucket = self._buckets.get(endpoint)
        if bucket is None:
            bucket = self._buckets[endpoint] = TokenBucket(self._rate)
        attempt = 0
        while True:
            await bucket.acquire()
            async with self._concurrency:
                self.calls += 1
                try:
                    result = await fn()
                except stripe.RateLimitError as e:
                    self._count(endpoint, "rate_limited")
                    if attempt >= self._rate_limit_retries:
                        raise StripeUnavailable(
                            f"Stripe rate limit on {endpoint}: {_reason_of(e)}", "rate_limited"
                        ) from e
                except stripe.StripeError as e:
                    failure = _translate(endpoint, e)
                    self._count(endpoint, failure.reason)
                    raise failure from e
                else:
                    self._count(endpoint, "ok")
                    self._note_server_time(result)
                    return result
            attempt += 1
            # Full jitter: sleep a random share of an exponentially growing cap.
            await asyncio.sleep(random.uniform(0, min(8.0, 0.25 * 2**attempt)))

    def _count(self, endpoint: str, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.stripe_requests.labels(endpoint=endpoint, outcome=outcome).inc()

    def _note_server_time(self, result: object) -> None:
        response = getattr(result, "last_response", None)
        date = response.headers.get("date") if response is not None else None
        if not date:
            return
        try:
            # IMF-fixdate is 29 characters; a repeated header arrives comma-joined: take the last.
            server = parsedate_to_datetime(date[-29:]).timestamp()
        except (TypeError, ValueError):
            return
        self.clock_offset_seconds = server - time.time()


def _event(e: Any) -> SessionEvent:
    return SessionEvent(
        id=e.id,
        type=e.type,
        created=int(e.created),
        session=SessionSnapshot.from_stripe(e.data.object),
    )


def _reason_of(error: stripe.StripeError) -> str:
    headers = error.headers or {}
    return str(headers.get("stripe-rate-limited-reason") or "unknown")


def _translate(endpoint: str, error: stripe.StripeError) -> StripeFailure:
    message = error.user_message or str(error) or type(error).__name__
    if isinstance(error, stripe.AuthenticationError | stripe.PermissionError):
        return StripeRejected(f"Stripe refused the API key on {endpoint}", "auth")
    if isinstance(error, stripe.InvalidRequestError):
        missing = error.code == "resource_missing"
        return StripeRejected(
            f"Stripe rejected {endpoint}: {message}",
            "not_found" if missing else "invalid_request",
            missing=missing,
        )
    if isinstance(error, stripe.APIConnectionError):
        return StripeUnavailable(f"Stripe unreachable on {endpoint}: {message}", "connection")
    if isinstance(error, stripe.APIError):
        status = error.http_status or 0
        reason = "server_error" if status >= 500 else "bad_response"
        return StripeUnavailable(f"Stripe failed on {endpoint}: {message}", reason)
    return StripeUnavailable(f"Stripe error on {endpoint}: {message}", "stripe_error")
