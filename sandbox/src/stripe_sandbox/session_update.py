"""``POST /v1/checkout/sessions/{id}``: what the update endpoint of the pinned
version changes on an open session, with Stripe's rules (types and names were
checked against the grammar first)."""

from __future__ import annotations

from typing import Any

from . import grammar
from .currencies import check_minimum
from .errors import invalid_request
from .forms import Params, as_list, get_dict, parse_int
from .session_params import check_same_currency, line_item, metadata
from .sessions import LineItem, SessionRecord

ENDPOINT = "POST /v1/checkout/sessions/{id}"


def _metadata(record: SessionRecord, params: Params) -> dict[str, str]:
    raw = params.get("metadata")
    if raw == "":
        return {}  # an empty value unsets every key
    merged = dict(record.metadata)
    assert isinstance(raw, dict)
    for key, value in raw.items():
        if value == "":
            merged.pop(key, None)
    merged.update(metadata(params))
    return metadata({"metadata": dict(merged)})


def _line_items(record: SessionRecord, params: Params, now: int) -> tuple[LineItem, ...]:
    """The whole list is sent again: an item with ``id`` is kept (with a new quantity
    or metadata if given), one without is added, one left out is removed."""
    if record.hosted:
        raise invalid_request(
            "`line_items` can only be updated on Checkout Sessions whose `ui_mode` is "
            "`embedded_page`, `elements` or `form`.",
            "line_items",
        )
    by_id = {item.id: item for item in record.line_items}
    items: list[LineItem] = []
    for index, raw in enumerate(as_list(params["line_items"], "line_items")):
        param = f"line_items[{index}]"
        if not isinstance(raw, dict):
            raise invalid_request(f"Invalid object: {param}", param)
        item_id = raw.get("id")
        if not grammar.present(item_id):
            items.append(line_item(raw, index, now))
            continue
        kept = by_id.get(str(item_id))
        if kept is None:
            raise invalid_request(f"No such line item: '{item_id}'", f"{param}[id]")
        changes: dict[str, Any] = {}
        if grammar.present(raw.get("quantity")):
            changes["quantity"] = parse_int(raw["quantity"], f"{param}[quantity]")
            if changes["quantity"] < 1:
                raise invalid_request(
                    "This value must be greater than or equal to 1.", f"{param}[quantity]"
                )
        if grammar.present(raw.get("metadata")):
            changes["metadata"] = metadata(raw, f"{param}[metadata]")
        items.append(LineItem(**{**_fields(kept), **changes}))
    if not items:
        raise invalid_request("A Checkout Session needs at least one line item.", "line_items")
    result = tuple(items)
    check_same_currency(result)
    if result[0].currency != record.currency:
        raise invalid_request("Line items must keep the session's currency.", "line_items")
    check_minimum(sum(item.amount for item in result), record.currency)
    return result


def _fields(item: LineItem) -> dict[str, Any]:
    return {name: getattr(item, name) for name in LineItem.__dataclass_fields__}


def _collected_information(record: SessionRecord, params: Params) -> dict[str, Any]:
    permissions = record.options.get("permissions") or {}
    if permissions.get("update_shipping_details") != "server_only":
        raise invalid_request(
            "`collected_information` can only be updated when the session was created with "
            "`permissions[update_shipping_details]=server_only`.",
            "collected_information",
        )
    given = grammar.typed(ENDPOINT, params, "collected_information")
    shipping = given.get("shipping_details")
    if shipping is not None:
        address = {
            key: shipping["address"].get(key)
            for key in ("city", "country", "line1", "line2", "postal_code", "state")
        }
        shipping = {"address": address, "name": shipping["name"]}
    return {"business_name": None, "individual_name": None, "shipping_details": shipping}


def update(record: SessionRecord, params: Params, now: int) -> SessionRecord:
    """Apply an update to an open session (new objects: event snapshots keep theirs)."""
    if record.status != "open":
        raise invalid_request(
            f"This Checkout Session is {record.status}: only open Checkout Sessions can be updated."
        )
    if grammar.present(params.get("shipping_options")):
        raise invalid_request(
            "The sandbox does not model `shipping_options` (shipping rates); leave it out.",
            "shipping_options",
        )
    if "metadata" in params:
        record.metadata = _metadata(record, params)
    if grammar.present(params.get("line_items")):
        record.line_items = _line_items(record, params, now)
    if get_dict(params, "collected_information") is not None:
        record.options = {
            **record.options,
            "collected_information": _collected_information(record, params),
        }
    return record
