"""Collaborators the routes need, injected with FastAPI dependencies (tests override them)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

import anyio.from_thread
from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from basketball_api.lifecycle import Lifecycle
from basketball_api.metrics import Metrics
from basketball_api.models import Order, Product
from basketball_api.refresher import Refresher
from basketball_api.settings import Settings
from basketball_api.stripe_gateway import SessionSnapshot, StripeGateway


@dataclass
class Services:
    """Everything the lifespan builds; stored on ``app.state.services``."""

    settings: Settings
    metrics: Metrics
    sessions: sessionmaker[Session]
    gateway: StripeGateway
    refresher: Refresher
    lifecycle: Lifecycle | None = None


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


#: Stripe's bounds on a Checkout Session's lifetime, measured by Stripe's clock on receipt.
STRIPE_MIN_LIFETIME_SECONDS = 30 * 60
STRIPE_MAX_LIFETIME_SECONDS = 24 * 3600
#: Stripe's clock is known only to the second (its ``Date`` header), and the request reaches
#: Stripe after network time, rate-limit backoff and SDK retries: a link asked to live exactly
#: the 30-minute minimum was refused 19 times in 20. A minute's margin covers all of that.
EXPIRY_MARGIN_SECONDS = 60


def expires_at_for(lifetime: int, stripe_now: float) -> int | None:
    """The ``expires_at`` to send for a link meant to live ``lifetime`` seconds (None: Stripe's
    default of 24 hours). Stripe accepts it however late within the margin the request lands:
    it lives ``lifetime`` to ``lifetime`` + margin, and never asks for more than 24 hours."""
    if lifetime >= STRIPE_MAX_LIFETIME_SECONDS:
        return None
    latest = math.floor(stripe_now) + STRIPE_MAX_LIFETIME_SECONDS - EXPIRY_MARGIN_SECONDS
    return min(math.ceil(stripe_now) + lifetime + EXPIRY_MARGIN_SECONDS, latest)


def checkout_params(
    gateway: StripeGateway, settings: Settings, order: Order, product: Product, return_token: str
) -> dict[str, Any]:
    """The arguments of :meth:`StripeGateway.create_checkout_session` for ``order``: computed
    once, so a call whose answer was lost can be asked again with exactly the same ones.

    ``return_token`` is an access token of the order, carried in ``success_url``: the return
    page shows the order and its pay link only to whoever holds it as well as the session id
    (a session id alone is no capability; it appears in logs)."""
    base = settings.public_base_url.rstrip("/")
    expires_at = expires_at_for(settings.checkout_expires_after_seconds, gateway.stripe_now())
    return {
        "order_id": order.id,
        "category": product.category.value,
        "product_name": product.name,
        "unit_amount": product.unit_amount,
        "quantity": order.quantity,
        "currency": order.currency,
        "customer_email": order.parent_email,
        # Stripe puts the session's id in; the return page checks it with Stripe, and opens
        # the order only with its token too.
        "success_url": (
            f"{base}/checkout/return?session_id={{CHECKOUT_SESSION_ID}}&token={return_token}"
        ),
        "cancel_url": f"{base}/checkout/cancelled",
        "expires_at": expires_at,
    }


class ThreadStripe:
    """Synchronous facade over the async gateway, for code running in a worker thread."""

    def __init__(self, gateway: StripeGateway, settings: Settings) -> None:
        self._gateway = gateway
        self._settings = settings

    def create_checkout_session(
        self, order: Order, product: Product, return_token: str
    ) -> SessionSnapshot:
        params = checkout_params(self._gateway, self._settings, order, product, return_token)
        return anyio.from_thread.run(partial(self._gateway.create_checkout_session, **params))

    def expire_session(self, session_id: str) -> SessionSnapshot:
        return anyio.from_thread.run(self._gateway.expire_session, session_id)

    def retrieve_session(self, session_id: str) -> SessionSnapshot:
        return anyio.from_thread.run(self._gateway.retrieve_session, session_id)

    def list_open_sessions(self, created_gte: int) -> list[SessionSnapshot]:
        latest = int(self._gateway.stripe_now()) + 3600
        return anyio.from_thread.run(
            partial(
                self._gateway.list_sessions,
                created_gte=created_gte,
                created_lte=latest,
                status="open",
            )
        )

    def stripe_now(self) -> float:
        return self._gateway.stripe_now()
