"""The one place that calls Stripe: a thin, typed wall over ``stripe.StripeClient`` (async).

Every call passes a per-endpoint pacer (Stripe allows 25 requests/s per endpoint), a
concurrency bound, and jittered backoff on 429 (the SDK never retries those). Stripe errors
become :class:`StripeUnavailable` or :class:`StripeRejected` here, so nothing above this module
imports ``stripe``.

Reads go through the SDK's ``raw_request_async`` and are turned into small snapshots straight
from the JSON: building the SDK's ``StripeObject`` tree costs ~35 ms of CPU per 100-session
list page against ~2 ms for the JSON alone. A gateway built from the settings makes its reads
in the reader process (:mod:`basketball_api.stripe_reader`), so receiving and decoding pages
never holds the event loop; that process's own gateway paces, bounds and retries them, so reads
and writes each have a concurrency bound of ``STRIPE_MAX_CONCURRENCY``. Writes keep the typed
calls, here.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import astuple, dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import quote

import httpx
import stripe

from basketball_api import stripe_reader

if TYPE_CHECKING:  # not imported at run time: the reader process loads this module alone
    from basketball_api.metrics import Metrics
    from basketball_api.settings import Settings

T = TypeVar("T")


class StripeFailure(Exception):
    """Base of the errors this wall raises; ``reason`` is a bounded label value."""

    reason = "stripe_error"
    status_code = 502
    #: True when the request certainly never reached Stripe (refused connection, not sent).
    never_sent = False


class StripeUnavailable(StripeFailure):
    """Stripe could not be reached or answered with a server-side or rate-limit failure."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.status_code = 503


class StripeNotSent(StripeUnavailable):
    """The request waited too long for its turn and was never sent: Stripe knows nothing."""

    never_sent = True

    def __init__(self, message: str) -> None:
        super().__init__(message, "not_sent")


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
    amount_total: int | None = None
    currency: str | None = None
    recovered_from: str | None = None
    payment_intent: str | None = None

    @classmethod
    def from_stripe(cls, obj: Any) -> SessionSnapshot:
        """From a ``StripeObject`` or the plain JSON of a session."""
        data = obj if isinstance(obj, Mapping) else obj.to_dict()
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
            amount_total=_int_or_none(data.get("amount_total")),
            currency=_str_or_none(data.get("currency")),
            recovered_from=_str_or_none(data.get("recovered_from")),
            payment_intent=_id_of(data.get("payment_intent")),
        )


@dataclass(frozen=True, slots=True)
class SessionEvent:
    id: str
    type: str
    created: int
    session: SessionSnapshot


@dataclass(frozen=True)
class Connection:
    """How to reach Stripe, and how fast: all a gateway is built from (here, and in the reader
    process, which builds its own from what a request names)."""

    api_key: str = field(repr=False)
    api_base: str
    timeout_seconds: float = 10.0
    max_network_retries: int = 2
    rate_limit_per_second: float = 20.0
    max_concurrency: int = 8
    rate_limit_retries: int = 4

    @classmethod
    def from_settings(cls, settings: Settings) -> Connection:
        return cls(
            settings.stripe_api_key.get_secret_value(),
            settings.stripe_api_base,
            settings.stripe_timeout_seconds,
            settings.stripe_max_network_retries,
            settings.stripe_rate_limit_per_second,
            settings.stripe_max_concurrency,
            settings.stripe_rate_limit_retries,
        )

    def longest_read_seconds(self) -> float:
        """How long one read can take, every retry and backoff included, and a minute for its
        turn at the pacer and the concurrency bound: past it, the reader lost it."""
        attempt = self.timeout_seconds * (self.max_network_retries + 1) + 8.0
        return attempt * (self.rate_limit_retries + 1) + 60.0

    def client(self) -> tuple[stripe.StripeClient, stripe.HTTPXClient]:
        http = stripe.HTTPXClient(timeout=self.timeout_seconds)
        client = stripe.StripeClient(
            self.api_key,
            base_addresses={"api": self.api_base},
            http_client=http,
            max_network_retries=self.max_network_retries,
        )
        return client, http


# What a GET's JSON is read as: one session, a page of sessions, a page of events.
Shape = Literal["session", "sessions", "events"]


@dataclass(frozen=True, slots=True)
class _Page:
    items: list[Any]  # SessionSnapshot (session, sessions) or SessionEvent (events)
    has_more: bool
    headers: Mapping[str, str]  # the Date header only: Stripe's clock


class Pacer:
    """Sends at most ``rate`` requests per second: never more than ``floor(rate)`` in any
    sliding window of ``floor(rate) / rate`` seconds (one second for a whole rate, as Stripe
    counts), and never two closer than half the average spacing, so no burst follows a pause.

    It remembers when the last requests went, not a refilling budget: a waiter woken late (a
    busy event loop, the interpreter lock held by a worker thread) sends as soon as the window
    allows instead of losing its turn. A token bucket of burst 1 lost 6-20 % of its rate that
    way during a cold listing; a larger burst would break Stripe's 25 in a second. (``limits``'
    moving window counts in whole seconds with no spacing; ``aiolimiter`` is a leaky bucket with
    the same loss.)
    """

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._most = max(1, math.floor(rate))
        self._window = self._most / rate
        self._gap = 0.5 / rate
        self._sent: deque[float] = deque(maxlen=self._most)
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                ready = now
                if len(self._sent) == self._most:
                    ready = max(ready, self._sent[0] + self._window)
                if self._sent:
                    ready = max(ready, self._sent[-1] + self._gap)
                if ready <= now:
                    self._sent.append(now)
                    return
                await self._sleep(ready - now)


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
        reads_elsewhere: tuple[stripe_reader.Reader, Connection] | None = None,
    ) -> None:
        """``reads_elsewhere``: make the reads in that reader's process, which reaches Stripe
        by that connection (see :meth:`connect`); without it they are made here."""
        self._client = client
        self._http_client = http_client
        self._reads_elsewhere = reads_elsewhere
        self._rate = rate_limit_per_second
        self._pacers: dict[str, Pacer] = {}
        self._concurrency = asyncio.Semaphore(max_concurrency)
        self._rate_limit_retries = rate_limit_retries
        self._metrics = metrics
        self.calls = 0
        self.clock_offset_seconds = 0.0
        self._clock_floor = 0.0  # Stripe's clock as last reported: it never moves backwards

    @classmethod
    def connect(
        cls,
        connection: Connection,
        metrics: Metrics | None = None,
        *,
        reader: stripe_reader.Reader | None = None,
    ) -> StripeGateway:
        """A gateway reaching Stripe by ``connection``; its reads are made in ``reader``'s
        process when one is given."""
        client, http_client = connection.client()
        return cls(
            client,
            rate_limit_per_second=connection.rate_limit_per_second,
            max_concurrency=connection.max_concurrency,
            rate_limit_retries=connection.rate_limit_retries,
            metrics=metrics,
            http_client=http_client,
            reads_elsewhere=None if reader is None else (reader, connection),
        )

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics | None = None) -> StripeGateway:
        """The service's gateway: its reads are made in the process's reader, off the loop."""
        connection = Connection.from_settings(settings)
        return cls.connect(connection, metrics, reader=stripe_reader.shared())

    def start(self) -> None:
        """Start the reader process now, at the service's start, not at its first read (if it
        cannot start, the first read says why)."""
        if self._reads_elsewhere is not None:
            with contextlib.suppress(stripe_reader.ReaderGone):
                self._reads_elsewhere[0].start()

    async def aclose(self) -> None:
        if self._http_client is not None:
            await self._http_client.close_async()  # type: ignore[no-untyped-call]

    def stripe_now(self) -> float:
        """Stripe's clock as best known: local time corrected by the last ``Date`` header, and
        never earlier than a time it already reported (a proxy or a skewed edge whose ``Date``
        goes backwards must not bring expired links back to life)."""
        now = max(self._clock_floor, time.time() + self.clock_offset_seconds)
        self._clock_floor = now
        return now

    def clock_at_least(self, moment: float) -> None:
        """Raise the clock's floor to a Stripe time seen elsewhere (another replica, a restart)."""
        self._clock_floor = max(self._clock_floor, moment)

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
        idempotency_key: str | None = None,
        send_by: float | None = None,
    ) -> SessionSnapshot:
        """A Checkout Session for one order.

        ``idempotency_key``: the same key with the same parameters gets the same session back
        (Stripe keeps keys 24 h), so a call whose answer was lost can be asked again.
        ``send_by``: see :meth:`_call`.
        """
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
        options: stripe.RequestOptions = {}
        if idempotency_key is not None:
            options["idempotency_key"] = idempotency_key
        obj = await self._call(
            "POST /v1/checkout/sessions",
            lambda: self._client.v1.checkout.sessions.create_async(
                params,  # type: ignore[arg-type]
                options,
            ),
            send_by=send_by,
        )
        return SessionSnapshot.from_stripe(obj)

    async def retrieve_session(self, session_id: str) -> SessionSnapshot:
        page = await self._read(
            "GET /v1/checkout/sessions/{id}",
            f"/v1/checkout/sessions/{_path_safe(session_id)}",
            {},
            "session",
        )
        snapshot: SessionSnapshot = page.items[0]
        return snapshot

    async def expire_session(self, session_id: str) -> SessionSnapshot:
        obj = await self._call(
            "POST /v1/checkout/sessions/{id}/expire",
            lambda: self._client.v1.checkout.sessions.expire_async(session_id),
        )
        return SessionSnapshot.from_stripe(obj)

    async def list_sessions(
        self, *, created_gte: int, created_lte: int, status: str | None = None
    ) -> list[SessionSnapshot]:
        """Every session created in [created_gte, created_lte] (of ``status``), newest first."""
        pages = self.session_pages(created_gte=created_gte, created_lte=created_lte, status=status)
        return [s async for page in pages for s in page]

    async def session_pages(
        self, *, created_gte: int, created_lte: int, status: str | None = None
    ) -> AsyncIterator[list[SessionSnapshot]]:
        """Every session created in [created_gte, created_lte], a page (up to 100) at a time,
        newest first, so callers write each page as it comes and never hold them all."""
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
            page = await self._read(
                "GET /v1/checkout/sessions", "/v1/checkout/sessions", params, "sessions"
            )
            items: list[SessionSnapshot] = page.items
            more = page.has_more
            if items:
                yield items
            if not more or not items:
                return
            starting_after = items[-1].id

    async def event_pages(
        self, *, created_gte: int, types: Sequence[str]
    ) -> AsyncIterator[list[SessionEvent]]:
        """Every event of these types created at or after ``created_gte``, 100 a page, newest
        first (Stripe's order); each page as it comes."""
        starting_after: str | None = None
        while True:
            params: dict[str, Any] = {
                "limit": 100,
                "types": list(types),
                "created": {"gte": created_gte},
            }
            if starting_after is not None:
                params["starting_after"] = starting_after
            page = await self._read("GET /v1/events", "/v1/events", params, "events")
            batch: list[SessionEvent] = page.items
            more = page.has_more
            if batch:
                yield batch
            if not more or not batch:
                return
            starting_after = batch[-1].id

    # -- the wall ------------------------------------------------------------------------

    async def _read(self, endpoint: str, path: str, params: dict[str, Any], shape: Shape) -> _Page:
        """A GET read as ``shape`` straight from its JSON, without the SDK's object tree: in
        the reader process when the gateway has one, else here."""
        if self._reads_elsewhere is None:
            response = await self._call(
                endpoint, lambda: self._client.raw_request_async("get", path, **params)
            )
            return _page(endpoint, shape, response.data, response.headers)
        reader, connection = self._reads_elsewhere
        request = {
            "connection": astuple(connection),
            "endpoint": endpoint,
            "path": path,
            "params": params,
            "shape": shape,
        }
        try:
            answer = await reader.ask(request, within=connection.longest_read_seconds())
        except stripe_reader.ReaderGone as e:
            self.calls += 1
            self._count(endpoint, "connection")
            raise StripeUnavailable(f"Stripe unreachable on {endpoint}: {e}", "connection") from e
        for outcome in answer["outcomes"]:  # each attempt the reader made (429s retried)
            self.calls += 1
            self._count(endpoint, outcome)
        page = _page_of_answer(shape, answer)
        self._note_server_time(page)
        return page

    async def _call(
        self, endpoint: str, fn: Callable[[], Awaitable[T]], *, send_by: float | None = None
    ) -> T:
        """``fn`` through the pacer, the concurrency bound and the 429 backoff.

        ``send_by`` (a ``time.monotonic()`` moment): if the request has not been sent by then
        (it waited for the pacer or a free slot), :class:`StripeNotSent` is raised and Stripe
        is never asked; once sent, the call is not abandoned.
        """
        pacer = self._pacers.get(endpoint)
        if pacer is None:
            pacer = self._pacers[endpoint] = Pacer(self._rate)
        attempt = 0
        while True:
            await _before(pacer.acquire(), send_by, endpoint)
            await _before(self._concurrency.acquire(), send_by, endpoint)
            try:
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
            finally:
                self._concurrency.release()
            attempt += 1
            # Full jitter: sleep a random share of an exponentially growing cap.
            await asyncio.sleep(random.uniform(0, min(8.0, 0.25 * 2**attempt)))

    def _count(self, endpoint: str, outcome: str) -> None:
        answering = _answering.get()
        if answering is not None:
            answering.append(outcome)
        if self._metrics is not None:
            self._metrics.stripe_requests.labels(endpoint=endpoint, outcome=outcome).inc()

    def _note_server_time(self, result: object) -> None:
        response = getattr(result, "last_response", None) or result
        headers = getattr(response, "headers", None)
        date = headers.get("date") if isinstance(headers, Mapping) else None
        if not date:
            return
        try:
            # IMF-fixdate is 29 characters; a repeated header arrives comma-joined: take the last.
            server = parsedate_to_datetime(date[-29:]).timestamp()
        except (TypeError, ValueError):
            return
        self.clock_offset_seconds = server - time.time()
        if self._metrics is not None:
            self._metrics.clock_offset.set(self.clock_offset_seconds)


async def _before(wait: Awaitable[Any], send_by: float | None, endpoint: str) -> None:
    if send_by is None:
        await wait
        return
    try:
        await asyncio.wait_for(wait, max(0.0, send_by - time.monotonic()))
    except TimeoutError as e:
        raise StripeNotSent(f"{endpoint} not sent: no free slot in time") from e


def _event(e: Mapping[str, Any]) -> SessionEvent:
    return SessionEvent(
        id=str(e["id"]),
        type=str(e["type"]),
        created=int(e.get("created") or 0),
        session=SessionSnapshot.from_stripe(e["data"]["object"]),
    )


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _id_of(value: Any) -> str | None:
    """An expandable field's id, whether Stripe sent the id or the expanded object."""
    return _str_or_none(value.get("id") if isinstance(value, Mapping) else value)


def _path_safe(object_id: str) -> str:
    """An object id as one URL path segment, quoted as the SDK's own retrieve does."""
    return quote(object_id, safe="")


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
        failure = StripeUnavailable(f"Stripe unreachable on {endpoint}: {message}", "connection")
        # The SDK keeps the transport's error as the cause: no connection, no request.
        failure.never_sent = isinstance(error.__cause__, httpx.ConnectError | httpx.ConnectTimeout)
        return failure
    if isinstance(error, stripe.APIError):
        status = error.http_status or 0
        reason = "server_error" if status >= 500 else "bad_response"
        return StripeUnavailable(f"Stripe failed on {endpoint}: {message}", reason)
    return StripeUnavailable(f"Stripe error on {endpoint}: {message}", "stripe_error")


# -- reads, here or in the reader process ----------------------------------------------------


def _page(endpoint: str, shape: Shape, data: object, headers: object) -> _Page:
    if not isinstance(data, Mapping):
        raise StripeUnavailable(f"Stripe answered {endpoint} with no JSON object", "bad_response")
    date = headers.get("date") if isinstance(headers, Mapping) else None
    kept = {"date": date} if date else {}
    if shape == "session":
        return _Page([SessionSnapshot.from_stripe(data)], False, kept)
    found = data.get("data") or ()
    items: list[Any] = [
        _event(e) if shape == "events" else SessionSnapshot.from_stripe(e) for e in found
    ]
    return _Page(items, bool(data.get("has_more")), kept)


def _row(item: SessionSnapshot | SessionEvent) -> list[Any]:
    if isinstance(item, SessionEvent):
        return [item.id, item.type, item.created, list(astuple(item.session))]
    return list(astuple(item))


def _page_of_answer(shape: Shape, answer: Mapping[str, Any]) -> _Page:
    """The page a reader process's answer tells, or the failure it tells, raised."""
    if "failure" in answer:
        kind, message, reason, missing, never_sent = answer["failure"]
        failure: StripeFailure
        if kind == "rejected":
            failure = StripeRejected(message, reason, missing=missing)
        else:
            failure = StripeUnavailable(message, reason)
            failure.never_sent = never_sent
        raise failure
    rows = answer["items"]
    if shape == "events":
        items: list[Any] = [
            SessionEvent(i, t, c, SessionSnapshot(*session)) for i, t, c, session in rows
        ]
    else:
        items = [SessionSnapshot(*row) for row in rows]
    date = answer.get("date")
    return _Page(items, bool(answer["has_more"]), {"date": date} if date else {})


# In the reader process: its gateways (one per connection) and, while it answers a request,
# the outcome of each attempt made for it (the asking gateway counts them as its own).
_gateways: dict[Connection, StripeGateway] = {}
_answering: ContextVar[list[str] | None] = ContextVar("answering", default=None)


async def answer_read(request: Mapping[str, Any]) -> dict[str, Any]:
    """In the reader process: make one read as the asking gateway would have (paced, bounded
    and retried here, where it is sent) and answer with its rows or its failure; never raises."""
    endpoint = str(request.get("endpoint"))
    outcomes: list[str] = []
    _answering.set(outcomes)
    try:
        connection = Connection(*request["connection"])
        gateway = _gateways.get(connection)
        if gateway is None:
            gateway = _gateways[connection] = StripeGateway.connect(connection)
        page = await gateway._read(endpoint, request["path"], request["params"], request["shape"])
        return {
            "items": [_row(x) for x in page.items],
            "has_more": page.has_more,
            "date": page.headers.get("date"),
            "outcomes": outcomes,
        }
    except StripeFailure as failure:
        return {"failure": _failure_fields(failure), "outcomes": outcomes}
    except Exception as e:  # an answer the gateway can report, whatever went wrong
        text = f"Stripe answered {endpoint} unreadably: {type(e).__name__}: {e}"
        return {
            "failure": ["unavailable", text, "bad_response", False, False],
            "outcomes": outcomes,
        }


def _failure_fields(failure: StripeFailure) -> list[Any]:
    """A failure as the answer carries it. Its causes do not cross the pipe: the innermost
    one (a read timeout, a refused connection, under the SDK's error) is named in the first
    line of the text, as the refresher's log names a cause."""
    message = str(failure)
    root: BaseException = failure
    while root.__cause__ is not None:
        root = root.__cause__
    if root is not failure:
        first, newline, rest = message.partition("\n")
        message = f"{first} (cause: {type(root).__name__}){newline}{rest}"
    if isinstance(failure, StripeRejected):
        return ["rejected", message, failure.reason, failure.missing, False]
    return ["unavailable", message, failure.reason, False, failure.never_sent]
