"""The truth about every payment link: what Stripe says of each Checkout Session, in the database.

Each ``checkout_links`` row carries its session's state (``open``, ``expired``, ``complete`` with
a payment status, ``missing`` when Stripe answers 404; null until learnt), its ``expires_at``,
and when and how that was learnt. Every path that learns something (link creation, webhooks,
the poller's events feed, listings and retrieves, the return page) writes it through
:func:`learn`, and :func:`advance`, one plain function, decides what may replace what: facts
only move forward, so a late or duplicated snapshot never undoes a newer one.

Each order carries a copy of its current link's state (``orders.link_state``,
``link_payment_status``, ``checkout_session_expires_at``), written by :func:`learn` in the same
statement batch as the link's row, so the gauges and the listings of orders read one table.

Whether a link counts as dead, open or paid is :func:`bucket`, one SQL expression over either
copy, used by the gauges and by every listing of orders; expiry by time is evaluated there
against Stripe's clock, so no call is needed for a link past its ``expires_at``.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    case,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.orm.attributes import set_committed_value

from basketball_api.db import among
from basketball_api.models import CheckoutLink, Learnt, LinkState, Order, PaymentStatus
from basketball_api.stripe_gateway import SessionSnapshot

ASYNC_SUCCEEDED = "checkout.session.async_payment_succeeded"
ASYNC_FAILED = "checkout.session.async_payment_failed"

#: The Checkout event types the webhook handles and the poller reads from ``GET /v1/events``
#: (Stripe takes at most 20 in ``types[]``).
CHECKOUT_EVENT_TYPES: tuple[str, ...] = (
    "checkout.session.completed",
    "checkout.session.expired",
    ASYNC_SUCCEEDED,
    ASYNC_FAILED,
)

#: Payment statuses that mean the money is there: the one definition of "paid".
PAID_STATUSES = frozenset({PaymentStatus.paid, PaymentStatus.no_payment_required})


class Bucket(enum.StrEnum):
    """What a link means for its pending order (the gauges count orders per bucket)."""

    open = "open"
    expired = "expired"  # expired at Stripe, or open past expires_at + grace
    paid = "paid"
    processing = "processing"  # complete, a delayed payment not settled yet
    failed = "failed"  # complete, the delayed payment failed
    missing = "missing"  # Stripe does not know the session
    unknown = "unknown"  # not learnt yet


#: Buckets in which the parent cannot pay through the link any more.
DEAD = frozenset({Bucket.expired, Bucket.failed, Bucket.missing})


@dataclass(frozen=True, slots=True)
class Fact:
    """What is known of one session."""

    state: LinkState
    payment_status: PaymentStatus | None = None
    expires_at: int = 0  # Unix seconds; 0 when not told


def _payment_status(value: str | None) -> PaymentStatus | None:
    try:
        return PaymentStatus(value) if value else None
    except ValueError:
        return None


def fact_of(snapshot: SessionSnapshot, event_type: str | None = None) -> Fact:
    """The fact a session snapshot tells (or the event that carried it: after a delayed payment
    failed, Stripe's snapshot still says ``complete``/``unpaid``; only the event type tells)."""
    if event_type == ASYNC_SUCCEEDED:
        return Fact(LinkState.complete, PaymentStatus.paid, snapshot.expires_at)
    if event_type == ASYNC_FAILED:
        return Fact(LinkState.complete, PaymentStatus.failed, snapshot.expires_at)
    try:
        state = LinkState(snapshot.status)
    except ValueError:
        state = LinkState.open
    return Fact(state, _payment_status(snapshot.payment_status), snapshot.expires_at)


def is_terminal(fact: Fact) -> bool:
    if fact.state == LinkState.expired:
        return True
    return fact.state == LinkState.complete and (
        fact.payment_status in PAID_STATUSES or fact.payment_status == PaymentStatus.failed
    )


def advance(old: Fact | None, new: Fact) -> Fact | None:
    """The fact to store when ``new`` is learnt about a link that knew ``old``; None: keep ``old``.

    - Nothing replaces a terminal fact (expired; complete and paid; complete and failed).
    - A complete session whose delayed payment is still processing only moves to paid or failed.
    - An open link moves to anything else; a late ``open`` never undoes what came after it.
    - ``missing`` (Stripe answered 404) gives way to anything Stripe says of the session later.
    """
    if old is not None and old.expires_at and not new.expires_at:
        new = Fact(new.state, new.payment_status, old.expires_at)
    if old is None:
        return new
    if new == old or is_terminal(old):
        return None
    if old.state == LinkState.complete:
        return new if new.state == LinkState.complete and is_terminal(new) else None
    if old.state == LinkState.open:
        if new.state == LinkState.open:
            return new if new.expires_at != old.expires_at and not old.expires_at else None
        return new
    # missing
    return None if new.state == LinkState.missing else new


def epoch(moment: datetime | None) -> int:
    if moment is None:
        return 0
    if moment.tzinfo is None:  # SQLite hands back naive UTC
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def stored_fact(link: CheckoutLink) -> Fact | None:
    if link.state is None:
        return None
    return Fact(link.state, link.payment_status, epoch(link.expires_at))


def created_fields(snapshot: SessionSnapshot, at: datetime) -> dict[str, object]:
    """The state columns of a link just created at Stripe: open until its ``expires_at``."""
    fact = fact_of(snapshot)
    return {
        "state": fact.state,
        "payment_status": fact.payment_status,
        "learnt_at": at,
        "learnt_from": Learnt.created,
    }


def learn(
    db: Session,
    facts: Mapping[str, Fact],
    how: Learnt,
    *,
    at: datetime | None = None,
    confirm: bool = False,
) -> list[str]:
    """Write the facts that move their links forward; returns the session ids that changed.
    With ``confirm``, the links whose fact did not change get ``learnt_at`` set too: Stripe
    confirmed them then (a relisting asks only for links not confirmed since it began).

    Sessions that are not one of our links are ignored. The rows are locked (PostgreSQL) in id
    order before deciding, so a webhook and the poller learning the same link at once cannot
    overwrite each other's newer fact; on SQLite the caller's transaction has taken the
    database's write lock first (see :func:`take_write_lock`).
    """
    if not facts:
        return []
    at = at or datetime.now(UTC)
    # Orders before links, as every other path locks them (an order, then its link): the
    # poller locking links first and then their orders deadlocked with a webhook.
    db.execute(
        select(Order.id)
        .where(among(db, Order.stripe_checkout_session_id, list(facts)))
        .order_by(Order.id)
        .with_for_update()
    ).all()
    rows = db.execute(
        select(
            CheckoutLink.id,
            CheckoutLink.stripe_checkout_session_id,
            CheckoutLink.state,
            CheckoutLink.payment_status,
            CheckoutLink.expires_at,
        )
        .where(among(db, CheckoutLink.stripe_checkout_session_id, list(facts)))
        .order_by(CheckoutLink.id)
        .with_for_update()
    ).all()
    # Links grouped by what is written to them: a listing page tells a handful of distinct
    # facts (open/unpaid, expired/unpaid, …), so a batch is a few statements, not one per row.
    groups: dict[Fact, list[int]] = defaultdict(list)  # expires_at 0: unchanged
    written: dict[str, Fact] = {}  # with the link's expires_at after the write (0: none)
    confirmed: list[int] = []
    for link_id, session_id, state, payment_status, expires_at in rows:
        old = None if state is None else Fact(state, payment_status, epoch(expires_at))
        new = advance(old, facts[session_id])
        if new is None:
            if confirm:
                confirmed.append(link_id)
            continue
        unchanged = new.expires_at == epoch(expires_at)
        groups[Fact(new.state, new.payment_status) if unchanged else new].append(link_id)
        written[session_id] = new
    if groups:
        _write(db, groups, list(written), at, how)
    if confirmed:
        links = cast(Table, CheckoutLink.__table__)
        db.execute(
            update(links)
            .where(among(db, links.c.id, confirmed))
            .values(learnt_at=at, learnt_from=how)
        )
    if written or confirmed:
        _update_loaded(db, written, set(confirmed), at, how)
    return list(written)


def _write(
    db: Session, groups: Mapping[Fact, list[int]], sessions: list[str], at: datetime, how: Learnt
) -> None:
    """The links' new facts, one statement per distinct fact; then their copy on the orders
    whose current link they are (a replaced link matches no order), one statement. Both sides
    of that join are named by key: PostgreSQL otherwise scans one of the two tables whole."""
    links = cast(Table, CheckoutLink.__table__)
    orders = cast(Table, Order.__table__)
    for fact, ids in groups.items():
        values: dict[str, object] = {
            "state": fact.state,
            "payment_status": fact.payment_status,
            "learnt_at": at,
            "learnt_from": how,
        }
        if fact.expires_at:
            values["expires_at"] = from_epoch(fact.expires_at)
        db.execute(update(links).where(among(db, links.c.id, ids)).values(values))
    db.execute(
        update(orders)
        .where(orders.c.stripe_checkout_session_id == links.c.stripe_checkout_session_id)
        .where(among(db, links.c.id, [i for ids in groups.values() for i in ids]))
        .where(among(db, orders.c.stripe_checkout_session_id, sessions))
        .values(
            link_state=links.c.state,
            link_payment_status=links.c.payment_status,
            checkout_session_expires_at=func.coalesce(
                links.c.expires_at, orders.c.checkout_session_expires_at
            ),
            updated_at=orders.c.updated_at,  # a copy changed, not the order
        )
    )


def _update_loaded(
    db: Session, written: Mapping[str, Fact], confirmed: set[int], at: datetime, how: Learnt
) -> None:
    """Give the rows this session has loaded the values just written behind its back (as
    loaded values, not changes: nothing is written again, and a caller may still read them
    once the session is closed). A fact's ``expires_at`` is the link's after the write (the
    order's copy takes it too, as in :func:`_write`); 0: the link has none."""
    for obj in list(db.identity_map.values()):
        sid = getattr(obj, "stripe_checkout_session_id", None)
        fact = written.get(sid) if sid is not None else None
        if isinstance(obj, Order) and fact is not None:
            set_committed_value(obj, "link_state", fact.state)
            set_committed_value(obj, "link_payment_status", fact.payment_status)
            if fact.expires_at:
                set_committed_value(obj, "checkout_session_expires_at", from_epoch(fact.expires_at))
        elif isinstance(obj, CheckoutLink) and (fact is not None or obj.id in confirmed):
            if fact is not None:
                set_committed_value(obj, "state", fact.state)
                set_committed_value(obj, "payment_status", fact.payment_status)
                if fact.expires_at:
                    set_committed_value(obj, "expires_at", from_epoch(fact.expires_at))
            set_committed_value(obj, "learnt_at", at)
            set_committed_value(obj, "learnt_from", how)


def take_write_lock(db: Session) -> None:
    """SQLite: take the database's write lock now, so rows read next cannot change before this
    transaction writes. PostgreSQL locks rows with ``FOR UPDATE`` instead."""
    if db.get_bind().dialect.name == "sqlite":
        db.execute(
            update(CheckoutLink)
            .where(CheckoutLink.id == -1)
            .values(state=None)
            .execution_options(synchronize_session=False)
        )


@dataclass(frozen=True)
class StateColumns:
    """Where a query reads a link's state: its own row, or the copy on its order."""

    state: InstrumentedAttribute[LinkState | None]
    payment_status: InstrumentedAttribute[PaymentStatus | None]
    expires_at: InstrumentedAttribute[datetime | None]


OF_LINK = StateColumns(CheckoutLink.state, CheckoutLink.payment_status, CheckoutLink.expires_at)
OF_ORDER = StateColumns(
    Order.link_state, Order.link_payment_status, Order.checkout_session_expires_at
)


def bucket(cutoff: datetime, of: StateColumns = OF_ORDER) -> ColumnElement[str]:
    """The bucket of a link, as one SQL expression over the query's order row (its current
    link's copy) or, with ``of=OF_LINK``, over a ``CheckoutLink`` row.

    ``cutoff`` is Stripe's clock minus the grace period: an open link whose ``expires_at`` is
    before it is dead by time, with no call (Stripe never keeps a session open past it).
    A link not learnt yet (or an order with no link) is ``unknown``.
    """
    return case(
        (of.state.is_(None), literal(Bucket.unknown.value)),
        (
            and_(of.state == LinkState.open, of.expires_at < cutoff),
            literal(Bucket.expired.value),
        ),
        (of.state == LinkState.open, literal(Bucket.open.value)),
        (of.state == LinkState.expired, literal(Bucket.expired.value)),
        (of.state == LinkState.missing, literal(Bucket.missing.value)),
        (of.payment_status.in_(list(PAID_STATUSES)), literal(Bucket.paid.value)),
        (of.payment_status == PaymentStatus.failed, literal(Bucket.failed.value)),
        else_=literal(Bucket.processing.value),
    )


def unresolved(link: StateColumns = OF_LINK) -> ColumnElement[bool]:
    """Links whose state may still change at Stripe: not learnt, open, processing or missing."""
    return or_(
        link.state.is_(None),
        link.state.in_([LinkState.open, LinkState.missing]),
        and_(
            link.state == LinkState.complete,
            or_(
                link.payment_status.is_(None),
                link.payment_status.not_in([*PAID_STATUSES, PaymentStatus.failed]),
            ),
        ),
    )


def current_link() -> ColumnElement[bool]:
    """The join condition of an order to its current link."""
    return CheckoutLink.stripe_checkout_session_id == Order.stripe_checkout_session_id
