"""Operator actions on stranded orders: snooze, cancel, and run the lifecycle now.

JSON under ``/admin/…`` takes an operator's token like every admin route; the operator page's
buttons post forms under ``/admin/page/…`` with its session cookie and CSRF token. Audit lines
name the operator.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field

from basketball_api import lifecycle
from basketball_api.db import transaction
from basketball_api.deps import Services, ServicesDep, ThreadStripe
from basketball_api.errors import DomainError
from basketball_api.metrics import CATEGORIES
from basketball_api.operators import FormOperator, OperatorName, operator_errors
from basketball_api.schemas import OrderId, OrderOut
from basketball_api.stripe_gateway import StripeFailure

router = APIRouter(prefix="/admin", tags=["admin"])


class SnoozeOut(BaseModel):
    snoozed_until: float = Field(description="Unix time (Stripe's clock) the snooze ends.")
    order: OrderOut


class LifecycleOut(BaseModel):
    ran: bool = Field(description="False before the first successful refresh.")
    stranded: list[int]
    emailed: list[int]
    auto_cancelled: list[int]
    cancelled: list[int]


def _snooze(services: Services, order_id: int, days: float, who: str) -> SnoozeOut:
    until = services.gateway.stripe_now() + days * lifecycle.DAY
    with transaction(services.sessions) as db:
        order = lifecycle.snooze(db, order_id, until=until, by=who)
        out = OrderOut.of(order)
    services.metrics.stranded_transitions.labels(transition="snoozed").inc()
    return SnoozeOut(snoozed_until=until, order=out)


def _cancel(services: Services, order_id: int, who: str) -> OrderOut:
    stripe = ThreadStripe(services.gateway, services.settings)
    with transaction(services.sessions) as db:
        return OrderOut.of(lifecycle.cancel(db, stripe, order_id, by=who))


def _run(services: Services) -> LifecycleOut:
    assert services.lifecycle is not None
    outcome = services.lifecycle.run_now()
    if outcome is None:
        return LifecycleOut(ran=False, stranded=[], emailed=[], auto_cancelled=[], cancelled=[])
    return LifecycleOut(
        ran=True,
        stranded=outcome.stranded,
        emailed=outcome.emailed,
        auto_cancelled=outcome.auto_cancelled,
        cancelled=outcome.cancelled,
    )


async def _after(services: Services) -> None:
    """Recount and re-run the lifecycle now: the order leaves (or re-enters) the gauges."""
    services.refresher.wake()
    if services.lifecycle is not None:
        await run_in_threadpool(services.lifecycle.run_now)


@router.post("/orders/{order_id}/snooze", responses=operator_errors(404, 409))
async def snooze(
    order_id: OrderId,
    services: ServicesDep,
    who: OperatorName,
    days: Annotated[float, Query(gt=0, le=90, description="How long, in days.")] = 7,
) -> SnoozeOut:
    """Snooze a stranded order: it stops counting for the stranded-order alerts and is not
    cancelled automatically until the snooze ends (a live link again ends it too)."""
    result = await run_in_threadpool(_snooze, services, order_id, days, who)
    await _after(services)
    return result


@router.post("/orders/{order_id}/cancel", responses=operator_errors(404, 409, 502))
async def cancel(order_id: OrderId, services: ServicesDep, who: OperatorName) -> OrderOut:
    """Cancel an order as an operator (its link is expired at Stripe first if still open)."""
    result = await run_in_threadpool(_cancel, services, order_id, who)
    await _after(services)
    return result


@router.post("/stranded-orders/lifecycle", responses=operator_errors())
async def run_lifecycle(services: ServicesDep, _who: OperatorName) -> LifecycleOut:
    """Run the stranded-order lifecycle once now (it also runs every refresh interval)."""
    result = await run_in_threadpool(_run, services)
    if result.auto_cancelled or result.emailed:
        services.refresher.wake()
    return result


# -- the operator page's buttons ----------------------------------------------------------


async def _page_action(
    request: Request, services: Services, order_id: int, action: str, who: str
) -> Response:
    form = await request.form()
    query: dict[str, str | int] = {"order": order_id}
    category = form.get("category")
    if isinstance(category, str) and category in CATEGORIES:
        query["category"] = category
    try:
        if action == "snooze":
            await run_in_threadpool(_snooze, services, order_id, 7, who)
        else:
            await run_in_threadpool(_cancel, services, order_id, who)
    except DomainError as e:
        query["outcome"] = "not_found" if e.status_code == 404 else "conflict"
    except StripeFailure:
        query["outcome"] = "stripe"
    else:
        query["outcome"] = "snoozed" if action == "snooze" else "cancelled"
        await _after(services)
    return RedirectResponse(f"/admin?{urlencode(query)}", status_code=303)


@router.post("/page/stranded/{order_id}/snooze", include_in_schema=False)
async def page_snooze(
    request: Request, order_id: OrderId, services: ServicesDep, who: FormOperator
) -> Response:
    return await _page_action(request, services, order_id, "snooze", who)


@router.post("/page/stranded/{order_id}/cancel", include_in_schema=False)
async def page_cancel(
    request: Request, order_id: OrderId, services: ServicesDep, who: FormOperator
) -> Response:
    return await _page_action(request, services, order_id, "cancel", who)
