"""A window's snapshot written with its tail unflushed (issue 15: the timer's cost) restores
the same window as one written after a flush, and readers before the tail's length keep
every sample."""

from __future__ import annotations

import random

import pytest

from alerts.windows import Aggregate, SeriesWindow

MIN = 60_000
HOUR = 60 * MIN


def _fed(bucket_ms: int, n: int, seed: int) -> SeriesWindow:
    rng = random.Random(seed)
    w = SeriesWindow(HOUR, bucket_ms=bucket_ms)
    ts = 0
    for _ in range(n):
        ts += rng.choice((50, 400, 7_000, 61_000))  # bursts (buckets over-full) and gaps
        w.append(ts, rng.gauss(20, 3))
    return w


@pytest.mark.parametrize("bucket_ms", [0, MIN])
@pytest.mark.parametrize("seed", range(6))
def test_a_snapshot_with_an_unflushed_tail_restores_the_same_window(
    bucket_ms: int, seed: int
) -> None:
    w = _fed(bucket_ms, 3_000 + seed * 37, seed)
    assert w._tail_ts, "the case needs samples still in the tail"
    with_tail = w.to_bytes()
    assert w._tail_ts, "writing flushes nothing"
    restored = SeriesWindow.from_bytes(with_tail)
    len(w)  # the flush the snapshot used to make
    flushed = SeriesWindow.from_bytes(w.to_bytes())
    if bucket_ms:
        assert restored._ncum is not None, "the case needs merged samples"
    assert (len(restored), restored.last_ts, restored.prev_ts) == (len(w), w.last_ts, w.prev_ts)
    mine, theirs, before = restored._kept(), flushed._kept(), w._kept()
    for i in (0, 1):  # times, values
        assert mine[i].tolist() == theirs[i].tolist() == before[i].tolist()
    assert (mine[3] is None) == (theirs[3] is None) == (before[3] is None)
    if mine[2] is not None and mine[3] is not None and theirs[3] is not None:
        assert mine[3].tolist() == theirs[3].tolist()  # counts
        assert mine[2] == pytest.approx(theirs[2], rel=1e-12)  # sums (from the prefix sums)
    assert (restored.bucket_ms, restored._run_id, restored._run_n) == (
        flushed.bucket_ms, flushed._run_id, flushed._run_n,
    )  # fmt: skip
    # the first sample it held: one the series did hold, no later than the flushed form's
    assert w.since_ms is not None and restored.since_ms is not None
    assert w.since_ms <= restored.since_ms <= (flushed.since_ms or 0)
    now = w.last_ts
    assert now is not None
    for fn in ("max", "min", "mean", "sum", "count", "rate"):
        for window in (5 * MIN, 10 * MIN, 30 * MIN):
            agg = Aggregate(fn, window)
            x, y = restored.aggregate(agg, now, whole=False), w.aggregate(agg, now, whole=False)
            # (prefix sums may round apart: the restored ones start at the first kept sample)
            assert x == y or x == pytest.approx(y, rel=1e-12)


def test_a_reader_before_the_tails_length_keeps_every_sample() -> None:
    w = _fed(0, 300, 1)
    tail = len(w._tail_ts)
    assert tail
    data = w.to_bytes()
    older = SeriesWindow.from_bytes(data[:-8])  # (what code before the tail's length read)
    assert len(older) == len(w) and older.last_ts == w.last_ts
    agg = Aggregate("sum", 10 * MIN)
    assert older.aggregate(agg, 10**9, whole=False) == pytest.approx(
        w.aggregate(agg, 10**9, whole=False)
    )
