"""The embedded telemetry store: readings, events and the latest value of every metric, in SQLite.

One writer (the ingest writer thread) appends in batched transactions; readers open their own
connections (WAL lets them read while the writer writes). Readings go to an append-only rowid
table, the cheapest shape SQLite has (see PERFORMANCE-NOTES.md); "now" is answered by the
``latest`` table, never by scanning history.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from protocol.messages import Event, Reading, Value

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_ms INTEGER);
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    estate TEXT NOT NULL, device TEXT NOT NULL, metric TEXT NOT NULL,
    UNIQUE (estate, device, metric)
);
-- Append-only, no index: rows arrive in time order and an index would cost ~12x on writes.
CREATE TABLE IF NOT EXISTS readings (
    ts INTEGER NOT NULL, series INTEGER NOT NULL, num REAL, txt TEXT
);
CREATE TABLE IF NOT EXISTS latest (
    series INTEGER PRIMARY KEY, ts INTEGER NOT NULL, num REAL, txt TEXT
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL, estate TEXT NOT NULL, gateway TEXT NOT NULL,
    device TEXT NOT NULL, kind TEXT NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL
);
"""

# Later schema versions: version -> SQL run on a database at version - 1.
MIGRATIONS: dict[int, str] = {}


@dataclass(frozen=True, slots=True)
class EstateBatch:
    """Valid readings and events of one message, with the estate and gateway they came from."""

    estate: str
    gateway: str
    readings: Sequence[Reading] = ()
    events: Sequence[Event] = ()


def _split(value: Value) -> tuple[float | None, str | None]:
    if isinstance(value, str):
        return None, value
    return float(value), None


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, timeout=30, check_same_thread=False
        )
    else:
        conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-65536")
    return conn


class TelemetryWriter:
    """The single writer. Not thread-safe by design: one thread owns it."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = connect(path)
        self._migrate()
        self._series: dict[tuple[str, str, str], int] = {
            (e, d, m): i
            for i, e, d, m in self.conn.execute("SELECT id, estate, device, metric FROM series")
        }

    def _migrate(self) -> None:
        with self.conn:
            self.conn.executescript(_SCHEMA)
            found = self.conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
            if found is None:
                self.conn.execute(
                    "INSERT INTO schema_version VALUES (?, strftime('%s','now')*1000)",
                    (SCHEMA_VERSION,),
                )
                return
            for version in range(found + 1, SCHEMA_VERSION + 1):
                self.conn.executescript(MIGRATIONS[version])
                self.conn.execute(
                    "INSERT INTO schema_version VALUES (?, strftime('%s','now')*1000)", (version,)
                )

    def _series_id(self, estate: str, device: str, metric: str) -> int:
        key = (estate, device, metric)
        sid = self._series.get(key)
        if sid is None:
            cur = self.conn.execute(
                "INSERT INTO series (estate, device, metric) VALUES (?, ?, ?)", key
            )
            sid = int(cur.lastrowid or 0)
            self._series[key] = sid
        return sid

    def write(self, batches: Iterable[EstateBatch]) -> tuple[int, int]:
        """Append readings and events of many messages in one transaction.
        Returns (readings stored, events stored)."""
        rows: list[tuple[int, int, float | None, str | None]] = []
        newest: dict[int, tuple[int, int, float | None, str | None]] = {}
        event_rows: list[tuple[int, str, str, str, str, str, str]] = []
        with self.conn:
            for b in batches:
                for r in b.readings:
                    for metric, value in r.metrics.items():
                        sid = self._series_id(b.estate, r.dev, metric)
                        num, txt = _split(value)
                        row = (r.ts, sid, num, txt)
                        rows.append(row)
                        prev = newest.get(sid)
                        if prev is None or prev[0] <= r.ts:
                            newest[sid] = row
                for e in b.events:
                    event_rows.append(
                        (
                            e.ts,
                            b.estate,
                            b.gateway,
                            e.dev,
                            e.kind,
                            e.type,
                            orjson.dumps(e.data).decode(),
                        )
                    )
            self.conn.executemany("INSERT INTO readings VALUES (?, ?, ?, ?)", rows)
            # Older readings replayed from a gateway's buffer must not overwrite "now".
            self.conn.executemany(
                "INSERT INTO latest (ts, series, num, txt) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (series) DO UPDATE SET ts = excluded.ts, num = excluded.num, "
                "txt = excluded.txt WHERE excluded.ts >= latest.ts",
                newest.values(),
            )
            if event_rows:
                self.conn.executemany(
                    "INSERT INTO events (ts, estate, gateway, device, kind, type, data) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    event_rows,
                )
        return len(rows), len(event_rows)

    def close(self) -> None:
        self.conn.close()


class TelemetryReader:
    """Read side for the API; one connection per thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, readonly=True)
            self._local.conn = conn
        return conn

    def latest(self, estate: str) -> dict[str, dict[str, tuple[int, Value]]]:
        """device -> metric -> (ts, stored value) for one estate."""
        out: dict[str, dict[str, tuple[int, Value]]] = {}
        cur = self._conn().execute(
            "SELECT s.device, s.metric, l.ts, l.num, l.txt FROM latest l "
            "JOIN series s ON s.id = l.series WHERE s.estate = ?",
            (estate,),
        )
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
        return [
            {
                "ts": ts,
                "gateway": gw,
                "dev": dev,
                "kind": kind,
                "type": typ,
                "data": orjson.loads(data),
            }
            for ts, gw, dev, kind, typ, data in cur
        ]
