"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import Path
from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

from basketball_api.models import Category, Order, OrderStatus

MAX_ID = 2**31 - 1  # ids are 32-bit integers in the database; larger ones are a 422, not a 500
OrderId = Annotated[int, Path(ge=1, le=MAX_ID, description="The order's id.")]


class ProductOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    category: Category
    unit_amount: int = Field(description="Price in the currency's smallest unit (cents).")
    currency: str
    active: bool
    event_date: date | None
    sale_ends_at: datetime | None = Field(description="On sale until then (null: no end set).")

    @field_validator("sale_ends_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        # SQLite hands back naive UTC
        return value.replace(tzinfo=UTC) if value and value.tzinfo is None else value


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
    def _printable(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError("player_name must be printable text")
        return value


class OrderOut(BaseModel):
    id: int
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
    checkout_url: str | None
    checkout_expires_at: datetime | None
    created_at: datetime
    paid_at: datetime | None
    cancelled_at: datetime | None

    @classmethod
    def of(cls, order: Order) -> OrderOut:
        return cls(
            id=order.id,
            product_id=order.product_id,
            product_name=order.product.name,
            category=order.product.category,
            status=order.status,
            quantity=order.quantity,
            amount=order.amount,
            currency=order.currency,
            parent_email=order.parent_email,
            player_name=order.player_name,
            checkout_session_id=order.stripe_checkout_session_id,
            checkout_url=order.checkout_url,
            checkout_expires_at=order.checkout_session_expires_at,
            created_at=order.created_at,
            paid_at=order.paid_at,
            cancelled_at=order.cancelled_at,
        )


class ErrorOut(BaseModel):
    detail: str
    code: str
