"""Reconnect delays: exponential with jitter, so a fleet of gateways does not reconnect in step
after a broker restart."""

from __future__ import annotations

import random


class Backoff:
    def __init__(
        self, min_s: float = 0.5, max_s: float = 60.0, rng: random.Random | None = None
    ) -> None:
        if not 0 < min_s <= max_s:
            raise ValueError(f"backoff needs 0 < min ({min_s}) <= max ({max_s})")
        self.min_s, self.max_s = min_s, max_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """Equal jitter: half the exponential step, plus a random share of the other half."""
        cap = min(self.max_s, self.min_s * 2**self.attempt)
        self.attempt += 1
        return float(cap / 2 + self._rng.uniform(0, cap / 2))

    def reset(self) -> None:
        self.attempt = 0
