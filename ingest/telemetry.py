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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from ingest import retention
from ingest.model import EstateBatch
from ingest.retention import RollupPlan
from ingest.rollup import MINUTE_MS
from ingest.seqs import GatewaySeqs, SeqBook, Verdict, load_missing

# Re-exported, from modules of their own: the read side (and how the file is opened), and
# what a telemetry store is (the calls, their values, a pipelined write).
from ingest.telemetry_reader import RawSource, TelemetryReader, connect
from ingest.telemetry_rows import (
    NOW_BOUND,
    NOW_JSON,
    NUMBERS,
    TEXTS,
    Row,
    SeriesIds,
    insert_flat,
    insert_json,
)
from ingest.telemetry_schema import migrate
from ingest.telemetry_store import (
    PendingWrite,
    PipelinedStore,
    PreparedRows,
    RawSink,
    TelemetryStore,
    WriteResult,
    submit_write,
)
from protocol.clock import now_ms

__all__ = [
    "EstateBatch",
    "PendingWrite",
    "PipelinedStore",
    "PreparedRows",
    "RawSink",
    "RawSource",
    "RollupPlan",
    "TelemetryReader",
    "TelemetryStore",
    "TelemetryWriter",
    "WriteResult",
    "connect",
    "now_ms",
    "submit_write",
]


# "Now" keeps a series' newest row: an older reading replayed later never overwrites it.
_NOW_UPSERT = (
    "ON CONFLICT (series) DO UPDATE SET ts = excluded.ts, "
    "num = excluded.num, txt = excluded.txt WHERE excluded.ts >= latest.ts"
)


def _insert_json(conn: sqlite3.Connection, table: str, columns: str, rows: list[Any]) -> None:
    """Insert a few rows (events, seqs) in one statement, as one JSON array of arrays."""
    insert_json(conn, table, columns, [orjson.dumps(rows)])


FOLD_CACHE_KIB = 4096  # the fold reader's page cache, which also bounds its sorter


class FoldReader:
    """The read-only connection rollups are aggregated on, opened when first needed, on any
    thread: in WAL mode reading never blocks the writer. Its page cache is emptied after each
    fold: a fold reads the rows appended since the last one, once, so the pages kept are never
    read again; they held up to 8 MiB of the service's heap until SQLite dropped them (a WAL
    restart), a step of 8 MB that came and went, which bench 3's slope read as growth. Its
    cache is half a reader's: the cache size also bounds the GROUP BY's sorter, so a fold
    holds at most ~8 MB while it runs instead of ~16, for the same CPU (a 740,000-row fold:
    1.43-1.58 s against 1.50-1.56; at 2 MiB the sorter spills, 1.64-1.82 s)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def prepare(self, max_rows: int, conn: sqlite3.Connection | None = None) -> RollupPlan | None:
        if conn is not None:
            return retention.aggregate(conn, max_rows)
        with self._lock:
            if self._conn is None:
                self._conn = connect(self.path, readonly=True)
                self._conn.execute(f"PRAGMA cache_size={-FOLD_CACHE_KIB}")
            try:
                return retention.aggregate(self._conn, max_rows)
            finally:
                self._conn.execute("PRAGMA shrink_memory")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


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
        self._folds = FoldReader(path)  # prepare_rollup's
        migrate(self.conn, path)
        self._latest_flushed = 0.0
        self._unfolded = False
        # The newest row of each series appended since the last fold, while every row is made
        # here (the store process makes them all): folding "now" is then an upsert of these
        # instead of SQL's sort of every row since (a quarter of the store process's time at
        # 100,000 readings/s). None: some were not seen (rows prepared on another thread, a
        # write rolled back): the next fold goes by SQL.
        self._newest: dict[int, Row] | None = None
        self.flush_latest()  # rows appended after the last fold, before a crash
        self._series = SeriesIds(self.conn)
        self.seqs = SeqBook()
        self._duplicates: dict[tuple[str, str], int] = {}
        for estate, gw, max_seq, missing, untracked, dups in self.conn.execute(
            "SELECT estate, gateway, max_seq, missing, untracked_lost, duplicates FROM gateway_seqs"
        ):
            self.seqs.gateways[(estate, gw)] = GatewaySeqs(
                max_seq, load_missing(missing), untracked
            )
            self._duplicates[(estate, gw)] = dups

    def gateway_lost(self) -> dict[tuple[str, str], int]:
        """Messages lost per gateway (gaps in its seqs), as the seq book says."""
        return {k: g.lost for k, g in self.seqs.gateways.items()}

    @property
    def series_epoch(self) -> int:
        """Moves when a failed write forgets the series ids it made (see ``SeriesIds``)."""
        return self._series.epoch

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
        epoch = self._series.epoch  # before the lookups (see SeriesIds.forget)
        rows = self._series.json_rows(batch)
        if rows is None:
            return None
        return PreparedRows(*rows, epoch)

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
        series_top = self._series.begin()
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
            self._series.forget(series_top)
            self._duplicates.update(dup_counts)
            self._newest = None  # it may hold rows that rolled back
            raise

    def _write(
        self,
        batches: Sequence[EstateBatch],
        duplicates: set[int],
        prepared: Sequence[PreparedRows | None] | None,
    ) -> WriteResult:
        result = WriteResult()
        nums: list[Any] = []  # the rows made here, flat (ts, series, value, ts, ...)
        txts: list[Any] = []
        arrays: list[bytes] = []  # prepared rows (JSON), inserted before those
        prepared_values = 0
        event_rows: list[tuple[int, str, str, str, str, str, str]] = []
        seq_rows: list[tuple[str, str, int, int]] = []
        accepted: list[tuple[str, str, int]] = []
        committed = now_ms()
        result.duplicates = duplicates
        # Each series' newest row, noted while the rows are made: kept for the next fold of
        # "now", or upserted here when the raw rows go elsewhere (a scratch dict when the
        # fold goes by SQL anyway).
        kept = self._newest if self.raw_sink is None else None
        newest = kept if kept is not None else {}
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
                if ready is not None and ready.epoch == self._series.epoch:
                    arrays.append(ready.json)
                    prepared_values += ready.values
                    continue  # a prepared batch has readings only (events have a lane)
                self._series.flat_rows(b, nums, txts, newest)
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
            if arrays or kept is None:
                self._newest = None  # rows not seen here: the next fold goes by SQL
            self._series.save()
            if self.raw_sink is not None:
                # Inside the transaction: if InfluxDB refuses, the seqs are not committed either
                # and the whole batch is tried again.
                self.raw_sink.write(
                    [b for i, b in enumerate(batches) if i not in result.duplicates and b.readings]
                )
            elif nums or txts or arrays:
                first = self.conn.execute(
                    "SELECT coalesce(max(rowid), 0) + 1 FROM readings"
                ).fetchone()[0]
                self.conn.execute(
                    "INSERT OR IGNORE INTO commit_marks VALUES (?, ?)",
                    (committed // MINUTE_MS, first),
                )
                if arrays:
                    insert_json(self.conn, "readings", "ts, series, num, txt", arrays)
                insert_flat(self.conn, NUMBERS, nums)
                insert_flat(self.conn, TEXTS, txts)
                self._unfolded = True
                if time.monotonic() - self._latest_flushed >= self.latest_interval_s:
                    self._fold_latest()
            if self.raw_sink is not None and newest:
                self._upsert_latest(newest)
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
        result.values = (len(nums) + len(txts)) // 3 + prepared_values
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
        """Fold rows appended since the last fold into ``latest``: per series the row of the
        newest ts and, of rows with that ts (two states in one second of a panel's clock), the
        one stored last (a bare ``max(ts)`` column would take either); from the rows kept
        while they were made (``_newest``), or else in SQL. At most once per
        latest_interval_s under load, so a series updated many times in that while is written
        once; run at start too, so a crash loses nothing of "now". An older reading replayed
        from a gateway's buffer never overwrites a newer one."""
        last = self.conn.execute("SELECT coalesce(max(rowid), 0) FROM readings").fetchone()[0]
        upsert = _NOW_UPSERT
        if self._newest is not None:
            if self._newest:
                self.conn.execute(
                    "INSERT INTO latest (ts, series, num, txt) SELECT value ->> 0, value ->> 1, "
                    f"{NOW_JSON} FROM json_each(?) WHERE true {upsert}",
                    (orjson.dumps(list(self._newest.values())),),
                )
        else:
            done = self.conn.execute(
                "SELECT value FROM rollup_state WHERE name = 'latest_rowid'"
            ).fetchone()
            self.conn.execute(
                "INSERT INTO latest (series, ts, num, txt) "
                "SELECT series, ts, num, txt FROM (SELECT series, ts, num, txt, row_number() "
                "OVER (PARTITION BY series ORDER BY ts DESC, rowid DESC) AS newest FROM readings "
                f"WHERE rowid > ? AND rowid <= ?) WHERE newest = 1 {upsert}",
                (done[0] if done else 0, last),
            )
        self.conn.execute("INSERT OR REPLACE INTO rollup_state VALUES ('latest_rowid', ?)", (last,))
        self._newest = {}  # every row up to ``last`` is folded (if this transaction commits)
        self._latest_flushed = time.monotonic()
        self._unfolded = False

    def flush_latest(self) -> None:
        try:
            with self.conn:
                self._fold_latest()
        except BaseException:
            self._newest = None  # the fold rolled back
            raise

    def flush_latest_if_due(self) -> None:
        """For the writer thread when it is idle: the last rows of a burst reach "now" too."""
        if self._unfolded and time.monotonic() - self._latest_flushed >= self.latest_interval_s:
            self.flush_latest()

    def _upsert_latest(self, newest: dict[int, Row]) -> None:
        """Keep "now" when the raw rows live elsewhere (InfluxDB): each series' newest row of
        a write."""
        self.conn.executemany(
            f"INSERT INTO latest (ts, series, num, txt) VALUES (?1, ?2, {NOW_BOUND}) {_NOW_UPSERT}",
            newest.values(),
        )

    # --- upkeep, run on the writer thread by the scheduler (see ingest.retention) ------------
    def prepare_rollup(
        self, max_rows: int = 1_000_000, conn: sqlite3.Connection | None = None
    ) -> RollupPlan | None:
        """Aggregate the raw rows written since the last fold (at most ``max_rows`` rowids) into
        1-minute and 1-hour buckets; by default on a read-only connection of its own
        (``FoldReader``), so only ``apply_rollup``'s upserts run on the writer thread."""
        return self._folds.prepare(max_rows, conn)

    def apply_rollup(self, plan: RollupPlan) -> int:
        """Merge a prepared fold into the rollups (see ``retention.merge``)."""
        return retention.merge(self.conn, plan)

    def rollup(self, max_rows: int = 1_000_000) -> int:
        """Fold raw rows written since the last run into the 1-minute and 1-hour rollups.
        Works by rowid, so late rows (a gateway's backlog) are folded in too. Returns the raw
        rows (rowids) it covered, 0 when there was nothing new."""
        plan = self.prepare_rollup(max_rows, self.conn)
        return self.apply_rollup(plan) if plan else 0

    def purge(self, raw_before_ms: int, minute_rollups_before_ms: int, chunk: int = 200_000) -> int:
        """Delete what is past retention (see ``retention.purge``); raw rows deleted."""
        return retention.purge(self.conn, raw_before_ms, minute_rollups_before_ms, chunk)

    def close(self) -> None:
        self._folds.close()
        self.conn.close()
