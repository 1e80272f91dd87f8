"""Windows as summaries (issue 15): a series keeps at most a few samples per bucket (its
kind's reporting interval) whatever the reading rate, and its aggregates stay those of every
sample: exactly, while no bucket holds more than a few; over windows on bucket edges, always."""

from __future__ import annotations

from array import array

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts import windows
from alerts.bucket_runs import bucket_runs
from alerts.rules.evaluate import Evaluator
from alerts.rules.index import RuleIndex
from alerts.windows import Aggregate, SeriesWindow
from tests.alerts.test_rules_fast_path import NaiveWindow

MIN = 60_000
PER_BUCKET = windows._PER_BUCKET
FNS = ("max", "min", "mean", "sum", "count", "rate")

# (no NaN: the reference's Python max/min depend on where a NaN stands)
values = st.floats(-1e3, 1e3, allow_nan=False)


def _agree(got: float | None, want: float | None) -> bool:
    if got is None or want is None:
        return got is want
    return got == pytest.approx(want, rel=1e-9, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    bucket=st.sampled_from((1_000, 10_000, MIN)),
    steps=st.lists(st.tuples(st.integers(0, 3 * MIN), values), min_size=1, max_size=300),
    tail=st.sampled_from((3, 128)),
    data=st.data(),
)
def test_aggregates_on_bucket_edges_are_those_of_every_sample(
    bucket: int, steps: list[tuple[int, float]], tail: int, data: st.DataObject
) -> None:
    """Any rate, bursts included: max, min, sum, count, mean and rate over windows that
    start and end on a bucket's edge equal the definition's over every sample."""
    horizon = 30 * MIN
    windows._TAIL = tail
    try:
        w = SeriesWindow(horizon, capacity=4, bucket_ms=bucket)
        naive = NaiveWindow(horizon, 10**9)
        ts = 0
        for gap, v in steps:
            ts += gap // 50 if gap % 3 else 0  # mostly bursts: many samples a bucket
            w.append(ts, v)
            naive.append(ts, v)
            if data.draw(st.booleans()):
                now = (ts // bucket + 1) * bucket - 1  # the end of the newest's bucket
                span = data.draw(st.sampled_from((1, 5, 10, 30))) * MIN
                for fn in FNS:
                    agg = Aggregate(fn, span)
                    assert _agree(w.aggregate(agg, now), naive.aggregate(agg, now)), fn
        w._flush()
        kept = w._end - w._start
        assert kept <= windows._PER_BUCKET * (horizon // bucket + 2)
        back = SeriesWindow.from_bytes(w.to_bytes())
        now = (ts // bucket + 1) * bucket - 1
        for fn in FNS:
            agg = Aggregate(fn, 10 * MIN)
            assert _agree(back.aggregate(agg, now), naive.aggregate(agg, now)), fn
    finally:
        windows._TAIL = 128


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.tuples(st.integers(2_501, 5 * MIN), values), min_size=1, max_size=200),
    nows=st.lists(st.integers(0, 2 * MIN), min_size=1, max_size=5),
)
def test_a_few_samples_a_bucket_are_kept_as_they_are(
    steps: list[tuple[int, float]], nows: list[int]
) -> None:
    """At most four samples a bucket (the normal rate: one a reporting interval): the same
    samples, and the same aggregates at any time, as a window that keeps every sample."""
    summary, every = SeriesWindow(HOUR, bucket_ms=10_000), SeriesWindow(HOUR)
    ts = 0
    for gap, v in steps:
        ts += gap  # more than a quarter bucket apart: at most four a bucket
        summary.append(ts, v)
        every.append(ts, v)
    for back in nows:
        for fn in FNS:
            for span in (MIN, 10 * MIN, HOUR):
                agg = Aggregate(fn, span)
                assert _agree(summary.aggregate(agg, ts - back), every.aggregate(agg, ts - back))
    assert len(summary) == len(every)


HOUR = 60 * MIN


def test_memory_is_flat_at_any_rate() -> None:
    """Twenty readings a second for an hour against one a minute: the same bound."""
    fast, slow = SeriesWindow(HOUR, bucket_ms=MIN), SeriesWindow(HOUR, bucket_ms=MIN)
    for i in range(20 * 3600):
        fast.append(i * 50, 20.0 + (i % 97) / 10)
    for m in range(60):
        slow.append(m * MIN, 20.0)
    assert len(slow) == 60
    assert len(fast) <= windows._PER_BUCKET * 61
    assert fast.aggregate(Aggregate("count", HOUR), 3600 * 1000 - 1) == pytest.approx(72_000)
    assert fast.aggregate(Aggregate("max", HOUR), 3600 * 1000 - 1) == pytest.approx(29.6)


def test_a_series_restored_from_an_old_snapshot_is_summarised_from_then_on() -> None:
    """Snapshots written before buckets hold every sample and no bucket width; the bank
    gives the series its kind's interval when it is next fed (here through the evaluator)."""
    from protocol.messages import Reading
    from tests.alerts.bundled_rules import INDEX, evaluator

    old = SeriesWindow(HOUR)
    for i in range(30):
        old.append(i * 1000, 0.3)
    data = old.to_bytes()
    legacy = data[: 16 + 16 * 30]  # (what the code before wrote: no trailer)
    ev: Evaluator = evaluator()
    index: RuleIndex = INDEX
    w = ev.windows.series[("e1", "p1", "pressure_mpa")] = SeriesWindow.from_bytes(legacy)
    assert w.bucket_ms == 0 and len(w) == 30
    for i in range(30, 3000):  # twenty a second for two and a half minutes
        r = Reading("p1", "water_pressure", i * 50 + 30_000, {"pressure_mpa": 0.3})
        ev.observe_readings(index, "e1", "gw", [r], [])
    assert w.bucket_ms == MIN  # the kind's reporting interval
    assert len(w) <= 30 + windows._PER_BUCKET * 4


@settings(max_examples=200, deadline=None)
@given(
    bucket=st.sampled_from((1_000, 10_000, MIN)),
    gaps=st.lists(st.integers(0, 2 * MIN), min_size=1, max_size=200),
    run_n=st.integers(0, 6),
    same=st.booleans(),
)
def test_bucket_runs_by_column_are_the_loops(
    bucket: int, gaps: list[int], run_n: int, same: bool
) -> None:
    """A long flush counts its samples per bucket with numpy: whether a bucket overflows
    and the newest bucket's run are those of the sample-by-sample loop, the run before the
    flush (possibly the same bucket as its first samples) counted in."""
    times, ts = [], 0
    for gap in gaps:
        ts += gap // 40 if gap % 4 else gap  # bursts and gaps
        times.append(ts)
    tail = array("q", times)
    answers = []
    for by_column in (0, 10**9):  # by column, and the loop
        run = (times[0] // bucket - (0 if same else 1), run_n) if run_n else (None, 0)
        got = bucket_runs(tail, np.array(times), bucket, run, PER_BUCKET, by_column)
        answers.append(got)
    assert answers[0] == answers[1]
