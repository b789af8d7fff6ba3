"""Start-up settings of the Stripe sandbox."""

from __future__ import annotations

from dataclasses import dataclass

from .events import PurgedCursor

#: The API version the sandbox reports on events (the one stripe-python 16 pins).
DEFAULT_API_VERSION = "2026-10-28.endive"


@dataclass
class SandboxConfig:
    """How a sandbox starts. Everything except ``api_version`` can be changed later
    through the control endpoints (see :class:`stripe_sandbox.control.SandboxControl`).

    Attributes:
        api_key: the only secret key accepted on ``/v1/``; ``None`` accepts any
            ``sk_test_...`` key.
        webhook_url: where events are POSTed; ``None`` delivers nothing.
        webhook_secret: the ``whsec_...`` secret that signs deliveries.
        public_url: base of the hosted checkout and recovery pages
            (e.g. ``http://localhost:12111``); ``None`` uses the base of the request
            that created the session.
        latency_seconds: delay added to every ``/v1/`` request.
        rate_limit_per_second: requests per second allowed per endpoint (Stripe's
            default is 25); ``None`` means unlimited.
        webhook_retry_base_seconds: delay before the first retry of a failed
            delivery; it doubles on each further retry.
        webhook_max_attempts: deliveries tried per event before giving up.
        webhook_timeout_seconds: how long one delivery may take.
        tick_seconds: period of the background expiry sweep.
        api_version: reported as ``api_version`` on events.
        purged_event_cursor: what ``GET /v1/events`` answers for a cursor naming an
            event purged after 30 days (Stripe does not document it): ``"error"``, a
            400 ``resource_missing`` as for an unknown id, or ``"empty"``, an empty
            page.
    """

    api_key: str | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None
    public_url: str | None = None
    latency_seconds: float = 0.0
    rate_limit_per_second: float | None = None
    webhook_retry_base_seconds: float = 0.5
    webhook_max_attempts: int = 8
    webhook_timeout_seconds: float = 5.0
    tick_seconds: float = 1.0
    api_version: str = DEFAULT_API_VERSION
    purged_event_cursor: PurgedCursor = "error"
