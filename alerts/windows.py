"""Window aggregates over a device's recent readings, kept incrementally in numpy arrays.

A :class:`SeriesWindow` holds the samples of one (estate, device, metric) for as long as the
longest window anybody asks of it. Each reading appends one sample and a running prefix sum, so
the sum over any window is two binary searches and a subtraction; minima, maxima and rates are
numpy reductions over the window's slice. Nothing is re-read from the telemetry store.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "AGGREGATES",
    "DAY_MS",
    "Aggregate",
    "SeriesWindow",
    "WindowBank",
]

DAY_MS = 86_400_000
HOUR_MS = 3_600_000

# sum: total over the window (precipitation); max/min/mean; count: samples in the window;
# rate: change per hour from the first sample in the window to the last;
# min_fall: fall of the trailing-24 h minimum over the window (cold wave: Tmin falls by N °C
# within 24 h / 48 h), i.e. min(24 h ending window ago) - min(24 h ending now).
AGGREGATES = frozenset({"sum", "max", "min", "mean", "count", "rate", "min_fall"})

_F64 = npt.NDArray[np.float64]
_I64 = npt.NDArray[np.int64]


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


class SeriesWindow:
    """Time-ordered samples of one series covering at least ``horizon_ms``.

    Bounded twice: by time (older samples are dropped as new ones arrive) and by
    ``max_samples`` (a device reporting far faster than its kind's interval cannot grow it
    without limit; the oldest samples go first).
    """

    __slots__ = ("_cum", "_end", "_start", "_ts", "_val", "horizon_ms", "max_samples")

    def __init__(self, horizon_ms: int, capacity: int = 64, max_samples: int = 200_000) -> None:
        self.horizon_ms = horizon_ms
        self.max_samples = max_samples
        self._ts: _I64 = np.zeros(capacity, dtype=np.int64)
        self._val: _F64 = np.zeros(capacity, dtype=np.float64)
        # _cum[i] = sum of _val[_start..i]; rebased whenever the arrays are compacted.
        self._cum: _F64 = np.zeros(capacity, dtype=np.float64)
        self._start = 0
        self._end = 0

    def __len__(self) -> int:
        return self._end - self._start

    @property
    def last_ts(self) -> int | None:
        return int(self._ts[self._end - 1]) if self._end > self._start else None

    # --- writing -------------------------------------------------------------------------------
    def append(self, ts: int, value: float) -> None:
        end = self._end
        if end > self._start and ts < self._ts[end - 1]:
            self._insert_late(ts, value)
            return
        if end == self._ts.shape[0]:
            self._make_room()
            end = self._end
        self._ts[end] = ts
        self._val[end] = value
        self._cum[end] = value + (self._cum[end - 1] if end > 0 else 0.0)
        self._end = end + 1
        self._drop_before(ts - self.horizon_ms)

    def _insert_late(self, ts: int, value: float) -> None:
        # A replayed older sample (store-and-forward): rare, so rebuild the slice in order.
        s, e = self._start, self._end
        i = s + int(np.searchsorted(self._ts[s:e], ts, side="right"))
        ts_arr = np.insert(self._ts[s:e], i - s, ts)
        val_arr = np.insert(self._val[s:e], i - s, value)
        self._reset(ts_arr, val_arr)
        self._drop_before(int(self._ts[self._end - 1]) - self.horizon_ms)

    def _make_room(self) -> None:
        n = len(self)
        cap = self._ts.shape[0]
        if n >= self.max_samples:
            self._start += n - self.max_samples + 1
            n = len(self)
        new_cap = cap * 2 if n > cap // 2 else cap
        new_cap = min(max(new_cap, n + 1), self.max_samples + 1)
        s, e = self._start, self._end
        ts_arr, val_arr = self._ts[s:e].copy(), self._val[s:e].copy()
        self._ts = np.zeros(new_cap, dtype=np.int64)
        self._val = np.zeros(new_cap, dtype=np.float64)
        self._cum = np.zeros(new_cap, dtype=np.float64)
        self._reset(ts_arr, val_arr)

    def _reset(self, ts_arr: _I64, val_arr: _F64) -> None:
        n = ts_arr.shape[0]
        if n > self._ts.shape[0]:
            cap = max(n * 2, 64)
            self._ts = np.zeros(cap, dtype=np.int64)
            self._val = np.zeros(cap, dtype=np.float64)
            self._cum = np.zeros(cap, dtype=np.float64)
        self._ts[:n] = ts_arr
        self._val[:n] = val_arr
        np.cumsum(val_arr, out=self._cum[:n])
        self._start, self._end = 0, n

    def _drop_before(self, cutoff: int) -> None:
        s, e = self._start, self._end
        if e > s and self._ts[s] <= cutoff:
            self._start = s + int(np.searchsorted(self._ts[s:e], cutoff, side="right"))

    # --- reading -------------------------------------------------------------------------------
    def _bounds(self, lo_excl: int, hi_incl: int) -> tuple[int, int]:
        s, e = self._start, self._end
        ts = self._ts[s:e]
        i = s + int(np.searchsorted(ts, lo_excl, side="right"))
        j = s + int(np.searchsorted(ts, hi_incl, side="right"))
        return i, j

    def _sum(self, i: int, j: int) -> float:
        if j <= i:
            return 0.0
        before = self._cum[i - 1] if i > 0 else 0.0
        return float(self._cum[j - 1] - before)

    def aggregate(self, agg: Aggregate, now: int) -> float | None:
        """The aggregate over the samples with ``now - window < ts <= now``; None if there is
        nothing to aggregate (``sum`` and ``count`` are 0 then)."""
        fn = agg.fn
        i, j = self._bounds(now - agg.window_ms, now)
        if fn == "sum":
            return self._sum(i, j)
        if fn == "count":
            return float(j - i)
        if fn == "min_fall":
            return self._min_fall(agg.window_ms, now)
        if j <= i:
            return None
        vals = self._val[i:j]
        if fn == "max":
            return float(vals.max())
        if fn == "min":
            return float(vals.min())
        if fn == "mean":
            return self._sum(i, j) / (j - i)
        # rate, per hour
        dt = int(self._ts[j - 1] - self._ts[i])
        if dt <= 0:
            return None
        return float(vals[-1] - vals[0]) * HOUR_MS / dt

    def _min_fall(self, window_ms: int, now: int) -> float | None:
        i, j = self._bounds(now - DAY_MS, now)
        then = now - window_ms
        k, m = self._bounds(then - DAY_MS, then)
        if j <= i or m <= k:
            return None
        return float(self._val[k:m].min() - self._val[i:j].min())

    # --- persistence ---------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        s, e = self._start, self._end
        head = struct.pack("<qq", self.horizon_ms, e - s)
        return head + self._ts[s:e].tobytes() + self._val[s:e].tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, horizon_ms: int | None = None) -> SeriesWindow:
        stored_horizon, n = struct.unpack_from("<qq", data)
        w = cls(horizon_ms or stored_horizon, capacity=max(64, n * 2))
        off = 16
        ts_arr = np.frombuffer(data, dtype=np.int64, count=n, offset=off).copy()
        val_arr = np.frombuffer(data, dtype=np.float64, count=n, offset=off + 8 * n).copy()
        w._reset(ts_arr, val_arr)
        if n:
            w._drop_before(int(ts_arr[-1]) - w.horizon_ms)
        return w


SeriesKey = tuple[str, str, str]  # (estate, device, metric)


class WindowBank:
    """The windows of every tracked series; which (kind, metric) are tracked, and for how
    long, is decided by the rules and the weather criteria in force."""

    def __init__(self) -> None:
        self.horizons: dict[str, dict[str, int]] = {}  # kind -> metric -> horizon_ms
        self.series: dict[SeriesKey, SeriesWindow] = {}

    def track(self, kind: str, metric: str, agg: Aggregate) -> None:
        metrics = self.horizons.setdefault(kind, {})
        metrics[metric] = max(metrics.get(metric, 0), agg.horizon_ms)

    def retrack(self, needs: Iterable[tuple[str, str, Aggregate]]) -> None:
        """Replace what is tracked (new rules); existing series keep their samples."""
        self.horizons = {}
        for kind, metric, agg in needs:
            self.track(kind, metric, agg)
        for (_e, _d, metric), w in list(self.series.items()):
            w.horizon_ms = max(
                (h.get(metric, 0) for h in self.horizons.values()), default=w.horizon_ms
            )

    def observe(
        self,
        estate: str,
        dev: str,
        metrics: dict[str, float | int | bool | str],
        ts: int,
        kind: str,
    ) -> None:
        tracked = self.horizons.get(kind)
        if not tracked:
            return
        series = self.series
        for metric, horizon in tracked.items():
            v = metrics.get(metric)
            if v is None or isinstance(v, str):
                continue
            key = (estate, dev, metric)
            w = series.get(key)
            if w is None:
                w = series[key] = SeriesWindow(horizon)
            w.append(ts, float(v))

    def get(self, estate: str, dev: str, metric: str) -> SeriesWindow | None:
        return self.series.get((estate, dev, metric))

    def value(self, estate: str, dev: str, metric: str, agg: Aggregate, now: int) -> float | None:
        w = self.series.get((estate, dev, metric))
        return None if w is None else w.aggregate(agg, now)
