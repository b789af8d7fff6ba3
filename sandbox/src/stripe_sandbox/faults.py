"""Fault injection and traffic shaping for ``/v1/``: injected error answers,
hangs and latency per endpoint, a per-endpoint rate limit, and request counters.

An endpoint is named by method and route template, e.g.
``GET /v1/checkout/sessions/{id}``; ``*`` names every ``/v1/`` endpoint.
"""

from __future__ import annotations

import random
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass
from typing import Any

from .errors import RATE_LIMIT_REASONS

#: Fault kinds, and the spellings accepted for them.
FAULT_KINDS = {
    "server_error": "server_error",
    "500": "server_error",
    "api_error": "server_error",
    "unavailable": "unavailable",
    "503": "unavailable",
    "rate_limit": "rate_limit",
    "429": "rate_limit",
    "hang": "hang",
    "timeout": "hang",
    "latency": "latency",
    "malformed": "malformed",
    "unauthorized": "unauthorized",
    "401": "unauthorized",
}


@dataclass(slots=True)
class FaultRule:
    """What to do to matching requests.

    Kinds: ``server_error`` (500 ``api_error``), ``unavailable`` (503),
    ``rate_limit`` (429 with ``Stripe-Rate-Limited-Reason: reason``), ``hang``
    (wait ``seconds``, past the client's timeout, and never process the request),
    ``latency`` (wait ``seconds``, then process it normally), ``malformed``
    (200 with a body that is not JSON), ``unauthorized`` (401).

    It fires on the next ``count`` matching requests, or on each with probability
    ``rate``, or both (``rate`` until it has fired ``count`` times).
    """

    id: int
    endpoint: str
    kind: str
    count: int | None = None
    rate: float | None = None
    seconds: float = 0.0
    reason: str = "endpoint-rate"
    should_retry: bool | None = None
    fired: int = 0

    def exhausted(self) -> bool:
        """Whether it has fired as often as it may."""
        return self.count is not None and self.fired >= self.count

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def make_rule(
    rule_id: int,
    endpoint: str,
    kind: str,
    count: int | None = None,
    rate: float | None = None,
    seconds: float | None = None,
    reason: str | None = None,
    should_retry: bool | None = None,
) -> FaultRule:
    """Check and build a rule; ``ValueError`` explains what is wrong."""
    canonical = FAULT_KINDS.get(kind)
    if canonical is None:
        raise ValueError(f"unknown fault kind {kind!r}; one of {sorted(set(FAULT_KINDS))}")
    if endpoint != "*" and (" " not in endpoint or "/" not in endpoint):
        raise ValueError("endpoint must be '*' or 'METHOD /v1/route/{template}'")
    if count is None and rate is None:
        count = 1
    if count is not None and count < 1:
        raise ValueError("count must be at least 1")
    if rate is not None and not 0.0 <= rate <= 1.0:
        raise ValueError("rate must be between 0 and 1")
    if canonical in ("hang", "latency") and (seconds is None or seconds <= 0):
        raise ValueError(f"a {canonical} fault needs seconds > 0")
    if reason is not None and reason not in RATE_LIMIT_REASONS:
        raise ValueError(f"reason must be one of {list(RATE_LIMIT_REASONS)}")
    method, _, path = endpoint.partition(" ")
    name = "*" if endpoint == "*" else f"{method.upper()} {path}"
    return FaultRule(
        id=rule_id,
        endpoint=name,
        kind=canonical,
        count=count,
        rate=rate,
        seconds=seconds or 0.0,
        reason=reason or "endpoint-rate",
        should_retry=should_retry,
    )


class RateLimiter:
    """At most ``per_second`` requests per endpoint in any sliding one-second window."""

    def __init__(self, per_second: float) -> None:
        self.per_second = per_second
        self._seen: dict[str, deque[float]] = {}

    def allow(self, endpoint: str) -> bool:
        """Count a request; ``False`` if it is over the limit (it is then not counted)."""
        now = time.monotonic()
        window = self._seen.setdefault(endpoint, deque())
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= self.per_second:
            return False
        window.append(now)
        return True


class TrafficControl:
    """Fault rules, added latency, the rate limit and the request counters."""

    def __init__(self, latency_seconds: float = 0.0, rate_limit: float | None = None) -> None:
        self.rules: list[FaultRule] = []
        self.latency_seconds = latency_seconds
        self.limiter: RateLimiter | None = None
        self.set_rate_limit(rate_limit)
        self.counts: Counter[str] = Counter()
        self._next_id = 1
        self._random = random.Random()

    def add(self, **kwargs: Any) -> FaultRule:
        """Add a rule (see :func:`make_rule` for the arguments)."""
        rule = make_rule(self._next_id, **kwargs)
        self._next_id += 1
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Remove every fault rule."""
        self.rules.clear()

    def pick(self, endpoint: str) -> FaultRule | None:
        """The rule that fires on this request, if any (first matching wins)."""
        for rule in self.rules:
            if rule.endpoint not in ("*", endpoint) or rule.exhausted():
                continue
            if rule.rate is not None and self._random.random() >= rule.rate:
                continue
            rule.fired += 1
            if rule.exhausted():
                self.rules.remove(rule)
            return rule
        return None

    def set_rate_limit(self, per_second: float | None) -> None:
        """Set or (``None``) remove the per-endpoint rate limit."""
        if per_second is not None and per_second <= 0:
            raise ValueError("per_second must be positive")
        self.limiter = None if per_second is None else RateLimiter(per_second)

    def allow(self, endpoint: str) -> bool:
        """Whether the rate limit lets this request through."""
        return self.limiter is None or self.limiter.allow(endpoint)

    def count(self, endpoint: str) -> None:
        """Count one request to ``endpoint``."""
        self.counts[endpoint] += 1

    def reset_counts(self) -> None:
        """Zero the request counters."""
        self.counts.clear()

    def reset(self) -> None:
        """Back to no faults, no latency, no rate limit, zero counters."""
        self.clear()
        self.latency_seconds = 0.0
        self.limiter = None
        self.reset_counts()
