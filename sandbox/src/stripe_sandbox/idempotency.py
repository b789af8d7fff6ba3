"""Idempotent POSTs, as Stripe keeps them: a successful answer is saved under its
``Idempotency-Key`` and replayed for a retry with the same parameters; the same
key with other parameters is an ``idempotency_error``. Failed validation and
injected faults save nothing, so a retry runs again. Keys are pruned 24 hours
after their first use (sandbox time): the same key then makes a new request."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .errors import idempotency_mismatch

#: Saved answers kept at most (oldest forgotten first).
MAX_KEYS = 20_000
#: How long Stripe keeps a key.
KEY_TTL_SECONDS = 24 * 60 * 60


@dataclass(frozen=True, slots=True)
class SavedAnswer:
    """A saved successful answer."""

    fingerprint: str
    status: int
    body: str
    saved_at: float


class IdempotencyCache:
    """Answers by key (keys are per account, as on Stripe, not per endpoint)."""

    def __init__(self, now: Callable[[], float], max_keys: int = MAX_KEYS) -> None:
        self._now = now
        self._saved: OrderedDict[str, SavedAnswer] = OrderedDict()
        self._max_keys = max_keys

    @staticmethod
    def fingerprint(path: str, body: bytes) -> str:
        """What must match for a replay: the method and path, and the parameters."""
        return hashlib.sha256(path.encode() + b"\0" + body).hexdigest()

    def _prune(self) -> None:
        cutoff = self._now() - KEY_TTL_SECONDS
        saved = self._saved
        while saved and next(iter(saved.values())).saved_at <= cutoff:
            saved.popitem(last=False)

    def lookup(self, key: str, fingerprint: str) -> SavedAnswer | None:
        """The saved answer to replay, ``None`` for a new (or pruned) key, or a 400 if
        the key was used with other parameters."""
        self._prune()
        saved = self._saved.get(key)
        if saved is None:
            return None
        if saved.fingerprint != fingerprint:
            raise idempotency_mismatch(key)
        return saved

    def save(self, key: str, fingerprint: str, status: int, body: str) -> None:
        """Keep a successful answer."""
        self._saved.pop(key, None)
        self._saved[key] = SavedAnswer(fingerprint, status, body, self._now())
        while len(self._saved) > self._max_keys:
            self._saved.popitem(last=False)

    def clear(self) -> None:
        """Forget every key."""
        self._saved.clear()
