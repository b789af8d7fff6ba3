"""``expand[]`` as Stripe treats it: only the fields the object declares expandable
(and includable, like a session's ``line_items``), at most four levels deep, and
on a list only under ``data.``. Anything else is a 400."""

from __future__ import annotations

from typing import Any

from .errors import invalid_request
from .forms import Params, as_list

#: Expandable paths of a Checkout Session (includable ``line_items`` with them).
SESSION_PATHS = frozenset(
    {
        "customer", "discounts.coupon", "discounts.promotion_code", "invoice",
        "line_items", "line_items.data.discounts", "line_items.data.price",
        "line_items.data.price.product", "line_items.data.taxes", "payment_intent",
        "payment_link", "setup_intent", "subscription", "total_details.breakdown",
    }
)  # fmt: skip
#: Expandable paths of a line item.
LINE_ITEM_PATHS = frozenset({"discounts", "price", "price.product", "taxes"})
MAX_DEPTH = 4


def requested(params: Params, paths: frozenset[str], in_list: bool = False) -> frozenset[str]:
    """The checked ``expand[]`` paths of a request (without ``data.`` on a list)."""
    raw = params.get("expand")
    if raw is None or raw == "":
        return frozenset()
    wanted: set[str] = set()
    for index, value in enumerate(as_list(raw, "expand")):
        param = f"expand[{index}]"
        if not isinstance(value, str):
            raise invalid_request(f"Invalid string: {param}", param)
        path = value
        if in_list:
            if not value.startswith("data."):
                raise invalid_request(
                    f"This property cannot be expanded ({value}). You may want to try "
                    f"expanding 'data.{value}' instead.",
                    param,
                )
            path = value[len("data.") :]
        if value.count(".") + 1 > MAX_DEPTH:
            raise invalid_request(
                f"You cannot expand more than {MAX_DEPTH} levels of a property.", param
            )
        if path not in paths:
            raise invalid_request(f"This property cannot be expanded ({value}).", param)
        wanted.add(path)
    return frozenset(wanted)


def session(
    data: dict[str, Any], wanted: frozenset[str], items: list[dict[str, Any]] | None
) -> dict[str, Any]:
    """``data`` (a session) with the ``wanted`` paths expanded; ``items`` are the
    line items' objects when ``line_items`` is wanted, already expanded."""
    if items is not None:
        data["line_items"] = {
            "object": "list",
            "data": items,
            "has_more": False,
            "url": f"/v1/checkout/sessions/{data['id']}/line_items",
        }
    if "total_details.breakdown" in wanted and data.get("total_details") is not None:
        data["total_details"] = {
            **data["total_details"],
            "breakdown": {"discounts": [], "taxes": []},
        }
    if "payment_intent" in wanted and data.get("payment_intent") is not None:
        raise invalid_request(
            "The sandbox has no PaymentIntent objects: `payment_intent` cannot be expanded "
            "once the session is complete.",
            "expand",
        )
    return data


def line_item_paths(wanted: frozenset[str], prefix: str = "") -> frozenset[str]:
    """The line-item paths of ``wanted`` (``line_items.data.price`` -> ``price``)."""
    if not prefix:
        return wanted
    return frozenset(p[len(prefix) :] for p in wanted if p.startswith(prefix))


def line_item(
    item: dict[str, Any], product: dict[str, Any], wanted: frozenset[str]
) -> dict[str, Any]:
    """A line item with ``price.product``, ``discounts`` and ``taxes`` as asked."""
    if "price.product" in wanted:
        item["price"] = {**item["price"], "product": product}
    if "discounts" in wanted:
        item["discounts"] = []
    if "taxes" in wanted:
        item["taxes"] = []
    return item
