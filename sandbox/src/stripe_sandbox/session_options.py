"""The optional parameters of ``POST /v1/checkout/sessions``: the rules Stripe's API
states for them (which ``ui_mode`` and ``mode`` allow which), the objects they
name (the sandbox has no customers, coupons, prices by id, ... so naming one is
Stripe's ``resource_missing``), and the session fields that echo them.

Types and enums were already checked against the grammar (:mod:`.grammar`).
"""

from __future__ import annotations

from typing import Any

from . import grammar
from .errors import invalid_request, resource_missing
from .forms import Params, Value

ENDPOINT = "POST /v1/checkout/sessions"

#: Parameters Stripe refuses with some ``ui_mode`` values (from the API reference).
NOT_WITH_UI_MODE: dict[str, frozenset[str]] = {
    "after_expiration": frozenset({"elements"}),
    "branding_settings": frozenset({"elements"}),
    "cancel_url": frozenset({"embedded_page", "elements"}),
    "custom_fields": frozenset({"elements"}),
    "custom_text": frozenset({"elements"}),
    "optional_items": frozenset({"elements", "form"}),
    "origin_context": frozenset({"elements"}),
    "submit_type": frozenset({"elements"}),
    "success_url": frozenset({"embedded_page", "elements"}),
    "return_url": frozenset({"hosted_page"}),
    "redirect_on_completion": frozenset({"hosted_page", "elements", "form"}),
    "permissions": frozenset({"hosted_page", "form"}),
}

#: Parameters Stripe accepts only in some modes.
ONLY_IN_MODES: dict[str, frozenset[str]] = {
    "customer_creation": frozenset({"payment", "setup"}),
    "payment_intent_data": frozenset({"payment"}),
    "payment_method_collection": frozenset({"subscription"}),
    "saved_payment_method_options": frozenset({"payment", "subscription"}),
    "setup_intent_data": frozenset({"setup"}),
    "submit_type": frozenset({"payment", "subscription"}),
    "subscription_data": frozenset({"subscription"}),
}

#: Parameters whose value shows as is on the session.
ECHOED = (
    "adaptive_pricing", "allow_promotion_codes", "allowed_payment_method_types",
    "billing_address_collection", "customer_creation", "excluded_payment_method_types",
    "integration_identifier", "locale", "origin_context", "payment_method_options",
    "phone_number_collection", "redirect_on_completion", "return_url",
    "shipping_address_collection", "submit_type", "ui_mode",
)  # fmt: skip

#: Shipping rates, tax ids and the like would need objects the sandbox does not model.
NOT_MODELLED = ("shipping_options",)


def _given(params: Params, name: str) -> bool:
    return grammar.present(params.get(name))


def _value(params: Params, name: str) -> Any:
    return grammar.typed(ENDPOINT, params, name)


def check_rules(params: Params, mode: str, ui_mode: str) -> None:
    """Stripe's rules on which parameters go with which ``ui_mode`` and ``mode``."""
    for name, modes in NOT_WITH_UI_MODE.items():
        if _given(params, name) and ui_mode in modes:
            raise invalid_request(f"You can not pass `{name}` when `ui_mode` is `{ui_mode}`.", name)
    for name, allowed in ONLY_IN_MODES.items():
        if _given(params, name) and mode not in allowed:
            shown = " or ".join(f"`{m}`" for m in sorted(allowed))
            raise invalid_request(
                f"You can only pass `{name}` in {shown} mode; this session is `{mode}`.", name
            )
    redirects = params.get("redirect_on_completion") != "never"
    if ui_mode == "embedded_page" and not _given(params, "return_url") and redirects:
        raise invalid_request(
            "`return_url` is required when `ui_mode` is `embedded_page`, unless "
            "`redirect_on_completion` is `never`.",
            "return_url",
            "parameter_missing",
        )
    if _given(params, "allow_promotion_codes") and _given(params, "discounts"):
        raise invalid_request(
            "You may only specify one of these parameters: allow_promotion_codes, discounts.",
            "discounts",
        )
    if _given(params, "customer_update") and not _given(params, "customer"):
        raise invalid_request(
            "`customer_update` can only be used with `customer`.", "customer_update"
        )
    for name in NOT_MODELLED:
        if _given(params, name):
            raise invalid_request(
                f"The sandbox does not model `{name}` (shipping rates); leave it out.", name
            )


def _missing_object(object_name: str, object_id: Value, param: str) -> None:
    if isinstance(object_id, str) and object_id:
        raise resource_missing(object_name, object_id, param, status=400)


def check_references(params: Params) -> None:
    """Every object a parameter names must exist; the sandbox has none of these."""
    _missing_object("customer", params.get("customer", ""), "customer")
    _missing_object("account", params.get("customer_account", ""), "customer_account")
    pmc = params.get("payment_method_configuration", "")
    _missing_object("payment_method_configuration", pmc, "payment_method_configuration")
    discounts = params.get("discounts")
    if isinstance(discounts, dict):
        for index, discount in discounts.items():
            if isinstance(discount, dict):
                for kind in ("coupon", "promotion_code"):
                    path = f"discounts[{index}][{kind}]"
                    _missing_object(kind, discount.get(kind, ""), path)
    optional = params.get("optional_items")
    if isinstance(optional, dict):
        for index, item in optional.items():
            if isinstance(item, dict):
                path = f"optional_items[{index}][price]"
                _missing_object("price", item.get("price", ""), path)
    invoice = params.get("invoice_creation")
    if isinstance(invoice, dict) and isinstance(invoice.get("invoice_data"), dict):
        data = invoice["invoice_data"]
        assert isinstance(data, dict)
        tax_ids = data.get("account_tax_ids")
        if isinstance(tax_ids, dict):
            for index, tax_id in tax_ids.items():
                path = f"invoice_creation[invoice_data][account_tax_ids][{index}]"
                _missing_object("tax_id", tax_id, path)


def _automatic_tax(value: dict[str, Any]) -> dict[str, Any]:
    enabled = bool(value.get("enabled"))
    liability = value.get("liability")
    return {
        "enabled": enabled,
        "liability": (liability or {"type": "self"}) if enabled else None,
        "provider": "stripe" if enabled else None,
        "status": "requires_location_inputs" if enabled else None,
    }


def _custom_field(field: dict[str, Any]) -> dict[str, Any]:
    kind = field["type"]
    out: dict[str, Any] = {
        "key": field["key"],
        "label": {"custom": field["label"].get("custom"), "type": "custom"},
        "optional": field.get("optional", False),
        "type": kind,
    }
    settings = field.get(kind) or {}
    if kind == "dropdown":
        out["dropdown"] = {
            "default_value": settings.get("default_value"),
            "options": settings.get("options", []),
            "value": None,
        }
    else:
        out[kind] = {
            "default_value": settings.get("default_value"),
            "maximum_length": settings.get("maximum_length"),
            "minimum_length": settings.get("minimum_length"),
            "value": None,
        }
    return out


def _invoice_creation(value: dict[str, Any]) -> dict[str, Any]:
    data = value.get("invoice_data") or {}
    return {
        "enabled": value["enabled"],
        "invoice_data": {
            "account_tax_ids": data.get("account_tax_ids"),
            "custom_fields": data.get("custom_fields"),
            "description": data.get("description"),
            "footer": data.get("footer"),
            "issuer": data.get("issuer"),
            "metadata": data.get("metadata", {}),
            "rendering_options": data.get("rendering_options"),
        },
    }


def _with_defaults(defaults: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    return {**defaults, **value}


def session_fields(params: Params, session_id: str, secret: str) -> dict[str, Any]:
    """The session fields that echo the given optional parameters."""
    out: dict[str, Any] = {}
    for name in ECHOED:
        if _given(params, name):
            out[name] = _value(params, name)
    card = (out.get("payment_method_options") or {}).get("card")
    if card is not None:  # Stripe always shows the card's 3D Secure choice
        out["payment_method_options"]["card"] = {"request_three_d_secure": "automatic", **card}
    if "allowed_payment_method_types" in out:
        out["payment_method_types"] = list(out["allowed_payment_method_types"])
    if _given(params, "automatic_tax"):
        out["automatic_tax"] = _automatic_tax(_value(params, "automatic_tax"))
    if _given(params, "branding_settings"):
        out["branding_settings"] = _with_defaults(
            {
                "background_color": "#ffffff",
                "border_style": "rounded",
                "button_color": "#0074d4",
                "display_name": "",
                "font_family": "default",
                "icon": None,
                "logo": None,
            },
            _value(params, "branding_settings"),
        )
    if _given(params, "consent_collection"):
        out["consent_collection"] = _with_defaults(
            {"payment_method_reuse_agreement": None, "promotions": None, "terms_of_service": None},
            _value(params, "consent_collection"),
        )
    if _given(params, "custom_fields"):
        out["custom_fields"] = [_custom_field(f) for f in _value(params, "custom_fields")]
    if _given(params, "custom_text"):
        given = _value(params, "custom_text")
        out["custom_text"] = {
            part: given.get(part)
            for part in (
                "after_submit",
                "shipping_address",
                "submit",
                "terms_of_service_acceptance",
            )
        }
    if _given(params, "invoice_creation"):
        out["invoice_creation"] = _invoice_creation(_value(params, "invoice_creation"))
    if _given(params, "managed_payments"):
        out["managed_payments"] = {"enabled": False, **_value(params, "managed_payments")}
    if _given(params, "name_collection"):
        out["name_collection"] = {
            kind: {"enabled": v["enabled"], "optional": v.get("optional", False)}
            for kind, v in _value(params, "name_collection").items()
        }
    if _given(params, "permissions"):
        out["permissions"] = {"update_shipping_details": None, **_value(params, "permissions")}
    if _given(params, "saved_payment_method_options"):
        out["saved_payment_method_options"] = _with_defaults(
            {
                "allow_redisplay_filters": None,
                "payment_method_remove": None,
                "payment_method_save": None,
            },
            _value(params, "saved_payment_method_options"),
        )
    if _given(params, "tax_id_collection"):
        out["tax_id_collection"] = {"required": "never", **_value(params, "tax_id_collection")}
    if _given(params, "wallet_options"):
        out["wallet_options"] = _value(params, "wallet_options")
    ui_mode = out.get("ui_mode", "hosted_page")
    if ui_mode != "hosted_page":
        out["client_secret"] = f"{session_id}_secret_{secret}"
    if ui_mode == "embedded_page":
        out.setdefault("redirect_on_completion", "always")
    return out
