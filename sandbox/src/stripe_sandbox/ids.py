"""Stripe-like object identifiers: a prefix and random base62 characters."""

from __future__ import annotations

import os
import string

_ALPHABET = string.digits + string.ascii_letters
# Random bytes map to base62 by value modulo 62; bytes 248..255 are dropped so
# that every character is equally likely.
_TABLE = bytes(ord(_ALPHABET[b % 62]) for b in range(256))
_BIASED = bytes(range(248, 256))

#: Random characters after ``cs_test_`` in a Checkout Session id, as Stripe has.
SESSION_ID_CHARS = 58


def random_base62(length: int) -> str:
    """``length`` random characters from ``[0-9A-Za-z]`` (cryptographically random)."""
    out = b""
    while len(out) < length:
        out += os.urandom(length + 8).translate(_TABLE, _BIASED)
    return out[:length].decode("ascii")


def new_id(prefix: str, length: int = 24) -> str:
    """A new identifier such as ``evt_1Q...``: ``prefix`` + ``_`` + random base62."""
    return f"{prefix}_{random_base62(length)}"


def new_session_id() -> str:
    """A test-mode Checkout Session id: ``cs_test_`` + 58 base62 characters."""
    return "cs_test_" + random_base62(SESSION_ID_CHARS)
