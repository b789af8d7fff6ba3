"""All ORM models, on one metadata so Alembic sees a single schema."""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Category(enum.StrEnum):
    tournament = "tournament"
    monthly = "monthly"
    jersey = "jersey"


class OrderStatus(enum.StrEnum):
    pending = "pending"
    paid = "paid"
    cancelled = "cancelled"


class LinkState(enum.StrEnum):
    """A Checkout Session's status at Stripe, or ``missing`` when Stripe answers 404 for it."""

    open = "open"
    expired = "expired"
    complete = "complete"
    missing = "missing"


class PaymentStatus(enum.StrEnum):
    """Stripe's ``payment_status``, plus ``failed``: a delayed payment that failed (Stripe then
    says ``unpaid``; only the ``checkout.session.async_payment_failed`` event tells)."""

    unpaid = "unpaid"
    paid = "paid"
    no_payment_required = "no_payment_required"
    failed = "failed"


class Learnt(enum.StrEnum):
    """How a link's state was learnt."""

    created = "created"
    webhook = "webhook"
    events = "events"
    listing = "listing"
    retrieve = "retrieve"
    return_page = "return_page"


def _enum(cls: type[enum.StrEnum], name: str, length: int = 16) -> Enum:
    return Enum(
        cls,
        name=name,
        native_enum=False,
        length=length,
        create_constraint=True,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


class Product(Base):
    """An item of the club's catalogue, managed as data by operators (catalogue.py)."""

    __tablename__ = "products"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[Category] = mapped_column(_enum(Category, "category"))
    unit_amount: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3), default="usd")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    event_date: Mapped[date | None] = mapped_column(Date)  # a tournament's day, if any
    sale_starts_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sale_ends_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), onupdate=utcnow)


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        # The gauge query: pending orders by product and what their current link says, from
        # the index alone, with no join (migration 0009).
        Index(
            "ix_orders_gauge",
            "status",
            "product_id",
            "link_state",
            "link_payment_status",
            "checkout_session_expires_at",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    status: Mapped[OrderStatus] = mapped_column(
        _enum(OrderStatus, "order_status"), default=OrderStatus.pending
    )
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    amount: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    parent_email: Mapped[str] = mapped_column(String(320))
    player_name: Mapped[str] = mapped_column(String(200))
    stripe_checkout_session_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    checkout_url: Mapped[str | None] = mapped_column(Text)
    checkout_session_created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    checkout_session_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The current link's state and payment status, equal to its ``checkout_links`` row (written
    # with it by ``link_state.learn`` and ``orders.attach_session``): the gauges read orders
    # alone. ``checkout_session_expires_at`` is the current link's ``expires_at``.
    link_state: Mapped[LinkState | None] = mapped_column(_enum(LinkState, "link_state"))
    link_payment_status: Mapped[PaymentStatus | None] = mapped_column(
        _enum(PaymentStatus, "link_payment_status", length=24)
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow, server_default=func.now()
    )
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The Checkout Session whose payment was applied (null for older orders and by-hand ones).
    paid_by_session_id: Mapped[str | None] = mapped_column(String(255))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The stranded-order lifecycle (lifecycle.py): when the current link was first seen
    # dead, when the parent was emailed about it (once per order, ever), and a snooze.
    stranded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stranded_emailed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    snoozed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    snoozed_by: Mapped[str | None] = mapped_column(String(100))

    product: Mapped[Product] = relationship(lazy="joined")


class ProcessedWebhookEvent(Base):
    """A Stripe event id seen once; the unique constraint makes applying it idempotent."""

    __tablename__ = "processed_webhook_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stripe_event_id: Mapped[str] = mapped_column(String(255), unique=True)
    type: Mapped[str] = mapped_column(String(100))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CheckoutLink(Base):
    """Every Checkout Session an order ever had, and what Stripe says about it.

    ``state`` is null until learnt; facts only move forward (see ``link_state.advance``).
    """

    __tablename__ = "checkout_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    stripe_checkout_session_id: Mapped[str] = mapped_column(String(255), unique=True)
    url: Mapped[str | None] = mapped_column(Text)
    recovery_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    replaced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set on a session Stripe created from one of the order's expired links (recovery URL).
    recovered_from: Mapped[str | None] = mapped_column(String(255))
    state: Mapped[LinkState | None] = mapped_column(_enum(LinkState, "link_state"))
    payment_status: Mapped[PaymentStatus | None] = mapped_column(
        _enum(PaymentStatus, "link_payment_status", length=24)
    )
    learnt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    learnt_from: Mapped[Learnt | None] = mapped_column(_enum(Learnt, "link_learnt_from"))


class PollerCursor(Base):
    """One row (id 1): where the poller stands in Stripe's events feed, and Stripe's clock.

    ``event_created_at`` is the cursor's created time, the feed position: every event created
    before it has been read, and the next poll reads from a short overlap before it (a cursor
    older than the events Stripe keeps means a relisting). ``event_id`` names the newest event
    read. ``stripe_clock_at`` only moves forward. ``polled_at`` is Stripe's time when the last
    successful poll ended (every replica reports it as the last successful refresh).
    ``relisting_since`` (local time) is set while links that may have changed during a gap in
    the feed are being listed again: links learnt since then are not listed again.
    """

    __tablename__ = "poller_cursor"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str | None] = mapped_column(String(255))
    event_created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stripe_clock_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    polled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    relisting_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OrderAccessToken(Base):
    """A capability to read and pay one order: only the SHA-256 of the token is kept.

    Each link handed to a parent (the order confirmation, an email, the operator page) carries
    a token of its own, so every one keeps working and none can be rebuilt from the database.
    """

    __tablename__ = "order_access_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    purpose: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReviewReason(enum.StrEnum):
    """Why a payment could not be applied to an order (the gauge's ``reason`` label)."""

    unknown_order = "unknown_order"  # not paid through any order's own link
    cancelled_order = "cancelled_order"
    already_paid = "already_paid"  # the order was paid otherwise (by hand, or before records)
    second_payment = "second_payment"  # another of the order's own links paid it already
    amount_mismatch = "amount_mismatch"
    currency_mismatch = "currency_mismatch"


class Resolution(enum.StrEnum):
    """What an operator did about a payment needing review."""

    applied = "applied"  # applied by hand to a pending order
    refunded = "refunded"  # refunded in Stripe
    dismissed = "dismissed"  # not the club's money (another integration's sale)


class PaymentNeedingReview(Base):
    """Money Stripe took that no order could take: kept, counted and listed until an operator
    resolves it. One row per Checkout Session (a repeated event finds the row it made)."""

    __tablename__ = "payments_needing_review"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stripe_checkout_session_id: Mapped[str] = mapped_column(String(255), unique=True)
    stripe_payment_intent_id: Mapped[str | None] = mapped_column(String(255))
    stripe_event_id: Mapped[str | None] = mapped_column(String(255))
    reason: Mapped[ReviewReason] = mapped_column(_enum(ReviewReason, "review_reason", 24))
    # The order the session belongs to or names (null when it names none that exists).
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), index=True)
    claimed_reference: Mapped[str | None] = mapped_column(String(255))
    amount_total: Mapped[int | None] = mapped_column(Integer)
    currency: Mapped[str | None] = mapped_column(String(3))
    found_via: Mapped[str] = mapped_column(String(24))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_by: Mapped[str | None] = mapped_column(String(100))
    resolution: Mapped[Resolution | None] = mapped_column(_enum(Resolution, "review_resolution"))
    note: Mapped[str | None] = mapped_column(Text)


class LinkToExpire(Base):
    """A live link that must stop being payable (its order was paid through another, or it
    was replaced): expired at Stripe after the commit, retried by the upkeep loop until done."""

    __tablename__ = "links_to_expire"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stripe_checkout_session_id: Mapped[str] = mapped_column(String(255), unique=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    cause: Mapped[str] = mapped_column(String(24))
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(100))
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
