"""Ingest's recorder: the one thread that writes the stores, built as Home Assistant's recorder
is (homeassistant/components/recorder: core.py's thread, tasks.py's typed tasks).

It takes the decoder's batches off a bounded hand-off, commits many messages per transaction
and only then acknowledges them to the broker, so a crash before a commit means the broker
delivers again; what was stored goes on to the listeners (``Fanout``). Between two commits it
runs the queued ``RecorderTask``s (rollup merges, retention), because SQLite has one writer.

A commit that fails is told apart by its cause (``is_transient``): a store that is locked,
unreachable or full is retried, with backoff, until it takes the batch; anything else is taken
to be a message's fault, and the batch is split in halves, and those again, until the message
the store refuses is found alone: that one is dead-lettered (``store_refused``) and
acknowledged, the rest committed. So no message can stop ingest for every estate (issue 12).

A scaled-out worker (issue 16) commits only for the partitions it holds: messages of a
partition it lost (their session ``revoked``), and those of estates whose commit was fenced
(``NotOwner`` from the store's transaction), are dropped, neither stored nor acknowledged nor
given to the listeners, and the rest of the batch is committed without them; the broker gives
the dropped ones to the partition's next owner.
"""

from __future__ import annotations

import abc
import functools
import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from prometheus_client import Histogram

from ingest.decoder import rank
from ingest.fanout import Fanout
from ingest.handoff import ByteBudget, Handoff
from ingest.lanes import Lane, Outcome, Received, ack_all
from ingest.model import DeadLetter, EstateBatch, NotOwner
from ingest.pipeline import Delivery
from ingest.retention import RollupPlan
from ingest.state import StateStore
from ingest.stats import IngestStats
from ingest.telemetry import PendingWrite, PreparedRows, TelemetryStore, WriteResult, submit_write
from protocol.clock import now_ms

log = logging.getLogger(__name__)

T = TypeVar("T")

# The reason of a message dead-lettered because the store refused it (not the decoder).
STORE_REFUSED = "store_refused"

# Statuses of a store's HTTP API (InfluxDB) that blame the data, not the store.
_DATA_STATUSES = frozenset({400, 413, 422})

_dev = attrgetter("dev")  # a reading's or an event's device

# Telemetry commits in flight at once: the store process commits one while the recorder
# acknowledges the one before and prepares the next (events go beside them, see Recorder.run).
IN_FLIGHT = 2


def is_transient(exc: BaseException) -> bool:
    """True when a commit failed because of the store itself (locked, unreachable, full, a
    server error): the same batch may go through later, so it is retried, never dead-lettered.
    False blames the data: an integer SQLite cannot hold, a value that cannot be encoded, a
    constraint, a point InfluxDB refuses as bad (400/413/422)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, sa.exc.DBAPIError):  # SQLAlchemy's wrapper of a driver's error
            if e.connection_invalidated:
                return True
            if isinstance(e.orig, sqlite3.Error):
                e = e.orig  # judged below: SQLite's InterfaceError is a value it cannot bind
                continue
            # PostgreSQL: a lost or refused connection, a server shutting down
            return isinstance(e, sa.exc.OperationalError | sa.exc.InterfaceError)
        verdict = getattr(e, "transient", None)  # the store process's own verdict
        if type(verdict) is bool:
            return verdict
        if isinstance(e, sqlite3.OperationalError | OSError):
            return True  # locked, busy, read-only, disk full or I/O; OSError: the network
        status = getattr(e, "status", None)
        if type(status) is int and 400 <= status < 600:  # an HTTP store (InfluxDB)
            return status not in _DATA_STATUSES
        if type(e).__module__.split(".")[0] == "urllib3":
            return True  # connection refused, timeouts, retries used up
        e = getattr(e, "orig", None) or e.__cause__ or e.__context__
    return False


def _send_acks(acks: list[tuple[Lane, int, list[int]]]) -> None:
    """PUBACKs, a lane's in one write; none on a connection newer than the messages' (they
    named other messages there) or of a partition lost meanwhile."""
    for lane, generation, mids in acks:
        if lane.generation == generation and not lane.revoked:
            ack_all(lane.client, mids)


def shorten(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- tasks: what else runs on the recorder's thread, between two commits ---------------------
class RecorderTask(abc.ABC, Generic[T]):
    """A piece of work for the recorder's thread (a write: SQLite has one writer); its answer
    goes to the caller's Future."""

    @abc.abstractmethod
    def run(self, recorder: Recorder) -> T: ...


@dataclass(frozen=True)
class ApplyRollupTask(RecorderTask[int]):
    """Merge a fold the scheduler prepared on its own read-only connection; raw rows covered."""

    plan: RollupPlan

    def run(self, recorder: Recorder) -> int:
        return recorder.telemetry.apply_rollup(self.plan)


@dataclass(frozen=True)
class PurgeTask(RecorderTask[int]):
    """Delete telemetry past retention; raw rows deleted."""

    raw_before_ms: int
    minute_rollups_before_ms: int

    def run(self, recorder: Recorder) -> int:
        return recorder.telemetry.purge(self.raw_before_ms, self.minute_rollups_before_ms)


@dataclass(frozen=True)
class CallTask(RecorderTask[T]):
    """A one-off callable (tests holding the thread, a tool's one-time write); the service's
    own upkeep has a task type of its own."""

    fn: Callable[[], T]

    def run(self, recorder: Recorder) -> T:
        return self.fn()


@dataclass
class _Batch:
    """One store call's messages, as the steps of ``Recorder._store`` see them."""

    items: list[Received]
    with_batch: list[Received] = field(default_factory=list)  # those carrying readings/events
    batches: list[EstateBatch] = field(default_factory=list)  # theirs, index for index
    prepared: list[PreparedRows | None] = field(default_factory=list)  # ditto
    duplicates: set[int] = field(default_factory=set)  # indexes into batches, when asked first
    started: float = field(default_factory=time.perf_counter)
    urgent: bool = False  # events
    write: PendingWrite | None = None  # its telemetry write, once handed to the store
    written_before: list[bool] = field(default_factory=list)  # with_batch's, before the write
    error: Exception | None = None  # a step before the write failed

    def answered(self) -> bool:
        return self.error is not None or self.write is None or self.write.answer.done()

    def failure(self) -> BaseException | None:
        if self.error is not None:
            return self.error
        return self.write.answer.exception() if self.write is not None else None


@dataclass(eq=False)
class Recorder:
    state: StateStore
    telemetry: TelemetryStore
    stats: IngestStats
    handoff: Handoff[list[Received]]
    fanout: Fanout
    closing: threading.Event  # a stop does not wait for a failing store
    abandoned: threading.Event  # set when it gives up (the decoder stops with it)
    # drain the hand-off, then end
    stopping: threading.Event = field(default_factory=threading.Event, init=False)
    # set by whoever exports metrics
    commit_seconds: Histogram | None = field(default=None, init=False)
    # A scaled-out worker acknowledges a commit once its listeners (the rules) have had it,
    # not before: a worker that dies in between leaves it unacknowledged, so the partition's
    # next holder gets it again (``Received.redelivered``) and gives it to its rules. (The
    # one-process service acknowledges at the commit: the rules do not hold the broker back.)
    ack_after_listeners: bool = field(default=False, init=False)
    # last time it was idle or finished a batch or task
    progress: float = field(default_factory=time.monotonic, init=False)
    _known_devices: dict[str, set[str]] = field(init=False, repr=False)  # estate -> devices
    # set when a commit is answered or the hand-off is given a batch: what run() waits for
    _wake: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _tasks: queue.Queue[tuple[RecorderTask[Any], Future[Any]]] = field(init=False, repr=False)
    # no task is queued after stop's drain
    _tasks_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    thread: threading.Thread = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._known_devices = {}
        for estate, device in self.state.known_devices():
            self._known_devices.setdefault(estate, set()).add(device)
        self._tasks = queue.Queue(16)
        self.thread = threading.Thread(target=self.run, name="ingest-writer", daemon=True)

    # --- tasks -------------------------------------------------------------------------------
    def queue_task(self, task: RecorderTask[T]) -> Future[T]:
        """Run ``task`` on the recorder's thread between commits. Waits while 16 are queued;
        cancelled at once when the recorder is stopping."""
        future: Future[T] = Future()
        while True:
            with self._tasks_lock:
                if self.stopping.is_set():  # the recorder is going: nothing would run it
                    future.cancel()
                    return future
                try:
                    self._tasks.put_nowait((task, future))
                    return future
                except queue.Full:
                    pass
            time.sleep(0.05)  # bounded: a caller waits rather than piling up

    def stop_taking_tasks(self) -> None:
        with self._tasks_lock:
            self.stopping.set()

    def cancel_tasks(self) -> None:
        """After the recorder has stopped: tasks still queued will not run; their callers get
        CancelledError at once instead of waiting out their timeout."""
        while True:
            try:
                _task, future = self._tasks.get_nowait()
            except queue.Empty:
                return
            future.cancel()

    def _run_tasks(self) -> None:
        while True:
            try:
                task, future = self._tasks.get_nowait()
            except queue.Empty:
                return
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(task.run(self))
                except Exception as exc:
                    log.exception("ingest: recorder task %r failed", task)
                    future.set_exception(exc)
                self.progress = time.monotonic()  # a long task is not a stuck writer

    # --- the thread --------------------------------------------------------------------------
    def run(self) -> None:
        """Commits pipelined: up to IN_FLIGHT telemetry writes are with the store at once (the
        store process commits one while this thread acknowledges the one before and prepares
        the next), plus any events, which never wait for a telemetry slot. Each batch is
        acknowledged and handed to the listeners when its own commit is answered, telemetry
        in order; a failed one sends everything in flight the serial way (``_recover``)."""
        flight: deque[_Batch] = deque()
        self.handoff.waker = self._wake
        while True:
            if not self._land_answered(flight):
                return
            if not flight:
                self._run_tasks()  # rollup merges and purges: the store alone
            elif not self._tasks.empty():  # a task waits: nothing more is sent until it ran
                self._wait_answer(flight)
                continue
            if sum(not b.urgent for b in flight) >= IN_FLIGHT:
                for events in self.handoff.take_events():
                    if events := self._drop_revoked(events):
                        flight.append(self._begin(events, urgent=True))
                self._wait_answer(flight)
                continue
            try:
                where, pending = self.handoff.get(timeout=0 if flight else 0.05)
            except queue.Empty:
                if flight:
                    self._wait_answer(flight)
                else:
                    self.progress = time.monotonic()  # idle: nothing is waiting for it
                    self.telemetry.flush_latest_if_due()
                continue
            if pending is None:  # the decoder has drained the lanes and stopped
                while flight:
                    self._wait_answer(flight)
                    if not self._land_answered(flight):
                        return
                self.telemetry.flush_latest_if_due()
                self.fanout.end()
                return
            pending = self._drop_revoked(pending)
            if pending:
                flight.append(self._begin(pending, urgent=where == Handoff.EVENTS))

    def _drop_revoked(self, pending: list[Received]) -> list[Received]:
        """Messages of a partition lost while they waited (their session ``revoked``) are
        dropped before the store: not stored, not acknowledged, their bytes freed; the rest."""
        dropped = [p for p in pending if p.lane.revoked]
        if not dropped:
            return pending
        for p in dropped:
            p.outcome = Outcome.NOT_OWNER
        self._acknowledge(dropped)  # acknowledges none of them: frees their bytes
        return [p for p in pending if p.outcome is None]

    def _wait_answer(self, flight: deque[_Batch]) -> None:
        """Until a batch in flight can land or the hand-off is given one (events go out while
        telemetry commits): one event for both, no polling, which woke this thread (and took
        the interpreter lock from the decoder and the rules) 200 times a second."""
        if not flight or flight[0].answered() or any(b.urgent and b.answered() for b in flight):
            return
        self._wake.wait(0.05)  # the timeout only bounds a wake-up missed by a bug
        self._wake.clear()  # the caller looks at everything again before waiting again

    def _land_answered(self, flight: deque[_Batch]) -> bool:
        """Acknowledge and pass on the batches whose commits are answered: events whenever
        theirs is, telemetry in the order sent. A failure: ``_recover``. False when the
        recorder gave up (stopping while the store fails)."""
        for b in [b for b in flight if b.urgent and b.answered() and b.failure() is None]:
            if self._land(b):
                flight.remove(b)
        while flight and flight[0].answered() and flight[0].failure() is None:
            if not self._land(flight[0]):
                break
            flight.popleft()
        if any(b.answered() and b.failure() is not None for b in flight):
            return self._recover(flight)
        return True

    def _land(self, b: _Batch) -> bool:
        """A batch whose write committed: its results, statuses, acknowledgement, listeners.
        False when storing a status failed (kept as the batch's ``error``: ``_recover``)."""
        # (outcomes set: a retry of this landing, the write's results already counted)
        if b.write is not None and b.with_batch and b.with_batch[0].outcome is None:
            self._written(b, b.write.answer.result())
        try:
            self._store_statuses(b.items)
        except Exception as exc:
            b.error = exc
            return False
        self._count_commit(b.items, b.started)
        self.stats.failing_since = None
        self._done(b.items)
        return True

    def _done(self, pending: list[Received]) -> None:
        self.progress = time.monotonic()
        fresh = [
            p.delivery for p in pending if p.outcome is Outcome.STORED and p.delivery is not None
        ]
        if not self.ack_after_listeners:
            self._acknowledge(pending)
            self.fanout.put(rank(pending), fresh)
            return
        acks = self._acks(pending)
        self._free(pending)
        self.fanout.put(rank(pending), fresh, functools.partial(_send_acks, acks))

    def _recover(self, flight: deque[_Batch]) -> bool:
        """A write in flight failed: wait for every answer, land the batches that committed
        (they are committed, so first), then store the failed ones one after another the
        serial way: retried while the store fails, split down to the message at fault when
        it refuses one (``commit``). Their messages carry what was done (``lettered``,
        ``outcome``, ``written``), so only the rest is redone."""
        while not all(b.answered() for b in flight):
            wait([b.write.answer for b in flight if b.write is not None], timeout=0.05)
        failed: list[_Batch] = []
        for b in flight:
            if b.failure() is None and self._land(b):
                continue
            exc = b.failure()
            assert exc is not None
            if isinstance(exc, NotOwner):  # no failure: the serial way drops those estates
                self._mark_written(b)
            else:
                self._failed(b, exc)
            failed.append(b)
        flight.clear()
        for i, b in enumerate(failed):
            delay = 0.5
            while not self.commit(b.items):
                # The store itself failed (locked, unreachable): never drop what was
                # received, retry until it takes the batch. Unacked messages stay with the
                # broker meanwhile, and the full queue holds back more. A stop does not wait.
                if self.closing.wait(delay):
                    self._abandon([p for later in failed[i:] for p in later.items])
                    return False
                delay = min(delay * 2, 10.0)
            self._done(b.items)
        return True

    def _failed(self, b: _Batch, exc: BaseException) -> None:
        """Count a pipelined commit's failure, and mark what its write may have committed."""
        st = self.stats
        st.commit_failures += 1
        st.last_error = shorten(exc)
        if st.failing_since is None:
            st.failing_since = time.monotonic()
        log.warning(
            "ingest: commit of %d messages failed (%s); storing them again one commit at a time",
            len(b.items),
            st.last_error,
        )
        self._mark_written(b)

    @staticmethod
    def _mark_written(b: _Batch) -> None:
        """After a failed write: if its outcome is unknown (the store process died, perhaps
        after its COMMIT), the messages it judged new may be committed; ``written`` tells the
        retry that finds them stored that they are this batch's, not the broker's repeats."""
        judged = b.write.judged if b.write is not None else None
        if judged is not None:
            for i, p in enumerate(b.with_batch):
                p.written = p.written or i not in judged

    def _acknowledge(self, pending: list[Received]) -> None:
        """Acknowledge a committed batch, a lane's PUBACKs in one write, and free its bytes."""
        _send_acks(self._acks(pending))
        self._free(pending)

    @staticmethod
    def _acks(pending: list[Received]) -> list[tuple[Lane, int, list[int]]]:
        """(lane, its connection, message ids) of what of ``pending`` is to be acknowledged."""
        acks: dict[Lane, list[int]] = {}
        for item in pending:
            # an ack on a newer connection would name another message: skip it, the
            # broker redelivers and the seq book drops the repeat
            # (QoS 1 at most: the subscriptions are QoS 1, so the broker sends no QoS 2);
            # nor is one of a partition no longer ours acknowledged (its session is closed)
            mine = item.outcome is not Outcome.NOT_OWNER and not item.lane.revoked
            if item.qos > 0 and item.generation == item.lane.generation and mine:
                acks.setdefault(item.lane, []).append(item.mid)
        return [(lane, lane.generation, mids) for lane, mids in acks.items()]

    @staticmethod
    def _free(pending: list[Received]) -> None:
        freed: dict[ByteBudget, int] = {}
        for item in pending:
            freed[item.lane.budget] = freed.get(item.lane.budget, 0) + item.weight
        for budget, weight in freed.items():  # one wake-up a lane, not one a message
            budget.release(weight)

    def _abandon(self, pending: list[Received]) -> None:
        """Stopping while the store fails: leave the batch unacknowledged (the broker delivers
        it again) and end the recorder, the decoder and the listeners."""
        log.warning(
            "ingest: stopping while the store fails; %d messages are left unacknowledged for "
            "the broker to deliver again",
            sum(p.outcome is None for p in pending),
        )
        self.abandoned.set()
        freed: dict[ByteBudget, int] = {}
        for item in pending:
            freed[item.lane.budget] = freed.get(item.lane.budget, 0) + item.weight
        for budget, weight in freed.items():
            budget.release(weight)
        self.fanout.end()

    # --- one commit --------------------------------------------------------------------------
    def commit(self, pending: list[Received]) -> bool:
        """Store what of ``pending`` is not yet stored; True once every message is stored, a
        duplicate or dead-lettered, False when the store failed (try again later)."""
        for p in pending:
            if p.outcome is None and p.lane.revoked:  # its partition was lost meanwhile
                p.outcome = Outcome.NOT_OWNER
        ok = self._store_or_split([p for p in pending if p.outcome is None])
        st = self.stats
        if ok:
            st.failing_since = None
        elif st.failing_since is None:
            st.failing_since = time.monotonic()
        return ok

    def _store_or_split(self, items: list[Received]) -> bool:
        """Store ``items``; when the store refuses them for something other than its own state,
        store each half on its own, down to the one message at fault, which is dead-lettered.
        False on a failure of the store itself (see is_transient)."""
        if not items:
            return True
        written = [p.written for p in items]
        try:
            self._store(items)
            return True
        except NotOwner as exc:
            return self._not_owner(items, written, exc)
        except Exception as exc:
            self.stats.commit_failures += 1
            self.stats.last_error = shorten(exc)
            if is_transient(exc):
                log.warning(
                    "ingest: commit of %d messages failed (%s); retrying, nothing is "
                    "acknowledged until then",
                    len(items),
                    self.stats.last_error,
                )
                return False
            if len(items) == 1:
                return self._poison(items[0], exc)
            log.warning(
                "ingest: commit of %d messages refused (%s); splitting it to find the message "
                "at fault",
                len(items),
                self.stats.last_error,
            )
        half = len(items) // 2
        # A half stored stays stored if the other fails: a retry skips it (outcome is set).
        return self._store_or_split(
            [p for p in items[:half] if p.outcome is None]
        ) and self._store_or_split([p for p in items[half:] if p.outcome is None])

    def _not_owner(self, items: list[Received], written: list[bool], exc: NotOwner) -> bool:
        """The store's transaction was fenced: this worker no longer owns ``exc.estates``.
        Nothing of it was written (it rolled back), so their messages are dropped (not
        acknowledged: the partition's next owner gets them from the broker) and the rest
        is stored without them."""
        for p, was in zip(items, written, strict=True):
            p.written = was  # rolled back: that write never happened
        dropped = 0
        for p in items:
            d = p.delivery
            if p.outcome is None and d is not None and d.estate in exc.estates:
                p.outcome = Outcome.NOT_OWNER
                dropped += 1
        if not dropped:  # no message of those estates here: not ours to drop, so retry
            self.stats.last_error = shorten(exc)
            log.warning("ingest: commit fenced for estates not in it (%s); retrying", exc)
            return False
        log.info(
            "ingest: %d messages dropped unacknowledged, their next owner takes them (%s)",
            dropped,
            exc,
        )
        return self._store_or_split([p for p in items if p.outcome is None])

    def _poison(self, item: Received, exc: Exception) -> bool:
        """The store refuses this message alone: dead-letter it (bounded, with the reason) so
        it is acknowledged and never tried again. False if even that could not be stored."""
        d = item.delivery
        letter = DeadLetter(
            item.received_ms,
            item.topic,
            STORE_REFUSED,
            f"the store refused this message: {shorten(exc, 800)}",
            item.payload,
            d.estate if d else None,
            d.gateway if d else None,
        )
        try:
            self.state.add_dead_letters([letter])
        except Exception:
            log.exception("ingest: could not dead-letter a message the store refuses; retrying")
            return False
        log.error(
            "ingest: the store refuses a message on %s (%s); dead-lettered as %s",
            item.topic,
            self.stats.last_error,
            STORE_REFUSED,
        )
        item.outcome = Outcome.POISON
        self.stats.poison_messages += 1
        with self.stats.lock:
            self.stats.dead_letters[STORE_REFUSED] += 1
        return True

    def _store(self, items: list[Received]) -> None:
        """Store one batch of messages the serial way (waiting for its commit; raises when a
        store fails). Each step marks the messages it finished, so after a failure a retry or
        a split does only the rest."""
        b = self._begin(items)
        if b.error is not None:
            raise b.error
        if b.write is not None:
            try:
                result = b.write.answer.result()
            except Exception:
                self._mark_written(b)
                raise
            self._written(b, result)
        self._store_statuses(items)
        self._count_commit(items, b.started)

    def _begin(self, items: list[Received], urgent: bool = False) -> _Batch:
        """The steps before a batch's telemetry commit (dead letters, devices), then the write
        handed to the store, which finds duplicates in the write's own transaction and answers
        once committed (at once; the store process later). A failure before the write is kept
        on the batch (``error``) for the serial way."""
        b = self._gather(items)
        b.urgent = urgent
        try:
            if any(p.delivery and p.delivery.dead_letters and not p.lettered for p in b.with_batch):
                # Rare: a message with readings and bad items. Its letters are not written
                # again if it is a duplicate, so the store's verdict is asked first.
                b.duplicates = self.telemetry.find_duplicates(b.batches)
            self._store_dead_letters(b)
            self._register_devices(b)
            if b.with_batch:
                b.written_before = [p.written for p in b.with_batch]
                b.write = submit_write(self.telemetry, b.batches, b.prepared, urgent)
                b.write.answer.add_done_callback(lambda _answer: self._wake.set())
        except Exception as exc:
            b.error = exc
        return b

    @staticmethod
    def _gather(items: list[Received]) -> _Batch:
        b = _Batch(items)
        for p in items:
            if p.delivery is not None and p.delivery.batch is not None:
                b.with_batch.append(p)
                b.batches.append(p.delivery.batch)
                b.prepared.append(p.rows)
        return b

    def _store_dead_letters(self, b: _Batch) -> None:
        """A redelivered message's bad items were dead-lettered the first time. Dead letters
        go first: a crash before the readings commit repeats them (at least once), while the
        readings themselves are stored exactly once."""
        dups = {id(b.with_batch[i]) for i in b.duplicates}
        fresh = [p for p in b.items if not p.lettered and id(p) not in dups]
        letters = [x for p in fresh if p.delivery for x in p.delivery.dead_letters]
        self.state.add_dead_letters(letters)
        for p in b.items:
            p.lettered = True  # a duplicate's letters were stored the first time
        if letters:
            with self.stats.lock:
                for letter in letters:
                    self.stats.dead_letters[letter.reason] += 1

    def _register_devices(self, b: _Batch) -> None:
        """Devices before their readings: one registered for readings that then fail is
        harmless (it exists), while one missed after they commit would wait for its next."""
        new: dict[tuple[str, str], tuple[str, str, str, str, int]] = {}
        for i, batch in enumerate(b.batches):
            if i in b.duplicates:
                continue
            items = batch.readings or batch.events
            # the message's devices as one set, in C: a Python step a reading was ~8 % of
            # this thread under load, and a new device is rare
            known = self._known_devices.get(batch.estate, set())
            if not set(map(_dev, items)) - known:
                continue
            # Registered when the service first heard of it (its uptime counts from
            # then), not at its data's time: a replay or backlog can be months old.
            heard = b.with_batch[i].received_ms
            for r in items:
                key = (batch.estate, r.dev)
                if r.dev not in known and key not in new:
                    new[key] = (batch.estate, r.dev, r.kind, batch.gateway, heard)
        self.state.add_devices(new.values())
        for estate, device in new:
            self._known_devices.setdefault(estate, set()).add(device)

    def _written(self, b: _Batch, result: WriteResult) -> None:
        """What the commit of readings, events and seqs made of each message."""
        # committed by a write whose answer was lost (its process died): stored, and the
        # listeners get it; a message repeated by the broker is a duplicate
        # (or committed by the session's previous holder, which never gave it to its rules)
        recovered = {
            i for i in result.duplicates if b.written_before[i] or b.with_batch[i].redelivered
        }
        for i, p in enumerate(b.with_batch):
            dup = i in result.duplicates and i not in recovered
            p.outcome = Outcome.DUPLICATE if dup else Outcome.STORED
        s = self.stats
        s.committed_messages += len(b.with_batch)
        s.readings += result.readings + sum(len(b.batches[i].readings) for i in recovered)
        s.events += result.events + sum(len(b.batches[i].events) for i in recovered)
        s.duplicates += len(result.duplicates) - len(recovered)
        for batch in b.batches:
            if batch.readings and (
                s.newest_reading_ts is None or batch.readings[-1].ts > s.newest_reading_ts
            ):
                s.newest_reading_ts = batch.readings[-1].ts
        s.gateway_lost = self.telemetry.gateway_lost()

    def _store_statuses(self, items: list[Received]) -> None:
        """Gateway statuses, one at a time (a retry skips those done); command acks logged."""
        for p in items:
            d = p.delivery
            if p.outcome is not None or d is None:
                continue
            if d.status is not None and d.estate and d.gateway:
                self._store_status(p, d)
            if d.command_ack is not None:
                log.info(
                    "gateway %s/%s acknowledged command %s: ok=%s %s",
                    d.estate,
                    d.gateway,
                    d.command_ack.id,
                    d.command_ack.ok,
                    (d.command_ack.error or "")[:200],
                )
            p.outcome = Outcome.STORED
            self.stats.committed_messages += 1

    def _store_status(self, p: Received, d: Delivery) -> None:
        assert d.status is not None and d.estate and d.gateway
        gs = d.status
        dropped = gs.extra.get("dropped")
        # A Last Will carries the time its gateway connected (it is set then); the gateway
        # dropped when the broker sent it, i.e. when it arrived.
        self.state.set_gateway_status(
            d.estate,
            d.gateway,
            gs.state,
            gs.ts if gs.state == "online" else p.received_ms,
            gs.fw,
            gs.buffered,
            dropped if isinstance(dropped, int) and not isinstance(dropped, bool) else None,
        )

    def _count_commit(self, items: list[Received], started: float) -> None:
        s = self.stats
        s.commits += 1
        s.last_commit_ms = now_ms()
        s.last_commit_duration_s = time.perf_counter() - started
        if self.commit_seconds is not None:
            self.commit_seconds.observe(s.last_commit_duration_s)
        seen: dict[tuple[str, str], int] = {}
        for p in items:
            d = p.delivery
            if d and d.estate and d.gateway and (d.batch is not None or d.status is not None):
                seen[(d.estate, d.gateway)] = d.received_ms
        with s.lock:
            s.samples.append((time.monotonic(), s.committed_messages, s.readings))
            s.gateway_last_seen.update(seen)
