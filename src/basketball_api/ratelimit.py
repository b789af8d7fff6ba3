"""Per-client rate limits on the public endpoints that can cost a Stripe call.

Built on ``limits`` (moving windows; in-memory for one replica, Redis or Memcached through
``RATE_LIMIT_STORAGE_URI`` for several). ``limits`` rather than ``slowapi``: slowapi is a
decorator layer over the same library that wants a ``request`` argument in every endpoint and
answers with its own body; a dependency over ``limits`` answers in this API's error format and
sits next to the route's access rule.

The client is the connection's address: behind a proxy, run uvicorn with ``--proxy-headers``
and ``FORWARDED_ALLOW_IPS`` naming the proxy, so the address is the parent's, not the proxy's.
"""

from __future__ import annotations

import math
import time
from typing import Any

from fastapi import Depends, Request
from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from basketball_api.errors import DomainError
from basketball_api.settings import Settings


class TooManyRequests(DomainError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many requests from this address; retry in {retry_after} s")
        self.headers = {"Retry-After": str(retry_after)}


class RateLimits:
    """The app's limits by name (``orders``, ``pay_link``), each a list of windows."""

    def __init__(self, settings: Settings) -> None:
        storage = storage_from_string(settings.rate_limit_storage_uri)
        if not isinstance(storage, Storage):
            raise ValueError("RATE_LIMIT_STORAGE_URI must name an async storage (async+…://)")
        self._limiter = MovingWindowRateLimiter(storage)
        self._limits: dict[str, list[RateLimitItem]] = {
            "orders": parse_many(settings.order_rate_limit),
            "pay_link": parse_many(settings.pay_link_rate_limit),
            # Counted only on a failed operator login (see ``operators``), tested on every one.
            "operator_login_failures": parse_many(settings.operator_login_failure_limit),
        }

    async def hit(self, name: str, client: str) -> None:
        """Count one request of ``client``; raise :class:`TooManyRequests` past any window."""
        for item in self._limits[name]:
            if not await self._limiter.hit(item, name, client):
                stats = await self._limiter.get_window_stats(item, name, client)
                raise TooManyRequests(max(1, math.ceil(stats.reset_time - time.time())))

    async def check(self, name: str, client: str) -> None:
        """Raise :class:`TooManyRequests` while ``client`` is past a window of ``name``,
        counting nothing (``hit`` counts)."""
        for item in self._limits[name]:
            if not await self._limiter.test(item, name, client):
                stats = await self._limiter.get_window_stats(item, name, client)
                raise TooManyRequests(max(1, math.ceil(stats.reset_time - time.time())))


def rate_limited(name: str) -> Any:
    """A dependency counting the request against the limit ``name``."""

    async def check(request: Request) -> None:
        limits: RateLimits = request.app.state.rate_limits
        await limits.hit(name, request.client.host if request.client else "unknown")

    check.__name__ = f"rate_limit_{name}"
    return Depends(check)
