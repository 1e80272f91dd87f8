"""The telemetry store of cluster mode (``partitions > 0``, issue 16): nothing on a worker's disk.

Raw readings go to the networked time-series store (VictoriaMetrics through InfluxDB's write
API, or InfluxDB itself: ``InfluxTelemetrySink``); the dedup book (per gateway ``seq`` state and
the seqs stored), the events and the latest value of every metric go to the state PostgreSQL,
which every worker and API node reaches. So a partition's next owner finds its book where the
last owner left it, and any API node reads "now", events and charts without a worker's files.

One write, in this order:

1. the raw readings of the messages not yet stored, to the time-series store, *before* the
   PostgreSQL commit: on a thread of its own while step 2 is prepared, the commit waiting for
   it (a failed raw write rolls the transaction back). The write is idempotent (same series
   and data time overwrite: InfluxDB does so itself, VictoriaMetrics with
   ``-dedup.minScrapeInterval=1ms``), so a write whose commit then fails, or a replay after a
   takeover, stores no second point;
2. one PostgreSQL transaction: the ``fence`` first (the partition lease check, raising
   ``NotOwner``, which propagates: the transaction rolls back whole), then the gateways' book
   rows locked ``FOR UPDATE`` and the duplicates judged again under that lock (a concurrent
   writer of the same gateway, e.g. the old owner during a takeover, cannot commit a message
   twice), then events, ``latest`` (newest data time wins), the seqs and the gateways' book.

The transaction holds the partitions' lease rows (FOR SHARE) while it waits for the raw write:
a takeover waits for at most that write, and a raw store that hangs is cut off by the fence's
idle-in-transaction timeout (the commit fails, nothing is kept, the batch is tried again).
Nothing is cached but a bounded map of the gateways' lost-message counts for ``/healthz``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Protocol

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection

from ingest.model import ChartQuery, EstateBatch, Fence
from ingest.retention import RollupPlan
from ingest.schema import create_engine, migrate_schema, version_table
from ingest.seqs import GatewaySeqs, Verdict, load_missing, missing_count
from ingest.telemetry_reader import event_of
from ingest.telemetry_store import PreparedRows, RawSink, WriteResult
from protocol.clock import now_ms
from protocol.messages import Value

SCHEMA_VERSION = 1
MIGRATIONS: dict[int, Callable[[Connection], None]] = {}

# Gateways whose lost-message count is kept for /healthz (the least recently written go first):
# a worker of a large region sees many gateways over its life, and nothing here may grow without
# bound. The counts themselves are in telemetry_gateway_seqs.
MAX_GATEWAYS_KEPT = 50_000
# Rows of one multi-row statement (PostgreSQL takes at most 65,535 parameters in one).
CHUNK_ROWS = 5_000
# seqs deleted per statement by purge, so ingest's commits wait for at most one chunk
PURGE_CHUNK = 20_000

metadata = sa.MetaData()
schema_version = version_table("telemetry_schema_version", metadata)

# device -> metric -> the newest value by data time (what the dashboard's "now" shows)
latest = sa.Table(
    "telemetry_latest",
    metadata,
    sa.Column("estate", sa.Text, primary_key=True),
    sa.Column("device", sa.Text, primary_key=True),
    sa.Column("metric", sa.Text, primary_key=True),
    sa.Column("ts", sa.BigInteger, nullable=False),  # data time
    sa.Column("num", sa.Float(precision=53)),
    sa.Column("txt", sa.Text),
    # every commit rewrites its devices' rows: room on the page keeps the updates HOT (no
    # index change), 28k -> 38k readings/s in bench.net_telemetry
    postgresql_with={"fillfactor": 50},
)

events = sa.Table(
    "telemetry_events",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("ts", sa.BigInteger, nullable=False),  # data time
    sa.Column("estate", sa.Text, nullable=False),
    sa.Column("gateway", sa.Text, nullable=False),
    sa.Column("device", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("data", sa.Text, nullable=False),  # JSON
    sa.Index("telemetry_events_estate_id", "estate", "id"),
)

# Per gateway: as ingest.seqs.GatewaySeqs (gaps as a JSON of ranges) and its duplicates count.
gateway_seqs = sa.Table(
    "telemetry_gateway_seqs",
    metadata,
    sa.Column("estate", sa.Text, primary_key=True),
    sa.Column("gateway", sa.Text, primary_key=True),
    sa.Column("max_seq", sa.BigInteger, nullable=False),
    sa.Column("missing", sa.Text, nullable=False),
    sa.Column("untracked_lost", sa.BigInteger, nullable=False),
    sa.Column("duplicates", sa.BigInteger, nullable=False),
    postgresql_with={"fillfactor": 50},  # rewritten by every commit of its gateway
)

# Every seq stored, until retention: answers the seq book's UNSURE (below max_seq, no known gap).
message_seqs = sa.Table(
    "telemetry_message_seqs",
    metadata,
    sa.Column("estate", sa.Text, primary_key=True),
    sa.Column("gateway", sa.Text, primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("committed_ms", sa.BigInteger, nullable=False),  # wall time
    sa.Index("telemetry_message_seqs_committed", "committed_ms"),
)

# newest data time wins (of equal times, the later write), as the SQLite store's ``latest``
_UPSERT_LATEST = sa.text(
    "INSERT INTO telemetry_latest (estate, device, metric, ts, num, txt) "
    "SELECT * FROM unnest(CAST(:estate AS text[]), CAST(:device AS text[]), "
    "CAST(:metric AS text[]), CAST(:ts AS bigint[]), CAST(:num AS float8[]), "
    "CAST(:txt AS text[])) "
    "ON CONFLICT (estate, device, metric) DO UPDATE SET ts = excluded.ts, num = excluded.num, "
    "txt = excluded.txt WHERE excluded.ts >= telemetry_latest.ts"
)
GatewayKey = tuple[str, str]
_Book = dict[GatewayKey, tuple[GatewaySeqs, int]]  # gateway -> (its seqs, duplicates so far)


def migrate(engine: sa.Engine) -> None:
    """Make or upgrade the telemetry tables on the state database (processes starting at once
    take turns: the first makes them, the others find them made)."""
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('telemetry_schema'))"))
        migrate_schema(
            conn, metadata, schema_version, SCHEMA_VERSION, MIGRATIONS, now_ms(), "telemetry tables"
        )


def _postgres_engine(database_url: str) -> sa.Engine:
    engine = create_engine(database_url)
    if engine.dialect.name != "postgresql":
        engine.dispose()
        raise ValueError(
            "the cluster telemetry store keeps its dedup book in the state database, which must "
            f"be PostgreSQL (it is {engine.dialect.name})"
        )
    return engine


def _chunks(rows: Sequence[Any], size: int = CHUNK_ROWS) -> Iterable[Sequence[Any]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def _key_filter(columns: Sequence[sa.ColumnElement[Any]], keys: Collection[tuple[Any, ...]]) -> Any:
    """``(a, b) IN ((…), …)``: one statement for many composite keys."""
    return sa.tuple_(*columns).in_([sa.tuple_(*k) for k in keys])


def _load_book(conn: Connection, keys: Collection[GatewayKey], lock: bool) -> _Book:
    """The book rows of ``keys`` (``lock``: FOR UPDATE, in key order, chunk after chunk)."""
    book: _Book = {}
    for chunk in _chunks(sorted(keys)):
        q = (
            sa.select(gateway_seqs)
            .where(_key_filter((gateway_seqs.c.estate, gateway_seqs.c.gateway), chunk))
            .order_by(gateway_seqs.c.estate, gateway_seqs.c.gateway)
        )
        if lock:
            q = q.with_for_update()
        for r in conn.execute(q):
            seqs = GatewaySeqs(r.max_seq, load_missing(r.missing), r.untracked_lost)
            book[(r.estate, r.gateway)] = (seqs, r.duplicates)
    return book


def _judge(conn: Connection, batches: Sequence[EstateBatch], book: _Book) -> set[int]:
    """Indexes of the batches already stored (or repeated earlier in ``batches``), as the book
    says and, where it is unsure, the stored seqs. As ``TelemetryWriter.find_duplicates``."""
    dups: set[int] = set()
    seen: set[tuple[str, str, int]] = set()
    unsure: dict[tuple[str, str, int], int] = {}
    for i, b in enumerate(batches):
        if b.seq is None:
            continue
        key = (b.estate, b.gateway, b.seq)
        if key in seen:
            dups.add(i)
            continue
        seen.add(key)
        entry = book.get((b.estate, b.gateway))
        if entry is not None and entry[0].judge(b.seq) is Verdict.UNSURE:
            unsure[key] = i
    if unsure:
        for chunk in _chunks(list(unsure)):
            found = conn.execute(
                sa.select(message_seqs.c.estate, message_seqs.c.gateway, message_seqs.c.seq).where(
                    _key_filter(
                        (message_seqs.c.estate, message_seqs.c.gateway, message_seqs.c.seq), chunk
                    )
                )
            )
            dups.update(unsure[(e, g, s)] for e, g, s in found)
    return dups


def _latest_rows(batches: Iterable[EstateBatch]) -> list[dict[str, Any]]:
    """Per (estate, device, metric) the reading of the newest data time (of equal times, the
    later in the batch), sorted by key so concurrent upserts lock rows in one order."""
    newest: dict[tuple[str, str, str], tuple[int, Value]] = {}
    for b in batches:
        for r in b.readings:
            for metric, value in r.metrics.items():
                key = (b.estate, r.dev, metric)
                prev = newest.get(key)
                if prev is None or prev[0] <= r.ts:
                    newest[key] = (r.ts, value)
    rows = []
    for (estate, device, metric), (ts, value) in sorted(newest.items()):
        text = value if type(value) is str else None
        num = None if text is not None else float(value)
        rows.append(
            {
                "estate": estate,
                "device": device,
                "metric": metric,
                "ts": ts,
                "num": num,
                "txt": text,
            }
        )
    return rows


class NetworkTelemetryStore:
    """The ``TelemetryStore`` of cluster mode: raw readings to ``raw_sink``, the book, events and
    "now" to PostgreSQL at ``database_url`` (the state database), each write fenced by ``fence``
    (None: unfenced). One thread writes (the recorder's); the read-only calls may run on any."""

    def __init__(self, database_url: str, raw_sink: RawSink, fence: Fence | None = None) -> None:
        self.engine = _postgres_engine(database_url)
        self.raw_sink = raw_sink
        self.fence = fence
        # one raw write at a time, beside the transaction that waits for it
        self._raw = ThreadPoolExecutor(1, thread_name_prefix="raw-sink")
        self._lost: OrderedDict[GatewayKey, int] = OrderedDict()
        try:
            migrate(self.engine)
        except BaseException:
            self.close()
            raise

    # --- the TelemetryStore protocol ----------------------------------------------------------
    def prepare_rows(self, batch: EstateBatch) -> PreparedRows | None:
        return None  # raw rows go to the time-series store: nothing to encode ahead

    def find_duplicates(self, batches: Sequence[EstateBatch]) -> set[int]:
        """Indexes of the batches already stored, or repeated earlier in ``batches``. Read-only,
        no lock: ``write`` judges again under the gateways' locks."""
        keys = {(b.estate, b.gateway) for b in batches if b.seq is not None}
        with self.engine.connect() as conn:
            return _judge(conn, batches, _load_book(conn, keys, lock=False))

    def write(
        self,
        batches: Sequence[EstateBatch],
        duplicates: set[int] | None = None,
        prepared: Sequence[PreparedRows | None] | None = None,
    ) -> WriteResult:
        """Store the messages not stored yet: raw readings to the time-series store, then the
        rest in one fenced PostgreSQL transaction (see the module's docstring). Raises NotOwner
        from the fence, with nothing committed; any other error likewise commits nothing."""
        guess = self.find_duplicates(batches) if duplicates is None else duplicates
        sent = {i for i, b in enumerate(batches) if i not in guess and b.readings}
        # The raw write runs on the sink's thread while this one prepares the transaction; the
        # commit waits for it (the points are in before the seqs say "stored").
        # None: no readings (an events commit goes straight to its transaction)
        raw = (
            self._raw.submit(self.raw_sink.write, [batches[i] for i in sorted(sent)])
            if sent
            else None
        )
        try:
            return self._commit(batches, sent, raw)
        finally:
            if raw is not None:
                wait([raw])  # failed or fenced: never two raw writes at once

    def _commit(
        self, batches: Sequence[EstateBatch], sent: set[int], raw: Future[int] | None
    ) -> WriteResult:
        committed = now_ms()  # wall time, for retention of the seqs
        with self.engine.begin() as conn:
            if self.fence is not None:
                self.fence(conn, sorted({b.estate for b in batches}))
            book = self._lock_gateways(conn, batches)
            dups = _judge(conn, batches, book)
            fresh = [b for i, b in enumerate(batches) if i not in dups]
            event_count = self._insert_events(conn, fresh)
            self._upsert_latest(conn, fresh)
            touched = self._book_after(batches, dups, book)
            seq_rows = [
                {"estate": b.estate, "gateway": b.gateway, "seq": b.seq, "committed_ms": committed}
                for b in fresh
                if b.seq is not None
            ]
            for chunk in _chunks(seq_rows):
                conn.execute(pg_insert(message_seqs).on_conflict_do_nothing(), list(chunk))
            self._save_book(conn, touched, book)
            if raw is not None:
                raw.result()  # raises the sink's error: the transaction rolls back
            late = [batches[i] for i, b in enumerate(batches) if i not in dups and i not in sent]
            if any(b.readings for b in late):  # judged stored before, not now (seqs purged)
                self.raw_sink.write([b for b in late if b.readings])
        for key, (seqs, _count) in touched.items():
            self._remember_lost(key, seqs.lost)
        return WriteResult(
            values=sum(len(r.metrics) for b in fresh for r in b.readings),
            readings=sum(len(b.readings) for b in fresh),
            events=event_count,
            duplicates=dups,
        )

    def gateway_lost(self) -> dict[GatewayKey, int]:
        """Messages lost per gateway (gaps in its seqs), of the gateways this store wrote for
        lately (at most MAX_GATEWAYS_KEPT)."""
        return dict(self._lost)

    def flush_latest_if_due(self) -> None:
        """Nothing to fold: ``latest`` is upserted in each write's transaction."""

    def prepare_rollup(self, max_rows: int = 1_000_000, conn: Any = None) -> RollupPlan | None:
        return None  # the time-series store downsamples itself

    def apply_rollup(self, plan: RollupPlan) -> int:
        return 0

    def purge(self, raw_before_ms: int, minute_rollups_before_ms: int) -> int:
        """Forget the seqs committed (wall time) before ``raw_before_ms``, in chunks; raw
        readings are the time-series store's to keep or drop (its own retention). Returns 0: no
        raw row is deleted here. Every worker runs it hourly over all estates: one at a time
        (an advisory lock; a worker that finds it taken leaves the work to the holder), so two
        never delete the same rows in different orders (a deadlock)."""
        while True:
            with self.engine.begin() as conn:
                if not conn.execute(
                    sa.text("SELECT pg_try_advisory_xact_lock(hashtext('telemetry_purge'))")
                ).scalar_one():
                    return 0
                old = (
                    sa.select(message_seqs.c.estate, message_seqs.c.gateway, message_seqs.c.seq)
                    .where(message_seqs.c.committed_ms < raw_before_ms)
                    .limit(PURGE_CHUNK)
                    .subquery()
                )
                keys = (message_seqs.c.estate, message_seqs.c.gateway, message_seqs.c.seq)
                n = conn.execute(
                    message_seqs.delete().where(sa.tuple_(*keys).in_(sa.select(old)))
                ).rowcount
            if n < PURGE_CHUNK:
                return 0

    def close(self) -> None:
        self._raw.shutdown(wait=True)
        self.engine.dispose()

    # --- inside a write's transaction ---------------------------------------------------------
    @staticmethod
    def _lock_gateways(conn: Connection, batches: Sequence[EstateBatch]) -> _Book:
        """The book rows of the batches' gateways, made if new and locked until the commit, in
        key order (two writers lock in one order: no deadlock between them)."""
        keys = sorted({(b.estate, b.gateway) for b in batches if b.seq is not None})
        if not keys:
            return {}
        for chunk in _chunks(keys):
            conn.execute(
                pg_insert(gateway_seqs).on_conflict_do_nothing(),
                [
                    {
                        "estate": e,
                        "gateway": g,
                        "max_seq": 0,
                        "missing": "[]",
                        "untracked_lost": 0,
                        "duplicates": 0,
                    }
                    for e, g in chunk
                ],
            )
        return _load_book(conn, keys, lock=True)

    @staticmethod
    def _save_book(
        conn: Connection, touched: dict[GatewayKey, tuple[GatewaySeqs, int]], before: _Book
    ) -> None:
        """Write the changed book rows; a gateway's gaps (up to ~40 KB of JSON) only when they
        changed: one with open gaps that sends on in order changes only its max_seq."""
        full, counts = [], []
        for (e, g), (seqs, count) in sorted(touched.items()):
            row = {
                "k_estate": e,
                "k_gateway": g,
                "max_seq": seqs.max_seq,
                "untracked_lost": seqs.untracked_lost,
                "duplicates": count,
            }
            old = before.get((e, g))
            if old is not None and old[0].missing == seqs.missing:
                counts.append(row)
            else:
                full.append({**row, "missing": seqs.missing_json()})
        for rows in (full, counts):
            if rows:
                conn.execute(
                    gateway_seqs.update()
                    .where(gateway_seqs.c.estate == sa.bindparam("k_estate"))
                    .where(gateway_seqs.c.gateway == sa.bindparam("k_gateway")),
                    rows,
                )

    @staticmethod
    def _book_after(
        batches: Sequence[EstateBatch], dups: set[int], book: _Book
    ) -> dict[GatewayKey, tuple[GatewaySeqs, int]]:
        """The book rows this write changes: seqs accepted, duplicates counted."""
        touched: dict[GatewayKey, tuple[GatewaySeqs, int]] = {}
        for i, b in enumerate(batches):
            if b.seq is None:
                continue
            key = (b.estate, b.gateway)
            if key not in touched:
                seqs, count = book.get(key, (GatewaySeqs(), 0))
                touched[key] = (seqs.copy(), count)
            seqs, count = touched[key]
            if i in dups:
                touched[key] = (seqs, count + 1)
            else:
                seqs.accept(b.seq)
        return touched

    @staticmethod
    def _upsert_latest(conn: Connection, batches: Sequence[EstateBatch]) -> None:
        """One statement for all of a commit's "now" rows, unpacked by the server from arrays:
        a row per statement (executemany) cost three times the rest of the commit."""
        rows = _latest_rows(batches)
        if not rows:
            return
        conn.execute(
            _UPSERT_LATEST,
            {
                "estate": [r["estate"] for r in rows],
                "device": [r["device"] for r in rows],
                "metric": [r["metric"] for r in rows],
                "ts": [r["ts"] for r in rows],
                "num": [r["num"] for r in rows],
                "txt": [r["txt"] for r in rows],
            },
        )

    @staticmethod
    def _insert_events(conn: Connection, batches: Sequence[EstateBatch]) -> int:
        rows = [
            {
                "ts": e.ts,
                "estate": b.estate,
                "gateway": b.gateway,
                "device": e.dev,
                "kind": e.kind,
                "type": e.type,
                "data": orjson.dumps(e.data).decode(),
            }
            for b in batches
            for e in b.events
        ]
        for chunk in _chunks(rows):
            conn.execute(events.insert(), list(chunk))
        return len(rows)

    def _remember_lost(self, key: GatewayKey, lost: int) -> None:
        self._lost[key] = lost
        self._lost.move_to_end(key)
        while len(self._lost) > MAX_GATEWAYS_KEPT:
            self._lost.popitem(last=False)


# --- the read side ---------------------------------------------------------------------------
class ChartSource(Protocol):
    """Charts and the report's hours with data from the time-series store
    (``ingest.victoria.VictoriaMetricsReader``)."""

    def chart(self, q: ChartQuery, kind: str, now: int) -> dict[str, Any]: ...
    def hours_with_data(self, estate: str, from_ms: int, to_ms: int) -> dict[str, int]: ...
    def count_values(self, estate: str | None = None) -> int: ...


class NetworkTelemetryReader:
    """The API's telemetry reader in cluster mode, on any node: "now", events and gateway health
    from the state PostgreSQL (``engine``), charts and the report's hours with data from the
    time-series store (``charts``); ``kind_of(estate, device)`` names a device's kind (its
    series' measurement)."""

    def __init__(
        self, engine: sa.Engine, charts: ChartSource, kind_of: Callable[[str, str], str]
    ) -> None:
        self.engine, self.charts, self.kind_of = engine, charts, kind_of
        migrate(engine)  # an API node may start before any worker made the tables

    def latest(
        self, estate: str, devices: Collection[str] | None = None
    ) -> dict[str, dict[str, tuple[int, Value]]]:
        """device -> metric -> (data time, value) for one estate (only ``devices``: a page)."""
        q = sa.select(latest.c.device, latest.c.metric, latest.c.ts, latest.c.num, latest.c.txt)
        q = q.where(latest.c.estate == estate)
        if devices is not None:
            q = q.where(latest.c.device.in_(list(devices)))
        out: dict[str, dict[str, tuple[int, Value]]] = {}
        with self.engine.connect() as conn:
            for device, metric, ts, num, txt in conn.execute(q):
                out.setdefault(device, {})[metric] = (ts, txt if txt is not None else num)
        return out

    def count_readings(self, estate: str | None = None) -> int:
        """Metric values stored (the time-series store's samples), of one estate or all."""
        return self.charts.count_values(estate)

    def recent_events(self, estate: str, limit: int = 100) -> list[dict[str, Any]]:
        q = (
            sa.select(
                events.c.ts,
                events.c.gateway,
                events.c.device,
                events.c.kind,
                events.c.type,
                events.c.data,
            )
            .where(events.c.estate == estate)
            .order_by(events.c.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [event_of(*row) for row in rows]

    def hours_with_data(self, estate: str, from_ms: int, to_ms: int) -> dict[str, int]:
        return self.charts.hours_with_data(estate, from_ms, to_ms)

    def gateway_health(self, estate: str) -> dict[str, dict[str, Any]]:
        """gateway -> highest seq stored, messages missing (lost unless replayed), duplicates."""
        g = gateway_seqs.c
        q = sa.select(g.gateway, g.max_seq, g.missing, g.untracked_lost, g.duplicates).where(
            g.estate == estate
        )
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return {
            gw: {
                "max_seq": max_seq,
                "lost_messages": missing_count(missing) + untracked,
                "duplicates": dups,
            }
            for gw, max_seq, missing, untracked, dups in rows
        }

    def telemetry(self, q: ChartQuery, now: int | None = None) -> dict[str, Any]:
        return self.charts.chart(
            q, self.kind_of(q.estate, q.device), now_ms() if now is None else now
        )
