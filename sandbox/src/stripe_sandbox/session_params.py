"""``POST /v1/checkout/sessions``: reading and checking the parameters the way
Stripe does, and turning them into a :class:`SessionRecord`."""

from __future__ import annotations

import re

from .errors import invalid_request, parameter_missing, resource_missing
from .forms import (
    Params,
    as_list,
    get_dict,
    get_str,
    parse_bool,
    parse_int,
    reject_unknown,
)
from .ids import new_id, new_session_id
from .sessions import LineItem, SessionRecord

#: Every parameter Stripe's API accepts on this endpoint. The sandbox acts on the
#: ones documented in docs/stripe-sandbox.md and accepts (and ignores) the rest.
CREATE_PARAMS = frozenset(
    {
        "adaptive_pricing", "after_expiration", "allow_promotion_codes",
        "allowed_payment_method_types", "automatic_tax", "billing_address_collection",
        "branding_settings", "cancel_url", "client_reference_id", "consent_collection",
        "currency", "custom_fields", "custom_text", "customer", "customer_account",
        "customer_creation", "customer_email", "customer_update", "discounts",
        "excluded_payment_method_types", "expand", "expires_at", "integration_identifier",
        "invoice_creation", "line_items", "locale", "managed_payments", "metadata", "mode",
        "name_collection", "optional_items", "origin_context", "payment_intent_data",
        "payment_method_collection", "payment_method_configuration", "payment_method_data",
        "payment_method_options", "payment_method_types", "permissions",
        "phone_number_collection", "redirect_on_completion", "return_url",
        "saved_payment_method_options", "setup_intent_data", "shipping_address_collection",
        "shipping_options", "submit_type", "subscription_data", "success_url",
        "tax_id_collection", "ui_mode", "wallet_options",
    }
)  # fmt: skip

MIN_EXPIRY_SECONDS = 30 * 60
MAX_EXPIRY_SECONDS = 24 * 60 * 60
_CURRENCY = re.compile(r"^[a-z]{3}$")
_URL = re.compile(r"^https?://[^\s/]+", re.IGNORECASE)


def _line_item(raw: object, index: int) -> LineItem:
    param = f"line_items[{index}]"
    if not isinstance(raw, dict):
        raise invalid_request(f"Invalid object: {param}", param)
    price = raw.get("price")
    if isinstance(price, str) and price:
        raise resource_missing("price", price, f"{param}[price]", status=400)
    price_data = get_dict(raw, "price_data", f"{param}[price_data]")
    if price_data is None:
        raise invalid_request(
            f"You must specify either `price` or `price_data` in {param}.",
            f"{param}[price_data]",
            "parameter_missing",
        )
    currency = get_str(price_data, "currency", f"{param}[price_data][currency]")
    if currency is None:
        raise parameter_missing(f"{param}[price_data][currency]")
    currency = currency.lower()
    if not _CURRENCY.match(currency):
        raise invalid_request(
            f"Invalid currency: {currency}.", f"{param}[price_data][currency]", "parameter_invalid"
        )
    raw_amount = price_data.get("unit_amount")
    if raw_amount is None:
        raise parameter_missing(f"{param}[price_data][unit_amount]")
    unit_amount = parse_int(raw_amount, f"{param}[price_data][unit_amount]")
    if unit_amount < 0:
        raise invalid_request(
            "This value must be greater than or equal to 0.",
            f"{param}[price_data][unit_amount]",
            "parameter_invalid_integer",
        )
    product = price_data.get("product")
    if isinstance(product, str) and product:
        raise resource_missing("product", product, f"{param}[price_data][product]", status=400)
    product_data = get_dict(price_data, "product_data", f"{param}[price_data][product_data]")
    name = None if product_data is None else get_str(product_data, "name")
    if not name:
        raise parameter_missing(f"{param}[price_data][product_data][name]")
    raw_quantity = raw.get("quantity")
    if raw_quantity is None:
        raise parameter_missing(f"{param}[quantity]")
    quantity = parse_int(raw_quantity, f"{param}[quantity]")
    if quantity < 1:
        raise invalid_request(
            "This value must be greater than or equal to 1.",
            f"{param}[quantity]",
            "parameter_invalid_integer",
        )
    return LineItem(
        id=new_id("li"),
        price_id=new_id("price"),
        product_id=new_id("prod", 14),
        name=name,
        currency=currency,
        unit_amount=unit_amount,
        quantity=quantity,
    )


def _line_items(params: Params) -> tuple[LineItem, ...]:
    raw = params.get("line_items")
    if raw is None or raw == "":
        raise invalid_request(
            "You must provide at least one line item (`line_items`) in `payment` mode.",
            "line_items",
            "parameter_missing",
        )
    items = tuple(_line_item(value, i) for i, value in enumerate(as_list(raw, "line_items")))
    if not items:
        raise parameter_missing("line_items")
    if len(items) > 100:
        raise invalid_request("You may only specify up to 100 line items.", "line_items")
    if len({item.currency for item in items}) > 1:
        raise invalid_request(
            "All line items must use the same currency.", "line_items", "parameter_invalid"
        )
    return items


def _metadata(params: Params) -> dict[str, str]:
    raw = get_dict(params, "metadata")
    if raw is None:
        return {}
    if len(raw) > 50:
        raise invalid_request("Metadata can have at most 50 keys.", "metadata")
    metadata: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(value, str):
            raise invalid_request(
                "Metadata values must be strings.", f"metadata[{key}]", "parameter_invalid"
            )
        if len(key) > 40:
            raise invalid_request(
                "Metadata keys can be at most 40 characters long.", f"metadata[{key}]"
            )
        if len(value) > 500:
            raise invalid_request(
                "Metadata values can be at most 500 characters long.", f"metadata[{key}]"
            )
        if value != "":
            metadata[key] = value
    return metadata


def _url(params: Params, name: str) -> str | None:
    value = get_str(params, name)
    if value is None or value == "":
        return None
    if not _URL.match(value):
        raise invalid_request("Not a valid URL", name, "url_invalid")
    return value


def _expires_at(params: Params, now: int) -> int:
    raw = params.get("expires_at")
    if raw is None or raw == "":
        return now + MAX_EXPIRY_SECONDS
    expires_at = parse_int(raw, "expires_at")
    if expires_at < now + MIN_EXPIRY_SECONDS:
        raise invalid_request(
            "The `expires_at` timestamp must be at least 30 minutes from Checkout Session "
            "creation.",
            "expires_at",
        )
    if expires_at > now + MAX_EXPIRY_SECONDS:
        raise invalid_request(
            "The `expires_at` timestamp must be less than 24 hours from Checkout Session creation.",
            "expires_at",
        )
    return expires_at


def _recovery(params: Params) -> tuple[bool, bool]:
    after = get_dict(params, "after_expiration")
    if after is None:
        return False, False
    recovery = get_dict(after, "recovery", "after_expiration[recovery]")
    if recovery is None:
        return False, False
    enabled_raw = recovery.get("enabled")
    if enabled_raw is None:
        raise parameter_missing("after_expiration[recovery][enabled]")
    enabled = parse_bool(enabled_raw, "after_expiration[recovery][enabled]")
    promo_raw = recovery.get("allow_promotion_codes")
    promo = (
        False
        if promo_raw is None
        else parse_bool(promo_raw, "after_expiration[recovery][allow_promotion_codes]")
    )
    return enabled, promo


def wants_line_items(params: Params) -> bool:
    """Whether ``expand[]`` asks for ``line_items``."""
    raw = params.get("expand")
    if raw is None or raw == "":
        return False
    return "line_items" in as_list(raw, "expand")


def build_session(params: Params, now: int, seq: int, page_base: str) -> SessionRecord:
    """Check ``params`` like Stripe and build the new, open session created at ``now``."""
    reject_unknown(params, CREATE_PARAMS)
    mode = get_str(params, "mode")
    if mode is None or mode == "":
        raise parameter_missing("mode")
    if mode in ("setup", "subscription"):
        raise invalid_request("The sandbox only supports `mode=payment` Checkout Sessions.", "mode")
    if mode != "payment":
        raise invalid_request(
            f"Invalid mode: must be one of payment, setup, or subscription (got {mode}).",
            "mode",
            "parameter_invalid",
        )
    line_items = _line_items(params)
    success_url = _url(params, "success_url")
    if success_url is None:
        raise parameter_missing("success_url")
    client_reference_id = get_str(params, "client_reference_id") or None
    if client_reference_id is not None and len(client_reference_id) > 200:
        raise invalid_request(
            "client_reference_id can be at most 200 characters long.", "client_reference_id"
        )
    customer_email = get_str(params, "customer_email") or None
    if customer_email is not None and "@" not in customer_email:
        raise invalid_request(
            f"Invalid email address: {customer_email}", "customer_email", "email_invalid"
        )
    recovery_enabled, recovery_promo = _recovery(params)
    wants_line_items(params)  # checks the shape of expand[]
    return SessionRecord(
        id=new_session_id(),
        seq=seq,
        created=now,
        expires_at=_expires_at(params, now),
        currency=line_items[0].currency,
        line_items=line_items,
        metadata=_metadata(params),
        page_base=page_base,
        client_reference_id=client_reference_id,
        customer_email=customer_email,
        success_url=success_url,
        cancel_url=_url(params, "cancel_url"),
        mode=mode,
        recovery_enabled=recovery_enabled,
        recovery_allow_promotion_codes=recovery_promo,
    )
