"""Idempotent POSTs, as Stripe keeps them: a successful answer is saved under its
``Idempotency-Key`` and replayed for a retry with the same parameters; the same
key with other parameters is an ``idempotency_error``. Failed validation and
injected faults save nothing, so a retry runs again."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from .errors import idempotency_mismatch

#: Saved answers kept (oldest forgotten first); Stripe keeps keys for 24 hours.
MAX_KEYS = 20_000


@dataclass(frozen=True, slots=True)
class SavedAnswer:
    """A saved successful answer."""

    fingerprint: str
    status: int
    body: str


class IdempotencyCache:
    """Answers by key (keys are per account, as on Stripe, not per endpoint)."""

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self._saved: OrderedDict[str, SavedAnswer] = OrderedDict()
        self._max_keys = max_keys

    @staticmethod
    def fingerprint(path: str, body: bytes) -> str:
        """What must match for a replay: the method and path, and the parameters."""
        return hashlib.sha256(path.encode() + b"\0" + body).hexdigest()

    def lookup(self, key: str, fingerprint: str) -> SavedAnswer | None:
        """The saved answer to replay, ``None`` for a new key, or a 400 if the key
        was used with other parameters."""
        saved = self._saved.get(key)
        if saved is None:
            return None
        if saved.fingerprint != fingerprint:
            raise idempotency_mismatch(key)
        return saved

    def save(self, key: str, fingerprint: str, status: int, body: str) -> None:
        """Keep a successful answer."""
        self._saved[key] = SavedAnswer(fingerprint, status, body)
        while len(self._saved) > self._max_keys:
            self._saved.popitem(last=False)

    def clear(self) -> None:
        """Forget every key."""
        self._saved.clear()
