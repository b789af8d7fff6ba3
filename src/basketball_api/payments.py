"""Which order a Stripe payment pays: decided in one place for every path that learns of one.

A Checkout Session pays an order only when it is one of the order's own links (the current one,
an earlier one, or a session Stripe created from one of them through a recovery URL, named by
``recovered_from``) and its ``amount_total`` and ``currency`` equal the order's.
``client_reference_id`` and ``metadata.order_id`` are never proof: Payment Links and pricing
tables let a customer set them, and another integration on the same Stripe account may too.
They only name, in the review record, the order a payment claims.

Money that cannot be applied (a payment through no order's link that names one of ours, a
cancelled or already-paid order, a second paid link, a wrong amount or currency) is recorded in
``payments_needing_review`` with its Stripe ids, counted by
``basketball_api_payments_needing_review{reason}`` and listed for operators (``reviews``).

When an order is paid, its other live links are queued in ``links_to_expire`` in the same
transaction; :func:`expire_links` expires them at Stripe after the commit (best effort) and the
upkeep loop retries what failed, so a second payment becomes unlikely.

The webhook, the return page and the poller all call :func:`settle`, inside their transaction.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from basketball_api.db import insert_unless_present, transaction
from basketball_api.link_state import from_epoch
from basketball_api.metrics import Metrics
from basketball_api.models import (
    CheckoutLink,
    LinkToExpire,
    Order,
    OrderStatus,
    PaymentNeedingReview,
    ReviewReason,
)
from basketball_api.orders import get_order, transition
from basketball_api.stripe_gateway import SessionSnapshot, StripeFailure, StripeRejected

log = structlog.get_logger("basketball_api.payments")

#: Stripe's payment statuses that mean the money is taken (or none was due).
PAID_STATUSES = frozenset({"paid", "no_payment_required"})
#: After this many failed attempts a link is left for the operators (logged, not retried).
MAX_EXPIRY_ATTEMPTS = 20


class Outcome(enum.StrEnum):
    applied = "applied"  # the order is now paid by this session
    repeated = "repeated"  # this session had already paid this order (a repeated event)
    not_paid = "not_paid"  # one of the order's links, with no payment (yet, or expired)
    needs_review = "needs_review"  # money no order takes: recorded for the operators
    not_ours = "not_ours"  # no link of ours and no reference to an order of ours


@dataclass(frozen=True)
class Settlement:
    outcome: Outcome
    order_id: int | None = None
    category: str | None = None
    # The session is the order's current link and the order is still pending.
    pending_behind_it: bool = False
    reason: ReviewReason | None = None
    recorded: bool = False  # a new review row was written (the gauge changes)
    expire: tuple[str, ...] = ()  # links to expire at Stripe once the transaction commits


def is_paid(session: SessionSnapshot) -> bool:
    return session.status == "complete" and session.payment_status in PAID_STATUSES


def settle(
    db: Session, session: SessionSnapshot, *, via: str, event_id: str | None = None
) -> Settlement:
    """Apply ``session``'s payment to the order it pays, or record it for review.

    Idempotent and safe concurrently: the owning order is locked first, a repeated event of the
    paying session changes nothing, and a review is recorded once per session. ``via`` says
    which path learnt it (``webhook``, ``return_page``, ``poller``) for the audit trail.
    """
    owner = _owner_id(db, session)
    if owner is None:
        if not is_paid(session):
            return Settlement(Outcome.not_ours)
        return _foreign(db, session, via=via, event_id=event_id)
    order = get_order(db, owner, for_update=True)
    _remember_recovered(db, order, session)
    category = order.product.category.value
    current = order.stripe_checkout_session_id == session.id
    if not is_paid(session):
        pending = order.status == OrderStatus.pending and current
        return Settlement(Outcome.not_paid, order.id, category, pending)
    if order.paid_by_session_id == session.id:
        return Settlement(Outcome.repeated, order.id, category)
    reason = _why_not(order, session)
    if reason is not None:
        recorded = _record(db, session, reason, order.id, via=via, event_id=event_id)
        pending = order.status == OrderStatus.pending and current
        return Settlement(Outcome.needs_review, order.id, category, pending, reason, recorded)
    transition(order, OrderStatus.paid, cause=f"payment_{via}")
    order.paid_by_session_id = session.id
    log.info(
        "payment_applied",
        order_id=order.id,
        session_id=session.id,
        recovered_from=session.recovered_from,
        via=via,
        event_id=event_id,
    )
    expire = request_expiry(db, order, other_live_links(db, order, session.id), "order_paid")
    db.flush()
    return Settlement(Outcome.applied, order.id, category, expire=tuple(expire))


def _why_not(order: Order, session: SessionSnapshot) -> ReviewReason | None:
    """Why this paid session of the order's own cannot be applied to it (None: it can)."""
    if order.status == OrderStatus.cancelled:
        return ReviewReason.cancelled_order
    if order.status == OrderStatus.paid:
        if order.paid_by_session_id is None:
            return ReviewReason.already_paid
        return ReviewReason.second_payment
    if (session.currency or "").lower() != order.currency.lower():
        return ReviewReason.currency_mismatch
    if session.amount_total != order.amount:
        return ReviewReason.amount_mismatch
    return None


def _owner_id(db: Session, session: SessionSnapshot) -> int | None:
    """The order whose own link ``session`` is, or was recovered from; None for any other."""
    ids = [session.id] + ([session.recovered_from] if session.recovered_from else [])
    by_link = db.scalars(
        select(CheckoutLink.order_id)
        .where(CheckoutLink.stripe_checkout_session_id.in_(ids))
        # The session itself before the link it was recovered from.
        .order_by((CheckoutLink.stripe_checkout_session_id == session.id).desc())
        .limit(1)
    ).first()
    if by_link is not None:
        return by_link
    # Current links made before the links table existed have no row there.
    return db.scalars(
        select(Order.id).where(Order.stripe_checkout_session_id.in_(ids)).limit(1)
    ).first()


def _remember_recovered(db: Session, order: Order, session: SessionSnapshot) -> None:
    """A session recovered from one of the order's links becomes one of its links too, so
    a recovery of the recovery is recognised and a reissue knows what to expire."""
    if session.recovered_from is None:
        return
    _insert_once(
        db,
        CheckoutLink,
        order_id=order.id,
        stripe_checkout_session_id=session.id,
        url=session.url,
        recovered_from=session.recovered_from,
        created_at=from_epoch(session.created) if session.created else datetime.now(UTC),
        expires_at=from_epoch(session.expires_at) if session.expires_at else None,
    )


def hinted_reference(session: SessionSnapshot) -> str | None:
    """The order a session names, as given (``client_reference_id``, else metadata)."""
    for value in (session.client_reference_id, session.metadata.get("order_id")):
        if value:
            return value[:255]
    return None


def _order_number(reference: str | None) -> int | None:
    """The order id a reference names, if it has the shape of one of ours (1 to 2**31 - 1)."""
    if reference is None or not (reference.isascii() and reference.isdigit()):
        return None
    if len(reference) > 10 or not 0 < int(reference) < 2**31:
        return None
    return int(reference)


def _hinted_order(db: Session, reference: str | None) -> int | None:
    number = _order_number(reference)
    if number is None:
        return None
    return db.scalars(select(Order.id).where(Order.id == number)).first()


def _foreign(
    db: Session, session: SessionSnapshot, *, via: str, event_id: str | None
) -> Settlement:
    """A paid session that is no order's own link: recorded when it names an order id of ours
    (paid "for" it through another link, or for an order the database no longer has); left
    alone when it names none (another integration's sale on the same account)."""
    reference = hinted_reference(session)
    order_id = _hinted_order(db, reference)
    if _order_number(reference) is None:
        log.info("payment_not_ours", session_id=session.id, via=via, event_id=event_id)
        return Settlement(Outcome.not_ours)
    reason = ReviewReason.unknown_order
    recorded = _record(db, session, reason, order_id, via=via, event_id=event_id)
    return Settlement(Outcome.needs_review, order_id, reason=reason, recorded=recorded)


def _record(
    db: Session,
    session: SessionSnapshot,
    reason: ReviewReason,
    order_id: int | None,
    *,
    via: str,
    event_id: str | None,
) -> bool:
    """Keep the payment for review, once per session; True when this call recorded it."""
    recorded = _insert_once(
        db,
        PaymentNeedingReview,
        stripe_checkout_session_id=session.id,
        stripe_payment_intent_id=session.payment_intent,
        stripe_event_id=event_id,
        reason=reason,
        order_id=order_id,
        claimed_reference=hinted_reference(session),
        amount_total=session.amount_total,
        currency=(session.currency or "")[:3] or None,
        found_via=via,
        created_at=datetime.now(UTC),
    )
    if recorded:
        log.warning(
            "payment_needs_review",
            reason=reason.value,
            order_id=order_id,
            session_id=session.id,
            payment_intent=session.payment_intent,
            amount_total=session.amount_total,
            currency=session.currency,
            via=via,
            event_id=event_id,
        )
    return recorded


def _insert_once(db: Session, model: Any, **values: Any) -> bool:
    """Insert unless a row for this session id exists; True if inserted.

    A conflict leaves the transaction usable, so a concurrent copy of the same fact (a webhook
    and the return page at once) neither fails nor writes twice.
    """
    return insert_unless_present(db, model.__table__, ["stripe_checkout_session_id"], values)


# -- links that must stop being payable ------------------------------------------------------


def other_live_links(db: Session, order: Order, paying: str) -> list[str]:
    """The order's links other than ``paying`` that may still be open at Stripe.

    A link past its ``expires_at`` is dead at Stripe already; a replaced link was expired or
    found dead when it was replaced. Recovery sessions never seen are unknown here: a reissue
    looks for them at Stripe (``recovery_sessions_to_expire``).
    """
    now = datetime.now(UTC)
    rows = db.execute(
        select(CheckoutLink.stripe_checkout_session_id, CheckoutLink.expires_at)
        .where(CheckoutLink.order_id == order.id)
        .where(CheckoutLink.stripe_checkout_session_id != paying)
        .where(CheckoutLink.replaced_at.is_(None))
    ).all()
    live = {sid for sid, expires_at in rows if expires_at is None or _aware(expires_at) > now}
    current = order.stripe_checkout_session_id
    if current is not None and current != paying and current not in {sid for sid, _ in rows}:
        live.add(current)
    return sorted(live)


class RecoveryFinder(Protocol):
    def stripe_now(self) -> float: ...
    def list_open_sessions(self, created_gte: int) -> list[SessionSnapshot]: ...
    def expire_session(self, session_id: str) -> SessionSnapshot: ...


def expire_open_recoveries(db: Session, stripe: RecoveryFinder, order: Order) -> list[str]:
    """Expire, before an order gets a new link, the sessions a parent opened through the
    recovery URL of one of its expired links, so none stays payable beside the new link.

    Stripe announces no session when it is created, so they are looked up: an open session is
    at most 24 hours old, so one listing of open sessions created in the last day finds them
    (one call per 100 open sessions). Each becomes one of the order's links, for the record.
    Raises ``StripeFailure`` (the caller then changes nothing).
    """
    own = set(
        db.scalars(
            select(CheckoutLink.stripe_checkout_session_id).where(CheckoutLink.order_id == order.id)
        )
    )
    if order.stripe_checkout_session_id is not None:
        own.add(order.stripe_checkout_session_id)
    since = int(stripe.stripe_now()) - 24 * 3600
    found = [s for s in stripe.list_open_sessions(since) if s.recovered_from in own]
    for session in found:
        _remember_recovered(db, order, session)
        stripe.expire_session(session.id)
        log.info("recovery_session_expired", order_id=order.id, session_id=session.id)
    if not found:
        return []
    db.execute(
        update(CheckoutLink)
        .where(CheckoutLink.stripe_checkout_session_id.in_([s.id for s in found]))
        .values(replaced_at=datetime.now(UTC))
        .execution_options(synchronize_session=False)
    )
    return [s.id for s in found]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def request_expiry(db: Session, order: Order, session_ids: Iterable[str], cause: str) -> list[str]:
    """Queue links to be expired at Stripe (in the caller's transaction); returns the new ones."""
    queued = []
    for sid in session_ids:
        if _insert_once(
            db,
            LinkToExpire,
            stripe_checkout_session_id=sid,
            order_id=order.id,
            cause=cause,
            requested_at=datetime.now(UTC),
            attempts=0,
        ):
            queued.append(sid)
    return queued


class Expirer(Protocol):
    async def expire_session(self, session_id: str) -> SessionSnapshot: ...


async def expire_links(
    factory: sessionmaker[Session], stripe: Expirer, session_ids: Sequence[str]
) -> int:
    """Expire queued links at Stripe, outside any transaction; returns how many are done.

    A link Stripe will not expire because it is no longer open (expired, or paid: that payment
    then arrives as a review) or does not know is done too. Any other failure is counted on
    the row and retried by :func:`retry_expiries`; nothing is raised.
    """
    done = 0
    for sid in session_ids:
        error: str | None = None
        try:
            await stripe.expire_session(sid)
        except StripeRejected as e:
            if e.reason not in ("invalid_request", "not_found"):
                error = f"stripe_{e.reason}"
        except StripeFailure as e:
            error = f"stripe_{e.reason}"
        await asyncio.to_thread(_note_attempt, factory, sid, error)
        if error is None:
            done += 1
            log.info("link_expired", session_id=sid)
        else:
            log.warning("link_not_expired", session_id=sid, error=error)
    return done


def _note_attempt(factory: sessionmaker[Session], session_id: str, error: str | None) -> None:
    values: dict[str, Any] = {"attempts": LinkToExpire.attempts + 1, "last_error": error}
    if error is None:
        values["done_at"] = datetime.now(UTC)
    with transaction(factory) as db:
        db.execute(
            update(LinkToExpire)
            .where(LinkToExpire.stripe_checkout_session_id == session_id)
            .values(**values)
        )


def outstanding_expiries(db: Session, limit: int = 100) -> list[str]:
    return list(
        db.scalars(
            select(LinkToExpire.stripe_checkout_session_id)
            .where(LinkToExpire.done_at.is_(None))
            .where(LinkToExpire.attempts < MAX_EXPIRY_ATTEMPTS)
            .order_by(LinkToExpire.id)
            .limit(limit)
        )
    )


async def retry_expiries(factory: sessionmaker[Session], stripe: Expirer) -> int:
    """Expire what earlier attempts could not (run by the upkeep loop)."""

    def pending() -> list[str]:
        with transaction(factory) as db:
            return outstanding_expiries(db)

    ids = await asyncio.to_thread(pending)
    return await expire_links(factory, stripe, ids) if ids else 0


async def after_commit(
    factory: sessionmaker[Session], stripe: Expirer, metrics: Metrics, settled: Settlement
) -> None:
    """What a settlement leaves to do once its transaction committed: expire the order's
    other links at Stripe, and move the review gauge when a review was recorded."""
    if settled.expire:
        await expire_links(factory, stripe, settled.expire)
    if settled.recorded:
        await publish_review_gauge(factory, metrics)


# -- the gauge ------------------------------------------------------------------------------


async def publish_review_gauge(factory: sessionmaker[Session], metrics: Metrics) -> None:
    def count() -> dict[str, int]:
        with transaction(factory) as db:
            return review_counts(db)

    metrics.publish_reviews(await asyncio.to_thread(count))


def review_counts(db: Session) -> dict[str, int]:
    """Open review items per reason, every reason present (0 when none): one GROUP BY."""
    counts = dict.fromkeys((r.value for r in ReviewReason), 0)
    rows = db.execute(
        select(PaymentNeedingReview.reason, func.count())
        .where(PaymentNeedingReview.resolved_at.is_(None))
        .group_by(PaymentNeedingReview.reason)
    )
    for reason, n in rows:
        counts[ReviewReason(reason).value] = int(n)
    return counts


async def upkeep(
    factory: sessionmaker[Session], stripe: Expirer, metrics: Metrics, interval: float
) -> None:
    """Every replica, every ``interval``: the review gauge from the database (so a review
    resolved on another replica leaves no stale count here), and the expiries still owed."""
    while True:
        try:
            await publish_review_gauge(factory, metrics)
            await retry_expiries(factory, stripe)
        except Exception as e:  # the loop outlives any fault; the next round tries again
            log.warning("payments_upkeep_failed", error=f"{type(e).__name__}: {e}"[:300])
        await asyncio.sleep(interval)
