"""Collaborators the routes need, injected with FastAPI dependencies (tests override them)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

import anyio.from_thread
from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

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


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def checkout_params(
    gateway: StripeGateway, settings: Settings, order: Order, product: Product
) -> dict[str, Any]:
    """The arguments of :meth:`StripeGateway.create_checkout_session` for ``order``: computed
    once, so a call whose answer was lost can be asked again with exactly the same ones."""
    base = settings.public_base_url.rstrip("/")
    lifetime = settings.checkout_expires_after_seconds
    expires_at = None
    if lifetime < 24 * 3600:
        expires_at = int(gateway.stripe_now()) + lifetime
    return {
        "order_id": order.id,
        "category": product.category.value,
        "product_name": product.name,
        "unit_amount": product.unit_amount,
        "quantity": order.quantity,
        "currency": order.currency,
        "customer_email": order.parent_email,
        # Stripe puts the session's id in; the return page checks it with Stripe.
        "success_url": f"{base}/checkout/return?session_id={{CHECKOUT_SESSION_ID}}",
        "cancel_url": f"{base}/checkout/cancelled",
        "expires_at": expires_at,
    }


class ThreadStripe:
    """Synchronous facade over the async gateway, for code running in a worker thread."""

    def __init__(self, gateway: StripeGateway, settings: Settings) -> None:
        self._gateway = gateway
        self._settings = settings

    def create_checkout_session(self, order: Order, product: Product) -> SessionSnapshot:
        params = checkout_params(self._gateway, self._settings, order, product)
        return anyio.from_thread.run(partial(self._gateway.create_checkout_session, **params))

    def expire_session(self, session_id: str) -> SessionSnapshot:
        return anyio.from_thread.run(self._gateway.expire_session, session_id)

    def retrieve_session(self, session_id: str) -> SessionSnapshot:
        return anyio.from_thread.run(self._gateway.retrieve_session, session_id)
