"""The embedded telemetry store: readings, events, the latest value of every metric, rollups and
the per-gateway ``seq`` book, in one SQLite file.

One writer (the ingest writer thread) appends in batched transactions; readers open their own
connections (WAL lets them read while the writer writes). Readings go to an append-only rowid
table without index, the cheapest shape SQLite has (PERFORMANCE-NOTES.md); "now" is answered by
``latest``, charts by the indexed rollups, and raw rows are found by the rowid at which each
minute's commits began (``commit_marks``), never by a scan of all history.

A message's readings, its ``seq`` and the gateway's seq state are committed in one transaction,
so after a crash a redelivered message is recognised as stored exactly when it was.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import orjson

from ingest.rollup import (
    HOUR_MS,
    MINUTE_MS,
    Buckets,
    choose_resolution,
    empty_buckets,
    points,
    rebucket,
)
from ingest.seqs import GatewaySeqs, SeqBook, Verdict, load_missing, missing_count
from protocol.clock import now_ms
from protocol.messages import Event, Reading, Value

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_ms INTEGER);
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    estate TEXT NOT NULL, device TEXT NOT NULL, metric TEXT NOT NULL,
    UNIQUE (estate, device, metric)
);
-- Append-only, no index: rows arrive roughly in time order and an index would cost ~12x.
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
CREATE TABLE IF NOT EXISTS message_seqs (
    estate TEXT NOT NULL, gateway TEXT NOT NULL, seq INTEGER NOT NULL,
    committed_ms INTEGER NOT NULL,
    PRIMARY KEY (estate, gateway, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gateway_seqs (
    estate TEXT NOT NULL, gateway TEXT NOT NULL, max_seq INTEGER NOT NULL,
    missing TEXT NOT NULL, untracked_lost INTEGER NOT NULL, duplicates INTEGER NOT NULL,
    PRIMARY KEY (estate, gateway)
) WITHOUT ROWID;
-- The first readings rowid committed in each wall-clock minute: maps time to rowid ranges.
CREATE TABLE IF NOT EXISTS commit_marks (minute INTEGER PRIMARY KEY, first_rowid INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rollup_1m (
    series INTEGER NOT NULL, bucket INTEGER NOT NULL, min REAL, max REAL, sum REAL,
    count INTEGER, last_ts INTEGER, last REAL, PRIMARY KEY (series, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_1h (
    series INTEGER NOT NULL, bucket INTEGER NOT NULL, min REAL, max REAL, sum REAL,
    count INTEGER, last_ts INTEGER, last REAL, PRIMARY KEY (series, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_state (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

# Later schema versions: version -> SQL run on a database at version - 1. Tables that are only
# added are created by _SCHEMA (IF NOT EXISTS), so version 2 needs nothing more.
MIGRATIONS: dict[int, str] = {2: ""}


def _insert_json(conn: sqlite3.Connection, table: str, columns: str, rows: list[Any]) -> None:
    """Insert many rows in one statement, unpacked by SQLite from one JSON array of arrays.
    SQLite then runs the whole insert with the interpreter lock released, where executemany
    retakes it for every row and waits behind any busy thread each time (a lock convoy with
    the MQTT threads). Floats survive the trip exactly (shortest round-trip repr)."""
    _insert_json_arrays(conn, table, columns, [orjson.dumps(rows)])


def _insert_json_arrays(
    conn: sqlite3.Connection, table: str, columns: str, arrays: Sequence[bytes]
) -> None:
    """As _insert_json, for rows already encoded as JSON arrays of arrays (by
    ``prepare_rows`` on another thread), joined into one array without decoding them."""
    names = [c.strip() for c in columns.split(",")]
    picks = ", ".join(f"value ->> {i}" for i in range(len(names)))
    if len(arrays) == 1:
        joined = arrays[0]
    else:
        # each is "[...]": the insides joined by commas make one array
        joined = b"[" + b",".join(memoryview(a)[1:-1] for a in arrays if len(a) > 2) + b"]"
    conn.execute(
        f"INSERT INTO {table} ({', '.join(names)}) SELECT {picks} FROM json_each(?)", (joined,)
    )


_MERGE = (
    "INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (series, bucket) DO UPDATE SET "
    "min = min(min, excluded.min), max = max(max, excluded.max), sum = sum + excluded.sum, "
    "count = count + excluded.count, "
    "last = CASE WHEN excluded.last_ts >= last_ts THEN excluded.last ELSE last END, "
    "last_ts = max(last_ts, excluded.last_ts)"
)


@dataclass(frozen=True, slots=True)
class EstateBatch:
    """Valid readings and events of one message, with where it came from and its ``seq``."""

    estate: str
    gateway: str
    readings: Sequence[Reading] = ()
    events: Sequence[Event] = ()
    seq: int | None = None


@dataclass(frozen=True)
class RollupPlan:
    """Raw rows (start, end] by rowid, aggregated, waiting to be merged into the rollups."""

    start: int
    end: int
    minute: Buckets
    hour: Buckets


class PreparedRows(NamedTuple):
    """A batch's readings as the JSON rows of ``readings``, encoded ahead of its commit."""

    json: bytes
    values: int
    epoch: int = 0  # TelemetryWriter.series_epoch when the series ids were looked up


@dataclass
class WriteResult:
    values: int = 0  # metric values appended
    readings: int = 0
    events: int = 0
    duplicates: set[int] = field(default_factory=set)  # indexes of batches already stored


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, timeout=30, check_same_thread=False
        )
    else:
        conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    # The writer's page cache keeps the indexes it updates hot; readers (one per API worker
    # thread, and the rollup job's) mostly scan once, and 64 MB each would add up.
    conn.execute(f"PRAGMA cache_size={-8192 if readonly else -65536}")
    return conn


class RawSink(Protocol):
    """Where raw readings go instead of the local ``readings`` table (InfluxDB)."""

    def write(self, batches: Sequence[EstateBatch]) -> int: ...


class TelemetryWriter:
    """The single writer. Not thread-safe by design: one thread owns it; only
    ``prepare_rollup`` (reads, on a connection of its own) may run on another."""

    def __init__(
        self, path: Path, raw_sink: RawSink | None = None, latest_interval_s: float = 0.0
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.raw_sink = raw_sink
        self.latest_interval_s = latest_interval_s
        self.conn = connect(path)
        self._reader: sqlite3.Connection | None = None  # prepare_rollup's, made when needed
        self._reader_lock = threading.Lock()
        self._migrate()
        self._latest_flushed = 0.0
        self._unfolded = False
        self.flush_latest()  # rows appended after the last fold, before a crash
        self._series: dict[tuple[str, str, str], int] = {
            (e, d, m): i
            for i, e, d, m in self.conn.execute("SELECT id, estate, device, metric FROM series")
        }
        # Moves when a failed write forgets the series ids it made (SQLite hands the same ids
        # out again): rows prepared before with those ids are made again.
        self.series_epoch = 0
        self.seqs = SeqBook()
        self._duplicates: dict[tuple[str, str], int] = {}
        for estate, gw, max_seq, missing, untracked, dups in self.conn.execute(
            "SELECT estate, gateway, max_seq, missing, untracked_lost, duplicates FROM gateway_seqs"
        ):
            self.seqs.gateways[(estate, gw)] = GatewaySeqs(
                max_seq, load_missing(missing), untracked
            )
            self._duplicates[(estate, gw)] = dups

    def _migrate(self) -> None:
        with self.conn:
            self.conn.executescript(_SCHEMA)
            found = self.conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
            if found is None:
                self.conn.execute(
                    "INSERT OR IGNORE INTO schema_version VALUES (?, ?)", (SCHEMA_VERSION, now_ms())
                )
                return
            if found > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} is at schema version {found}, newer than this "
                    f"program's {SCHEMA_VERSION}: upgrade estatewatch"
                )
            for version in range(found + 1, SCHEMA_VERSION + 1):
                if MIGRATIONS[version]:
                    self.conn.executescript(MIGRATIONS[version])
                self.conn.execute(
                    "INSERT OR IGNORE INTO schema_version VALUES (?, ?)", (version, now_ms())
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

    def _is_stored(self, estate: str, gw: str, seq: int) -> bool:
        return (
            self.conn.execute(
                "SELECT 1 FROM message_seqs WHERE estate = ? AND gateway = ? AND seq = ?",
                (estate, gw, seq),
            ).fetchone()
            is not None
        )

    def prepare_rows(self, batch: EstateBatch) -> PreparedRows | None:
        """The batch's readings as the rows ``write`` inserts, encoded on the caller's thread
        (ingest's decoder, while the writer commits the batch before): the Python half of a
        write, so the writer is left with SQLite's half, which runs without the interpreter
        lock. None when a series is new (``write`` makes it in its own transaction) or the
        raw rows go to InfluxDB. Reads only the series cache, which the writer only adds to."""
        if self.raw_sink is not None or not batch.readings or batch.events:
            return None
        epoch = self.series_epoch  # before the lookups (see _forget_series)
        rows = self._reading_rows(batch, create=False)
        if rows is None:
            return None
        return PreparedRows(orjson.dumps(rows), len(rows), epoch)

    def _reading_rows(
        self, batch: EstateBatch, create: bool
    ) -> list[tuple[int, int, float | None, str | None]] | None:
        """The ``readings`` rows of a batch. A series not yet known is made (``create``: on the
        writer, in its transaction) or makes the answer None (elsewhere). The hot loop: plain
        dict lookups and tuple appends, no calls per value."""
        series = self._series
        estate = batch.estate
        rows: list[tuple[int, int, float | None, str | None]] = []
        append = rows.append
        for r in batch.readings:
            ts, dev = r.ts, r.dev
            for metric, value in r.metrics.items():
                sid = series.get((estate, dev, metric))
                if sid is None:
                    if not create:
                        return None
                    sid = self._series_id(estate, dev, metric)
                if type(value) is str:
                    append((ts, sid, None, value))
                else:
                    append((ts, sid, float(value), None))
        return rows

    def find_duplicates(self, batches: Sequence[EstateBatch]) -> set[int]:
        """Indexes of the batches whose (gateway, seq) is already stored, or repeated earlier in
        ``batches``. Read-only."""
        dups: set[int] = set()
        seen: set[tuple[str, str, int]] = set()
        for i, b in enumerate(batches):
            if b.seq is None:
                continue
            key = (b.estate, b.gateway, b.seq)
            verdict = self.seqs.get(b.estate, b.gateway).judge(b.seq)
            if key in seen or (verdict is Verdict.UNSURE and self._is_stored(*key)):
                dups.add(i)
            else:
                seen.add(key)
        return dups

    def write(
        self,
        batches: Sequence[EstateBatch],
        duplicates: set[int] | None = None,
        prepared: Sequence[PreparedRows | None] | None = None,
    ) -> WriteResult:
        """Append the readings and events of many messages in one transaction, skipping
        messages whose (gateway, seq) is already stored. ``duplicates``: what
        find_duplicates() said of these batches just before, so it is not asked twice;
        ``prepared``: what prepare_rows() made of each batch (None: rows made here). All or
        nothing: on an error the transaction rolls back and so does what this object keeps
        (series ids, duplicate counts, the seq book)."""
        series_before = len(self._series)
        dups = self.find_duplicates(batches) if duplicates is None else duplicates
        dup_counts = {
            (batches[i].estate, batches[i].gateway): self._duplicates.get(
                (batches[i].estate, batches[i].gateway), 0
            )
            for i in dups
        }
        try:
            return self._write(batches, dups, prepared)
        except BaseException:
            self._forget_series(series_before)
            self._duplicates.update(dup_counts)
            raise

    def _forget_series(self, keep: int) -> None:
        """Drop the series ids cached after the first ``keep`` (made in a transaction that
        rolled back), then move the epoch, so rows prepared meanwhile are made again."""
        for key in list(self._series)[keep:]:  # a dict keeps insertion order
            del self._series[key]
        self.series_epoch += 1

    def _write(
        self,
        batches: Sequence[EstateBatch],
        duplicates: set[int],
        prepared: Sequence[PreparedRows | None] | None,
    ) -> WriteResult:
        result = WriteResult()
        rows: list[tuple[int, int, float | None, str | None]] = []
        arrays: list[bytes] = []  # prepared rows, inserted with these
        prepared_values = 0
        event_rows: list[tuple[int, str, str, str, str, str, str]] = []
        seq_rows: list[tuple[str, str, int, int]] = []
        accepted: list[tuple[str, str, int]] = []
        committed = now_ms()
        result.duplicates = duplicates
        with self.conn:
            for i, b in enumerate(batches):
                if i in result.duplicates:
                    gw_key = (b.estate, b.gateway)
                    self._duplicates[gw_key] = self._duplicates.get(gw_key, 0) + 1
                    continue
                if b.seq is not None:
                    accepted.append((b.estate, b.gateway, b.seq))
                    seq_rows.append((b.estate, b.gateway, b.seq, committed))
                result.readings += len(b.readings)
                ready = prepared[i] if prepared is not None else None
                if ready is not None and ready.epoch == self.series_epoch:
                    arrays.append(ready.json)
                    prepared_values += ready.values
                    continue  # a prepared batch has readings only (events have a lane)
                rows.extend(self._reading_rows(b, create=True) or ())
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
            if self.raw_sink is not None:
                # Inside the transaction: if InfluxDB refuses, the seqs are not committed either
                # and the whole batch is tried again.
                self.raw_sink.write(
                    [b for i, b in enumerate(batches) if i not in result.duplicates and b.readings]
                )
            elif rows or arrays:
                if rows:
                    arrays.append(orjson.dumps(rows))
                first = self.conn.execute(
                    "SELECT coalesce(max(rowid), 0) + 1 FROM readings"
                ).fetchone()[0]
                self.conn.execute(
                    "INSERT OR IGNORE INTO commit_marks VALUES (?, ?)",
                    (committed // MINUTE_MS, first),
                )
                _insert_json_arrays(self.conn, "readings", "ts, series, num, txt", arrays)
                self._unfolded = True
                if time.monotonic() - self._latest_flushed >= self.latest_interval_s:
                    self._fold_latest()
            if self.raw_sink is not None and rows:
                self._upsert_latest(rows)
            if event_rows:
                _insert_json(
                    self.conn, "events", "ts, estate, gateway, device, kind, type, data", event_rows
                )
            if seq_rows:
                _insert_json(
                    self.conn, "message_seqs", "estate, gateway, seq, committed_ms", seq_rows
                )
            # The seq book changes only if the transaction commits: work on copies.
            touched: dict[tuple[str, str], GatewaySeqs] = {}
            for estate, gw, seq in accepted:
                g = touched.get((estate, gw))
                if g is None:
                    g = touched[(estate, gw)] = self.seqs.get(estate, gw).copy()
                g.accept(seq)
            dup_gws = {(batches[i].estate, batches[i].gateway) for i in result.duplicates}
            for gw_key in dup_gws - touched.keys():
                touched[gw_key] = self.seqs.get(*gw_key)
            self._save_seqs(touched)
        self.seqs.gateways.update(touched)
        result.values = len(rows) + prepared_values
        result.events = len(event_rows)
        return result

    def _save_seqs(self, touched: dict[tuple[str, str], GatewaySeqs]) -> None:
        """Write the seq book of the gateways a commit touched. Their gaps (a JSON of ranges)
        only when they changed: a gateway with open gaps that sends on in order changes only
        its max_seq. A gateway with gaps in memory has its row (gaps are made by commits)."""
        full: list[tuple[str, str, int, str, int, int]] = []
        counts: list[tuple[int, int, int, str, str]] = []
        for (e, gw), g in touched.items():
            dups = self._duplicates.get((e, gw), 0)
            old = self.seqs.gateways.get((e, gw))
            if old is not None and old.missing and old.missing == g.missing:
                counts.append((g.max_seq, g.untracked_lost, dups, e, gw))
            else:
                full.append((e, gw, g.max_seq, g.missing_json(), g.untracked_lost, dups))
        if full:
            self.conn.executemany(
                "INSERT OR REPLACE INTO gateway_seqs VALUES (?, ?, ?, ?, ?, ?)", full
            )
        if counts:
            self.conn.executemany(
                "UPDATE gateway_seqs SET max_seq = ?, untracked_lost = ?, duplicates = ? "
                "WHERE estate = ? AND gateway = ?",
                counts,
            )

    def _fold_latest(self) -> None:
        """Fold rows appended since the last fold into ``latest``, in SQL: SQLite takes num and
        txt from the row holding max(ts). At most once per latest_interval_s under load, so a
        series updated many times in that while is written once; run at start too, so a crash
        loses nothing of "now". An older reading replayed from a gateway's buffer never
        overwrites a newer one."""
        done = self.conn.execute(
            "SELECT value FROM rollup_state WHERE name = 'latest_rowid'"
        ).fetchone()
        last = self.conn.execute("SELECT coalesce(max(rowid), 0) FROM readings").fetchone()[0]
        self.conn.execute(
            "INSERT INTO latest (series, ts, num, txt) "
            "SELECT series, max(ts), num, txt FROM readings WHERE rowid > ? AND rowid <= ? "
            "GROUP BY series ON CONFLICT (series) DO UPDATE SET ts = excluded.ts, "
            "num = excluded.num, txt = excluded.txt WHERE excluded.ts >= latest.ts",
            (done[0] if done else 0, last),
        )
        self.conn.execute("INSERT OR REPLACE INTO rollup_state VALUES ('latest_rowid', ?)", (last,))
        self._latest_flushed = time.monotonic()
        self._unfolded = False

    def flush_latest(self) -> None:
        with self.conn:
            self._fold_latest()

    def flush_latest_if_due(self) -> None:
        """For the writer thread when it is idle: the last rows of a burst reach "now" too."""
        if self._unfolded and time.monotonic() - self._latest_flushed >= self.latest_interval_s:
            self.flush_latest()

    def _upsert_latest(self, rows: list[tuple[int, int, float | None, str | None]]) -> None:
        """Keep "now" when the raw rows live elsewhere (InfluxDB)."""
        newest: dict[int, tuple[int, int, float | None, str | None]] = {}
        for row in rows:
            prev = newest.get(row[1])
            if prev is None or prev[0] <= row[0]:
                newest[row[1]] = row
        self.conn.executemany(
            "INSERT INTO latest (ts, series, num, txt) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (series) DO UPDATE SET ts = excluded.ts, num = excluded.num, "
            "txt = excluded.txt WHERE excluded.ts >= latest.ts",
            newest.values(),
        )

    # --- maintenance, run on the writer thread by the scheduler ------------------------------
    def prepare_rollup(
        self, max_rows: int = 1_000_000, conn: sqlite3.Connection | None = None
    ) -> RollupPlan | None:
        """Aggregate the raw rows written since the last fold (at most ``max_rows`` rowids) into
        1-minute and 1-hour buckets. SQLite groups the rows itself, so no Python object is made
        per row (and the interpreter lock is free meanwhile); by default on a read-only
        connection of its own: in WAL mode reading never blocks the writer, so only
        ``apply_rollup``'s upserts run on the writer thread."""
        if conn is None:
            with self._reader_lock:
                if self._reader is None:
                    self._reader = connect(self.path, readonly=True)
                return self.prepare_rollup(max_rows, self._reader)
        done = conn.execute("SELECT value FROM rollup_state WHERE name = 'rollup_rowid'").fetchone()
        start = done[0] if done else 0
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

    def apply_rollup(self, plan: RollupPlan) -> int:
        """Merge a prepared fold into the rollups and move the mark, in one transaction; the
        raw rows covered (0 when another fold moved the mark first: this one would count
        twice)."""
        done = self.conn.execute(
            "SELECT value FROM rollup_state WHERE name = 'rollup_rowid'"
        ).fetchone()
        if (done[0] if done else 0) != plan.start:
            return 0
        with self.conn:
            for table, buckets in (("rollup_1m", plan.minute), ("rollup_1h", plan.hour)):
                self.conn.executemany(_MERGE.format(table=table), buckets.rows())
            self.conn.execute(
                "INSERT OR REPLACE INTO rollup_state VALUES ('rollup_rowid', ?)", (plan.end,)
            )
        return plan.end - plan.start

    def rollup(self, max_rows: int = 1_000_000) -> int:
        """Fold raw rows written since the last run into the 1-minute and 1-hour rollups.
        Works by rowid, so late rows (a gateway's backlog) are folded in too. Returns the raw
        rows (rowids) it covered, 0 when there was nothing new."""
        plan = self.prepare_rollup(max_rows, self.conn)
        return self.apply_rollup(plan) if plan else 0

    def purge(self, raw_before_ms: int, minute_rollups_before_ms: int, chunk: int = 200_000) -> int:
        """Delete raw rows committed before raw_before_ms (only once rolled up), 1-minute
        rollups before minute_rollups_before_ms, and seqs as old as the raw rows. In chunks, so
        ingest waits at most one chunk. Returns raw rows deleted."""
        mark = self.conn.execute(
            "SELECT min(first_rowid) FROM commit_marks WHERE minute >= ?",
            (raw_before_ms // MINUTE_MS,),
        ).fetchone()[0]
        rolled = self.conn.execute(
            "SELECT value FROM rollup_state WHERE name = 'rollup_rowid'"
        ).fetchone()
        if mark is None:  # nothing committed since the cutoff: all older rows may go
            mark = self.conn.execute("SELECT coalesce(max(rowid), 0) + 1 FROM readings").fetchone()[
                0
            ]
        limit = min(mark, (rolled[0] + 1) if rolled else 1)
        deleted = 0
        while True:
            with self.conn:
                n = self.conn.execute(
                    "DELETE FROM readings WHERE rowid IN (SELECT rowid FROM readings "
                    "WHERE rowid < ? LIMIT ?)",
                    (limit, chunk),
                ).rowcount
            deleted += n
            if n < chunk:
                break
        with self.conn:
            self.conn.execute(
                "DELETE FROM commit_marks WHERE minute < ?", (raw_before_ms // MINUTE_MS,)
            )
            self.conn.execute("DELETE FROM message_seqs WHERE committed_ms < ?", (raw_before_ms,))
            self.conn.execute("DELETE FROM rollup_1m WHERE bucket < ?", (minute_rollups_before_ms,))
        return deleted

    def close(self) -> None:
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        self.conn.close()


class RawSource(Protocol):
    """Where chart points come from when raw readings live elsewhere (InfluxDB)."""

    def telemetry(
        self,
        estate: str,
        device: str,
        kind: str,
        metric: str,
        from_ms: int,
        to_ms: int,
        max_points: int,
    ) -> list[dict[str, Any]]: ...


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

    def telemetry(
        self,
        estate: str,
        device: str,
        metric: str,
        from_ms: int,
        to_ms: int,
        max_points: int,
        interval_ms: int,
        now: int | None = None,
    ) -> dict[str, Any]:
        """Chart points for one metric: raw rows for recent short ranges, else rollups, never
        more than max_points."""
        now = now_ms() if now is None else now
        res = choose_resolution(from_ms, to_ms, max_points, interval_ms, now)
        conn = self._conn()
        row = conn.execute(
            "SELECT id FROM series WHERE estate = ? AND device = ? AND metric = ?",
            (estate, device, metric),
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
        arr = np.array(data, dtype=np.float64)
        body["points"] = points(
            arr[:, 0].astype(np.int64),
            arr[:, 1],
            arr[:, 2],
            arr[:, 3],
            arr[:, 4].astype(np.int64),
            arr[:, 5],
            max_points,
            res.merge_ms,
        )
        if res.name == "raw":
            for p in body["points"]:
                p["value"] = p["last"]
        return body
