"""Builds the sandbox's parameter grammar (``param_spec.json``) from the request
parameter declarations that stripe-python generates from Stripe's OpenAPI spec
for the API version it pins.

The sandbox itself never imports ``stripe``: it reads the JSON file this module
writes. The drift test regenerates the grammar from the installed SDK and fails
when it differs from the file, so an SDK upgrade is noticed until the sandbox
follows. Regenerate with::

    python -m stripe_sandbox.spec_from_sdk > sandbox/src/stripe_sandbox/param_spec.json

Grammar nodes: ``"string"``, ``"integer"``, ``"boolean"``, ``"decimal"``,
``{"enum": [...]}``, ``{"array": node}``, ``{"map": node}`` (free keys, such as
``metadata``), ``{"object": {name: [required, node]}}`` and ``{"any": [node, ...]}``.
"""

from __future__ import annotations

import decimal
import importlib
import json
import sys
import types
import typing
from typing import Any

#: Endpoint -> (module, class) of its parameters in stripe-python.
ENDPOINTS: dict[str, tuple[str, str]] = {
    "POST /v1/checkout/sessions": (
        "stripe.params.checkout._session_create_params",
        "SessionCreateParams",
    ),
    "POST /v1/checkout/sessions/{id}": (
        "stripe.params.checkout._session_update_params",
        "SessionUpdateParams",
    ),
    "GET /v1/checkout/sessions": (
        "stripe.params.checkout._session_list_params",
        "SessionListParams",
    ),
    "GET /v1/checkout/sessions/{id}": (
        "stripe.params.checkout._session_retrieve_params",
        "SessionRetrieveParams",
    ),
    "POST /v1/checkout/sessions/{id}/expire": (
        "stripe.params.checkout._session_expire_params",
        "SessionExpireParams",
    ),
    "GET /v1/checkout/sessions/{id}/line_items": (
        "stripe.params.checkout._session_line_item_list_params",
        "SessionLineItemListParams",
    ),
    "GET /v1/events": ("stripe.params._event_list_params", "EventListParams"),
    "GET /v1/events/{id}": ("stripe.params._event_retrieve_params", "EventRetrieveParams"),
}


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__required_keys__")


def _request_option_keys() -> frozenset[str]:
    options = importlib.import_module("stripe._request_options").RequestOptions
    return frozenset(options.__annotations__)


def _node(tp: Any) -> Any:
    """The grammar node of one annotation."""
    origin = typing.get_origin(tp)
    if tp is str:
        return "string"
    if tp is bool:
        return "boolean"
    if tp is int:
        return "integer"
    if tp in (float, decimal.Decimal):
        return "decimal"
    if _is_typeddict(tp):
        return {"object": _fields(tp)}
    if origin is typing.Literal:
        return {"enum": [str(v) for v in typing.get_args(tp)]}
    if origin in (list, typing.List):  # noqa: UP006
        return {"array": _node(typing.get_args(tp)[0])}
    if origin in (dict, typing.Dict):  # noqa: UP006
        return {"map": _node(typing.get_args(tp)[1])}
    if getattr(origin, "__name__", "") == "UntypedStripeObject":
        return {"map": _node(typing.get_args(tp)[0])}
    if origin in (typing.Union, types.UnionType):
        return _union(typing.get_args(tp))
    raise TypeError(f"no grammar for {tp!r}")


def _union(args: tuple[Any, ...]) -> Any:
    """Stripe's SDK widens enums with ``str`` for forward compatibility; the API of the
    pinned version accepts only the listed values (``""`` where a value can be unset)."""
    literals = [str(v) for a in args if typing.get_origin(a) is typing.Literal for v in a.__args__]
    others = [a for a in args if typing.get_origin(a) is not typing.Literal]
    nodes: list[Any] = []
    enum_values = [v for v in literals if v != ""]
    if enum_values:
        others = [a for a in others if a is not str]
    for other in others:
        node = _node(other)
        if node not in nodes:
            nodes.append(node)
    if literals:
        nodes.insert(0, {"enum": literals})
    return nodes[0] if len(nodes) == 1 else {"any": nodes}


def _fields(cls: Any, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    # The request options module imports these names only for type checkers.
    hints = typing.get_type_hints(cls, localns={"StripeContext": object, "Mapping": typing.Mapping})
    required = cls.__required_keys__
    return {
        name: [name in required, _node(hints[name])] for name in sorted(hints) if name not in skip
    }


def build() -> dict[str, Any]:
    """The grammar of every endpoint, from the installed SDK."""
    version = importlib.import_module("stripe._api_version")._ApiVersion.CURRENT
    skip = _request_option_keys()
    endpoints = {
        endpoint: _fields(getattr(importlib.import_module(module), name), skip)
        for endpoint, (module, name) in ENDPOINTS.items()
    }
    return {"api_version": version, "endpoints": endpoints}


def dumps(spec: dict[str, Any]) -> str:
    """The JSON text of the grammar as the file holds it: one parameter a line, so that
    a change of the SDK shows as a readable diff."""

    def compact(value: Any) -> str:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))

    endpoints = []
    for endpoint, params in sorted(spec["endpoints"].items()):
        lines = ",\n".join(f"   {compact(k)}: {compact(v)}" for k, v in sorted(params.items()))
        endpoints.append(f"  {compact(endpoint)}: {{\n{lines}\n  }}")
    body = ",\n".join(endpoints)
    return (
        f'{{\n "api_version": {compact(spec["api_version"])},\n "endpoints": {{\n{body}\n }}\n}}\n'
    )


if __name__ == "__main__":
    sys.stdout.write(dumps(build()))
