"""The sandbox clock: real time plus an offset that only moves forward."""

from __future__ import annotations

import time


class SandboxClock:
    """Wall-clock time shifted by an offset that tests move forward, so that
    expiry can be reached without sleeping."""

    def __init__(self) -> None:
        self._offset = 0.0

    @property
    def offset(self) -> float:
        """Seconds the clock is ahead of real time."""
        return self._offset

    def now(self) -> float:
        """Current sandbox time, in Unix seconds."""
        return time.time() + self._offset

    def now_int(self) -> int:
        """Current sandbox time, in whole Unix seconds (Stripe's timestamps)."""
        return int(self.now())

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` (never backwards); returns the new time."""
        if seconds < 0:
            raise ValueError("the sandbox clock only moves forward")
        self._offset += seconds
        return self.now()

    def reset(self) -> None:
        """Go back to real time."""
        self._offset = 0.0
