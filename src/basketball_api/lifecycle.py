"""Every stranded order has an end.

An order is *stranded* while it is pending behind a dead payment link. The lifecycle gives
each one an end, on its own and with safe defaults:

1. **stranded**: the first time its link is seen dead, the moment is recorded on the order;
2. **emailed**: with email configured, the parent is sent the order's pay link once — the
   moment is recorded on the order and the email is never sent twice, whatever happens later;
3. **auto_cancelled**: after ``STRANDED_CANCEL_AFTER_DAYS`` stranded (7 by default; 0 =
   never) and not snoozed, the order is cancelled through the order state machine, with an
   audit log line, and leaves the gauges.

An operator may instead **snooze** a stranded order (it stops counting for the alerts and is
not cancelled until the snooze ends) or **cancel** it. A stranded order that gets a live link
again (reissued, or the parent used the pay link) or is paid leaves the lifecycle.

What to do is a plain function (:func:`plan`) of what the database says and of which orders
have a dead link; :func:`run_once` applies it. Every change is a conditional update, so two
replicas running the lifecycle at once never email or count anything twice. Time is Stripe's
clock, so the sandbox's clock control moves the lifecycle as it moves link expiry.
Each transition is counted in ``basketball_api_stranded_order_transitions_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import anyio.to_thread
import structlog
from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from basketball_api.db import transaction
from basketball_api.errors import Conflict
from basketball_api.metrics import CATEGORIES, Metrics
from basketball_api.models import Order, OrderStatus, Product
from basketball_api.orders import CheckoutCreator, cancel_order, get_order, transition
from basketball_api.settings import Settings

log = structlog.get_logger("basketball_api.lifecycle")

DAY = 86400.0

# Emails the parent of an order a working link; True when an email went out.
SendLink = Callable[[int], bool]


@dataclass(frozen=True)
class Policy:
    cancel_after_seconds: float  # 0: never cancel automatically
    email: bool  # whether parents are emailed (SMTP configured)

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(settings.stranded_cancel_after_days * DAY, bool(settings.smtp_host))


@dataclass(frozen=True)
class Tracked:
    """A pending order as the lifecycle sees it (times as Unix seconds)."""

    order_id: int
    category: str
    dead: bool
    stranded_at: float | None = None
    emailed_at: float | None = None
    snoozed_until: float | None = None

    def snoozed(self, now: float) -> bool:
        return self.snoozed_until is not None and self.snoozed_until > now


@dataclass(frozen=True)
class Plan:
    strand: list[int] = field(default_factory=list)  # dead, first seen now
    recover: list[int] = field(default_factory=list)  # was stranded, has a live link again
    email: list[int] = field(default_factory=list)
    cancel: list[int] = field(default_factory=list)
    snoozed: dict[str, int] = field(default_factory=dict)  # per category, for the gauge


def plan(orders: Iterable[Tracked], policy: Policy, now: float) -> Plan:
    """What to do with each pending order, now."""
    result = Plan(snoozed=dict.fromkeys(CATEGORIES, 0))
    for order in orders:
        if not order.dead:
            if order.stranded_at is not None or order.snoozed_until is not None:
                result.recover.append(order.order_id)
            continue
        if order.stranded_at is None:
            result.strand.append(order.order_id)
        snoozed = order.snoozed(now)
        if snoozed:
            result.snoozed[order.category] = result.snoozed.get(order.category, 0) + 1
        if policy.email and order.emailed_at is None and not snoozed:
            result.email.append(order.order_id)
        stranded_since = order.stranded_at if order.stranded_at is not None else now
        if (
            policy.cancel_after_seconds > 0
            and not snoozed
            and now - stranded_since >= policy.cancel_after_seconds
        ):
            result.cancel.append(order.order_id)
    return result


@dataclass
class Outcome:
    stranded: list[int] = field(default_factory=list)
    emailed: list[int] = field(default_factory=list)
    auto_cancelled: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)  # by someone else since the last run


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _seconds(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:  # SQLite hands back naive UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _claim(db: Session, order_id: int, column: Any, value: datetime | None, *where: Any) -> bool:
    """Set ``column`` on one order if ``where`` still holds; whether this call did it."""
    result = db.execute(
        update(Order)
        .where(Order.id == order_id, *where)
        .values({column: value})
        .execution_options(synchronize_session=False)
    )
    return cast(CursorResult[Any], result).rowcount == 1


_CHUNK = 900  # ids per IN list: well under SQLite's limit on bound parameters


def _claim_many(
    db: Session, ids: list[int], values: Mapping[Any, datetime | None], *where: Any
) -> list[int]:
    """Set ``values`` on the orders ``ids`` where ``where`` still holds: the ids this call
    changed (so two replicas never both take the same step)."""
    claimed: list[int] = []
    for i in range(0, len(ids), _CHUNK):
        stmt = (
            update(Order)
            .where(Order.id.in_(ids[i : i + _CHUNK]), *where)
            .values(dict(values))
            .returning(Order.id)
            .execution_options(synchronize_session=False)
        )
        claimed.extend(db.scalars(stmt))
    return sorted(claimed)


def _tracked(db: Session, dead: Mapping[int, str]) -> list[Tracked]:
    """Pending orders that are dead or carry lifecycle state."""
    columns = select(
        Order.id,
        Product.category,
        Order.stranded_at,
        Order.stranded_emailed_at,
        Order.snoozed_until,
    ).join(Product, Product.id == Order.product_id)
    pending = columns.where(Order.status == OrderStatus.pending)
    ids = sorted(dead)
    statements = [
        pending.where(or_(Order.stranded_at.is_not(None), Order.snoozed_until.is_not(None)))
    ] + [pending.where(Order.id.in_(ids[i : i + _CHUNK])) for i in range(0, len(ids), _CHUNK)]
    rows = {row[0]: row for stmt in statements for row in db.execute(stmt)}
    return [
        Tracked(
            order_id=order_id,
            category=category.value,
            dead=order_id in dead,
            stranded_at=_seconds(stranded_at),
            emailed_at=_seconds(emailed_at),
            snoozed_until=_seconds(snoozed_until),
        )
        for order_id, category, stranded_at, emailed_at, snoozed_until in rows.values()
    ]


def _left_by_cancellation(db: Session) -> list[int]:
    """Stranded orders someone cancelled since the last run (an operator, the API, the CLI);
    their lifecycle state is cleared, and only the run that clears it reports them."""
    stmt = (
        select(Order.id, Order.status)
        .where(Order.status != OrderStatus.pending)
        .where(Order.stranded_at.is_not(None))
    )
    cancelled = []
    for order_id, status in db.execute(stmt).all():
        cleared = _claim(db, order_id, Order.stranded_at, None, Order.stranded_at.is_not(None))
        if cleared and status == OrderStatus.cancelled:
            cancelled.append(order_id)
    return cancelled


def run_once(
    factory: sessionmaker[Session],
    dead: Mapping[int, str],
    *,
    policy: Policy,
    now: float,
    send_link: SendLink,
    metrics: Metrics | None = None,
) -> Outcome:
    """Apply the lifecycle once. ``dead`` maps every pending order whose link is dead to its
    category (the same decision as the stranded-order gauge); ``now`` is Stripe's clock."""
    outcome = Outcome()
    with transaction(factory) as db:
        outcome.cancelled = _left_by_cancellation(db)
        todo = plan(_tracked(db, dead), policy, now)
        _claim_many(
            db,
            todo.recover,
            {Order.stranded_at: None, Order.snoozed_until: None, Order.snoozed_by: None},
        )
        outcome.stranded = _claim_many(
            db, todo.strand, {Order.stranded_at: _at(now)}, Order.stranded_at.is_(None)
        )
        for order_id in outcome.stranded:
            log.info("order_stranded", order_id=order_id)
        for order_id in todo.cancel:
            if _auto_cancel(db, order_id, now, policy):
                outcome.auto_cancelled.append(order_id)
        cancelled = set(outcome.auto_cancelled)
        emails = _claim_many(
            db,
            [o for o in todo.email if o not in cancelled],
            {Order.stranded_emailed_at: _at(now)},
            Order.stranded_emailed_at.is_(None),
        )
    for order_id in emails:
        if _send(send_link, order_id):
            outcome.emailed.append(order_id)
        else:  # not sent: release the claim, the next run tries again
            with transaction(factory) as db:
                db.execute(
                    update(Order)
                    .where(Order.id == order_id)
                    .values(stranded_emailed_at=None)
                    .execution_options(synchronize_session=False)
                )
    if metrics is not None:
        for name, ids in (
            ("stranded", outcome.stranded),
            ("emailed", outcome.emailed),
            ("auto_cancelled", outcome.auto_cancelled),
            ("cancelled", outcome.cancelled),
        ):
            if ids:
                metrics.stranded_transitions.labels(transition=name).inc(len(ids))
        metrics.publish_snoozed(todo.snoozed)
    return outcome


def _send(send_link: SendLink, order_id: int) -> bool:
    try:
        return send_link(order_id)
    except Exception as e:  # one parent's link must not stop the others'
        log.warning("stranded_email_failed", order_id=order_id, error=type(e).__name__)
        return False


def _auto_cancel(db: Session, order_id: int, now: float, policy: Policy) -> bool:
    order = get_order(db, order_id, for_update=True)
    if order.status != OrderStatus.pending:
        return False
    stranded_since = _seconds(order.stranded_at) or now
    transition(order, OrderStatus.cancelled, cause="stranded_auto_cancel")
    order.stranded_at = None
    order.snoozed_until = None
    order.snoozed_by = None
    db.flush()
    log.warning(
        "stranded_order_auto_cancelled",
        order_id=order_id,
        stranded_days=round((now - stranded_since) / DAY, 1),
        cancel_after_days=round(policy.cancel_after_seconds / DAY, 1),
        audit="payment link dead for the configured time; cancelled automatically",
    )
    return True


def urgent_categories(
    db: Session, *, now: float, days_before_event: int, configured: frozenset[str]
) -> frozenset[str]:
    """The configured urgent categories, and those with a product whose event is between
    today and ``days_before_event`` days ahead (Stripe's clock, UTC dates)."""
    if days_before_event <= 0:
        return configured
    today = _at(now).date()
    stmt = (
        select(Product.category)
        .where(Product.event_date.is_not(None))
        .where(Product.event_date >= today)
        .where(Product.event_date <= today + timedelta(days=days_before_event))
        .distinct()
    )
    return configured | {category.value for category in db.scalars(stmt)}


# -- what operators do --------------------------------------------------------------------


def snooze(db: Session, order_id: int, *, until: float, by: str) -> Order:
    """Snooze a pending order until ``until`` (Unix seconds): it stops counting for the
    stranded-order alerts and is not cancelled automatically before then."""
    order = get_order(db, order_id, for_update=True)
    if order.status != OrderStatus.pending:
        raise Conflict(f"order {order_id} is {order.status.value}; only pending orders snooze")
    order.snoozed_until = _at(until)
    order.snoozed_by = by[:100]
    db.flush()
    log.info("stranded_order_snoozed", order_id=order_id, until=_at(until).isoformat(), by=by)
    return order


def cancel(db: Session, stripe: CheckoutCreator, order_id: int, *, by: str) -> Order:
    """An operator cancels an order (its link is expired at Stripe first if still open)."""
    order = cancel_order(db, stripe, order_id, by=by)
    log.info("stranded_order_cancelled", order_id=order_id, by=by)
    return order


# -- the loop -----------------------------------------------------------------------------


class Lifecycle:
    """Runs :func:`run_once` after the refresher knows which links are dead, every interval.

    ``dead_orders`` says which pending orders have a dead link (None while nothing is known
    yet, before the first successful refresh); ``stripe_now`` is Stripe's clock; ``urgent``
    which categories are urgent now (published to ``basketball_api_category_urgent``).
    """

    def __init__(
        self,
        factory: sessionmaker[Session],
        *,
        policy: Policy,
        dead_orders: Callable[[Session, float], Mapping[int, str] | None],
        stripe_now: Callable[[], float],
        send_link: SendLink,
        metrics: Metrics,
        interval_seconds: float,
        after_change: Callable[[], None] | None = None,
        urgent: Callable[[Session, float], frozenset[str]] | None = None,
    ) -> None:
        self.factory = factory
        self.policy = policy
        self.dead_orders = dead_orders
        self.stripe_now = stripe_now
        self.send_link = send_link
        self.metrics = metrics
        self.interval = interval_seconds
        self.after_change = after_change
        self.urgent = urgent
        self._task: asyncio.Task[None] | None = None

    def run_now(self) -> Outcome | None:
        """One run, in the calling (worker) thread; None while no link state is known."""
        now = self.stripe_now()
        with transaction(self.factory) as db:
            dead = self.dead_orders(db, now)
            if self.urgent is not None:
                self.metrics.publish_urgent_categories(self.urgent(db, now))
        if dead is None:
            return None
        outcome = run_once(
            self.factory,
            dead,
            policy=self.policy,
            now=now,
            send_link=self.send_link,
            metrics=self.metrics,
        )
        return outcome

    async def run(self) -> None:
        while True:
            try:
                # A worker thread of anyio's: sending a link calls Stripe through the gateway.
                outcome = await anyio.to_thread.run_sync(self.run_now)
            except Exception as e:  # the loop must survive; the next run tries again
                log.warning("lifecycle_failed", error=f"{type(e).__name__}: {e}"[:300])
            else:
                changed = outcome is not None and (outcome.auto_cancelled or outcome.emailed)
                if changed and self.after_change is not None:
                    self.after_change()  # recount now: cancelled orders leave the gauges
            await asyncio.sleep(self.interval)

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self.run(), name="stranded-order-lifecycle")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
