"""Rollups and chart resolution: pure numpy, no I/O.

Rows are aggregated per (series, time bucket) into min, max, sum, count and the last value, the
shape both the 1-minute and the 1-hour tables keep, so buckets merge by the same rule whether they
come from new raw rows or from finer buckets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

MINUTE_MS = 60_000
HOUR_MS = 3_600_000

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Buckets:
    series: I64
    bucket: I64
    min: F64
    max: F64
    sum: F64
    count: I64
    last_ts: I64
    last: F64

    def __len__(self) -> int:
        return len(self.series)

    def rows(self) -> list[tuple[int, int, float, float, float, int, int, float]]:
        return list(
            zip(
                self.series.tolist(),
                self.bucket.tolist(),
                self.min.tolist(),
                self.max.tolist(),
                self.sum.tolist(),
                self.count.tolist(),
                self.last_ts.tolist(),
                self.last.tolist(),
                strict=True,
            )
        )


def empty_buckets() -> Buckets:
    i, f = np.empty(0, np.int64), np.empty(0, np.float64)
    return Buckets(i, i, f, f, f, i, i, f)


def aggregate(series: I64, ts: I64, value: F64, width_ms: int) -> Buckets:
    """Group raw rows by (series, bucket of width_ms); rows need not be in order."""
    bucket = ts // width_ms * width_ms
    order = np.lexsort((ts, bucket, series))
    s, b, t, v = series[order], bucket[order], ts[order], value[order]
    if len(s) == 0:
        return empty_buckets()
    starts = np.flatnonzero(np.r_[True, (s[1:] != s[:-1]) | (b[1:] != b[:-1])])
    ends = np.r_[starts[1:], len(s)] - 1
    return Buckets(
        series=s[starts],
        bucket=b[starts],
        min=np.minimum.reduceat(v, starts),
        max=np.maximum.reduceat(v, starts),
        sum=np.add.reduceat(v, starts),
        count=np.diff(np.r_[starts, len(s)]).astype(np.int64),
        last_ts=t[ends],
        last=v[ends],
    )


def points(
    bucket: I64,
    mins: F64,
    maxs: F64,
    sums: F64,
    counts: I64,
    last: F64,
    max_points: int,
    width_ms: int = 0,
) -> list[dict[str, float | int]]:
    """Chart points of one series, time-ordered buckets in. With width_ms, buckets are first
    merged into aligned wider ones; then, should there still be more than max_points, groups of
    neighbours are merged so the answer never exceeds max_points."""
    if len(bucket) == 0:
        return []
    keys = bucket // width_ms * width_ms if width_ms else bucket
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    if len(starts) > max_points:
        k = math.ceil(len(starts) / max_points)
        starts = starts[::k]
    ends = np.r_[starts[1:], len(keys)] - 1
    n = np.add.reduceat(counts, starts)
    total = np.add.reduceat(sums, starts)
    return [
        {
            "ts": int(t),
            "min": float(mn),
            "max": float(mx),
            "mean": float(sm / c),
            "count": int(c),
            "last": float(lv),
        }
        for t, mn, mx, sm, c, lv in zip(
            keys[starts],
            np.minimum.reduceat(mins, starts),
            np.maximum.reduceat(maxs, starts),
            total,
            n,
            last[ends],
            strict=True,
        )
    ]


@dataclass(frozen=True)
class Resolution:
    name: str  # the rows read: "raw", "1m" or "1h"
    step_ms: int  # width of a returned point (for "raw": the kind's reporting interval)
    merge_ms: int = 0  # >0: stored buckets merged into aligned buckets this wide


# Point widths a chart may use, finest first. Each is a whole number of the stored rollup it
# is merged from (minutes from rollup_1m, hours from rollup_1h), so a point is exact.
CHART_WIDTHS_MS = tuple(
    [m * MINUTE_MS for m in (1, 2, 5, 10, 15, 30)]
    + [h * HOUR_MS for h in (1, 2, 3, 6, 12, 24, 48, 168)]
)


def points_of_rows(
    rows: Sequence[Sequence[float | int]], max_points: int, width_ms: int = 0
) -> list[dict[str, float | int]]:
    """``points`` of rows ``(bucket, min, max, sum, count, last)``, as the stores answer them."""
    arr = np.array(rows, dtype=np.float64)
    return points(
        arr[:, 0].astype(np.int64),
        arr[:, 1],
        arr[:, 2],
        arr[:, 3],
        arr[:, 4].astype(np.int64),
        arr[:, 5],
        max_points,
        width_ms,
    )


def choose_resolution(
    from_ms: int,
    to_ms: int,
    max_points: int,
    interval_ms: int,
    now_ms: int,
    raw_recent_ms: int = 2 * HOUR_MS,
) -> Resolution:
    """The finest point width that fits max_points, merged from the coarsest stored rows that
    make it up: a day at 500 points is 5-minute points from rollup_1m (1,440 rows), a month is
    2-hour points from rollup_1h (720 rows), so a longer range never reads more rows than a
    shorter one reads at the width below it. Raw rows only for recent, short ranges: they are
    found by scanning what was written since, while rollups are indexed."""
    span = max(to_ms - from_ms, 1)
    # +1: a range that does not start on a bucket boundary touches one bucket more
    if from_ms >= now_ms - raw_recent_ms and span // max(interval_ms, 1) + 1 <= max_points:
        return Resolution("raw", interval_ms)
    for width in CHART_WIDTHS_MS:
        if span // width + 1 <= max_points:
            stored = HOUR_MS if width % HOUR_MS == 0 else MINUTE_MS
            name = "1h" if stored == HOUR_MS else "1m"
            return Resolution(name, width, merge_ms=0 if width == stored else width)
    hours = math.ceil(span / HOUR_MS / max(max_points - 1, 1))
    return Resolution("1h", hours * HOUR_MS, merge_ms=hours * HOUR_MS)


def rebucket(b: Buckets, width_ms: int) -> Buckets:
    """Merge buckets into aligned buckets ``width_ms`` wide, one per (series, bucket): minutes
    into hours, or the partial minutes of several runs into whole ones."""
    key = b.bucket // width_ms * width_ms
    order = np.lexsort((b.last_ts, key, b.series))
    s, k = b.series[order], key[order]
    if len(s) == 0:
        return b
    starts = np.flatnonzero(np.r_[True, (s[1:] != s[:-1]) | (k[1:] != k[:-1])])
    ends = np.r_[starts[1:], len(s)] - 1
    return Buckets(
        series=s[starts],
        bucket=k[starts],
        min=np.minimum.reduceat(b.min[order], starts),
        max=np.maximum.reduceat(b.max[order], starts),
        sum=np.add.reduceat(b.sum[order], starts),
        count=np.add.reduceat(b.count[order], starts),
        last_ts=b.last_ts[order][ends],
        last=b.last[order][ends],
    )
