"""The sandbox's objects against the installed stripe-python: every field its classes declare
for the pinned API version (checkout.Session, LineItem, Price, Event) is present with the
declared type, and nothing else is. The expected sets come from the SDK's own annotations,
so an SDK upgrade that adds a field fails here until the sandbox follows.

Fields Stripe sends only in some cases (marked optional in the same generated declarations)
may be absent; they are listed below. The drift test checks the parameter grammar too."""

from __future__ import annotations

import decimal
import json
import typing
from typing import Any, ForwardRef

import httpx
import pytest
import stripe
from stripe._stripe_object import StripeObject, UntypedStripeObject

from stripe_sandbox import spec_from_sdk
from stripe_sandbox.config import DEFAULT_API_VERSION
from stripe_sandbox.control import SandboxControl
from stripe_sandbox.grammar import SPEC
from stripe_sandbox.server import BackgroundServer

#: Fields the pinned version's declarations mark optional (present only in some cases).
OPTIONAL: dict[str, frozenset[str]] = {
    "Session": frozenset({
        "branding_settings", "excluded_payment_method_types", "line_items", "name_collection",
        "optional_items", "phone_number_collection", "presentment_details",
        "redirect_on_completion", "return_url", "tax_id_collection",
    }),
    "Session.AutomaticTax.Liability": frozenset({"account"}),
    "Session.CustomField": frozenset({"dropdown", "numeric", "text"}),
    "Session.NameCollection": frozenset({"business", "individual"}),
    "Session.PaymentMethodOptions": frozenset({"*"}),
    "Session.PaymentMethodOptions.Card": frozenset({
        "capture_method", "installments", "request_extended_authorization",
        "request_incremental_authorization", "request_multicapture", "request_overcapture",
        "restrictions", "setup_future_usage", "statement_descriptor_suffix_kana",
        "statement_descriptor_suffix_kanji",
    }),
    "Session.ShippingCost": frozenset({"taxes"}),
    "Session.TotalDetails": frozenset({"breakdown"}),
    "Session.WalletOptions": frozenset({"link"}),
    "Event.Data": frozenset({"previous_attributes"}),
    "LineItem": frozenset({"discounts", "taxes"}),
    "Price": frozenset({"currency_options", "deleted", "tiers"}),
    "Event": frozenset({"account", "context"}),
    "Product": frozenset({"default_price", "deleted", "statement_descriptor", "tax_code",
                          "unit_label"}),
}  # fmt: skip
RESOURCES = {"Price": stripe.Price, "LineItem": stripe.LineItem, "Product": stripe.Product}


def declared_fields(cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        out.update(getattr(klass, "__annotations__", {}))
    return {k: v for k, v in out.items() if not k.startswith("_") and k != k.upper()}


def check_object(cls: type, data: Any, where: str, name: str) -> None:
    assert isinstance(data, dict), f"{where}: expected an object, got {data!r}"
    declared = declared_fields(cls)
    optional = OPTIONAL.get(name, frozenset())
    missing = set() if "*" in optional else set(declared) - set(data) - optional
    extra = set(data) - set(declared)
    assert not missing, f"{where}: missing {sorted(missing)}"
    assert not extra, f"{where}: not in the pinned version {sorted(extra)}"
    for field, tp in declared.items():
        if field in data:
            check_value(tp, data[field], f"{where}.{field}")


def check_value(tp: Any, value: Any, where: str) -> None:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return
        literals = [a for a in args if typing.get_origin(a) is typing.Literal]
        if literals:  # the SDK widens enums with str; the pinned version has only these
            allowed = {v for lit in literals for v in typing.get_args(lit)}
            assert value in allowed, f"{where}: {value!r} not one of {sorted(allowed)}"
            return
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                check_value(arg, value, where)
                return
            except AssertionError as exc:
                errors.append(str(exc))
        raise AssertionError(f"{where}: {value!r} fits none of {args}: {errors}")
    if origin is typing.Literal:
        assert value in args, f"{where}: {value!r} not one of {args}"
    elif origin in (list, typing.List):  # noqa: UP006
        assert isinstance(value, list), f"{where}: expected a list"
        for i, item in enumerate(value):
            check_value(args[0], item, f"{where}[{i}]")
    elif tp is bool:
        assert isinstance(value, bool), f"{where}: expected a boolean, got {value!r}"
    elif tp is int:
        assert type(value) is int, f"{where}: expected an integer, got {value!r}"
    elif tp is str:
        assert isinstance(value, str), f"{where}: expected a string, got {value!r}"
    elif tp is decimal.Decimal:
        decimal.Decimal(value)
    elif isinstance(tp, ForwardRef):
        resource = RESOURCES.get(tp.__forward_arg__)
        if resource is not None and isinstance(value, dict):
            check_object(resource, value, where, tp.__forward_arg__)
        else:  # an id, or an object the sandbox never expands
            assert isinstance(value, str), f"{where}: expected an id, got {value!r}"
    elif origin is not None and origin.__name__ == "ListObject":
        assert value["object"] == "list"
        assert isinstance(value["data"], list)
        for i, item in enumerate(value["data"]):
            check_value(args[0], item, f"{where}.data[{i}]")
    elif origin is UntypedStripeObject or tp is UntypedStripeObject:
        assert isinstance(value, dict), f"{where}: expected a hash"
        for key, item in value.items():
            check_value(args[0] if args else Any, item, f"{where}[{key}]")
    elif isinstance(tp, type) and issubclass(tp, StripeObject):
        check_object(tp, value, where, tp.__qualname__)
    elif tp is not Any:
        raise AssertionError(f"{where}: no check for {tp!r}")


@pytest.fixture(scope="module")
def raw(server: BackgroundServer) -> dict[str, Any]:
    """Raw JSON of a session in each state, its line items and their events."""
    http = httpx.Client(base_url=server.url, auth=("sk_test_fields", ""))
    with SandboxControl(server.url) as control:
        control.reset()

        def create(order: str, count: int = 1) -> dict[str, Any]:
            form = {
                "mode": "payment", "success_url": "https://club.example/paid",
                "cancel_url": "https://club.example/cancel", "metadata[order_id]": order,
                "customer_email": "parent@example.com",
                "after_expiration[recovery][enabled]": "true",
            }  # fmt: skip
            for i in range(count):
                form |= {
                    f"line_items[{i}][price_data][currency]": "eur",
                    f"line_items[{i}][price_data][unit_amount]": "4500",
                    f"line_items[{i}][price_data][product_data][name]": f"Camp {i}",
                    f"line_items[{i}][quantity]": "1",
                }
            return dict(http.post("/v1/checkout/sessions", data=form).raise_for_status().json())

        open_ = create("1", 2)
        options = {
            "allow_promotion_codes": "true", "locale": "fr", "submit_type": "pay",
            "custom_text[submit][message]": "Thanks", "phone_number_collection[enabled]": "true",
            "automatic_tax[enabled]": "true", "invoice_creation[enabled]": "true",
            "invoice_creation[invoice_data][custom_fields][0][name]": "Team",
            "invoice_creation[invoice_data][custom_fields][0][value]": "U12",
            "consent_collection[promotions]": "auto", "custom_fields[0][key]": "player",
            "custom_fields[0][label][custom]": "Player", "custom_fields[0][label][type]": "custom",
            "custom_fields[0][type]": "text", "custom_fields[0][text][maximum_length]": "40",
            "custom_fields[1][key]": "size", "custom_fields[1][label][custom]": "Size",
            "custom_fields[1][label][type]": "custom", "custom_fields[1][type]": "dropdown",
            "custom_fields[1][dropdown][options][0][label]": "S",
            "custom_fields[1][dropdown][options][0][value]": "s",
            "name_collection[individual][enabled]": "true",
            "branding_settings[display_name]": "Club", "wallet_options[link][display]": "never",
            "saved_payment_method_options[payment_method_save]": "enabled",
            "managed_payments[enabled]": "false", "adaptive_pricing[enabled]": "true",
            "allowed_payment_method_types[0]": "card", "tax_id_collection[enabled]": "true",
            "excluded_payment_method_types[0]": "klarna", "integration_identifier": "web",
            "shipping_address_collection[allowed_countries][0]": "FR",
            "payment_method_options[card][setup_future_usage]": "on_session",
            "payment_method_options[card][statement_descriptor_suffix_kana]": "CLUB",
        }  # fmt: skip
        with_options = dict(
            http.post(
                "/v1/checkout/sessions",
                data={
                    "success_url": "https://club.example/paid",
                    "line_items[0][price_data][currency]": "eur",
                    "line_items[0][price_data][unit_amount]": "4500",
                    "line_items[0][price_data][product_data][name]": "Camp",
                    "line_items[0][quantity]": "1",
                    **options,
                },
            )
            .raise_for_status()
            .json()
        )
        paid = create("2")
        expired = create("3")
        control.pay(paid["id"])
        http.post(f"/v1/checkout/sessions/{expired['id']}/expire").raise_for_status()

        def get(path: str, **query: Any) -> dict[str, Any]:
            return dict(http.get(path, params=query).raise_for_status().json())

        sessions = [get(f"/v1/checkout/sessions/{s['id']}") for s in (open_, paid, expired)]
        expanded = get(
            f"/v1/checkout/sessions/{open_['id']}", **{"expand[]": "line_items.data.price.product"}
        )
        items = get(f"/v1/checkout/sessions/{open_['id']}/line_items")["data"]
        events = get("/v1/events")["data"]
    http.close()
    return {
        "sessions": sessions,
        "expanded": expanded,
        "items": items,
        "events": events,
        "with_options": with_options,
    }


def test_the_sandbox_is_held_to_the_sdk_pinned_api_version() -> None:
    assert stripe.api_version == DEFAULT_API_VERSION == SPEC["api_version"]


def test_the_parameter_grammar_matches_the_installed_sdk() -> None:
    built = spec_from_sdk.build()
    assert built["api_version"] == SPEC["api_version"]
    for endpoint, fields in built["endpoints"].items():
        assert SPEC["endpoints"].get(endpoint) == fields, (
            f"{endpoint}: the SDK's parameters changed; regenerate param_spec.json "
            "(python -m stripe_sandbox.spec_from_sdk) and follow them in the sandbox"
        )
    assert json.loads(spec_from_sdk.dumps(built)) == SPEC


def test_sessions_have_every_declared_field_with_its_type(raw: dict[str, Any]) -> None:
    for data in raw["sessions"]:
        check_object(stripe.checkout.Session, data, f"session[{data['status']}]", "Session")
    check_object(stripe.checkout.Session, raw["expanded"], "session[expanded]", "Session")
    check_object(stripe.checkout.Session, raw["with_options"], "session[options]", "Session")


def test_line_items_and_prices_have_every_declared_field(raw: dict[str, Any]) -> None:
    assert len(raw["items"]) == 2
    for i, data in enumerate(raw["items"]):
        check_object(stripe.LineItem, data, f"line_item[{i}]", "LineItem")
        check_object(stripe.Price, data["price"], f"line_item[{i}].price", "Price")


def test_events_have_every_declared_field(raw: dict[str, Any]) -> None:
    assert {e["type"] for e in raw["events"]} == {
        "checkout.session.completed",
        "checkout.session.expired",
    }
    for event in raw["events"]:
        check_object(stripe.Event, event, f"event[{event['type']}]", "Event")
        check_object(stripe.checkout.Session, event["data"]["object"], "event.data", "Session")
        check_object(stripe.Event.Data, event["data"], "event.data", "Event.Data")
