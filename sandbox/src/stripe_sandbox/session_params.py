"""``POST /v1/checkout/sessions``: the parameters the sandbox acts on, checked the
way Stripe checks them, turned into a :class:`SessionRecord`; the optional ones
are in :mod:`.session_options`. Types, enums and unknown names were checked
against the grammar of the pinned version first (:mod:`.grammar`)."""

from __future__ import annotations

import decimal
import re

from . import session_options
from .currencies import MAXIMUM_AMOUNT, check_currency, check_minimum
from .errors import invalid_request, parameter_missing, resource_missing
from .forms import Params, as_list, get_dict, get_str, parse_bool, parse_int
from .grammar import present
from .ids import new_id, new_session_id, random_base62
from .sessions import LineItem, SessionRecord

MIN_EXPIRY_SECONDS = 30 * 60
MAX_EXPIRY_SECONDS = 24 * 60 * 60
_URL = re.compile(r"^https?://[^\s/]+", re.IGNORECASE)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _unit_amount(price_data: Params, param: str) -> int:
    raw = price_data.get("unit_amount")
    raw_decimal = price_data.get("unit_amount_decimal")
    if present(raw) and present(raw_decimal):
        raise invalid_request(
            "You may only specify one of these parameters: unit_amount, unit_amount_decimal.",
            f"{param}[unit_amount_decimal]",
        )
    if present(raw_decimal):
        assert isinstance(raw_decimal, str)
        amount = decimal.Decimal(raw_decimal)
        if amount != amount.to_integral_value():
            raise invalid_request(
                "The sandbox takes whole amounts only: unit_amount_decimal must be an integer.",
                f"{param}[unit_amount_decimal]",
            )
        unit_amount = int(amount)
    elif present(raw):
        assert raw is not None
        unit_amount = parse_int(raw, f"{param}[unit_amount]")
    else:
        raise parameter_missing(f"{param}[unit_amount]")
    if unit_amount < 0:
        raise invalid_request(
            "This value must be greater than or equal to 0.",
            f"{param}[unit_amount]",
            "parameter_invalid_integer",
        )
    if unit_amount > MAXIMUM_AMOUNT:
        raise invalid_request(
            f"This value must be less than or equal to {MAXIMUM_AMOUNT}.",
            f"{param}[unit_amount]",
            "parameter_invalid_integer",
        )
    return unit_amount


def _adjustable(raw: Params, param: str, quantity: int) -> dict[str, object] | None:
    adjustable = get_dict(raw, "adjustable_quantity")
    if adjustable is None:
        return None
    maximum = parse_int(adjustable.get("maximum") or "99", f"{param}[adjustable_quantity]")
    minimum = parse_int(adjustable.get("minimum") or "0", f"{param}[adjustable_quantity]")
    if not 0 <= minimum <= quantity <= maximum <= 999_999:
        raise invalid_request(
            "The quantity must lie between adjustable_quantity[minimum] and "
            "adjustable_quantity[maximum] (at most 999999).",
            f"{param}[adjustable_quantity]",
        )
    enabled = parse_bool(adjustable["enabled"], f"{param}[adjustable_quantity][enabled]")
    return {"enabled": enabled, "maximum": maximum, "minimum": minimum}


def line_item(raw: object, index: int, now: int) -> LineItem:
    """One ``line_items[i]`` of a create or update call."""
    param = f"line_items[{index}]"
    if not isinstance(raw, dict):
        raise invalid_request(f"Invalid object: {param}", param)
    price = raw.get("price")
    if isinstance(price, str) and price:
        raise resource_missing("price", price, f"{param}[price]", status=400)
    for tax_rate in as_list(raw.get("tax_rates") or {}, f"{param}[tax_rates]"):
        if isinstance(tax_rate, str) and tax_rate:
            raise resource_missing("tax_rate", tax_rate, f"{param}[tax_rates]", status=400)
    price_data = get_dict(raw, "price_data", f"{param}[price_data]")
    if price_data is None:
        raise invalid_request(
            f"You must specify either `price` or `price_data` in {param}.",
            f"{param}[price_data]",
            "parameter_missing",
        )
    if present(price_data.get("recurring")):
        raise invalid_request(
            "You specified `payment` mode but passed a recurring price. Either switch to "
            "`subscription` mode or use only one-time prices.",
            f"{param}[price_data][recurring]",
        )
    currency = get_str(price_data, "currency") or ""
    currency = check_currency(currency, f"{param}[price_data][currency]")
    unit_amount = _unit_amount(price_data, f"{param}[price_data]")
    product = price_data.get("product")
    if isinstance(product, str) and product:
        raise resource_missing("product", product, f"{param}[price_data][product]", status=400)
    product_data = get_dict(price_data, "product_data", f"{param}[price_data][product_data]")
    name = None if product_data is None else get_str(product_data, "name")
    if not name:
        raise parameter_missing(f"{param}[price_data][product_data][name]")
    raw_quantity = raw.get("quantity")
    if not present(raw_quantity):
        raise parameter_missing(f"{param}[quantity]")
    assert raw_quantity is not None
    quantity = parse_int(raw_quantity, f"{param}[quantity]")
    if not 1 <= quantity <= 999_999:
        raise invalid_request(
            "This value must be between 1 and 999999.",
            f"{param}[quantity]",
            "parameter_invalid_integer",
        )
    assert product_data is not None
    return LineItem(
        id=new_id("li"),
        price_id=new_id("price"),
        product_id=new_id("prod", 14),
        name=name,
        currency=currency,
        unit_amount=unit_amount,
        quantity=quantity,
        created=now,
        metadata=metadata(raw, f"{param}[metadata]"),
        tax_behavior=get_str(price_data, "tax_behavior") or "unspecified",
        adjustable_quantity=_adjustable(raw, param, quantity),
        product_description=get_str(product_data, "description") or None,
    )


def _line_items(params: Params, now: int) -> tuple[LineItem, ...]:
    raw = params.get("line_items")
    if raw is None or raw == "":
        raise invalid_request(
            "You must provide at least one line item (`line_items`) in `payment` mode.",
            "line_items",
            "parameter_missing",
        )
    items = tuple(line_item(value, i, now) for i, value in enumerate(as_list(raw, "line_items")))
    if not items:
        raise parameter_missing("line_items")
    if len(items) > 100:
        raise invalid_request("You may only specify up to 100 line items.", "line_items")
    check_same_currency(items)
    return items


def check_same_currency(items: tuple[LineItem, ...]) -> None:
    """Stripe's rule: one currency per session."""
    if len({item.currency for item in items}) > 1:
        raise invalid_request("All line items must use the same currency.", "line_items")


def metadata(params: Params, param: str = "metadata") -> dict[str, str]:
    """``metadata[...]`` checked as Stripe does (50 keys, 40 and 500 characters); an
    empty value leaves the key out."""
    raw = get_dict(params, "metadata", param)
    if raw is None:
        return {}
    if len(raw) > 50:
        raise invalid_request("Metadata can have at most 50 keys.", param)
    metadata: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(value, str):
            raise invalid_request("Metadata values must be strings.", f"{param}[{key}]")
        if len(key) > 40:
            raise invalid_request(
                "Metadata keys can be at most 40 characters long.", f"{param}[{key}]"
            )
        if len(value) > 500:
            raise invalid_request(
                "Metadata values can be at most 500 characters long.", f"{param}[{key}]"
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


def build_session(params: Params, now: int, seq: int, page_base: str) -> SessionRecord:
    """Check ``params`` like Stripe and build the new, open session created at ``now``."""
    mode = get_str(params, "mode") or "payment"  # optional in the pinned version
    if mode in ("setup", "subscription"):
        raise invalid_request("The sandbox only supports `mode=payment` Checkout Sessions.", "mode")
    ui_mode = get_str(params, "ui_mode") or "hosted_page"
    session_options.check_rules(params, mode, ui_mode)
    session_options.check_references(params)
    line_items = _line_items(params, now)
    currency = line_items[0].currency
    given_currency = params.get("currency")
    if present(given_currency) and check_currency(str(given_currency), "currency") != currency:
        raise invalid_request("`currency` must be the currency of the line items.", "currency")
    check_minimum(sum(item.amount for item in line_items), currency)
    client_reference_id = get_str(params, "client_reference_id") or None
    if client_reference_id is not None and len(client_reference_id) > 200:
        raise invalid_request(
            "client_reference_id can be at most 200 characters long.", "client_reference_id"
        )
    customer_email = get_str(params, "customer_email") or None
    if customer_email is not None and not _EMAIL.match(customer_email):
        raise invalid_request(
            f"Invalid email address: {customer_email}", "customer_email", "email_invalid"
        )
    success_url = _url(params, "success_url")
    if success_url is None and ui_mode == "hosted_page":
        raise parameter_missing("success_url")
    recovery_enabled, recovery_promo = _recovery(params)
    session_id = new_session_id()
    return SessionRecord(
        id=session_id,
        seq=seq,
        created=now,
        expires_at=_expires_at(params, now),
        currency=currency,
        line_items=line_items,
        metadata=metadata(params),
        page_base=page_base,
        client_reference_id=client_reference_id,
        customer_email=customer_email,
        success_url=success_url,
        cancel_url=_url(params, "cancel_url"),
        mode=mode,
        recovery_enabled=recovery_enabled,
        recovery_allow_promotion_codes=recovery_promo,
        options=session_options.session_fields(params, session_id, random_base62(24)),
    )
