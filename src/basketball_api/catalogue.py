"""The club's catalogue as data: products created, changed and taken off sale by operators.

Categories stay the fixed set of :class:`~basketball_api.models.Category` (they are metric
label values); everything else — names, prices, currencies, event dates, sale windows — is
rows an operator manages through ``/admin/products`` or the page at ``/admin/catalogue``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Annotated, Any

import structlog
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from basketball_api.errors import Conflict, NotFound, Unprocessable
from basketball_api.models import Category, Order, Product

log = structlog.get_logger("basketball_api.catalogue")

MAX_UNIT_AMOUNT = 99_999_999  # Stripe's largest amount in the smallest currency unit
# Every amount the service shows (pages, CSV, CLI) is units and cents: currencies without
# exactly two decimals at Stripe are refused rather than shown a hundred times too small.
NOT_TWO_DECIMALS = frozenset({
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx",
    "vnd", "vuv", "xaf", "xof", "xpf", "bhd", "jod", "kwd", "omr", "tnd",
})  # fmt: skip
# Stripe's minimum charge in the currencies a club is likely to sell in (its "Minimum and
# maximum charge amounts" table): a cheaper product could be listed but never paid.
MINIMUM_UNIT_AMOUNT = {"usd": 50, "eur": 50, "gbp": 30, "cad": 50, "aud": 50, "nzd": 50, "chf": 50}
Name = Annotated[str, Field(min_length=1, max_length=200)]
UnitAmount = Annotated[
    int, Field(gt=0, le=MAX_UNIT_AMOUNT, description="Price in the currency's smallest unit.")
]
Currency = Annotated[
    str, Field(pattern="^[a-z]{3}$", description="ISO 4217 code, lower case (usd).")
]


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    if moment.tzinfo is None:  # SQLite hands back naive UTC
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class _ProductFields(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("name", check_fields=False)
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and not value.isprintable():
            raise ValueError("name must be printable text")
        return value

    @field_validator("currency", mode="before", check_fields=False)
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("sale_starts_at", "sale_ends_at", check_fields=False)
    @classmethod
    def _as_utc(cls, value: datetime | None) -> datetime | None:
        return _utc(value)


def _check_price(unit_amount: int | None, currency: str | None) -> None:
    if currency is not None and currency in NOT_TWO_DECIMALS:
        raise ValueError(
            f"currency: {currency} has no cents; the catalogue takes currencies with two decimals"
        )
    minimum = MINIMUM_UNIT_AMOUNT.get(currency or "", 1)
    if unit_amount is not None and unit_amount < minimum:
        raise ValueError(
            f"unit_amount: Stripe charges at least {minimum / 100:.2f} {(currency or '').upper()}"
        )


class ProductIn(_ProductFields):
    """A new product."""

    name: Name
    category: Category
    unit_amount: UnitAmount
    currency: Currency = "usd"
    active: bool = True
    event_date: date | None = None
    sale_starts_at: AwareDatetime | None = Field(
        default=None, description="On sale from this moment (unset: at once)."
    )
    sale_ends_at: AwareDatetime | None = Field(
        default=None, description="On sale until this moment (unset: until deactivated)."
    )

    @model_validator(mode="after")
    def _window(self) -> ProductIn:
        _check_window(self.sale_starts_at, self.sale_ends_at)
        _check_price(self.unit_amount, self.currency)
        return self


class ProductUpdate(_ProductFields):
    """Changes to a product: only the fields present are changed (``null`` clears a date)."""

    name: Name | None = None
    category: Category | None = None
    unit_amount: UnitAmount | None = None
    currency: Currency | None = None
    active: bool | None = None
    event_date: date | None = None
    sale_starts_at: AwareDatetime | None = None
    sale_ends_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _required_stay_set(self) -> ProductUpdate:
        for field in ("name", "category", "unit_amount", "currency", "active"):
            if field in self.model_fields_set and getattr(self, field) is None:
                raise ValueError(f"{field} cannot be cleared")
        return self


class ProductAdminOut(BaseModel):
    """A product as operators see it, on sale or not."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    category: Category
    unit_amount: int
    currency: str
    active: bool
    event_date: date | None
    sale_starts_at: datetime | None
    sale_ends_at: datetime | None
    on_sale: bool = Field(description="Active and inside its sale window right now.")
    created_at: datetime
    updated_at: datetime | None

    @classmethod
    def of(cls, product: Product, now: datetime) -> ProductAdminOut:
        return cls(
            id=product.id,
            name=product.name,
            category=product.category,
            unit_amount=product.unit_amount,
            currency=product.currency,
            active=product.active,
            event_date=product.event_date,
            sale_starts_at=_utc(product.sale_starts_at),
            sale_ends_at=_utc(product.sale_ends_at),
            on_sale=is_on_sale(product, now),
            created_at=_utc(product.created_at) or now,
            updated_at=_utc(product.updated_at),
        )


def _check_window(starts: datetime | None, ends: datetime | None) -> None:
    if starts is not None and ends is not None and ends <= starts:
        raise ValueError("sale_ends_at must be after sale_starts_at")


def is_on_sale(product: Product, now: datetime) -> bool:
    """Active, and ``now`` inside the sale window (either end may be open)."""
    if not product.active:
        return False
    starts, ends = _utc(product.sale_starts_at), _utc(product.sale_ends_at)
    return (starts is None or starts <= now) and (ends is None or now < ends)


def all_products(db: Session) -> Sequence[Product]:
    return db.scalars(select(Product).order_by(Product.id)).all()


def products_on_sale(db: Session, now: datetime) -> list[Product]:
    """What a parent may buy at ``now`` (the catalogue is small: filtered here, one rule)."""
    return [p for p in all_products(db) if is_on_sale(p, now)]


def get_product(db: Session, product_id: int) -> Product:
    product = db.get(Product, product_id)
    if product is None:
        raise NotFound(f"product {product_id} does not exist")
    return product


def create_product(db: Session, data: ProductIn, *, operator: str | None = None) -> Product:
    product = Product(**data.model_dump())
    db.add(product)
    db.flush()
    log.info("product_created", product_id=product.id, category=product.category.value, by=operator)
    return product


def update_product(
    db: Session, product_id: int, changes: ProductUpdate, *, operator: str | None = None
) -> Product:
    """Apply ``changes``; orders already taken keep the price they were taken at.

    A product's category cannot change once it has orders: the category is the label those
    orders are counted under, and moving them would rewrite the stranded-order gauges' history.
    """
    product = get_product(db, product_id)
    values = changes.model_dump(exclude_unset=True)
    category = values.get("category")
    if category is not None and category != product.category and _has_orders(db, product_id):
        raise Conflict(
            f"product {product_id} has orders; its category cannot change "
            "(create a new product instead)"
        )
    starts = values.get("sale_starts_at", _utc(product.sale_starts_at))
    ends = values.get("sale_ends_at", _utc(product.sale_ends_at))
    try:
        _check_window(starts, ends)
        _check_price(
            values.get("unit_amount", product.unit_amount), values.get("currency", product.currency)
        )
    except ValueError as e:
        raise Unprocessable(str(e)) from e
    for field, value in values.items():
        setattr(product, field, value)
    db.flush()
    log.info("product_updated", product_id=product_id, fields=sorted(values), by=operator)
    return product


def deactivate_product(db: Session, product_id: int, *, operator: str | None = None) -> Product:
    """Take a product off sale (kept: its orders still name it)."""
    product = get_product(db, product_id)
    if product.active:
        product.active = False
        db.flush()
        log.info("product_deactivated", product_id=product_id, by=operator)
    return product


def _has_orders(db: Session, product_id: int) -> bool:
    return bool(db.scalar(select(exists().where(Order.product_id == product_id))))
