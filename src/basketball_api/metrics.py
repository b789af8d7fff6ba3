"""Every Prometheus metric of the service, on one registry per app instance.

Names are a cross-repo contract (see the README's metric contract); keep them verbatim.
``/metrics`` serves what is stored here, so a scrape costs the same at any number of orders.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from basketball_api.models import Category

CATEGORIES: tuple[str, ...] = tuple(c.value for c in Category)

ORDER_CREATION_FAILURE_REASONS = ("stripe_unavailable", "stripe_rejected", "timeout", "database")
STRANDED_TRANSITIONS = ("stranded", "emailed", "auto_cancelled", "snoozed", "cancelled")

WEBHOOK_ERROR_REASONS = (
    "no_secret",
    "missing_signature",
    "bad_signature",
    "stale_timestamp",
    "bad_payload",
    "too_large",
    "processing_error",
)


class Metrics:
    """The service's metrics; one instance per app so tests never share state."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.up = Gauge("basketball_api_up", "1 while the process serves.", registry=r)
        self.webhook_errors = Counter(
            "basketball_api_webhook_errors",
            "Webhook requests refused or failed, by reason.",
            ["reason"],
            registry=r,
        )
        self.webhook_events = Counter(
            "basketball_api_webhook_events",
            "Verified webhook events, by type and what was done with them.",
            ["type", "result"],
            registry=r,
        )
        self.expired = Gauge(
            "basketball_api_pending_orders_with_expired_session",
            "Orders in pending whose Checkout Session has expired (a dead payment link).",
            ["category"],
            registry=r,
        )
        self.completed = Gauge(
            "basketball_api_pending_orders_with_completed_session",
            "Orders in pending whose Checkout Session is complete and paid (a lost webhook).",
            ["category"],
            registry=r,
        )
        self.open = Gauge(
            "basketball_api_pending_orders_with_open_session",
            "Orders in pending whose Checkout Session is still open.",
            ["category"],
            registry=r,
        )
        self.failed = Gauge(
            "basketball_api_pending_orders_with_failed_payment",
            "Orders in pending whose Checkout Session's delayed payment failed.",
            ["category"],
            registry=r,
        )
        self.missing = Gauge(
            "basketball_api_pending_orders_with_missing_session",
            "Orders in pending whose Checkout Session Stripe does not know (404).",
            ["category"],
            registry=r,
        )
        self.clock_offset = Gauge(
            "basketball_api_stripe_clock_offset_seconds",
            "Stripe's clock (its Date header) minus this process's clock.",
            registry=r,
        )
        self.lease_held = Gauge(
            "basketball_api_poller_lease_held",
            "1 on the replica holding the polling lease, else 0.",
            registry=r,
        )
        self.last_success = Gauge(
            "basketball_api_pending_orders_refresh_last_success_timestamp_seconds",
            "Unix time of the last successful refresh of the pending-order gauges.",
            registry=r,
        )
        self.duration = Gauge(
            "basketball_api_pending_orders_refresh_duration_seconds",
            "How long the last refresh attempt took.",
            registry=r,
        )
        self.refreshes = Counter(
            "basketball_api_pending_orders_refreshes",
            "Refresh attempts, by result.",
            ["result"],
            registry=r,
        )
        self.refresh_errors = Counter(
            "basketball_api_pending_orders_refresh_errors",
            "Failed refreshes, by bounded cause.",
            ["reason"],
            registry=r,
        )
        self.interval = Gauge(
            "basketball_api_refresh_interval_seconds",
            "The configured interval between refreshes.",
            registry=r,
        )
        self.stripe_requests = Counter(
            "basketball_api_stripe_requests",
            "Requests sent to Stripe, by endpoint and outcome.",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.category_urgent = Gauge(
            "basketball_api_category_urgent",
            "1 for a category whose stranded orders page at once (URGENT_CATEGORIES), else 0.",
            ["category"],
            registry=r,
        )
        self.stranded_transitions = Counter(
            "basketball_api_stranded_order_transitions",
            "Stranded orders moving on: stranded, emailed the link, snoozed, cancelled by an "
            "operator, cancelled automatically.",
            ["transition"],
            registry=r,
        )
        self.snoozed = Gauge(
            "basketball_api_pending_orders_snoozed",
            "Stranded orders (pending, link dead) an operator snoozed.",
            ["category"],
            registry=r,
        )
        for category in CATEGORIES:
            self.category_urgent.labels(category=category).set(0)
        self.order_creation_failures = Counter(
            "basketball_api_order_creation_failures",
            "POST /orders that failed because Stripe was unavailable, refused or too slow, or "
            "the database was busy; nothing was kept.",
            ["reason"],
            registry=r,
        )
        for reason in ORDER_CREATION_FAILURE_REASONS:
            self.order_creation_failures.labels(reason=reason)
        self.payments_needing_review = Gauge(
            "basketball_api_payments_needing_review",
            "Payments Stripe took that no order could take, open for an operator, by reason.",
            ["reason"],
            registry=r,
        )
        for transition in STRANDED_TRANSITIONS:
            self.stranded_transitions.labels(transition=transition)
        for result in ("success", "error"):
            self.refreshes.labels(result=result)
        for reason in WEBHOOK_ERROR_REASONS:
            self.webhook_errors.labels(reason=reason)

    def publish_urgent_categories(self, urgent: frozenset[str]) -> None:
        """Mark the configured urgent categories 1, every other category 0."""
        for category in CATEGORIES:
            self.category_urgent.labels(category=category).set(1 if category in urgent else 0)

    def publish_snoozed(self, snoozed: dict[str, int]) -> None:
        """Set every category of the snoozed gauge (0 when none)."""
        for category in CATEGORIES:
            self.snoozed.labels(category=category).set(snoozed.get(category, 0))

    def publish_counts(self, counts: Mapping[str, Mapping[str, int]]) -> None:
        """Set every category of the pending-order gauges (0 when none) from precomputed
        counts: ``{"expired": {category: n}, "completed": ..., "open": ..., "failed": ...,
        "missing": ...}``."""
        gauges = {
            "expired": self.expired,
            "completed": self.completed,
            "open": self.open,
            "failed": self.failed,
            "missing": self.missing,
        }
        for name, gauge in gauges.items():
            values = counts.get(name, {})
            for category in CATEGORIES:
                gauge.labels(category=category).set(values.get(category, 0))

    def publish_reviews(self, counts: dict[str, int]) -> None:
        """Set every reason of the review gauge (0 when none), from one count query."""
        for reason, n in counts.items():
            self.payments_needing_review.labels(reason=reason).set(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
