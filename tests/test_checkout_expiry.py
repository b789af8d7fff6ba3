"""Checkout links asked to live Stripe's documented minimum (30 minutes) are always created.

Stripe refuses an ``expires_at`` under 30 minutes from the moment *it* receives the request,
by its own clock, which this service knows only to the second (the ``Date`` header): computed
without a margin, 19 of 20 ``POST /orders`` failed with 502 when Stripe's clock ran ahead.
"""

from __future__ import annotations

from tests.stack import running_stack

from basketball_api.deps import (
    EXPIRY_MARGIN_SECONDS,
    STRIPE_MAX_LIFETIME_SECONDS,
    STRIPE_MIN_LIFETIME_SECONDS,
    expires_at_for,
)


def test_fifty_of_fifty_half_hour_links_are_created_when_stripe_runs_ahead(
    database_url: str,
) -> None:
    with running_stack(database_url, checkout_expires_after_seconds=1800) as stack:
        created = []
        for _ in range(50):
            # The sandbox clock runs ahead of ours by a growing fraction of a second (0 to 1 s),
            # so every position of its clock within the second of its Date header is tried.
            stack.sandbox.advance_clock(0.02)
            r = stack.api.post(
                "/orders",
                json={
                    "product_id": 1,
                    "parent_email": "half@example.org",
                    "player_name": "Half Hour",
                },
            )
            assert r.status_code == 201, r.text
            created.append(r.json()["checkout_session_id"])
        assert len(created) == 50
        for sid in created[::10]:
            session = stack.sandbox.session(sid)
            lifetime = session["expires_at"] - session["created"]
            assert 1800 <= lifetime <= 1800 + EXPIRY_MARGIN_SECONDS + 2


def test_expiry_stays_inside_stripe_bounds_wherever_the_clock_is() -> None:
    for now in (1_800_000_000.0, 1_800_000_000.999, 1_800_000_000.5):
        for lifetime in (STRIPE_MIN_LIFETIME_SECONDS, 3600, STRIPE_MAX_LIFETIME_SECONDS - 30):
            expires_at = expires_at_for(lifetime, now)
            assert expires_at is not None
            longest = STRIPE_MAX_LIFETIME_SECONDS - EXPIRY_MARGIN_SECONDS - 1
            assert expires_at - now >= min(lifetime, longest)
            assert expires_at - now <= STRIPE_MAX_LIFETIME_SECONDS - EXPIRY_MARGIN_SECONDS + 1
        assert expires_at_for(STRIPE_MAX_LIFETIME_SECONDS, now) is None  # Stripe's default
