"""Simulated time: real time or faster, from any start."""

from __future__ import annotations

import time
from collections.abc import Callable


class SimClock:
    """``start_ms + speed × elapsed``; after ``fast_until_ms`` it goes on at real speed, so a
    demo can fast-forward a storm and then stay live."""

    def __init__(
        self,
        start_ms: int,
        speed: float = 1.0,
        fast_until_ms: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.start_ms = start_ms
        self.speed = speed
        self.fast_until_ms = fast_until_ms
        self._monotonic = monotonic
        self._t0 = monotonic()

    def now_ms(self) -> int:
        elapsed_ms = (self._monotonic() - self._t0) * 1000.0
        fast = self.start_ms + elapsed_ms * self.speed
        if self.fast_until_ms is None or fast <= self.fast_until_ms:
            return int(fast)
        real_after = elapsed_ms - (self.fast_until_ms - self.start_ms) / self.speed
        return int(self.fast_until_ms + real_after)
