"""Flapping: an alarm that starts and clears again and again is held open, not re-notified.

Counted per (rule, subject): when the condition has started ``starts`` times within ``window``
and clears once more, the alarm is not resolved but held and marked flapping; it resolves only
after its condition has stayed clear for ``hold``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from alerts.alarms.model import AlarmKey

__all__ = ["FlapDetector"]


@dataclass
class FlapDetector:
    starts: int = 3
    window_ms: int = 30 * 60_000
    hold_ms: int = 15 * 60_000
    _seen: dict[AlarmKey, deque[int]] = field(default_factory=dict)

    def started(self, key: AlarmKey, ts: int) -> None:
        seen = self._seen.get(key)
        if seen is None:
            # Bounded: only the last `starts` start times matter.
            seen = self._seen[key] = deque(maxlen=self.starts)
        seen.append(ts)

    def flapping(self, key: AlarmKey, now: int) -> bool:
        seen = self._seen.get(key)
        return seen is not None and len(seen) == self.starts and now - seen[0] <= self.window_ms

    def drop(self, estates: set[str]) -> None:
        """Forget these estates' subjects (another engine has them now)."""
        for key in [k for k in self._seen if k[1] in estates]:
            del self._seen[key]

    def prune(self, now: int) -> None:
        """Forget subjects that have not started within the window."""
        stale = [k for k, s in self._seen.items() if not s or now - s[-1] > self.window_ms]
        for k in stale:
            del self._seen[k]
