"""Payments needing review: listed for operators with what to do, resolved by a named operator.

Every row is money Stripe took that no order took (see ``payments``). It stays counted by
``basketball_api_payments_needing_review{reason}`` until an operator says what was done: it
was refunded in Stripe, it was applied by hand to a pending order, or it is not the club's
money. Each resolution is an audit log line naming the operator.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

import structlog
from fastapi import APIRouter, Form, Path
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from basketball_api import payments
from basketball_api.db import transaction
from basketball_api.deps import Services, ServicesDep
from basketball_api.errors import Conflict, DomainError, NotFound, Unprocessable
from basketball_api.models import (
    OrderStatus,
    PaymentNeedingReview,
    Resolution,
    ReviewReason,
)
from basketball_api.operators import FormOperator, OperatorName, operator_errors
from basketball_api.orders import get_order, transition
from basketball_api.schemas import MAX_ID

log = structlog.get_logger("basketball_api.reviews")
ReviewId = Annotated[int, Path(ge=1, le=MAX_ID, description="The review item's id.")]

#: What a volunteer does with each kind (the runbook says the same at more length).
WHAT_TO_DO: dict[ReviewReason, str] = {
    ReviewReason.unknown_order: (
        "Paid through a link that is not one of this order's (another integration, a Payment "
        "Link, or a reference the customer typed). Find the payment in Stripe: if it is the "
        "parent paying for the order it names and the amount is right, apply it by hand; "
        "otherwise refund it in Stripe, or dismiss it if it is another integration's sale."
    ),
    ReviewReason.cancelled_order: (
        "The order was cancelled before this payment arrived. Refund it in Stripe."
    ),
    ReviewReason.already_paid: (
        "The order had already been paid another way. Refund this payment in Stripe."
    ),
    ReviewReason.second_payment: (
        "The order was paid twice, through two of its links. Refund this second payment in Stripe."
    ),
    ReviewReason.amount_mismatch: (
        "Paid through the order's own link but not the order's amount (a promotion code, or a "
        "changed price). Refund it in Stripe and send the parent a fresh link, or apply it by "
        "hand if the club accepts the amount."
    ),
    ReviewReason.currency_mismatch: (
        "Paid through the order's own link in another currency. Refund it in Stripe and send "
        "the parent a fresh link, or apply it by hand if the club accepts it."
    ),
}


class ReviewOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    reason: ReviewReason
    what_to_do: str
    order_id: int | None = Field(description="The order the payment belongs to or names.")
    claimed_reference: str | None = Field(
        description="The order the session names (client_reference_id or metadata), as given."
    )
    stripe_checkout_session_id: str
    stripe_payment_intent_id: str | None = Field(
        description="Search for it in the Stripe dashboard to refund."
    )
    stripe_event_id: str | None
    amount_total: int | None = Field(description="In the currency's smallest unit.")
    currency: str | None
    found_via: str
    created_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None
    resolution: Resolution | None
    note: str | None

    @classmethod
    def of(cls, row: PaymentNeedingReview) -> ReviewOut:
        return cls.model_validate(
            {**{k: getattr(row, k) for k in _FIELDS}, "what_to_do": WHAT_TO_DO[row.reason]}
        )


_FIELDS = tuple(f for f in ReviewOut.model_fields if f != "what_to_do")


class ReviewList(BaseModel):
    open: dict[str, int] = Field(
        description="Open items per reason, every reason (equal to the gauge)."
    )
    items: list[ReviewOut]


class Status(enum.StrEnum):
    open = "open"
    resolved = "resolved"
    all = "all"


class ResolveIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    action: Resolution = Field(
        description="refunded: refunded in Stripe; applied: mark the order paid by this "
        "payment (the order must be pending); dismissed: not the club's money."
    )
    note: str | None = Field(default=None, max_length=500)
    order_id: int | None = Field(
        default=None,
        gt=0,
        le=MAX_ID,
        description="With applied: the order to apply it to, when the item names none.",
    )


def list_reviews(db: Session, status: Status = Status.open) -> ReviewList:
    stmt = select(PaymentNeedingReview).order_by(PaymentNeedingReview.id.desc())
    if status == Status.open:
        stmt = stmt.where(PaymentNeedingReview.resolved_at.is_(None))
    elif status == Status.resolved:
        stmt = stmt.where(PaymentNeedingReview.resolved_at.is_not(None))
    items = [ReviewOut.of(r) for r in db.scalars(stmt.limit(500))]
    return ReviewList(open=payments.review_counts(db), items=items)


def open_reviews(factory: sessionmaker[Session]) -> ReviewList:
    with transaction(factory) as db:
        return list_reviews(db)


def resolve(
    db: Session, review_id: int, body: ResolveIn, *, operator: str
) -> tuple[ReviewOut, list[str]]:
    """Record what the operator did; returns the item and the links to expire once committed
    (applying a payment by hand ends the order's other links like any payment)."""
    row = db.scalars(
        select(PaymentNeedingReview).where(PaymentNeedingReview.id == review_id).with_for_update()
    ).first()
    if row is None:
        raise NotFound(f"payment needing review {review_id} does not exist")
    if row.resolved_at is not None:
        raise Conflict(f"payment needing review {review_id} was already resolved")
    expire: list[str] = []
    target = body.order_id or row.order_id
    if body.action == Resolution.applied:
        if target is None:
            raise Unprocessable("applying needs an order_id: this payment names no order")
        expire = _apply_by_hand(db, row, target, operator)
    elif body.action == Resolution.dismissed and not body.note:
        raise Unprocessable("dismissing needs a note saying whose money it is")
    row.resolved_at = datetime.now(UTC)
    row.resolved_by = operator
    row.resolution = body.action
    row.note = body.note
    if body.action == Resolution.applied:
        row.order_id = target
    db.flush()
    log.info(
        "payment_review_resolved",
        operator=operator,
        review_id=row.id,
        reason=row.reason.value,
        resolution=body.action.value,
        order_id=row.order_id,
        session_id=row.stripe_checkout_session_id,
        payment_intent=row.stripe_payment_intent_id,
    )
    return ReviewOut.of(row), expire


def _apply_by_hand(
    db: Session, row: PaymentNeedingReview, order_id: int, operator: str
) -> list[str]:
    order = get_order(db, order_id, for_update=True)
    if order.status != OrderStatus.pending:
        raise Conflict(
            f"order {order_id} is {order.status.value}; only a pending order can take a payment"
        )
    transition(order, OrderStatus.paid, cause=f"applied_by_operator:{operator}")
    order.paid_by_session_id = row.stripe_checkout_session_id
    others = payments.other_live_links(db, order, row.stripe_checkout_session_id)
    return payments.request_expiry(db, order, others, "order_paid")


# -- routes ---------------------------------------------------------------------------------

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/payments-needing-review", responses=operator_errors())
def payments_needing_review(
    services: ServicesDep, who: OperatorName, status: Status = Status.open
) -> ReviewList:
    """Payments Stripe took that no order took, newest first, each with what to do."""
    with transaction(services.sessions) as db:
        return list_reviews(db, status)


async def _resolve(services: Services, review_id: int, body: ResolveIn, who: str) -> ReviewOut:
    def work() -> tuple[ReviewOut, list[str]]:
        with transaction(services.sessions) as db:
            return resolve(db, review_id, body, operator=who)

    item, expire = await run_in_threadpool(work)
    settled = payments.Settlement(payments.Outcome.applied, expire=tuple(expire), recorded=True)
    await payments.after_commit(services.sessions, services.gateway, services.metrics, settled)
    return item


@router.post("/payments-needing-review/{review_id}/resolve", responses=operator_errors(404, 409))
async def resolve_payment(
    review_id: ReviewId, body: ResolveIn, services: ServicesDep, who: OperatorName
) -> ReviewOut:
    """Record what was done about a payment: refunded in Stripe, applied by hand to a pending
    order (marks it paid by this payment), or dismissed (not the club's money; a note says
    whose). Logged with the operator's name."""
    return await _resolve(services, review_id, body, who)


@router.post("/page/payments-needing-review/{review_id}/resolve", include_in_schema=False)
async def page_resolve(
    review_id: ReviewId,
    services: ServicesDep,
    who: FormOperator,
    action: Annotated[Resolution, Form()],
    note: Annotated[str | None, Form(max_length=500)] = None,
) -> Response:
    try:
        await _resolve(services, review_id, ResolveIn(action=action, note=note or None), who)
    except DomainError as e:
        query = {"resolved": f"{review_id}:{e.code}"}
    else:
        query = {"resolved": f"{review_id}:{action.value}"}
    return RedirectResponse(f"/admin?{urlencode(query)}", status_code=303)
