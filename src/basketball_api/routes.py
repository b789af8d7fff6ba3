"""Products, orders and metrics."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response, status
from prometheus_client import CONTENT_TYPE_LATEST

from basketball_api import access, catalogue, ordering, orders
from basketball_api.access import TokenOrderId
from basketball_api.admin import Admin
from basketball_api.db import transaction
from basketball_api.deps import Services, ServicesDep, ThreadStripe, get_services
from basketball_api.models import Order
from basketball_api.operators import OperatorName, operator_errors
from basketball_api.ratelimit import rate_limited
from basketball_api.schemas import (
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
    503: {
        "model": ErrorOut,
        "description": "Stripe unavailable or too slow, or the database busy; nothing was "
        "written (see Retry-After)",
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
    responses={
        **{k: v for k, v in _ERRORS.items() if k != 409},
        429: {"model": ErrorOut, "description": "Too many orders from this address"},
    },
    dependencies=[access.PUBLIC],
)
async def create_order(
    body: OrderCreate, services: ServicesDep, _limit: None = rate_limited("orders")
) -> OrderCreated:
    """Create a pending order and its Stripe Checkout link.

    The answer carries the order's access token (``access_token``), shown this once: it is
    what opens the order afterwards (``order_url``); the integer id opens nothing. No database
    connection is held while Stripe answers; past ``ORDER_WAIT_SECONDS`` the answer is a 503
    with ``Retry-After`` and nothing is kept. Rate limited per client (429).
    """
    taken = await ordering.take_order(
        services,
        product_id=body.product_id,
        parent_email=str(body.parent_email),
        player_name=body.player_name,
        quantity=body.quantity,
        with_checkout=body.create_checkout,
    )
    return _created(services, taken.order, taken.token)


def _created(services: Services, order: Order, token: str) -> OrderCreated:
    return OrderCreated.model_validate(
        {
            **OrderCreated.fields_of(order),
            "access_token": token,
            "pay_url": access.pay_url(services.settings, token),
            "order_url": access.order_page_url(services.settings, token),
        }
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
def cancel_order_by_token(
    order_id: TokenOrderId, services: ServicesDep, _limit: None = rate_limited("pay_link")
) -> ParentOrderOut:
    """The parent cancels their pending order; its payment link is expired at Stripe first.
    Rate limited per client, like the pay link."""
    stripe = ThreadStripe(services.gateway, services.settings)
    with transaction(services.sessions) as db:
        return ParentOrderOut.of(orders.cancel_order(db, stripe, order_id, by="parent"))


@router.get(
    "/orders/{order_id}",
    tags=["orders"],
    responses={**operator_errors(), 404: _ERRORS[404]},
    dependencies=[Admin],
)
def get_order(order_id: OrderId, services: ServicesDep) -> OrderOut:
    """One order by its id (operators only)."""
    with transaction(services.sessions) as db:
        return OrderOut.of(orders.get_order(db, order_id))


@router.post(
    "/orders/{order_id}/cancel", tags=["orders"], responses={**operator_errors(), **_ERRORS}
)
def cancel_order(order_id: OrderId, services: ServicesDep, who: OperatorName) -> OrderOut:
    """Cancel a pending order by its id (operators only); its link is expired at Stripe first."""
    stripe = ThreadStripe(services.gateway, services.settings)
    with transaction(services.sessions) as db:
        return OrderOut.of(orders.cancel_order(db, stripe, order_id, by=who))
