"""Request parameters checked against the grammar of the pinned API version
(``param_spec.json``, generated from stripe-python's declarations by
:mod:`stripe_sandbox.spec_from_sdk`), as Stripe checks them before acting:

- a parameter the endpoint does not have, at any depth, is a 400
  ``parameter_unknown`` naming its full path
  (``line_items[0][price_data][product_data][nmae]``);
- a required parameter that is missing is ``parameter_missing``;
- every value has the declared type (string, integer, boolean, decimal, hash,
  array) and, for enums, one of the values of that version.

An empty string means "not given", except where the grammar lists ``""`` as a
value (parameters that can be unset).
"""

from __future__ import annotations

import decimal
import json
from importlib import resources
from typing import Any

from .errors import StripeError, invalid_integer, invalid_request, parameter_missing
from .forms import Params, Value

SPEC: dict[str, Any] = json.loads(
    resources.files(__package__).joinpath("param_spec.json").read_text("utf-8")
)
API_VERSION: str = SPEC["api_version"]

Node = Any


def _path(prefix: str | None, name: str) -> str:
    return name if prefix is None else f"{prefix}[{name}]"


def _one_of(values: list[str]) -> str:
    shown = [v for v in values if v != ""]
    if len(shown) < 2:
        return ", ".join(shown)
    return ", ".join(shown[:-1]) + f", or {shown[-1]}"


def _allows_empty(node: Node) -> bool:
    if isinstance(node, dict):
        if "enum" in node:
            return "" in node["enum"]
        if "any" in node:
            return any(_allows_empty(n) for n in node["any"])
    return False


def _shape_matches(node: Node, value: Value) -> bool:
    """Whether ``value`` (a string or a hash) has the shape ``node`` wants."""
    if isinstance(node, str) or "enum" in node:
        return isinstance(value, str)
    if "any" in node:
        return any(_shape_matches(n, value) for n in node["any"])
    return isinstance(value, dict)


def _indexed(value: Params, path: str) -> list[tuple[str, Value]]:
    try:
        return sorted(((k, v) for k, v in value.items()), key=lambda kv: int(kv[0]))
    except ValueError:
        raise invalid_request(f"Invalid array: {path}", path) from None


def _unknown(node: Node, value: Value, path: str) -> None:
    """Raise ``parameter_unknown`` for the first name the grammar does not have."""
    if not isinstance(value, dict) or isinstance(node, str):
        return
    if "any" in node:
        for alternative in node["any"]:
            if _shape_matches(alternative, value):
                _unknown(alternative, value, path)
                return
        return
    if "object" in node:
        _unknown_fields(node["object"], value, path)
    elif "array" in node:
        for index, item in _indexed(value, path):
            _unknown(node["array"], item, f"{path}[{index}]")
    elif "map" in node:
        for key, item in value.items():
            _unknown(node["map"], item, f"{path}[{key}]")


def _unknown_fields(fields: dict[str, Any], value: Params, prefix: str | None) -> None:
    for name, item in value.items():
        path = _path(prefix, name)
        spec = fields.get(name)
        if spec is None:
            raise invalid_request(f"Received unknown parameter: {path}", path, "parameter_unknown")
        _unknown(spec[1], item, path)


def _scalar(kind: str, value: Value, path: str) -> None:
    if not isinstance(value, str):
        raise invalid_request(f"Invalid {kind}: {path} must be a {kind}, not a hash", path)
    if kind == "integer":
        try:
            int(value)
        except ValueError:
            raise invalid_integer(path, value) from None
    elif kind == "decimal":
        try:
            decimal.Decimal(value)
        except decimal.InvalidOperation:
            raise invalid_request(f"Invalid decimal: {value}", path) from None
    elif kind == "boolean" and value not in ("true", "false"):
        raise invalid_request(f"Invalid boolean: {value}", path)


def _check(node: Node, value: Value, path: str) -> None:
    """Raise the first type or enum error in ``value``."""
    if isinstance(node, str):
        _scalar(node, value, path)
    elif "enum" in node:
        if not isinstance(value, str) or value not in node["enum"]:
            shown = value if isinstance(value, str) else "a hash"
            raise invalid_request(
                f"Invalid {path}: must be one of {_one_of(node['enum'])} (got {shown})", path
            )
    elif "any" in node:
        _check_any(node["any"], value, path)
    elif not isinstance(value, dict):
        kind = "array" if "array" in node else "object"
        raise invalid_request(f"Invalid {kind}: {path}", path)
    elif "object" in node:
        check_fields(node["object"], value, path)
    elif "array" in node:
        for index, item in _indexed(value, path):
            _check(node["array"], item, f"{path}[{index}]")
    else:
        for key, item in value.items():
            _check(node["map"], item, f"{path}[{key}]")


def _check_any(alternatives: list[Node], value: Value, path: str) -> None:
    first: StripeError | None = None
    for alternative in alternatives:
        if not _shape_matches(alternative, value):
            continue
        try:
            _check(alternative, value, path)
            return
        except StripeError as exc:
            first = first or exc
    if first is not None:
        raise first
    raise invalid_request(f"Invalid value for {path}", path)


def check_fields(fields: dict[str, Any], value: Params, prefix: str | None) -> None:
    """Required fields present, every given one of its declared type."""
    for name, (required, node) in fields.items():
        path = _path(prefix, name)
        item = value.get(name)
        if item is None or (item == "" and not _allows_empty(node)):
            if required:
                raise parameter_missing(path)
            continue
        _check(node, item, path)


def check(endpoint: str, params: Params) -> None:
    """Check ``params`` of ``endpoint`` (``"POST /v1/checkout/sessions"``) against the
    grammar: unknown names first, anywhere in the tree, then types and enums."""
    fields = SPEC["endpoints"][endpoint]
    _unknown_fields(fields, params, None)
    check_fields(fields, params, None)


def present(value: Value | None) -> bool:
    """Whether a parameter was given (an empty string means it was not)."""
    return value is not None and value != ""


def _typed(node: Node, value: Value) -> Any:
    if value == "" and _allows_empty(node):
        return None
    if isinstance(node, str):
        if node == "integer":
            return int(value)  # type: ignore[arg-type]
        if node == "boolean":
            return value == "true"
        return value
    if "enum" in node:
        return value
    if "any" in node:
        for alternative in node["any"]:
            if _shape_matches(alternative, value) and alternative != {"enum": [""]}:
                return _typed(alternative, value)
        return None
    assert isinstance(value, dict)
    if "array" in node:
        return [_typed(node["array"], item) for _, item in _indexed(value, "")]
    if "map" in node:
        return {k: _typed(node["map"], v) for k, v in value.items()}
    return typed_fields(node["object"], value)


def typed_fields(fields: dict[str, Any], value: Params) -> dict[str, Any]:
    """Checked parameters as JSON values (integers, booleans, lists), absent ones left
    out: what Stripe echoes of them on the object."""
    return {
        name: _typed(fields[name][1], item)
        for name, item in value.items()
        if name in fields and present(item)
    }


def typed(endpoint: str, params: Params, name: str) -> Any:
    """One checked top-level parameter of ``endpoint`` as a JSON value."""
    return _typed(SPEC["endpoints"][endpoint][name][1], params[name])
