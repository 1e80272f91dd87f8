"""Rollups and chart resolution, and a chart over 30 days of stored history."""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from ingest.model import ChartQuery
from ingest.retention import aggregate as aggregate_rows
from ingest.rollup import (
    HOUR_MS,
    MINUTE_MS,
    Buckets,
    aggregate,
    choose_resolution,
    points,
    rebucket,
)
from ingest.telemetry import FOLD_CACHE_KIB, EstateBatch, TelemetryReader, TelemetryWriter
from ingest.telemetry_reader import connect
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
    body = r.telemetry(ChartQuery("e1", "h-1", "pressure_mpa", start, T0, 200, 300_000), now=T0)
    assert body["resolution"] == "1h"
    assert 0 < len(body["points"]) <= 200
    assert sum(p["count"] for p in body["points"]) == total
    assert min(p["min"] for p in body["points"]) == 0.3
    assert max(p["max"] for p in body["points"]) == 0.36
    # a day of it, at 1-minute resolution
    day_body = r.telemetry(
        ChartQuery("e1", "h-1", "pressure_mpa", T0 - day, T0, 2000, 300_000), now=T0
    )
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
    query = ChartQuery("e1", "h-1", "pressure_mpa", T0 - HOUR_MS, T0 + HOUR_MS, 10, 300_000)
    body = r.telemetry(query, now=far_future)
    assert [p["last"] for p in body["points"]] == [0.3]  # the rollup stays


def test_minutes_rebucketed_into_hours_equal_hours_from_raw_rows() -> None:
    rng = np.random.default_rng(3)
    n = 5000
    series = rng.integers(1, 20, n).astype(np.int64)
    ts = (T0 + rng.integers(0, 5 * HOUR_MS, n)).astype(np.int64)
    value = rng.normal(0, 10, n)
    direct = aggregate(series, ts, value, HOUR_MS)
    # minutes from three chunks of the rows, merged, then hours from the minutes
    parts = [aggregate(series[c], ts[c], value[c], MINUTE_MS) for c in np.array_split(range(n), 3)]
    minutes = rebucket(
        Buckets(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Buckets))),
        MINUTE_MS,
    )
    assert len(minutes) == len(aggregate(series, ts, value, MINUTE_MS))
    hours = rebucket(minutes, HOUR_MS)
    for f in ("series", "bucket", "min", "max", "count", "last_ts", "last"):
        assert np.array_equal(getattr(hours, f), getattr(direct, f)), f
    assert np.allclose(hours.sum, direct.sum)


def test_a_fold_prepared_on_the_side_equals_one_on_the_writer(tmp_path: Path) -> None:
    """prepare_rollup groups the rows in SQLite on its own connection, in several runs here;
    the rollups come out the same as numpy's over every row at once, and a plan whose start
    mark has moved is refused (no double count)."""
    w = TelemetryWriter(tmp_path / "t.db")
    rows = []
    for k in range(10):
        readings = [
            Reading(
                f"h-{d}",
                "fire_pump",
                T0 + (k * 300 + i) * 1000 + d,
                {"running": (d + i) % 2 == 0, "fault": False, "auto": True},
            )
            if d == 4  # a device of booleans and one of numbers
            else Reading(
                f"h-{d}",
                "fire_hydrant",
                T0 + (k * 300 + i) * 1000,
                {"pressure_mpa": 0.3 + ((d * 7 + i) % 13) / 100},
            )
            for d in range(5)
            for i in range(300)
        ]
        w.write([EstateBatch("e1", "gw", readings=readings)])
    rows = w.conn.execute("SELECT series, ts, num FROM readings WHERE num IS NOT NULL").fetchall()
    arr = np.array(rows, dtype=np.float64)
    series, ts, value = arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2]
    stale = w.prepare_rollup(max_rows=100)
    assert stale is not None
    covered = 0
    while plan := w.prepare_rollup(max_rows=7_000):  # minutes split across runs
        covered += w.apply_rollup(plan)
    assert covered == w.conn.execute("SELECT max(rowid) FROM readings").fetchone()[0]
    assert w.apply_rollup(stale) == 0  # its rows are folded already
    for table, width in (("rollup_1m", MINUTE_MS), ("rollup_1h", HOUR_MS)):
        want = aggregate(series, ts, value, width).rows()
        got = w.conn.execute(f"SELECT * FROM {table} ORDER BY series, bucket").fetchall()
        assert [r[:4] + r[5:] for r in got] == [r[:4] + r[5:] for r in want], table
        assert np.allclose([r[4] for r in got], [r[4] for r in want])
    w.close()


def _sqlite() -> ctypes.CDLL | None:
    """The SQLite library of this process (None: it cannot be reached)."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("sqlite3") or "libsqlite3.so.0")
    except OSError:
        return None
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    lib.sqlite3_memory_highwater.restype = ctypes.c_int64
    return lib


def test_a_fold_keeps_no_pages_after_it(tmp_path: Path) -> None:
    """The fold reader reads each row once: after a fold its page cache is empty, where a
    plain read-only connection keeps up to its 8 MiB (bench 3 saw that 8 MB come and go); and
    while it folds it holds at most its own smaller cache and sorter."""
    lib = _sqlite()
    if lib is None:
        pytest.skip("no libsqlite3 to ask")
    w = TelemetryWriter(tmp_path / "t.db")
    n = 400_000  # ~10 MB of rows: more than the cache
    with w.conn:
        w.conn.executemany(
            "INSERT INTO readings (ts, series, num, txt) VALUES (?, ?, ?, NULL)",
            ((T0 + i // 50, i % 5_000, 20.0 + i % 17) for i in range(n)),
        )
    before = lib.sqlite3_memory_used()
    plain = connect(tmp_path / "t.db", readonly=True)
    aggregate_rows(plain, n)
    kept_plain = lib.sqlite3_memory_used() - before
    plain.close()
    if kept_plain < 4 * 2**20:  # another SQLite than the one Python's module uses
        pytest.skip("the SQLite reached is not the one in use")
    before = lib.sqlite3_memory_used()
    lib.sqlite3_memory_highwater(1)  # from now
    plan = w.prepare_rollup(max_rows=n)
    assert plan is not None and plan.end == n
    assert lib.sqlite3_memory_used() - before < 2**20
    assert lib.sqlite3_memory_highwater(0) - before < 2 * FOLD_CACHE_KIB * 1024 + 2**20
    w.close()
