"""Stripe's form encoding, read back: ``a[b][0][c]=v`` pairs into nested values,
and the typed readers of common parameters (``limit``, ``created[...]``, booleans).

stripe-python encodes lists with explicit indexes (``types[0]=a``); curl users
often write ``types[]=a``. Both are read. Lists come back as dicts keyed by index
strings until :func:`as_list` turns them into lists, so that a metadata key such
as ``metadata[1]`` is never mistaken for a list item.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union
from urllib.parse import parse_qsl

from .errors import invalid_integer, invalid_request

Value = Union[str, "Params"]
Params = dict[str, Value]

_SEGMENT = re.compile(r"\[([^\[\]]*)\]")


def _split_key(key: str) -> list[str]:
    bracket = key.find("[")
    if bracket <= 0:
        return [key]
    parts = [key[:bracket]]
    rest = key[bracket:]
    pos = 0
    while pos < len(rest):
        match = _SEGMENT.match(rest, pos)
        if match is None:  # not Stripe's grammar: keep the raw key
            return [key]
        parts.append(match.group(1))
        pos = match.end()
    return parts


def parse_pairs(pairs: list[tuple[str, str]]) -> Params:
    """Nest ``(key, value)`` pairs: ``a[b]=1`` becomes ``{"a": {"b": "1"}}``."""
    root: Params = {}
    for key, value in pairs:
        path = _split_key(key)
        node = root
        for depth, part in enumerate(path):
            name = part if part != "" else str(len(node))
            last = depth == len(path) - 1
            if last:
                node[name] = value
                break
            child = node.get(name)
            if child is None:
                child = {}
                node[name] = child
            if isinstance(child, str):
                raise invalid_request(f"Invalid hash: {'['.join(path[: depth + 1])}", path[0])
            node = child
    return root


def parse_form(body: bytes) -> Params:
    """Read an ``application/x-www-form-urlencoded`` body."""
    return parse_pairs(parse_qsl(body.decode("utf-8"), keep_blank_values=True))


def parse_query(query: str) -> Params:
    """Read a URL query string."""
    return parse_pairs(parse_qsl(query, keep_blank_values=True))


def get_str(params: Params, name: str, param: str | None = None) -> str | None:
    """A string parameter, or ``None`` when absent; a hash in its place is a 400."""
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid_request(f"Invalid string: {param or name}", param or name)
    return value


def get_dict(params: Params, name: str, param: str | None = None) -> Params | None:
    """A hash parameter, or ``None`` when absent (an empty string also means absent)."""
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        raise invalid_request(f"Invalid object: {param or name}", param or name)
    return value


def as_list(value: Value, param: str) -> list[Value]:
    """The items of a list parameter sent as ``p[0]=..`` / ``p[]=..``."""
    if isinstance(value, str):
        raise invalid_request(f"Invalid array: {param}", param)
    try:
        indexed = sorted((int(k), v) for k, v in value.items())
    except ValueError:
        raise invalid_request(f"Invalid array: {param}", param) from None
    return [v for _, v in indexed]


def parse_int(value: Value, param: str) -> int:
    """An integer parameter."""
    if not isinstance(value, str):
        raise invalid_integer(param, "a hash")
    try:
        return int(value)
    except ValueError:
        raise invalid_integer(param, value) from None


def parse_bool(value: Value, param: str) -> bool:
    """A boolean parameter (``true`` / ``false``)."""
    if value in ("true", "True", "1"):
        return True
    if value in ("false", "False", "0"):
        return False
    raise invalid_request(f"Invalid boolean: {value!s}", param)


def parse_limit(params: Params) -> int:
    """``limit``: 1 to 100, 10 by default."""
    raw = params.get("limit")
    if raw is None or raw == "":
        return 10
    limit = parse_int(raw, "limit")
    if not 1 <= limit <= 100:
        raise invalid_request(
            "Invalid limit: must be between 1 and 100", "limit", "parameter_invalid_integer"
        )
    return limit


@dataclass(frozen=True)
class CreatedRange:
    """A ``created`` filter; bounds in Unix seconds, each optional."""

    gt: int | None = None
    gte: int | None = None
    lt: int | None = None
    lte: int | None = None

    def lower(self) -> int | None:
        """Smallest admitted timestamp."""
        candidates = [
            v for v in (self.gte, None if self.gt is None else self.gt + 1) if v is not None
        ]
        return max(candidates) if candidates else None

    def upper(self) -> int | None:
        """Largest admitted timestamp."""
        candidates = [
            v for v in (self.lte, None if self.lt is None else self.lt - 1) if v is not None
        ]
        return min(candidates) if candidates else None


def parse_created(params: Params, name: str = "created") -> CreatedRange:
    """``created=ts`` or ``created[gt|gte|lt|lte]=ts``."""
    raw = params.get(name)
    if raw is None or raw == "":
        return CreatedRange()
    if isinstance(raw, str):
        ts = parse_int(raw, name)
        return CreatedRange(gte=ts, lte=ts)
    bounds: dict[str, int] = {}
    for op, value in raw.items():
        if op not in ("gt", "gte", "lt", "lte"):
            raise invalid_request(f"Received unknown parameter: {name}[{op}]", f"{name}[{op}]")
        bounds[op] = parse_int(value, f"{name}[{op}]")
    return CreatedRange(**bounds)
