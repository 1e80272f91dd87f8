"""What a rule or a criterion asks of a window: an aggregate of one metric over a trailing
window (``alerts.windows.SeriesWindow`` answers it), and the aggregates there are."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AGGREGATES", "DAY_MS", "HOUR_MS", "Aggregate"]

DAY_MS = 86_400_000
HOUR_MS = 3_600_000

# sum: total over the window (precipitation); max/min/mean; count: samples in the window;
# rate: change per hour from the first sample in the window to the last;
# a rule's aggregate is judged only over a full window (SeriesWindow.full) unless more samples
# cannot undo its hit (max/sum/count above, min below): a rate from a new series' first samples
# is noise, every new estate got a spurious plan from it (issue 11); criteria: rate, mean only;
# min_fall: fall of the trailing-24 h minimum over the window (cold wave: Tmin falls by N °C
# within 24 h / 48 h), i.e. min(24 h ending window ago) - min(24 h ending now).
AGGREGATES = frozenset({"sum", "max", "min", "mean", "count", "rate", "min_fall"})


@dataclass(frozen=True, slots=True)
class Aggregate:
    """An aggregate of one metric over a trailing window."""

    fn: str
    window_ms: int

    @property
    def horizon_ms(self) -> int:
        """How much history the aggregate needs."""
        return self.window_ms + DAY_MS if self.fn == "min_fall" else self.window_ms

    def key(self, metric: str) -> str:
        hours = self.window_ms / HOUR_MS
        span = f"{hours:g}h" if self.window_ms % 60_000 == 0 else f"{self.window_ms}ms"
        return f"{metric}.{self.fn}.{span}"
