"""A typed, synchronous Python client for the sandbox's ``/_sandbox/`` control
endpoints. Control calls are never counted as Stripe calls.

Example::

    from stripe_sandbox.control import SandboxControl

    with SandboxControl("http://127.0.0.1:12111") as sandbox:
        sandbox.reset()
        sandbox.configure_webhook("http://127.0.0.1:8000/stripe/webhook", "whsec_test")
        sandbox.inject_fault("GET /v1/checkout/sessions", "rate_limit", count=2)
        ...  # drive the service
        sandbox.pay(session_id)                 # the customer pays
        sandbox.advance_clock(24 * 3600)        # the rest expires, no sleeping
        assert sandbox.wait_for_webhooks(timeout=10)
        print(sandbox.request_counts())
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, cast

import httpx

_UNSET: Any = object()


class SandboxControlError(RuntimeError):
    """A control call was refused; ``status`` and ``body`` tell why."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"sandbox control call failed ({status}): {body}")
        self.status = status
        self.body = body


class SandboxControl:
    """Steers a running sandbox at ``base_url`` (e.g. ``http://127.0.0.1:12111``).

    Close it (or use it as a context manager) when done.
    """

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> SandboxControl:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        response = self._http.request(
            method,
            f"/_sandbox{path}",
            json=body,
            params=params,
            timeout=timeout or self._timeout,
        )
        try:
            data = response.json()
        except ValueError:
            data = response.text
        if response.status_code >= 400:
            raise SandboxControlError(response.status_code, data)
        return data

    # -- whole sandbox -----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Clock, counts of sessions and events, webhook queue, faults, settings."""
        return cast(dict[str, Any], self._call("GET", "/status"))

    def reset(self) -> None:
        """Forget all sessions, events, deliveries, faults and counters; clock back to
        real time; settings back to the start-up configuration."""
        self._call("POST", "/reset")

    def configure(
        self,
        *,
        api_key: str | None = _UNSET,
        public_url: str | None = _UNSET,
        purged_event_cursor: str = _UNSET,
    ) -> None:
        """Accept only ``api_key`` (``None``: any ``sk_test_`` key); set the base URL of
        the hosted pages (``None``: the base of each creating request); choose what
        ``GET /v1/events`` answers for a cursor naming an event purged after 30 days
        (``"error"``: 400 ``resource_missing``; ``"empty"``: an empty page)."""
        body: dict[str, Any] = {}
        if api_key is not _UNSET:
            body["api_key"] = api_key
        if public_url is not _UNSET:
            body["public_url"] = public_url
        if purged_event_cursor is not _UNSET:
            body["purged_event_cursor"] = purged_event_cursor
        self._call("POST", "/settings", body)

    # -- clock -------------------------------------------------------------------------

    def now(self) -> float:
        """Current sandbox time (Unix seconds)."""
        return float(self._call("GET", "/clock")["now"])

    def advance_clock(self, seconds: float) -> int:
        """Move the sandbox clock forward; sessions past ``expires_at`` expire at once
        (with their events). Returns how many expired."""
        return int(self._call("POST", "/clock/advance", {"seconds": seconds})["expired"])

    # -- events ------------------------------------------------------------------------

    def delay_next_events(self, count: int, seconds: float) -> None:
        """The next ``count`` events show in ``GET /v1/events`` only ``seconds`` (sandbox
        time) after their ``created``, after events created in between; their
        webhooks go out at once."""
        self._call("POST", "/events/late", {"count": count, "seconds": seconds})

    # -- webhooks ----------------------------------------------------------------------

    def configure_webhook(
        self,
        url: str | None,
        secret: str | None,
        *,
        retry_base_seconds: float | None = None,
        max_attempts: int | None = None,
    ) -> dict[str, Any]:
        """Deliver events to ``url`` signed with ``secret`` (``url=None``: deliver
        nothing). Optionally change the retry policy: first retry after
        ``retry_base_seconds``, doubling, ``max_attempts`` tries in all."""
        body: dict[str, Any] = {"url": url, "secret": secret}
        if retry_base_seconds is not None:
            body["retry_base_seconds"] = retry_base_seconds
        if max_attempts is not None:
            body["max_attempts"] = max_attempts
        return cast(dict[str, Any], self._call("POST", "/webhooks", body))

    def webhook_status(self) -> dict[str, Any]:
        """Endpoint, retry policy, queue sizes and pending faults of webhook delivery."""
        return cast(dict[str, Any], self._call("GET", "/webhooks"))

    def drop_next_webhooks(self, count: int, *, mark_delivered: bool = True) -> None:
        """Lose the next ``count`` events (never delivered, never retried). With
        ``mark_delivered`` Stripe's side believes they arrived (``pending_webhooks``
        0), as when the receiver lost them; otherwise they stay pending."""
        self._call("POST", "/webhooks/drop", {"count": count, "mark_delivered": mark_delivered})

    def duplicate_next_webhooks(self, count: int) -> None:
        """Deliver each of the next ``count`` events twice."""
        self._call("POST", "/webhooks/duplicate", {"count": count})

    def reorder_next_webhooks(self, count: int) -> None:
        """Hold the next ``count`` events, then deliver them newest first (also on
        :meth:`flush_webhooks`)."""
        self._call("POST", "/webhooks/reorder", {"count": count})

    def flush_webhooks(self) -> int:
        """Release held (reordered) events now; returns how many."""
        return int(self._call("POST", "/webhooks/flush")["released"])

    def wait_for_webhooks(self, timeout: float = 10.0) -> bool:
        """Block until no delivery is queued, in flight or waiting for a retry (held
        events aside). ``False`` if still busy after ``timeout`` seconds."""
        data = self._call("POST", "/webhooks/wait", {"timeout": timeout}, timeout=timeout + 10)
        return bool(data["idle"])

    def deliveries(self, event_id: str | None = None) -> list[dict[str, Any]]:
        """Delivery attempts, oldest first: ``event_id``, ``event_type``, ``attempt``,
        ``outcome`` (``delivered``/``failed``/``dropped``), ``status_code``, ``error``,
        ``at``, ``url``, ``duplicate``."""
        params = None if event_id is None else {"event_id": event_id}
        return cast(
            list[dict[str, Any]], self._call("GET", "/webhooks/deliveries", params=params)["data"]
        )

    # -- faults and traffic ------------------------------------------------------------

    def inject_fault(
        self,
        endpoint: str,
        kind: str,
        count: int | None = None,
        rate: float | None = None,
        reason: str | None = None,
        seconds: float | None = None,
        should_retry: bool | None = None,
    ) -> dict[str, Any]:
        """Make requests to ``endpoint`` (``"GET /v1/checkout/sessions"``,
        ``"POST /v1/checkout/sessions/{id}/expire"``, ... or ``"*"``) fail.

        ``kind``: ``server_error`` (500), ``unavailable`` (503), ``rate_limit`` (429,
        ``reason`` one of ``global-concurrency``, ``global-rate``,
        ``endpoint-concurrency``, ``endpoint-rate``, ``resource-specific``), ``hang``
        (no answer for ``seconds``, request not processed), ``latency`` (answer
        ``seconds`` late, request processed), ``malformed`` (200, body not JSON),
        ``unauthorized`` (401). It fires on the next ``count`` requests (1 if neither
        ``count`` nor ``rate`` is given) or with probability ``rate``.
        ``should_retry`` adds ``Stripe-Should-Retry``. Returns the rule."""
        body: dict[str, Any] = {"endpoint": endpoint, "kind": kind}
        for name, value in (
            ("count", count),
            ("rate", rate),
            ("reason", reason),
            ("seconds", seconds),
            ("should_retry", should_retry),
        ):
            if value is not None:
                body[name] = value
        return cast(dict[str, Any], self._call("POST", "/faults", body))

    def faults(self) -> list[dict[str, Any]]:
        """Fault rules still active."""
        return cast(list[dict[str, Any]], self._call("GET", "/faults")["data"])

    def clear_faults(self) -> None:
        """Remove every fault rule."""
        self._call("DELETE", "/faults")

    def set_latency(self, seconds: float) -> None:
        """Delay every ``/v1/`` request by ``seconds`` (concurrent requests overlap)."""
        self._call("POST", "/latency", {"seconds": seconds})

    def set_rate_limit(self, per_second: float | None) -> None:
        """Answer 429 ``endpoint-rate`` beyond ``per_second`` requests per endpoint in
        any one-second window (Stripe's default is 25); ``None`` removes the limit."""
        self._call("POST", "/rate-limit", {"per_second": per_second})

    def request_counts(self) -> dict[str, int]:
        """Requests received per endpoint, e.g. ``{"GET /v1/events": 3}``."""
        return cast(dict[str, int], self._call("GET", "/requests")["counts"])

    def reset_request_counts(self) -> None:
        """Zero the request counters."""
        self._call("DELETE", "/requests")

    # -- sessions ----------------------------------------------------------------------

    def seed(
        self,
        count: int,
        *,
        created_spread_seconds: float = 0.0,
        expires_in_seconds: int = 24 * 3600,
        metadata: dict[str, str] | None = None,
        statuses: list[str] | None = None,
        amount: int = 2500,
        currency: str = "eur",
        product_name: str = "Season membership",
    ) -> list[dict[str, Any]]:
        """Create ``count`` sessions fast (no events): ``created`` spread evenly over
        the last ``created_spread_seconds``, each expiring ``expires_in_seconds`` after
        its creation, ``statuses`` cycled (``["open"]`` by default). Returns
        ``[{"id", "created", "expires_at", "status"}]`` oldest first."""
        body: dict[str, Any] = {
            "count": count,
            "created_spread_seconds": created_spread_seconds,
            "expires_in_seconds": expires_in_seconds,
            "metadata": metadata or {},
            "amount": amount,
            "currency": currency,
            "product_name": product_name,
        }
        if statuses is not None:
            body["statuses"] = statuses
        return cast(list[dict[str, Any]], self._call("POST", "/seed", body, timeout=300))

    def sessions(self, status: str | None = None) -> dict[str, dict[str, str]]:
        """Ground truth: ``{id: {"status", "payment_status"}}``, optionally of one status."""
        params = None if status is None else {"status": status}
        return cast(dict[str, dict[str, str]], self._call("GET", "/sessions", params=params))

    def session(self, session_id: str) -> dict[str, Any]:
        """One session as Stripe would show it (line items expanded), uncounted."""
        return cast(dict[str, Any], self._call("GET", f"/sessions/{session_id}"))

    def pay(
        self, session_id: str, *, delayed: bool = False, email: str | None = None
    ) -> dict[str, Any]:
        """Complete an open session as the hosted page's Pay button does
        (``checkout.session.completed``). With ``delayed`` the payment stays
        ``unpaid`` until :meth:`complete_async`."""
        body: dict[str, Any] = {"delayed": delayed}
        if email is not None:
            body["email"] = email
        return cast(dict[str, Any], self._call("POST", f"/sessions/{session_id}/pay", body))

    def complete_async(self, session_id: str, succeeded: bool) -> dict[str, Any]:
        """Settle a delayed payment: ``async_payment_succeeded`` (now ``paid``) or
        ``async_payment_failed``."""
        return cast(
            dict[str, Any],
            self._call("POST", f"/sessions/{session_id}/settle", {"succeeded": succeeded}),
        )

    def expire(self, session_id: str) -> dict[str, Any]:
        """Expire an open session now (like the API's expire, but uncounted)."""
        return cast(dict[str, Any], self._call("POST", f"/sessions/{session_id}/expire"))
