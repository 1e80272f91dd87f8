"""The store-and-forward buffer: everything not yet acknowledged by the broker, on disk.

SQLite in WAL mode (``synchronous=FULL`` by default, so a commit survives power loss, not only
``kill -9``). Readings are written the moment an adapter hands them over, as *fragments* of
already-encoded JSON items; a fragment gets its ``seq`` only when it is *sealed* into a message
(batching by size and time happens there), so readings dropped while the network is down never
leave a hole in the ``seq`` sequence. Events are sealed at once and always sent before telemetry.

The buffer is bounded by bytes: when full, the oldest telemetry goes first, events are kept, and
every dropped reading is counted (persisted, reported in the gateway's status). Nothing of the
backlog is held in memory: only counters.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from protocol.clock import now_ms as _now_ms
from protocol.messages import MAX_ITEMS, MAX_PAYLOAD_BYTES, Event, Reading

EVENTS = 0  # sorts first: events are sent before any telemetry
TELEMETRY = 1
CHANNEL_KEYS = {EVENTS: b"events", TELEMETRY: b"readings"}
# Room for the envelope ({"v":1,"gw":…,"seq":…,"sent":…,"readings":[…]}) inside 1 MiB.
ENVELOPE_RESERVE = 512
MAX_BATCH_BYTES = MAX_PAYLOAD_BYTES - ENVELOPE_RESERVE

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel INTEGER NOT NULL,
    seq INTEGER,
    n INTEGER NOT NULL,
    nbytes INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    items BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_sealed ON outbox(channel, seq) WHERE seq IS NOT NULL;
CREATE INDEX IF NOT EXISTS outbox_unsealed ON outbox(id) WHERE seq IS NULL AND channel = 1;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class BufferError(RuntimeError):
    """The buffer file cannot be used; the message names it and says what to do."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message ready to publish: its seq, channel and the JSON array of its items."""

    seq: int
    channel: int
    items: bytes
    count: int

    def payload(self, gw: str, sent_ms: int) -> bytes:
        return b"".join(
            (
                b'{"v":1,"gw":',
                orjson.dumps(gw),
                b',"seq":%d,"sent":%d,"%s":' % (self.seq, sent_ms, CHANNEL_KEYS[self.channel]),
                self.items,
                b"}",
            )
        )


@dataclass(frozen=True, slots=True)
class BufferStats:
    messages: int  # waiting to be sent or acknowledged (unsealed readings as whole batches)
    readings: int
    events: int
    bytes: int
    dropped_readings: int
    last_seq: int


def reading_item(r: Reading) -> bytes:
    return orjson.dumps({"dev": r.dev, "kind": r.kind, "ts": r.ts, "m": r.metrics})


def event_item(e: Event) -> bytes:
    return orjson.dumps({"dev": e.dev, "kind": e.kind, "ts": e.ts, "type": e.type, "data": e.data})


class ForwardBuffer:
    def __init__(
        self,
        path: Path,
        max_bytes: int = 256 * 1024 * 1024,
        batch_max_readings: int = 2000,
        batch_max_bytes: int = 256 * 1024,
        batch_linger_ms: int = 1000,
        durable: bool = True,
    ) -> None:
        if not 1 <= batch_max_readings <= MAX_ITEMS:
            raise ValueError(f"batch_max_readings must be 1..{MAX_ITEMS} (the contract's limit)")
        if not 1024 <= batch_max_bytes <= MAX_BATCH_BYTES:
            raise ValueError(f"batch_max_bytes must be 1024..{MAX_BATCH_BYTES} (1 MiB a message)")
        if max_bytes < 4 * batch_max_bytes:
            raise ValueError("the buffer must hold at least four batches (max_bytes)")
        self.path = path
        self.max_bytes = max_bytes
        self.batch_max_readings = batch_max_readings
        self.batch_max_bytes = batch_max_bytes
        self.batch_linger_ms = batch_linger_ms
        self._lock = threading.Lock()
        self._delivered = threading.Condition(self._lock)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.execute("PRAGMA cache_size=-4000")  # 4 MB: the backlog stays on disk
            self._db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise BufferError(
                f"gateway buffer {path}: {exc}; check the folder is writable, or move the "
                "damaged file aside to start with an empty buffer"
            ) from exc
        self._load_counters()

    # -- counters ---------------------------------------------------------------------------

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def _load_counters(self) -> None:
        self._last_seq = self._meta("last_seq")
        self._dropped = self._meta("dropped_readings")
        sums = dict.fromkeys((EVENTS, TELEMETRY), (0, 0))
        for channel, n, nbytes in self._db.execute(
            "SELECT channel, SUM(n), SUM(nbytes) FROM outbox GROUP BY channel"
        ):
            sums[channel] = (int(n), int(nbytes))
        self._events, ev_bytes = sums[EVENTS]
        self._readings, tel_bytes = sums[TELEMETRY]
        self._bytes = ev_bytes + tel_bytes
        self._sealed = self._db.execute(
            "SELECT COUNT(DISTINCT seq) FROM outbox WHERE seq IS NOT NULL"
        ).fetchone()[0]
        self._unsealed_readings = self._db.execute(
            "SELECT COALESCE(SUM(n), 0) FROM outbox WHERE seq IS NULL AND channel = 1"
        ).fetchone()[0]

    @property
    def stats(self) -> BufferStats:
        with self._lock:
            batches = math.ceil(self._unsealed_readings / self.batch_max_readings)
            return BufferStats(
                messages=self._sealed + batches,
                readings=self._readings,
                events=self._events,
                bytes=self._bytes,
                dropped_readings=self._dropped,
                last_seq=self._last_seq,
            )

    # -- writing ----------------------------------------------------------------------------

    def _chunks(self, items: list[bytes]) -> Iterable[list[bytes]]:
        chunk: list[bytes] = []
        size = 0
        for item in items:
            if chunk and (
                len(chunk) >= self.batch_max_readings or size + len(item) + 1 > self.batch_max_bytes
            ):
                yield chunk
                chunk, size = [], 0
            chunk.append(item)
            size += len(item) + 1
        if chunk:
            yield chunk

    def add_readings(self, readings: Sequence[Reading]) -> int:
        """Store readings (durably, before returning); the id of the last row written."""
        return self._add(TELEMETRY, [reading_item(r) for r in readings])

    def add_events(self, events: Sequence[Event]) -> int:
        """Store events as messages of their own, sealed at once: they never wait for a batch."""
        return self._add(EVENTS, [event_item(e) for e in events])

    def _add(self, channel: int, items: list[bytes]) -> int:
        oversized = [i for i in items if len(i) + 2 > self.batch_max_bytes]
        if oversized:
            raise ValueError(f"an item of {len(oversized[0])} bytes does not fit in one message")
        if not items:
            return 0
        now = _now_ms()
        last_id = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for chunk in self._chunks(items):
                    blob = b"[" + b",".join(chunk) + b"]"
                    seq = None
                    if channel == EVENTS:
                        self._last_seq += 1
                        seq = self._last_seq
                    cur = self._db.execute(
                        "INSERT INTO outbox(channel, seq, n, nbytes, created_ms, items) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (channel, seq, len(chunk), len(blob), now, blob),
                    )
                    last_id = int(cur.lastrowid or 0)
                    self._bytes += len(blob)
                    if channel == EVENTS:
                        self._events += len(chunk)
                        self._sealed += 1
                    else:
                        self._readings += len(chunk)
                        self._unsealed_readings += len(chunk)
                if channel == EVENTS:
                    self._set_meta("last_seq", self._last_seq)
                self._drop_oldest_telemetry()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._load_counters()
                raise
        return last_id

    def _drop_oldest_telemetry(self) -> None:
        """Make room: oldest telemetry first (a sealed message as a whole); events stay."""
        dropped = 0
        while self._bytes > self.max_bytes:
            row = self._db.execute(
                "SELECT id, seq FROM outbox WHERE channel = 1 ORDER BY id LIMIT 1"
            ).fetchone()
            if row is None:
                break  # only events left: they are kept even over the bound
            row_id, seq = row
            where, arg = ("seq = ?", seq) if seq is not None else ("id = ?", row_id)
            n, nbytes = self._db.execute(
                f"SELECT SUM(n), SUM(nbytes) FROM outbox WHERE {where}", (arg,)
            ).fetchone()
            self._db.execute(f"DELETE FROM outbox WHERE {where}", (arg,))
            self._bytes -= nbytes
            self._readings -= n
            dropped += n
            if seq is None:
                self._unsealed_readings -= n
            else:
                self._sealed -= 1
        if dropped:
            self._dropped += dropped
            self._set_meta("dropped_readings", self._dropped)

    # -- sending ----------------------------------------------------------------------------

    def next_message(
        self, skip: Collection[int] = (), now_ms: int | None = None
    ) -> Outgoing | None:
        """The next message to publish, not counting ``skip`` (seqs in flight): sealed messages
        first (events before telemetry, each in seq order), then a new telemetry batch once it
        is full or its oldest reading has waited ``batch_linger_ms``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT channel, seq FROM outbox WHERE seq IS NOT NULL "
                "ORDER BY channel, seq LIMIT ?",
                (len(skip) + 1,),
            ).fetchall()
            for channel, seq in rows:
                if seq not in skip:
                    return self._message(channel, seq)
            seq = self._seal(_now_ms() if now_ms is None else now_ms)
            return None if seq is None else self._message(TELEMETRY, seq)

    def _message(self, channel: int, seq: int) -> Outgoing:
        blobs = [
            b[0]
            for b in self._db.execute("SELECT items FROM outbox WHERE seq = ? ORDER BY id", (seq,))
        ]
        if len(blobs) == 1:
            return Outgoing(seq, channel, blobs[0], -1)
        inner = b",".join(b[1:-1] for b in blobs)
        return Outgoing(seq, channel, b"[" + inner + b"]", -1)

    def _seal(self, now_ms: int) -> int | None:
        rows = self._db.execute(
            "SELECT id, n, nbytes, created_ms FROM outbox WHERE seq IS NULL AND channel = 1 "
            "ORDER BY id LIMIT 1000"
        ).fetchall()
        if not rows:
            return None
        ids: list[int] = []
        n_sum = b_sum = 0
        full = False
        for row_id, n, nbytes, _ in rows:
            if ids and (
                n_sum + n > self.batch_max_readings or b_sum + nbytes > self.batch_max_bytes
            ):
                full = True
                break
            ids.append(row_id)
            n_sum += n
            b_sum += nbytes
        full = full or n_sum >= self.batch_max_readings or b_sum >= self.batch_max_bytes * 0.9
        if not full and now_ms - rows[0][3] < self.batch_linger_ms:
            return None
        self._last_seq += 1
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute(
            f"UPDATE outbox SET seq = ? WHERE id IN ({','.join('?' * len(ids))})",
            (self._last_seq, *ids),
        )
        self._set_meta("last_seq", self._last_seq)
        self._db.execute("COMMIT")
        self._sealed += 1
        self._unsealed_readings -= n_sum
        return self._last_seq

    def delivered(self, seqs: Collection[int]) -> None:
        """The broker acknowledged these messages: forget them (one transaction)."""
        if not seqs:
            return
        marks = ",".join("?" * len(seqs))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            found = self._db.execute(
                f"SELECT channel, SUM(n), SUM(nbytes), COUNT(DISTINCT seq) FROM outbox "
                f"WHERE seq IN ({marks}) GROUP BY channel",
                tuple(seqs),
            ).fetchall()
            self._db.execute(f"DELETE FROM outbox WHERE seq IN ({marks})", tuple(seqs))
            self._db.execute("COMMIT")
            for channel, n, nbytes, messages in found:
                self._bytes -= nbytes
                self._sealed -= messages
                if channel == EVENTS:
                    self._events -= n
                else:
                    self._readings -= n
            self._delivered.notify_all()

    def wait_delivered(self, row_id: int, timeout_s: float) -> bool:
        """Block until every row up to ``row_id`` has been acknowledged by the broker."""
        with self._delivered:
            return self._delivered.wait_for(
                lambda: (
                    self._db.execute(
                        "SELECT 1 FROM outbox WHERE id <= ? LIMIT 1", (row_id,)
                    ).fetchone()
                    is None
                ),
                timeout_s,
            )

    def wait_empty(self, timeout_s: float) -> bool:
        """Block until the broker has acknowledged everything buffered."""
        with self._delivered:
            return self._delivered.wait_for(lambda: self._bytes == 0, timeout_s)

    def close(self) -> None:
        with self._lock:
            self._db.close()
