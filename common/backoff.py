"""Reconnect delays: exponential backoff with full jitter.

Full jitter (a uniform draw between zero and the exponential ceiling)
spreads a whole fleet's reconnects after a controller restart, instead of
having every drone knock at the same instants.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 0.5
    cap: float = 30.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.cap < self.initial or self.factor < 1:
            raise ValueError("backoff needs 0 < initial <= cap and factor >= 1")

    def ceiling(self, attempt: int) -> float:
        """The largest delay for the given attempt (0-based)."""
        # Clamp the exponent so large attempt counts cannot overflow a float.
        return min(self.cap, self.initial * self.factor ** min(attempt, 64))

    def delay(self, attempt: int, rng: random.Random | None = None, *, least: float = 0.0) -> float:
        """A draw between ``least`` (a share of the ceiling, 0 for full
        jitter) and the ceiling: a peer that was refused waits at least half
        (``least=0.5``), so its retries never come in quick succession."""
        ceiling = self.ceiling(attempt)
        return (rng or random).uniform(least * ceiling, ceiling)
