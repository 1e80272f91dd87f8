"""The telemetry writer in a process of its own (issue 15, "use both cores").

In one process the SQLite writer thread waited ~40 % of its time for the interpreter lock
that the decoder, the rules and paho held. Here ``TelemetryWriter`` (dedup against the seq
book, the readings' rows, the insert, ``latest``, the seq book, rollup merges and purges) runs
in a child process with an interpreter of its own; the service's recorder thread keeps
everything else (state store, acknowledgements, listeners) and waits on a socket meanwhile,
without the lock.

``StoreProcess`` is the main side: the same calls as ``TelemetryWriter`` (``TelemetryStore``),
one request at a time on a socket pair (bounded: one commit in flight). A batch crosses as
msgpack (msgspec, in C: ~1 µs a reading), encoded by the decoder thread (``prepare_rows``) while
the writer waits for the commit before, and is decoded in the child into structs with the same
attributes. A write returns only after the child's COMMIT, so the recorder still acknowledges
only what is committed.

Crashes:
- the child dies (kill -9): its open transaction rolls back; the request in flight fails as
  ``StoreDown`` (an OSError: transient, so the recorder retries, nothing is acknowledged); the
  next request, or the supervisor thread within a second, starts a new child, which loads the
  seq book from the file, so a batch it committed before dying is found stored on the retry;
- the service dies: the child sees its parent gone (ppid) within 50 ms and exits; it may finish
  the commit it is in, which nobody acknowledged, so the broker delivers it again and the next
  child (which waits for the old one's file lock first) finds it stored.
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import logging
import os
import pickle
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import msgspec

from ingest.model import EstateBatch
from ingest.retention import RollupPlan
from ingest.telemetry import (
    FoldReader,
    PreparedRows,
    RawSink,
    TelemetryStore,
    TelemetryWriter,
    WriteResult,
)

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0  # a child that is not ready by then has failed to start
LOCK_TIMEOUT_S = 30.0  # a child waits this long for an old one (its parent gone) to exit


class StoreDown(OSError):
    """The store process died or could not be started: transient (``recorder.is_transient``
    treats every OSError so), the batch is retried and nothing is acknowledged meanwhile."""


class StoreRefused(Exception):
    """The child's write raised; ``transient`` is the child's own ``is_transient`` verdict,
    which the recorder's reads (a locked file is retried, a value SQLite cannot hold splits
    the batch down to the message at fault)."""

    def __init__(self, text: str, transient: bool) -> None:
        super().__init__(text)
        self.transient = transient


# --- the wire: what a batch looks like in the child ------------------------------------------
class _Reading(msgspec.Struct, frozen=True, gc=False):
    dev: str
    kind: str
    ts: int
    metrics: dict[str, Any]


class _Event(msgspec.Struct, frozen=True):
    dev: str
    kind: str
    ts: int
    type: str
    data: dict[str, Any]


class _Batch(msgspec.Struct, frozen=True):
    estate: str
    gateway: str
    readings: list[_Reading] = []
    events: list[_Event] = []
    seq: int | None = None


_ENCODER = msgspec.msgpack.Encoder()  # EstateBatch and its Readings are dataclasses: maps


# --- main side ---------------------------------------------------------------------------------
class StoreProcess:
    """``TelemetryWriter``'s calls, answered by a child process that owns the writer."""

    def __init__(
        self, path: Path, latest_interval_s: float = 0.0, supervise_s: float = 0.5
    ) -> None:
        self.path = path
        self.latest_interval_s = latest_interval_s
        # Opened here once and closed: schema, migrations and a damaged file fail in this
        # process, with the errors the service explains (explain_corruption, retry_schema).
        TelemetryWriter(path, latest_interval_s=latest_interval_s).close()
        self.restarts = 0
        self.down_since: float | None = None
        self.last_exit: int | None = None
        self._lock = threading.Lock()  # one request at a time; restarts under it
        self._closing = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._ready = False  # the child has said it is
        self._gateway_lost: dict[tuple[str, str], int] = {}
        self._folds = FoldReader(path)  # prepare_rollup's
        with self._lock:
            self._start()
        self._supervisor = threading.Thread(
            target=self._supervise, args=(supervise_s,), name="ingest-store-supervisor", daemon=True
        )
        self._supervisor.start()

    # --- the child's life --------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None and self._conn is not None

    def _start(self) -> None:
        """Start a child (under ``_lock``); its "ready" is waited for by the first request, so
        the service's start does not wait for the child's imports."""
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # what we import, it does
        cmd = [
            sys.executable, "-m", "ingest.store_process", "--fd", str(theirs.fileno()),
            "--path", str(self.path), "--latest-interval-s", str(self.latest_interval_s),
            "--parent", str(os.getpid()),
        ]  # fmt: skip
        try:
            proc = subprocess.Popen(cmd, pass_fds=[theirs.fileno()], env=env)
        except OSError as exc:
            ours.close()
            raise StoreDown(f"could not start the store process: {exc}") from exc
        finally:
            theirs.close()
        self._proc, self._conn, self._ready = proc, Connection(ours.detach()), False
        self.down_since = None

    def _wait_ready(self) -> None:
        """The child's first word (under ``_lock``): ready, with the seq book's losses, or why
        it cannot open the file; StoreDown if it is not ready within START_TIMEOUT_S."""
        if self._ready:
            return
        assert self._conn is not None and self._proc is not None
        try:
            if not self._conn.poll(START_TIMEOUT_S):
                raise StoreDown(f"not ready in {START_TIMEOUT_S:.0f} s")
            kind, value = pickle.loads(self._conn.recv_bytes())
        except (EOFError, OSError) as exc:
            self._lost()
            raise StoreDown(f"the store process did not start: {exc!r}") from exc
        if kind != "ready":
            self._lost()
            raise StoreDown(f"the store process could not open {self.path}: {value}")
        self._ready, self._gateway_lost = True, value
        log.info("ingest: store process %d writes %s", self._proc.pid, self.path)

    def ready(self) -> None:
        """Wait until a child is ready (benches: its start is not what they time)."""
        with self._lock:
            if not self.alive():
                self._restart()
            self._wait_ready()

    def _lost(self) -> None:
        """The child is gone (under ``_lock``): note it; the next request or the supervisor
        starts another."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self.last_exit = self._proc.wait()
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.error("ingest: the store process ended (exit %s); starting another", self.last_exit)

    def _restart(self) -> None:
        self._lost()
        self._start()
        self.restarts += 1

    def _supervise(self, every_s: float) -> None:
        """Restart a dead child while nothing asks (a request in flight finds it dead itself)."""
        while not self._closing.wait(every_s):
            if self.alive() or not self._lock.acquire(blocking=False):
                continue
            try:
                if not self._closing.is_set() and not self.alive():
                    self._restart()
            except StoreDown as exc:
                log.error("ingest: %s; trying again", exc)
            finally:
                self._lock.release()

    def health(self) -> dict[str, Any]:
        """For /healthz: whether the child runs; how it last ended (-9: killed)."""
        code = self._proc.poll() if self._proc is not None else None
        return {
            "alive": self.alive(),
            "pid": self.pid,
            "restarts": self.restarts,
            "down_s": round(time.monotonic() - self.down_since, 1) if self.down_since else None,
            "last_exit": self.last_exit if code is None else code,
        }

    # --- requests ----------------------------------------------------------------------------
    def _call(self, op: str, *args: Any) -> Any:
        with self._lock:
            if self._closing.is_set():
                raise StoreDown("the store process is closed")
            if not self.alive():
                self._restart()
            self._wait_ready()
            assert self._conn is not None
            try:
                self._conn.send_bytes(pickle.dumps((op, args), pickle.HIGHEST_PROTOCOL))
                kind, *value = pickle.loads(self._conn.recv_bytes())
            except (EOFError, OSError) as exc:
                self._lost()
                raise StoreDown(f"the store process died during {op}: {exc!r}") from exc
        if kind == "err":
            raise StoreRefused(value[0], value[1])
        return value[0]

    def prepare_rows(self, batch: EstateBatch) -> PreparedRows | None:
        """The batch as it crosses to the child, encoded on the decoder thread while the
        writer waits for the commit before (the series ids live in the child: it makes the
        rows)."""
        return PreparedRows(_ENCODER.encode(batch), len(batch.readings))

    def find_duplicates(self, batches: Sequence[EstateBatch]) -> set[int]:
        keys = [(b.estate, b.gateway, b.seq) for b in batches]
        return set(self._call("find_duplicates", keys))

    def write(
        self,
        batches: Sequence[EstateBatch],
        duplicates: set[int] | None = None,
        prepared: Sequence[PreparedRows | None] | None = None,
    ) -> WriteResult:
        ready = prepared or [None] * len(batches)
        blobs = [p.json if p else _ENCODER.encode(b) for b, p in zip(batches, ready, strict=True)]
        dups = sorted(duplicates) if duplicates is not None else None
        values, readings, events, found, lost = self._call("write", blobs, dups)
        self._gateway_lost = lost
        return WriteResult(values, readings, events, set(found))

    def gateway_lost(self) -> dict[tuple[str, str], int]:
        return self._gateway_lost

    def flush_latest_if_due(self) -> None:
        pass  # the child folds "now" itself when idle

    def apply_rollup(self, plan: RollupPlan) -> int:
        return int(self._call("apply_rollup", plan))

    def purge(self, raw_before_ms: int, minute_rollups_before_ms: int) -> int:
        return int(self._call("purge", raw_before_ms, minute_rollups_before_ms))

    def prepare_rollup(
        self, max_rows: int = 1_000_000, conn: sqlite3.Connection | None = None
    ) -> RollupPlan | None:
        """Reads on a read-only connection of this process (WAL: never blocks the child)."""
        return self._folds.prepare(max_rows, conn)

    def close(self) -> None:
        """Fold "now", close the file, end the child (killed if it does not answer in 10 s)."""
        self._closing.set()
        self._supervisor.join(5)
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.send_bytes(pickle.dumps(("close", ())))
                    if self._conn.poll(10):
                        self._conn.recv_bytes()
                except (EOFError, OSError):
                    pass
                self._conn.close()
                self._conn = None
            if self._proc is not None:
                try:
                    self._proc.wait(10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
        self._folds.close()


def telemetry_store(path: Path, raw_sink: RawSink | None, own_process: bool) -> TelemetryStore:
    """The service's telemetry writer: in a child process unless told not to or raw readings
    go to InfluxDB (``raw_sink``: its client lives in the service). "Now" is folded at most
    once a second under load; dashboards get each reading live from the stream meanwhile."""
    if own_process and raw_sink is None:
        return StoreProcess(path, latest_interval_s=1.0)
    return TelemetryWriter(path, raw_sink=raw_sink, latest_interval_s=1.0)


# --- child side --------------------------------------------------------------------------------
def _wait_for_lock(path: Path) -> int:
    """Hold the writer's lock file for life: a child of a killed service may still be in its
    last commit, and the seq book must be read after that commit, not before."""
    fd = os.open(path.with_name(path.name + ".writer.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"another store process still holds {path}") from None
            time.sleep(0.05)


def _handlers(writer: TelemetryWriter) -> dict[str, Callable[..., Any]]:
    decode = msgspec.msgpack.Decoder(_Batch).decode

    def find_duplicates(keys: list[tuple[str, str, int | None]]) -> list[int]:
        return sorted(writer.find_duplicates([EstateBatch(e, g, seq=s) for e, g, s in keys]))

    def write(blobs: list[bytes], dups: list[int] | None) -> tuple[Any, ...]:
        # the structs have EstateBatch's attributes: the writer reads nothing else
        batches = cast(list[EstateBatch], [decode(b) for b in blobs])
        r = writer.write(batches, None if dups is None else set(dups))
        return r.values, r.readings, r.events, sorted(r.duplicates), writer.gateway_lost()

    return {
        "find_duplicates": find_duplicates,
        "write": write,
        "apply_rollup": writer.apply_rollup,
        "purge": writer.purge,
        "close": writer.flush_latest,
    }


def serve(conn: Connection, path: Path, latest_interval_s: float, parent: int) -> None:
    """The child's loop: one request at a time; "now" folded while idle; ends when asked,
    when the socket closes or when the parent is gone."""
    try:
        _wait_for_lock(path)
        writer = TelemetryWriter(path, latest_interval_s=latest_interval_s)
    except Exception as exc:
        conn.send_bytes(pickle.dumps(("error", f"{type(exc).__name__}: {exc}"[:500])))
        return
    conn.send_bytes(pickle.dumps(("ready", writer.gateway_lost())))
    handlers = _handlers(writer)
    while True:
        try:
            if not conn.poll(0.05):
                if os.getppid() != parent:
                    return  # the service is gone: whatever it sent was not acknowledged
                writer.flush_latest_if_due()
                continue
            op, args = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        try:
            answer: tuple[Any, ...] = ("ok", handlers[op](*args))
        except Exception as exc:
            # the parent's verdicts, imported only when needed (the child starts sooner)
            from ingest.recorder import is_transient, shorten

            log.warning("store process: %s failed: %s", op, shorten(exc))
            answer = ("err", shorten(exc), is_transient(exc))
        try:
            conn.send_bytes(pickle.dumps(answer, pickle.HIGHEST_PROTOCOL))
        except OSError:
            return
        if op == "close":
            writer.close()
            return


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="estatewatch's telemetry writer process (internal)")
    p.add_argument("--fd", type=int, required=True)
    p.add_argument("--path", type=Path, required=True)
    p.add_argument("--latest-interval-s", type=float, default=0.0)
    p.add_argument("--parent", type=int, required=True)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s store %(message)s")
    gc.set_threshold(50_000, 20, 20)  # as the service (estatewatch.cli): a commit's garbage
    serve(Connection(a.fd), a.path, a.latest_interval_s, a.parent)


if __name__ == "__main__":
    main()
