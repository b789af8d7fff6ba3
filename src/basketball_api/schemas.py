"""Request and response bodies of the HTTP API."""

from __future__ import annotations

import unicodedata
from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, field_validator

from basketball_api.models import Category, Order, OrderStatus

MAX_ID = 2**31 - 1  # ids are 32-bit integers in the database; larger ones are a 422, not a 500
OrderId = Annotated[int, Path(ge=1, le=MAX_ID, description="The order's id.")]


def _as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every one the service stores is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


#: A moment in an answer: always with its offset, so no client reads it as local time.
UtcDateTime = Annotated[datetime, AfterValidator(_as_utc)]


class ProductOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    category: Category
    unit_amount: int = Field(description="Price in the currency's smallest unit (cents).")
    currency: str
    active: bool
    event_date: date | None
    sale_ends_at: UtcDateTime | None = Field(description="On sale until then (null: no end set).")


class OrderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    product_id: int = Field(gt=0, le=MAX_ID)
    parent_email: EmailStr
    player_name: str = Field(min_length=1, max_length=200)
    quantity: int = Field(default=1, ge=1, le=20)
    create_checkout: bool = Field(
        default=True, description="Create the Stripe Checkout link now (false: pay later)."
    )

    @field_validator("player_name")
    @classmethod
    def _a_name(cls, value: str) -> str:
        problem = name_problem(value)
        if problem is not None:
            raise ValueError(f"player_name {problem}")
        return unicodedata.normalize("NFC", value)


#: Unicode categories no name contains: controls, surrogates, private use, unassigned, and
#: line/paragraph separators. Format characters (Cf) stay allowed: zero-width joiners and
#: non-joiners are part of Persian, Hindi and emoji spelling.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Co", "Cn", "Zl", "Zp"})
#: Bidirectional embeddings, overrides and isolates: they reorder what an operator reads.
_BIDI_CONTROLS = frozenset({*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0xFEFF})


def name_problem(value: str) -> str | None:
    """Why ``value`` is not a name (None when it is): any script, marks, joiners and emoji
    are names; control characters are not."""
    for ch in value:
        if unicodedata.category(ch) in _REFUSED_CATEGORIES or ord(ch) in _BIDI_CONTROLS:
            return f"contains the control character U+{ord(ch):04X}"
    if not any(unicodedata.category(ch)[0] in "LNS" for ch in value):
        return "needs at least one letter, digit or symbol"
    return None


class OrderFields(BaseModel):
    """An order as operators and its creator see it (Stripe's URL aside)."""

    id: int = Field(description="The order's number, to quote to the club; it opens nothing.")
    product_id: int
    product_name: str
    category: Category
    status: OrderStatus
    quantity: int
    amount: int
    currency: str
    parent_email: str
    player_name: str
    checkout_session_id: str | None
    checkout_expires_at: UtcDateTime | None
    created_at: UtcDateTime
    paid_at: UtcDateTime | None
    cancelled_at: UtcDateTime | None

    @staticmethod
    def fields_of(order: Order) -> dict[str, object]:
        return {
            "id": order.id,
            "product_id": order.product_id,
            "product_name": order.product.name,
            "category": order.product.category,
            "status": order.status,
            "quantity": order.quantity,
            "amount": order.amount,
            "currency": order.currency,
            "parent_email": order.parent_email,
            "player_name": order.player_name,
            "checkout_session_id": order.stripe_checkout_session_id,
            "checkout_expires_at": order.checkout_session_expires_at,
            "created_at": order.created_at,
            "paid_at": order.paid_at,
            "cancelled_at": order.cancelled_at,
        }


class OrderOut(OrderFields):
    """An order for operators, with the current Checkout Session's URL."""

    checkout_url: str | None

    @classmethod
    def of(cls, order: Order) -> OrderOut:
        return cls.model_validate({**cls.fields_of(order), "checkout_url": order.checkout_url})


class ParentOrderOut(BaseModel):
    """What the holder of an order's link sees: no ids to count, no Stripe URL."""

    number: int = Field(description="The order's number, to quote to the club.")
    product_name: str
    category: Category
    status: OrderStatus
    quantity: int
    amount: int
    currency: str
    player_name: str
    created_at: UtcDateTime
    paid_at: UtcDateTime | None
    cancelled_at: UtcDateTime | None

    @classmethod
    def of(cls, order: Order) -> ParentOrderOut:
        return cls(
            number=order.id,
            product_name=order.product.name,
            category=order.product.category,
            status=order.status,
            quantity=order.quantity,
            amount=order.amount,
            currency=order.currency,
            player_name=order.player_name,
            created_at=order.created_at,
            paid_at=order.paid_at,
            cancelled_at=order.cancelled_at,
        )


class OrderCreated(OrderFields):
    """The answer to ``POST /orders``: the only time the order's access token is shown.

    It carries the order's pay link, never Stripe's own URL: the pay link keeps working when a
    Checkout Session expires (it opens a fresh one)."""

    access_token: str = Field(
        description="The order's capability (192 random bits): it opens the order's page and "
        "pay link. Shown once; the club keeps only its hash."
    )
    pay_url: str = Field(description="The pay link (`/pay/{token}`): give this to the parent.")
    order_url: str = Field(description="The parent's order page (`/o/{token}`).")


class ErrorOut(BaseModel):
    detail: str
    code: str
