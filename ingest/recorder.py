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

import functools
import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, TypeVar

from prometheus_client import Histogram

from ingest.acks import acknowledge, acks_due, drop_fenced, drop_revoked, free, send_acks
from ingest.commit_batch import CommitBatch, count_commit, count_written
from ingest.commit_failures import STORE_REFUSED, is_transient, shorten
from ingest.decoder import rank
from ingest.fanout import Fanout
from ingest.handoff import Handoff
from ingest.lanes import Outcome, Received
from ingest.model import DeadLetter, NotOwner
from ingest.pipeline import Delivery
from ingest.recorder_tasks import RecorderTask
from ingest.state import StateStore
from ingest.stats import IngestStats
from ingest.telemetry_store import TelemetryStore, WriteResult, submit_write

log = logging.getLogger(__name__)

T = TypeVar("T")

_dev = attrgetter("dev")  # a reading's or an event's device

# Telemetry commits in flight at once: the store process commits one while the recorder
# acknowledges the one before and prepares the next (events go beside them, see Recorder.run).
IN_FLIGHT = 2


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
    # nothing in flight and waiting for the hand-off: the decoder then hands over a short
    # batch at once rather than fill a long one while the store idles (``waiting_for_work``)
    _idle: bool = field(default=False, init=False, repr=False)
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
        flight: deque[CommitBatch] = deque()
        self.handoff.waker = self.fanout.handoff.taker = self._wake
        while True:
            if not self._land_answered(flight):
                return
            if not flight:
                self._run_tasks()  # rollup merges and purges: the store alone
            elif not self._tasks.empty():  # a task waits: nothing more is sent until it ran
                self._wait_answer(flight)
                continue
            telemetry = sum(not b.urgent for b in flight)
            # No new telemetry commit while IN_FLIGHT are, nor while the listeners are behind
            # (their hand-off has no slot left for it): this thread then waits here, where it
            # still sends and lands events, never in the listeners' hand-off.
            if telemetry >= IN_FLIGHT or not self.fanout.room(telemetry):
                for events in self.handoff.take_events():
                    if events := drop_revoked(events):
                        flight.append(self._begin(events, urgent=True))
                self._wait_answer(flight, listeners=telemetry < IN_FLIGHT)
                continue
            self._idle = not flight
            try:
                where, pending = self.handoff.get(timeout=0 if flight else 0.05)
            except queue.Empty:
                if flight:
                    self._wait_answer(flight)
                else:
                    self.progress = time.monotonic()  # idle: nothing is waiting for it
                    self.telemetry.flush_latest_if_due()
                continue
            self._idle = False
            if pending is None:  # the decoder has drained the lanes and stopped
                while flight:
                    self._wait_answer(flight)
                    if not self._land_answered(flight):
                        return
                self.telemetry.flush_latest_if_due()
                self.fanout.end()
                return
            pending = drop_revoked(pending)
            if pending:
                flight.append(self._begin(pending, urgent=where == Handoff.EVENTS))

    def waiting_for_work(self) -> bool:
        """Whether the store would idle now: nothing in flight, nothing handed over (read by
        the decoder, without a lock: it only sizes a batch)."""
        return self._idle and self.handoff.telemetry_waiting == 0

    def _wait_answer(self, flight: deque[CommitBatch], listeners: bool = False) -> None:
        """Until a batch in flight can land or the hand-off is given one (events go out while
        telemetry commits), or (``listeners``: waiting for them) the listeners take a commit:
        one event for all, no polling, which woke this thread (and took the interpreter lock
        from the decoder and the rules) 200 times a second."""
        if flight and (flight[0].answered() or any(b.urgent and b.answered() for b in flight)):
            return
        if not flight and not listeners:
            return
        self._wake.wait(0.05)  # the timeout only bounds a wake-up missed by a bug
        self._wake.clear()  # the caller looks at everything again before waiting again

    def _land_answered(self, flight: deque[CommitBatch]) -> bool:
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

    def _land(self, b: CommitBatch) -> bool:
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
        count_commit(b.items, b.started, self.stats, self.commit_seconds)
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
        acks = acks_due(pending)
        free(pending)
        self.fanout.put(rank(pending), fresh, functools.partial(send_acks, acks))

    def _recover(self, flight: deque[CommitBatch]) -> bool:
        """A write in flight failed: wait for every answer, land the batches that committed
        (they are committed, so first), then store the failed ones one after another the
        serial way: retried while the store fails, split down to the message at fault when
        it refuses one (``commit``). Their messages carry what was done (``lettered``,
        ``outcome``, ``written``), so only the rest is redone."""
        while not all(b.answered() for b in flight):
            wait([b.write.answer for b in flight if b.write is not None], timeout=0.05)
        failed: list[CommitBatch] = []
        for b in flight:
            if b.failure() is None and self._land(b):
                continue
            exc = b.failure()
            assert exc is not None
            if isinstance(exc, NotOwner):  # no failure: the serial way drops those estates
                b.mark_written()
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

    def _failed(self, b: CommitBatch, exc: BaseException) -> None:
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
        b.mark_written()

    def _acknowledge(self, pending: list[Received]) -> None:
        """Acknowledge a committed batch, a lane's PUBACKs in one write, and free its bytes."""
        acknowledge(pending)

    def _abandon(self, pending: list[Received]) -> None:
        """Stopping while the store fails: leave the batch unacknowledged (the broker delivers
        it again) and end the recorder, the decoder and the listeners."""
        log.warning(
            "ingest: stopping while the store fails; %d messages are left unacknowledged for "
            "the broker to deliver again",
            sum(p.outcome is None for p in pending),
        )
        self.abandoned.set()
        free(pending)
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
        dropped = drop_fenced(items, written, exc)
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
                b.mark_written()
                raise
            self._written(b, result)
        self._store_statuses(items)
        count_commit(items, b.started, self.stats, self.commit_seconds)

    def _begin(self, items: list[Received], urgent: bool = False) -> CommitBatch:
        """The steps before a batch's telemetry commit (dead letters, devices), then the write
        handed to the store, which finds duplicates in the write's own transaction and answers
        once committed (at once; the store process later). A failure before the write is kept
        on the batch (``error``) for the serial way."""
        b = CommitBatch.gather(items)
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

    def _store_dead_letters(self, b: CommitBatch) -> None:
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

    def _register_devices(self, b: CommitBatch) -> None:
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

    def _written(self, b: CommitBatch, result: WriteResult) -> None:
        """What the commit made of each message (``count_written``); the seq book's gaps."""
        count_written(b, result, self.stats)
        self.stats.gateway_lost = self.telemetry.gateway_lost()

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
