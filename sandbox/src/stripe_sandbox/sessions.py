"""The Checkout Session object: what the sandbox keeps per session and how it is
shown, field for field, as Stripe's API shows a ``checkout.session``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

STATUSES = ("open", "complete", "expired")

#: Fields with the values Stripe shows (API version 2026-10-28.endive) for a hosted,
#: payment-mode session created without the optional features. Parameters given at
#: creation replace them per session (``SessionRecord.options``).
DEFAULT_FIELDS: dict[str, Any] = {
    "adaptive_pricing": {"enabled": False},
    "allow_promotion_codes": None,
    "allowed_payment_method_types": None,
    "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
    "billing_address_collection": None,
    "client_secret": None,
    "collected_information": None,
    "consent": None,
    "consent_collection": None,
    "currency_conversion": None,
    "custom_fields": [],
    "custom_text": {
        "after_submit": None,
        "shipping_address": None,
        "submit": None,
        "terms_of_service_acceptance": None,
    },
    "customer": None,
    "customer_account": None,
    "customer_creation": "if_required",
    "discounts": [],
    "integration_identifier": None,
    "invoice": None,
    "invoice_creation": {
        "enabled": False,
        "invoice_data": {
            "account_tax_ids": None,
            "custom_fields": None,
            "description": None,
            "footer": None,
            "issuer": None,
            "metadata": {},
            "rendering_options": None,
        },
    },
    "livemode": False,
    "locale": None,
    "managed_payments": None,
    "origin_context": None,
    "payment_link": None,
    "payment_method_collection": "if_required",
    "payment_method_configuration_details": None,
    "payment_method_options": {},
    "payment_method_types": ["card"],
    "permissions": None,
    "phone_number_collection": {"enabled": False},
    "saved_payment_method_options": None,
    "setup_intent": None,
    "shipping_address_collection": None,
    "shipping_cost": None,
    "shipping_options": [],
    "submit_type": None,
    "subscription": None,
    "tax_id_collection": {"enabled": False, "required": "never"},
    "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
    "ui_mode": "hosted_page",
    "wallet_options": None,
}
_DEFAULT_JSON = json.dumps(DEFAULT_FIELDS)[1:-1]


@dataclass(slots=True, frozen=True)
class LineItem:
    """One ``line_items[i]`` built from ``price_data``."""

    id: str
    price_id: str
    product_id: str
    name: str
    currency: str
    unit_amount: int
    quantity: int
    created: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    tax_behavior: str = "unspecified"
    adjustable_quantity: dict[str, Any] | None = None
    product_description: str | None = None

    @property
    def amount(self) -> int:
        """Unit amount times quantity, in the currency's smallest unit."""
        return self.unit_amount * self.quantity

    def price(self) -> dict[str, Any]:
        """The one-off ``price`` object made from ``price_data``."""
        return {
            "id": self.price_id,
            "object": "price",
            "active": False,
            "billing_scheme": "per_unit",
            "created": self.created,
            "currency": self.currency,
            "custom_unit_amount": None,
            "livemode": False,
            "lookup_key": None,
            "metadata": {},
            "nickname": None,
            "product": self.product_id,
            "recurring": None,
            "tax_behavior": self.tax_behavior,
            "tiers_mode": None,
            "transform_quantity": None,
            "type": "one_time",
            "unit_amount": self.unit_amount,
            "unit_amount_decimal": str(self.unit_amount),
        }

    def product(self) -> dict[str, Any]:
        """The ``product`` object made from ``product_data`` (for ``expand[]``)."""
        return {
            "id": self.product_id,
            "object": "product",
            "active": False,
            "created": self.created,
            "default_price": None,
            "description": self.product_description,
            "images": [],
            "livemode": False,
            "marketing_features": [],
            "metadata": {},
            "name": self.name,
            "package_dimensions": None,
            "shippable": None,
            "statement_descriptor": None,
            "tax_code": None,
            "tax_details": None,
            "type": "service",
            "unit_label": None,
            "updated": self.created,
            "url": None,
        }

    def to_dict(self) -> dict[str, Any]:
        """The ``item`` object of ``GET /v1/checkout/sessions/{id}/line_items``."""
        return {
            "id": self.id,
            "object": "item",
            "adjustable_quantity": self.adjustable_quantity,
            "amount_discount": 0,
            "amount_subtotal": self.amount,
            "amount_tax": 0,
            "amount_total": self.amount,
            "currency": self.currency,
            "description": self.name,
            "metadata": self.metadata,
            "price": self.price(),
            "quantity": self.quantity,
        }


@dataclass(slots=True)
class SessionRecord:
    """A Checkout Session as the sandbox keeps it.

    ``metadata`` and ``line_items`` are never mutated after creation, so snapshots
    (for events) and seeded sessions may share them.
    """

    id: str
    seq: int
    created: int
    expires_at: int
    currency: str
    line_items: tuple[LineItem, ...]
    metadata: dict[str, str]
    page_base: str
    client_reference_id: str | None = None
    customer_email: str | None = None
    success_url: str | None = None
    cancel_url: str | None = None
    mode: str = "payment"
    recovery_enabled: bool = False
    recovery_allow_promotion_codes: bool = False
    status: str = "open"
    payment_status: str = "unpaid"
    customer_details: dict[str, Any] | None = None
    payment_intent: str | None = None
    recovery_url: str | None = None
    recovery_expires_at: int | None = None
    recovered_from: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # fields set by parameters

    @property
    def key(self) -> tuple[int, int, str]:
        """Position in the sorted indexes: ``(created, seq, id)``."""
        return (self.created, self.seq, self.id)

    @property
    def amount_subtotal(self) -> int:
        """Sum of the line items."""
        return sum(item.amount for item in self.line_items)

    @property
    def amount_total(self) -> int:
        """Subtotal (the sandbox has no tax, shipping or discounts)."""
        return self.amount_subtotal

    @property
    def hosted(self) -> bool:
        """Whether the customer pays on Stripe's hosted page (``ui_mode=hosted_page``)."""
        return bool(self.options.get("ui_mode", "hosted_page") == "hosted_page")

    @property
    def hosted_url(self) -> str:
        """The hosted checkout page of this session."""
        return f"{self.page_base}/checkout/{self.id}"

    def snapshot(self) -> SessionRecord:
        """A copy frozen in time, for an event's ``data.object``."""
        return replace(self)

    def _after_expiration(self) -> dict[str, Any] | None:
        if not self.recovery_enabled:
            return None
        return {
            "recovery": {
                "allow_promotion_codes": self.recovery_allow_promotion_codes,
                "enabled": True,
                "expires_at": self.recovery_expires_at,
                "url": self.recovery_url,
            }
        }

    def variable_fields(self) -> dict[str, Any]:
        """The fields that differ between sessions, ``id`` and ``object`` first."""
        fields: dict[str, Any] = {
            "id": self.id,
            "object": "checkout.session",
            "after_expiration": self._after_expiration(),
            "amount_subtotal": self.amount_subtotal,
            "amount_total": self.amount_total,
            "cancel_url": self.cancel_url,
            "client_reference_id": self.client_reference_id,
            "created": self.created,
            "currency": self.currency,
            "customer_details": self.customer_details,
            "customer_email": self.customer_email,
            "expires_at": self.expires_at,
            "metadata": self.metadata,
            "mode": self.mode,
            "payment_intent": self.payment_intent,
            "payment_status": self.payment_status,
            "recovered_from": self.recovered_from,
            "status": self.status,
            "success_url": self.success_url,
            "url": self.hosted_url if self.status == "open" and self.hosted else None,
        }
        return fields

    def to_dict(self, expand_line_items: bool = False) -> dict[str, Any]:
        """The ``checkout.session`` object as Stripe's API returns it."""
        data = self.variable_fields()
        data.update(json.loads("{" + _DEFAULT_JSON + "}"))
        data.update(self.options)
        if expand_line_items:
            data["line_items"] = self.line_items_list()
        return data

    def to_json(self, expand_line_items: bool = False) -> str:
        """:meth:`to_dict` as JSON text, built without re-encoding the default part
        when no parameter changed it."""
        if self.options:
            return json.dumps(self.to_dict(expand_line_items))
        head = json.dumps(self.variable_fields())
        if expand_line_items:
            head = head[:-1] + ', "line_items": ' + json.dumps(self.line_items_list()) + "}"
        return head[:-1] + ", " + _DEFAULT_JSON + "}"

    def line_items_list(self) -> dict[str, Any]:
        """The session's line items as a Stripe list object."""
        return {
            "object": "list",
            "data": [item.to_dict() for item in self.line_items],
            "has_more": False,
            "url": f"/v1/checkout/sessions/{self.id}/line_items",
        }
