"""The telemetry writer in a process of its own (issue 15, "use both cores").

In one process the SQLite writer thread waited ~40 % of its time for the interpreter lock
that the decoder, the rules and paho held. Here ``TelemetryWriter`` (dedup against the seq
book, the readings' rows, the insert, ``latest``, the seq book, rollup merges and purges) runs
in a child process with an interpreter of its own; the service's recorder thread keeps
everything else (state store, acknowledgements, listeners).

``StoreProcess`` is the main side: the same calls as ``TelemetryWriter`` (``TelemetryStore``)
and ``submit_write`` (``PipelinedStore``), requests on a socket pair answered in the child's
order by a thread of this process (``_receive``), each on its own future. A write is found
duplicates of and committed by the child in one turn (one round trip a commit), and the
recorder keeps two commits with it (``recorder.IN_FLIGHT``), so the child commits one while
the recorder acknowledges the other: the two processes overlap instead of taking turns. The
child's reader thread takes requests off the socket as they come (bounded: CHILD_QUEUE) and
queues events before telemetry writes not yet started. A batch crosses as msgpack (msgspec, in
C: ~1 µs a reading), encoded by the decoder thread (``prepare_rows``), and is decoded in the
child into structs with the same attributes. A write is answered only after the child's COMMIT,
so the recorder still acknowledges only what is committed.

Crashes:
- the child dies (kill -9): its open transaction rolls back; every request in flight fails as
  ``StoreDown`` (an OSError: transient, so the recorder retries, nothing is acknowledged); a
  write the child had judged (``PendingWrite.judged``, sent before its COMMIT) may have
  committed, which the retry tells apart; the next request, or the supervisor thread within a
  second, starts a new child, which loads the seq book from the file, so a batch it committed
  before dying is found stored on the retry;
- the service dies: the child sees its socket close (or its parent gone, ppid, within 50 ms)
  and exits; it may finish the commit it is in, which nobody acknowledged, so the broker
  delivers it again and the next child (which waits for the old one's file lock first) finds it
  stored.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gc
import itertools
import logging
import os
import pickle
import queue
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import msgspec

from ingest.malloc import tune_malloc
from ingest.model import EstateBatch
from ingest.retention import RollupPlan
from ingest.telemetry import FoldReader, TelemetryWriter
from ingest.telemetry_store import (
    PendingWrite,
    PreparedRows,
    RawSink,
    TelemetryStore,
    WriteResult,
)

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0  # a child that is not ready by then has failed to start
LOCK_TIMEOUT_S = 30.0  # a child waits this long for an old one (its parent gone) to exit
# Requests the child takes off its socket ahead of the one it works on: more waits in the
# parent's send (the recorder keeps at most two commits and the events in flight).
CHILD_QUEUE = 8
# Send buffer (capped by the kernel): a commit's request is copied at once, not sent piecemeal
# as the child's reader gets its lock (the recorder waited there 18 % of its time, events too).
SEND_BUFFER = 4 << 20


class StoreDown(OSError):
    """The store process died or could not be started: transient (``commit_failures.is_transient``
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
        self._lock = threading.Lock()  # sends, starts and restarts
        self._closing = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._ready = False  # the child has said it is
        self._gateway_lost: dict[tuple[str, str], int] = {}
        # requests sent and not yet answered, by id: (op, its answer, the write's handle)
        self._waiting: dict[int, tuple[str, Future[Any], PendingWrite | None]] = {}
        self._waiting_lock = threading.Lock()
        self._ids = itertools.count(1)
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

    def in_flight(self) -> int:
        """Requests sent to the child and not yet answered (tests, health)."""
        with self._waiting_lock:
            return len(self._waiting)

    def _start(self) -> None:
        """Start a child (under ``_lock``); its "ready" is waited for by the first request, so
        the service's start does not wait for the child's imports."""
        ours, theirs = socket.socketpair()
        with contextlib.suppress(OSError):
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
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
        it cannot open the file; StoreDown if it is not ready within START_TIMEOUT_S. Then a
        thread of this child's own takes its answers."""
        if self._ready:
            return
        assert self._conn is not None and self._proc is not None
        try:
            if not self._conn.poll(START_TIMEOUT_S):
                raise StoreDown(f"not ready in {START_TIMEOUT_S:.0f} s")
            kind, value = pickle.loads(self._conn.recv_bytes())
        except (EOFError, OSError) as exc:
            self._lost(repr(exc))
            raise StoreDown(f"the store process did not start: {exc!r}") from exc
        if kind != "ready":
            self._lost(str(value))
            raise StoreDown(f"the store process could not open {self.path}: {value}")
        self._ready, self._gateway_lost = True, value
        threading.Thread(
            target=self._receive,
            args=(self._conn,),
            name=f"ingest-store-answers-{self._proc.pid}",
            daemon=True,
        ).start()
        log.info("ingest: store process %d writes %s", self._proc.pid, self.path)

    def ready(self) -> None:
        """Wait until a child is ready (benches: its start is not what they time)."""
        with self._lock:
            if not self.alive():
                self._restart()
            self._wait_ready()

    def _lost(self, why: str) -> None:
        """The child is gone (under ``_lock``): note it, and fail every request it had not
        answered (StoreDown: a write's outcome is unknown, see ``PendingWrite.judged``); the
        next request or the supervisor starts another."""
        if self._conn is not None:
            self._hang_up()
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self.last_exit = self._proc.wait()
        with self._waiting_lock:
            waiting, self._waiting = self._waiting, {}
        for op, answer, _pending in waiting.values():
            answer.set_exception(StoreDown(f"the store process died during {op}: {why}"))
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.error("ingest: the store process ended (exit %s); starting another", self.last_exit)

    def _hang_up(self) -> None:
        """Done with this child's socket (under ``_lock``). Its answers thread may be reading it:
        the socket is shut down, which ends that read, and the thread closes it; closed here,
        its descriptor could be handed to the next child's socket while that thread reads."""
        assert self._conn is not None
        if self._ready:
            with contextlib.suppress(OSError):
                dup = socket.socket(fileno=os.dup(self._conn.fileno()))
                try:
                    dup.shutdown(socket.SHUT_RDWR)
                finally:
                    dup.close()
        else:  # no answers thread yet
            self._conn.close()
        self._conn = None

    def _restart(self) -> None:
        self._lost("restarted")
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
    def _receive(self, conn: Connection) -> None:
        """One child's answers, in the order it gives them (events may overtake telemetry):
        each settles its request's future. Ends when the child's socket closes."""
        while True:
            try:
                rid, kind, *value = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError) as exc:
                with self._lock:
                    if self._conn is conn:  # not hung up on purpose: the child died
                        self._lost(repr(exc))
                conn.close()
                return
            if kind == "judged":  # the write's dedup verdict, sent before its COMMIT
                with self._waiting_lock:
                    entry = self._waiting.get(rid)
                if entry is not None and entry[2] is not None:
                    entry[2].judged = set(value[0])
                continue
            with self._waiting_lock:
                entry = self._waiting.pop(rid, None)
            if entry is None:
                continue
            op, answer, pending = entry
            if kind == "err":
                if pending is not None:
                    pending.judged = None  # rolled back: nothing of it was committed
                answer.set_exception(StoreRefused(value[0], value[1]))
            elif op == "write":
                values, readings, events, found, lost = value[0]
                if lost:  # a new dict: readers (metrics) may be iterating the old one
                    self._gateway_lost = {**self._gateway_lost, **lost}
                answer.set_result(WriteResult(values, readings, events, set(found)))
            else:
                answer.set_result(value[0])

    def _send(
        self,
        op: str,
        args: tuple[Any, ...],
        urgent: bool = False,
        pending: PendingWrite | None = None,
    ) -> Future[Any]:
        """Send one request (under ``_lock``; starts a child if none runs); its answer comes
        on the future. Waits only while the child's queue is full."""
        # not alive(): its waitpid gives up the interpreter lock, and taking it back waited
        # behind the decoder and the rules (8 % of the writer thread); a dead child's socket
        # fails the send, and its answers thread sees it closed
        if self._conn is None:
            self._restart()
        self._wait_ready()
        assert self._conn is not None
        rid = next(self._ids)
        answer: Future[Any] = pending.answer if pending is not None else Future()
        with self._waiting_lock:
            self._waiting[rid] = (op, answer, pending)
        try:
            self._conn.send_bytes(pickle.dumps((rid, op, urgent, args), pickle.HIGHEST_PROTOCOL))
        except (EOFError, OSError) as exc:
            self._lost(repr(exc))  # fails this request too
        return answer

    def _submit(
        self,
        op: str,
        args: tuple[Any, ...],
        urgent: bool = False,
        pending: PendingWrite | None = None,
    ) -> Future[Any]:
        with self._lock:
            if self._closing.is_set():
                raise StoreDown("the store process is closed")
            return self._send(op, args, urgent, pending)

    def _call(self, op: str, *args: Any) -> Any:
        return self._submit(op, args).result()

    def prepare_rows(self, batch: EstateBatch) -> PreparedRows | None:
        """The batch as it crosses to the child, encoded on the decoder thread while the
        writer waits for the commit before (the series ids live in the child: it makes the
        rows)."""
        return PreparedRows(_ENCODER.encode(batch), len(batch.readings))

    def find_duplicates(self, batches: Sequence[EstateBatch]) -> set[int]:
        keys = [(b.estate, b.gateway, b.seq) for b in batches]
        return set(self._call("find_duplicates", keys))

    def _blobs(
        self, batches: Sequence[EstateBatch], prepared: Sequence[PreparedRows | None] | None
    ) -> list[bytes]:
        ready = prepared or [None] * len(batches)
        return [p.json if p else _ENCODER.encode(b) for b, p in zip(batches, ready, strict=True)]

    def submit_write(
        self,
        batches: Sequence[EstateBatch],
        prepared: Sequence[PreparedRows | None] | None,
        urgent: bool = False,
    ) -> PendingWrite:
        """One commit's write, de-duplicated by the child inside its transaction, answered
        later: the recorder prepares the next commit meanwhile. ``urgent`` (events): the child
        takes it before the telemetry writes it has not started."""
        pending = PendingWrite()
        try:
            self._submit("write", (self._blobs(batches, prepared), None), urgent, pending)
        except StoreDown as exc:
            if not pending.answer.done():
                pending.answer.set_exception(exc)
        return pending

    def write(
        self,
        batches: Sequence[EstateBatch],
        duplicates: set[int] | None = None,
        prepared: Sequence[PreparedRows | None] | None = None,
    ) -> WriteResult:
        dups = sorted(duplicates) if duplicates is not None else None
        pending = PendingWrite()
        self._submit("write", (self._blobs(batches, prepared), dups), False, pending)
        return pending.answer.result()

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
        answer: Future[Any] | None = None
        with self._lock:
            if self._ready and self.alive():
                answer = self._send("close", ())
            elif self._conn is not None:  # still starting: it reads the close once ready
                with contextlib.suppress(OSError):
                    self._conn.send_bytes(pickle.dumps((0, "close", False, ())))
        if answer is not None:
            with contextlib.suppress(Exception):
                answer.result(10)
        with self._lock:
            if self._conn is not None:
                self._hang_up()
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


def _handlers(
    writer: TelemetryWriter, judged: Callable[[list[int]], None]
) -> dict[str, Callable[..., Any]]:
    decode = msgspec.msgpack.Decoder(_Batch).decode
    told: dict[tuple[str, str], int] = dict(writer.gateway_lost())  # what the parent knows

    def find_duplicates(keys: list[tuple[str, str, int | None]]) -> list[int]:
        return sorted(writer.find_duplicates([EstateBatch(e, g, seq=s) for e, g, s in keys]))

    def write(blobs: list[bytes], dups: list[int] | None) -> tuple[Any, ...]:
        # the structs have EstateBatch's attributes: the writer reads nothing else
        batches = cast(list[EstateBatch], [decode(b) for b in blobs])
        if dups is None:  # found here, in this commit's turn: one round trip a commit
            found = writer.find_duplicates(batches)
            judged(sorted(found))  # before the COMMIT: see PendingWrite.judged
        else:
            found = set(dups)
        r = writer.write(batches, found)
        # the losses of the gateways this write touched, where they changed
        lost: dict[tuple[str, str], int] = {}
        for key in {(b.estate, b.gateway) for b in batches}:
            g = writer.seqs.gateways.get(key)
            if g is not None and told.get(key) != g.lost:
                lost[key] = told[key] = g.lost
        return r.values, r.readings, r.events, sorted(r.duplicates), lost

    return {
        "find_duplicates": find_duplicates,
        "write": write,
        "apply_rollup": writer.apply_rollup,
        "purge": writer.purge,
        "close": writer.flush_latest,
    }


_END = "end"  # the reader's word when the parent's socket closed


class _ParentGone(Exception):
    """The socket to the parent failed while the child was telling it something."""


def _read_requests(conn: Connection, requests: queue.PriorityQueue[tuple[Any, ...]]) -> None:
    """The child's reader thread: takes requests off the socket as they come, so the parent's
    send never waits for the commit in progress; events (urgent) are queued before
    telemetry, the rest in order; the parent gone goes first (what it sent is unanswered)."""
    order = itertools.count()
    while True:
        try:
            rid, op, urgent, args = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            requests.put((-1, next(order), 0, _END, ()))
            return
        requests.put((0 if urgent else 1, next(order), rid, op, args))


def serve(conn: Connection, path: Path, latest_interval_s: float, parent: int) -> None:
    """The child's loop: one request at a time, in the order the reader queued them; "now"
    folded while idle; ends when asked, when the socket closes or when the parent is gone."""
    try:
        _wait_for_lock(path)
        writer = TelemetryWriter(path, latest_interval_s=latest_interval_s)
    except Exception as exc:
        conn.send_bytes(pickle.dumps(("error", f"{type(exc).__name__}: {exc}"[:500])))
        return
    conn.send_bytes(pickle.dumps(("ready", writer.gateway_lost())))
    requests: queue.PriorityQueue[tuple[Any, ...]] = queue.PriorityQueue(CHILD_QUEUE)
    threading.Thread(target=_read_requests, args=(conn, requests), daemon=True).start()
    rid = 0

    def judged(dups: list[int]) -> None:
        try:
            conn.send_bytes(pickle.dumps((rid, "judged", dups), pickle.HIGHEST_PROTOCOL))
        except OSError as exc:
            raise _ParentGone from exc

    handlers = _handlers(writer, judged)
    while True:
        try:
            _rank, _order, rid, op, args = requests.get(timeout=0.05)
        except queue.Empty:
            if os.getppid() != parent:
                return  # the service is gone: whatever it sent was not acknowledged
            writer.flush_latest_if_due()
            continue
        if op == _END:
            return
        try:
            answer: tuple[Any, ...] = (rid, "ok", handlers[op](*args))
        except _ParentGone:
            return  # nothing of this write was committed, and nobody waits for it
        except Exception as exc:
            # the parent's verdicts, imported only when needed (the child starts sooner)
            from ingest.commit_failures import is_transient, shorten

            log.warning("store process: %s failed: %s", op, shorten(exc))
            answer = (rid, "err", shorten(exc), is_transient(exc))
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
    tune_malloc()  # as the service: SQLite's pages and a commit's rows churn the heap
    serve(Connection(a.fd), a.path, a.latest_interval_s, a.parent)


if __name__ == "__main__":
    main()
