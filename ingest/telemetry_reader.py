"""The read side of the telemetry file: "now" for dashboards, events, charts (raw rows for a
recent short range, else the coarsest rollup that fits), gateways' seq health. Every thread
opens its own read-only connection (WAL: reads never wait for the ingest writer). ``connect``
is how every connection to the file is opened, the writer's too."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Collection
from pathlib import Path
from typing import Any, Protocol

import orjson

from ingest.model import ChartQuery
from ingest.rollup import MINUTE_MS, choose_resolution, points_of_rows
from ingest.seqs import missing_count
from protocol.clock import now_ms
from protocol.messages import Value


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, timeout=30, check_same_thread=False
        )
    else:
        conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    # Page cache, KiB. The writer appends to an unindexed table and touches few other pages
    # (seq book, latest, one rollup row a series a minute): 64 MiB held ~70 MB of pages it had
    # just appended (bench 3, issue 15). Readers (one per API worker thread, and the rollup
    # job's) mostly scan once.
    conn.execute(f"PRAGMA cache_size={-8192 if readonly else -16384}")
    return conn


class RawSource(Protocol):
    """Where chart points come from when raw readings live elsewhere (InfluxDB)."""

    def telemetry(self, q: ChartQuery, kind: str) -> list[dict[str, Any]]: ...


def event_of(ts: int, gw: str, dev: str, kind: str, typ: str, data: str | bytes) -> dict[str, Any]:
    """A stored event row as the API answers it (every telemetry reader's ``recent_events``)."""
    return {
        "ts": ts,
        "gateway": gw,
        "dev": dev,
        "kind": kind,
        "type": typ,
        "data": orjson.loads(data),
    }


class TelemetryReader:
    """Read side for the API; one connection per thread."""

    def __init__(self, path: Path, raw_source: RawSource | None = None) -> None:
        self.path = path
        self.raw_source = raw_source
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, readonly=True)
            self._local.conn = conn
        return conn

    def latest(
        self, estate: str, devices: Collection[str] | None = None
    ) -> dict[str, dict[str, tuple[int, Value]]]:
        """device -> metric -> (ts, stored value) for one estate (only ``devices``: a page)."""
        out: dict[str, dict[str, tuple[int, Value]]] = {}
        sql = (
            "SELECT s.device, s.metric, l.ts, l.num, l.txt FROM latest l "
            "JOIN series s ON s.id = l.series WHERE s.estate = ?"
        )
        args: list[str] = [estate]
        if devices is not None:
            sql += " AND s.device IN (SELECT value FROM json_each(?))"
            args.append(orjson.dumps(list(devices)).decode())
        cur = self._conn().execute(sql, args)
        for device, metric, ts, num, txt in cur:
            out.setdefault(device, {})[metric] = (ts, txt if txt is not None else num)
        return out

    def count_readings(self, estate: str | None = None) -> int:
        if estate is None:
            return int(self._conn().execute("SELECT count(*) FROM readings").fetchone()[0])
        return int(
            self._conn()
            .execute(
                "SELECT count(*) FROM readings r JOIN series s ON s.id = r.series "
                "WHERE s.estate = ?",
                (estate,),
            )
            .fetchone()[0]
        )

    def recent_events(self, estate: str, limit: int = 100) -> list[dict[str, Any]]:
        cur = self._conn().execute(
            "SELECT ts, gateway, device, kind, type, data FROM events WHERE estate = ? "
            "ORDER BY id DESC LIMIT ?",
            (estate, limit),
        )
        return [event_of(*row) for row in cur]

    def hours_with_data(self, estate: str, from_ms: int, to_ms: int) -> dict[str, int]:
        """device -> hours in [from, to) with at least one reading (from the 1-hour rollups),
        for uptime figures."""
        cur = self._conn().execute(
            "SELECT s.device, count(DISTINCT r.bucket) FROM rollup_1h r "
            "JOIN series s ON s.id = r.series WHERE s.estate = ? AND r.bucket >= ? "
            "AND r.bucket < ? GROUP BY s.device",
            (estate, from_ms // 3_600_000 * 3_600_000, to_ms),
        )
        return {device: int(n) for device, n in cur}

    def gateway_health(self, estate: str) -> dict[str, dict[str, Any]]:
        """gateway -> highest seq stored, messages missing (lost unless replayed), duplicates."""
        cur = self._conn().execute(
            "SELECT gateway, max_seq, missing, untracked_lost, duplicates FROM gateway_seqs "
            "WHERE estate = ?",
            (estate,),
        )
        return {
            gw: {
                "max_seq": max_seq,
                "lost_messages": missing_count(missing) + untracked,
                "duplicates": dups,
            }
            for gw, max_seq, missing, untracked, dups in cur
        }

    def telemetry(self, q: ChartQuery, now: int | None = None) -> dict[str, Any]:
        """Chart points for one metric: raw rows for recent short ranges, else rollups, never
        more than max_points."""
        from_ms, to_ms, max_points = q.from_ms, q.to_ms, q.max_points
        now = now_ms() if now is None else now  # wall clock
        res = choose_resolution(from_ms, to_ms, max_points, q.interval_ms, now)
        conn = self._conn()
        row = conn.execute(
            "SELECT id FROM series WHERE estate = ? AND device = ? AND metric = ?",
            (q.estate, q.device, q.metric),
        ).fetchone()
        body: dict[str, Any] = {"resolution": res.name, "step_ms": res.step_ms, "points": []}
        if row is None:
            return body
        sid = row[0]
        if res.name == "raw":
            # Rows for this range were committed at or after its start (less clock skew).
            mark = conn.execute(
                "SELECT min(first_rowid) FROM commit_marks WHERE minute >= ?",
                ((from_ms - 10 * MINUTE_MS) // MINUTE_MS,),
            ).fetchone()[0]
            if mark is None:
                return body
            data = conn.execute(
                "SELECT ts, num, num, num, 1, num FROM readings WHERE rowid >= ? AND "
                "series = ? AND ts BETWEEN ? AND ? AND num IS NOT NULL ORDER BY ts",
                (mark, sid, from_ms, to_ms),
            ).fetchall()
        else:
            table = "rollup_1m" if res.name == "1m" else "rollup_1h"
            data = conn.execute(
                f"SELECT bucket, min, max, sum, count, last FROM {table} "
                "WHERE series = ? AND bucket BETWEEN ? AND ? ORDER BY bucket",
                # the first merged bucket starts at or before from_ms, aligned to its width
                (sid, from_ms // res.step_ms * res.step_ms, to_ms),
            ).fetchall()
        if not data:
            return body
        body["points"] = points_of_rows(data, max_points, res.merge_ms)
        if res.name == "raw":
            for p in body["points"]:
                p["value"] = p["last"]
        return body
