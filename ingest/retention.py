"""Upkeep of the telemetry file, run on the ingest writer thread between commits (SQLite has
one writer) through ``TelemetryWriter``: folding new raw rows into the 1-minute and 1-hour
rollups, and deleting what is past retention. The grouping itself (``aggregate``) is a read and
may run on another thread over a read-only connection; ``merge`` and ``purge`` write."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import numpy as np

from ingest.rollup import HOUR_MS, MINUTE_MS, Buckets, empty_buckets, rebucket

_MERGE = (
    "INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (series, bucket) DO UPDATE SET "
    "min = min(min, excluded.min), max = max(max, excluded.max), sum = sum + excluded.sum, "
    "count = count + excluded.count, "
    "last = CASE WHEN excluded.last_ts >= last_ts THEN excluded.last ELSE last END, "
    "last_ts = max(last_ts, excluded.last_ts)"
)


@dataclass(frozen=True)
class RollupPlan:
    """Raw rows (start, end] by rowid, aggregated, waiting to be merged into the rollups."""

    start: int
    end: int
    minute: Buckets
    hour: Buckets


def _rolled_up_to(conn: sqlite3.Connection) -> int:
    done = conn.execute("SELECT value FROM rollup_state WHERE name = 'rollup_rowid'").fetchone()
    return int(done[0]) if done else 0


def aggregate(conn: sqlite3.Connection, max_rows: int) -> RollupPlan | None:
    """Aggregate the raw rows written since the last fold (at most ``max_rows`` rowids) into
    1-minute and 1-hour buckets. SQLite groups the rows itself, so no Python object is made
    per row (and the interpreter lock is free meanwhile)."""
    start = _rolled_up_to(conn)
    newest = conn.execute("SELECT max(rowid) FROM readings").fetchone()[0]
    if newest is None or newest <= start:
        return None
    end = min(newest, start + max_rows)
    where = "FROM readings WHERE rowid > ? AND rowid <= ? AND num IS NOT NULL"
    group = "GROUP BY series, b ORDER BY series, b"
    stats = conn.execute(
        f"SELECT series, ts / {MINUTE_MS} * {MINUTE_MS} AS b, min(num), max(num), sum(num), "
        f"count(num) {where} {group}",
        (start, end),
    ).fetchall()
    # with max() the only aggregate, SQLite takes num from the row holding the max
    lasts = conn.execute(
        f"SELECT max(ts), num, ts / {MINUTE_MS} * {MINUTE_MS} AS b {where} {group}",
        (start, end),
    ).fetchall()
    if stats:
        st = np.array(stats, dtype=np.float64)
        la = np.array(lasts, dtype=np.float64)
        minute = Buckets(
            series=st[:, 0].astype(np.int64),
            bucket=st[:, 1].astype(np.int64),
            min=st[:, 2],
            max=st[:, 3],
            sum=st[:, 4],
            count=st[:, 5].astype(np.int64),
            last_ts=la[:, 0].astype(np.int64),
            last=la[:, 1],
        )
    else:
        minute = empty_buckets()
    return RollupPlan(start, end, minute, rebucket(minute, HOUR_MS))


def merge(conn: sqlite3.Connection, plan: RollupPlan) -> int:
    """Merge a prepared fold into the rollups and move the mark, in one transaction; the raw
    rows covered (0 when another fold moved the mark first: this one would count twice)."""
    if _rolled_up_to(conn) != plan.start:
        return 0
    with conn:
        for table, buckets in (("rollup_1m", plan.minute), ("rollup_1h", plan.hour)):
            conn.executemany(_MERGE.format(table=table), buckets.rows())
        conn.execute("INSERT OR REPLACE INTO rollup_state VALUES ('rollup_rowid', ?)", (plan.end,))
    return plan.end - plan.start


def purge(
    conn: sqlite3.Connection, raw_before_ms: int, minute_rollups_before_ms: int, chunk: int
) -> int:
    """Delete raw rows committed before raw_before_ms (only once rolled up), 1-minute rollups
    before minute_rollups_before_ms, and seqs as old as the raw rows. In chunks, so ingest
    waits at most one chunk. Returns raw rows deleted."""
    mark = conn.execute(
        "SELECT min(first_rowid) FROM commit_marks WHERE minute >= ?",
        (raw_before_ms // MINUTE_MS,),
    ).fetchone()[0]
    rolled = conn.execute("SELECT value FROM rollup_state WHERE name = 'rollup_rowid'").fetchone()
    if mark is None:  # nothing committed since the cutoff: all older rows may go
        mark = conn.execute("SELECT coalesce(max(rowid), 0) + 1 FROM readings").fetchone()[0]
    limit = min(mark, (rolled[0] + 1) if rolled else 1)
    deleted = 0
    while True:
        with conn:
            n = conn.execute(
                "DELETE FROM readings WHERE rowid IN (SELECT rowid FROM readings "
                "WHERE rowid < ? LIMIT ?)",
                (limit, chunk),
            ).rowcount
        deleted += n
        if n < chunk:
            break
    with conn:
        conn.execute("DELETE FROM commit_marks WHERE minute < ?", (raw_before_ms // MINUTE_MS,))
        conn.execute("DELETE FROM message_seqs WHERE committed_ms < ?", (raw_before_ms,))
        conn.execute("DELETE FROM rollup_1m WHERE bucket < ?", (minute_rollups_before_ms,))
    return deleted
