"""Rollups and chart resolution, and a chart over 30 days of stored history."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ingest.rollup import HOUR_MS, MINUTE_MS, aggregate, choose_resolution, points
from ingest.telemetry import EstateBatch, TelemetryReader, TelemetryWriter
from protocol.messages import Reading

T0 = 1_764_288_000_000  # a whole hour


def test_aggregate_min_max_sum_count_last_per_bucket() -> None:
    series = np.array([1, 1, 1, 2, 1], dtype=np.int64)
    ts = np.array([T0 + 5_000, T0 + 1_000, T0 + 61_000, T0, T0 + 30_000], dtype=np.int64)
    value = np.array([3.0, 1.0, 7.0, 9.0, 2.0])
    b = aggregate(series, ts, value, MINUTE_MS)
    rows = {(s, bk): (mn, mx, sm, c, lt, lv) for s, bk, mn, mx, sm, c, lt, lv in b.rows()}
    assert rows[(1, T0)] == (1.0, 3.0, 6.0, 3, T0 + 30_000, 2.0)
    assert rows[(1, T0 + MINUTE_MS)] == (7.0, 7.0, 7.0, 1, T0 + 61_000, 7.0)
    assert rows[(2, T0)] == (9.0, 9.0, 9.0, 1, T0, 9.0)


def test_resolution_follows_range_and_max_points() -> None:
    now = T0 + 30 * 86_400_000
    assert choose_resolution(now - HOUR_MS, now, 500, 10_000, now).name == "raw"
    assert choose_resolution(now - HOUR_MS, now, 100, 10_000, now).name == "1m"
    # an hour last week is not recent: rollups, not a scan of everything written since
    assert (
        choose_resolution(
            now - 7 * 86_400_000, now - 7 * 86_400_000 + HOUR_MS, 500, 10_000, now
        ).name
        == "1m"
    )
    # a day at 500 points: 5-minute points merged from the 1-minute rollups, not 24 hourly ones
    day = choose_resolution(now - 86_400_000, now, 500, 10_000, now)
    assert (day.name, day.step_ms, day.merge_ms) == ("1m", 5 * MINUTE_MS, 5 * MINUTE_MS)
    # a month at 500: 2-hour points from the 1-hour rollups (720 rows, fewer than the day's)
    month = choose_resolution(now - 30 * 86_400_000, now, 500, 10_000, now)
    assert (month.name, month.step_ms) == ("1h", 2 * HOUR_MS)
    r = choose_resolution(now - 30 * 86_400_000, now, 100, 10_000, now)
    assert r.name == "1h" and r.merge_ms == 12 * HOUR_MS
    # the ladder ends at a week; beyond it, as many hours a point as it takes
    r = choose_resolution(now - 3 * 365 * 86_400_000, now, 100, 10_000, now)
    assert r.name == "1h" and r.step_ms % HOUR_MS == 0
    assert 3 * 365 * 86_400_000 // r.step_ms + 1 <= 100


def test_points_never_exceed_max_points() -> None:
    n = 1000
    bucket = np.arange(n, dtype=np.int64) * MINUTE_MS
    ones = np.ones(n)
    pts = points(bucket, ones, ones * 2, ones * 3, np.ones(n, dtype=np.int64) * 2, ones, 7)
    assert len(pts) <= 7
    assert sum(p["count"] for p in pts) == 2 * n
    assert all(p["mean"] == 1.5 for p in pts)


def test_chart_over_30_days_of_history_comes_from_rollups(tmp_path: Path) -> None:
    """30 days of one hydrant every 5 minutes, one commit a day: the month's chart has at most
    max_points points, from the 1-hour rollups, and their counts add up to every reading."""
    w = TelemetryWriter(tmp_path / "t.db")
    day = 86_400_000
    start = T0 - 30 * day
    total = 0
    for d in range(30):
        ts = range(start + d * day, start + (d + 1) * day, 300_000)
        w.write(
            [
                EstateBatch(
                    "e1",
                    "gw",
                    readings=[
                        Reading(
                            "h-1", "fire_hydrant", t, {"pressure_mpa": 0.3 + (t // day % 7) / 100}
                        )
                        for t in ts
                    ],
                )
            ]
        )
        total += len(ts)
    while w.rollup(max_rows=5000):
        pass
    r = TelemetryReader(tmp_path / "t.db")
    body = r.telemetry("e1", "h-1", "pressure_mpa", start, T0, 200, 300_000, now=T0)
    assert body["resolution"] == "1h"
    assert 0 < len(body["points"]) <= 200
    assert sum(p["count"] for p in body["points"]) == total
    assert min(p["min"] for p in body["points"]) == 0.3
    assert max(p["max"] for p in body["points"]) == 0.36
    # a day of it, at 1-minute resolution
    day_body = r.telemetry("e1", "h-1", "pressure_mpa", T0 - day, T0, 2000, 300_000, now=T0)
    assert day_body["resolution"] == "1m"
    assert sum(p["count"] for p in day_body["points"]) == 288


def test_retention_purges_raw_rows_only_after_rollup(tmp_path: Path) -> None:
    w = TelemetryWriter(tmp_path / "t.db")
    w.write(
        [
            EstateBatch(
                "e1", "gw", readings=[Reading("h-1", "fire_hydrant", T0, {"pressure_mpa": 0.3})]
            )
        ]
    )
    far_future = T0 + 10 * 365 * 86_400_000
    assert w.purge(far_future, 0) == 0  # not yet rolled up: kept
    w.rollup()
    assert w.purge(far_future, 0) == 1
    r = TelemetryReader(tmp_path / "t.db")
    assert r.count_readings() == 0
    body = r.telemetry(
        "e1", "h-1", "pressure_mpa", T0 - HOUR_MS, T0 + HOUR_MS, 10, 300_000, now=far_future
    )
    assert [p["last"] for p in body["points"]] == [0.3]  # the rollup stays
