"""Products, orders, health and metrics."""

from __future__ import annotations

import html
import time
from datetime import UTC, datetime

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import HTMLResponse
from prometheus_client import CONTENT_TYPE_LATEST

from basketball_api import access, catalogue, orders
from basketball_api.access import TokenOrderId
from basketball_api.admin import Admin
from basketball_api.db import transaction
from basketball_api.deps import Services, ServicesDep, ThreadStripe, get_services
from basketball_api.models import Order
from basketball_api.schemas import (
    MAX_ID,
    ErrorOut,
    OrderCreate,
    OrderCreated,
    OrderId,
    OrderOut,
    ParentOrderOut,
    ProductOut,
)

router = APIRouter()

_ERRORS: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorOut, "description": "Unknown product or order"},
    409: {"model": ErrorOut, "description": "The order is not in a state that allows this"},
    502: {"model": ErrorOut, "description": "Stripe refused the request"},
    503: {"model": ErrorOut, "description": "Stripe unavailable; nothing was written"},
}


@router.get("/health", tags=["ops"], dependencies=[access.PUBLIC])
def health(services: ServicesDep) -> dict[str, object]:
    """Liveness and readiness: answers while the process serves, whatever Stripe does."""
    last = services.refresher.last_success_at
    return {
        "status": "ok",
        "refresh": {
            "succeeded_once": services.refresher.counts is not None,
            "last_success_age_seconds": round(time.time() - last, 1) if last else None,
        },
    }


@router.get("/metrics", tags=["ops"], response_class=Response, dependencies=[access.PUBLIC])
async def metrics(request: Request) -> Response:
    """Prometheus exposition of precomputed values; costs nothing per order.

    Async and without a dependency, so it is served on the event loop and never waits for a
    worker thread: during a refresh at 100,000 orders a thread hop cost it tens of ms.
    """
    services = get_services(request)
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/products", tags=["orders"], dependencies=[access.PUBLIC])
def list_products(services: ServicesDep) -> list[ProductOut]:
    """The products on sale now (active, inside their sale window)."""
    with transaction(services.sessions) as db:
        on_sale = catalogue.products_on_sale(db, datetime.now(UTC))
        return [ProductOut.model_validate(p) for p in on_sale]


@router.post(
    "/orders",
    tags=["orders"],
    status_code=status.HTTP_201_CREATED,
    responses={k: v for k, v in _ERRORS.items() if k != 409},
    dependencies=[access.PUBLIC],
)
def create_order(body: OrderCreate, services: ServicesDep) -> OrderCreated:
    """Create a pending order and its Stripe Checkout link.

    The answer carries the order's access token (``access_token``), shown this once: it is
    what opens the order afterwards (``order_url``); the integer id opens nothing.
    """
    stripe = ThreadStripe(services.gateway, services.settings)
    with transaction(services.sessions) as db:
        order = orders.create_order(
            db,
            stripe,
            product_id=body.product_id,
            parent_email=str(body.parent_email),
            player_name=body.player_name,
            quantity=body.quantity,
            with_checkout=body.create_checkout,
        )
        token = access.issue_token(db, order.id, "order_created")
        return _created(services, order, token)


def _created(services: Services, order: Order, token: str) -> OrderCreated:
    base = services.settings.public_base_url.rstrip("/")
    return OrderCreated(
        **OrderOut.of(order).model_dump(),
        access_token=token,
        order_url=f"{base}/orders/by-token/{token}",
    )


@router.get(
    "/orders/by-token/{token}",
    tags=["orders"],
    responses={404: _ERRORS[404]},
)
def get_order_by_token(order_id: TokenOrderId, services: ServicesDep) -> ParentOrderOut:
    """The order an access token opens (404 for any other token)."""
    with transaction(services.sessions) as db:
        return ParentOrderOut.of(orders.get_order(db, order_id))


@router.post(
    "/orders/by-token/{token}/cancel",
    tags=["orders"],
    responses=_ERRORS,
)
def cancel_order_by_token(order_id: TokenOrderId, services: ServicesDep) -> ParentOrderOut:
    """The parent cancels their pending order; its payment link is expired at Stripe first."""
    stripe = ThreadStripe(services.gateway, services.settings)
    with transaction(services.sessions) as db:
        return ParentOrderOut.of(orders.cancel_order(db, stripe, order_id))


@router.get(
    "/orders/{order_id}", tags=["orders"], responses={404: _ERRORS[404]}, dependencies=[Admin]
)
def get_order(order_id: OrderId, services: ServicesDep) -> OrderOut:
    """One order by its id (operators only)."""
    with transaction(services.sessions) as db:
        return OrderOut.of(orders.get_order(db, order_id))


@router.post("/orders/{order_id}/cancel", tags=["orders"], responses=_ERRORS, dependencies=[Admin])
def cancel_order(order_id: OrderId, services: ServicesDep) -> OrderOut:
    """Cancel a pending order by its id (operators only); its link is expired at Stripe first."""
    stripe = ThreadStripe(services.gateway, services.settings)
    with transaction(services.sessions) as db:
        return OrderOut.of(orders.cancel_order(db, stripe, order_id))


@router.get(
    "/checkout/done", tags=["orders"], response_class=HTMLResponse, dependencies=[access.PUBLIC]
)
def checkout_done(
    services: ServicesDep,
    order: int = Query(gt=0, le=MAX_ID),
    result: str = Query(pattern="^(paid|cancelled)$"),
) -> HTMLResponse:
    """Where Stripe Checkout sends the parent back."""
    with transaction(services.sessions) as db:
        current = orders.get_order(db, order)
        state = current.status.value
    if result == "paid":
        text = f"Thank you! Order {order} is {state}."
        if state == "pending":
            text += " Your payment is being confirmed; this page can be closed."
    else:
        text = (
            f"Payment cancelled. Order {order} is {state}; the link stays valid until it expires."
        )
    return HTMLResponse(f"<!doctype html><title>basketball-api</title><h1>{html.escape(text)}</h1>")
