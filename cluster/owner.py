"""A worker's partitions, claimed and kept (issue 16): the runner an ingest worker embeds.

Every ``renew_ms`` the ``PartitionOwner`` heartbeats, reads the lease table, and applies
``cluster.leases.plan``: renew what it keeps, release what the assignment gives to another,
claim what is free and given to it. The embedding code hears of it through two callbacks:

- ``on_acquire(partition, epoch)``: start the partition (its MQTT session, its state from
  the database); commits for it carry ``epoch`` (``owner.fence(conn, partition)``);
- ``on_lose(partition)``: stop the partition and drop its in-memory state. Called before a
  release reaches the database (so the next owner never overlaps this one), when a renewal
  is refused, when a commit's fence raised ``LeaseLost``, and when the database could not be
  reached for long enough that the lease may have expired (judged on this host's monotonic
  clock from when the last renewal was *sent*, minus a margin: earlier than the database's
  expiry, never later, so this worker lets go before anyone else can claim).

Callbacks run on the owner's threads, one at a time, and must not block for long.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from cluster.leases import plan
from cluster.partitions import partition_of
from cluster.pg import LeaseLost, LeaseStore, fence

log = logging.getLogger(__name__)

__all__ = ["PartitionOwner"]

WATCH_S = 0.1  # how often local expiry is checked (a round may hang on a cut-off network)


class PartitionOwner:
    def __init__(
        self,
        store: LeaseStore,
        worker: str,
        on_acquire: Callable[[int, int], None] = lambda p, e: None,
        on_lose: Callable[[int], None] = lambda p: None,
        renew_ms: int = 5_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < renew_ms * 2 < store.ttl_ms:
            raise ValueError(f"renew every {renew_ms} ms is too slow for a {store.ttl_ms} ms TTL")
        self.store, self.worker = store, worker
        self.on_acquire, self.on_lose = on_acquire, on_lose
        self.renew_ms = renew_ms
        # let go a margin before the database's expiry: a round's latency, scheduling
        self.margin_ms = max(renew_ms // 2, store.ttl_ms // 5)
        self.clock = clock
        self._held: dict[int, int] = {}  # partition → epoch
        self._deadline: dict[int, float] = {}  # partition → local time it must be let go
        self._lock = threading.Lock()  # _held/_deadline; callbacks run outside it
        self._callbacks = threading.RLock()  # one callback at a time, in order
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.rounds = 0
        self.failed_rounds = 0
        self.last_error = ""
        self.last_round_ms: int | None = None  # the database's clock at the last good round
        self.members: list[str] = []

    # --- what the embedding code reads -------------------------------------------------------
    @property
    def held(self) -> dict[int, int]:
        """Partition → epoch of the leases this worker holds now."""
        with self._lock:
            return dict(self._held)

    def epoch_of(self, partition: int) -> int:
        """The epoch to commit ``partition`` with; LeaseLost when it is not held here."""
        with self._lock:
            epoch = self._held.get(partition)
        if epoch is None:
            raise LeaseLost(partition, self.worker, 0, None, 0)
        return epoch

    def owns(self, estate: str) -> bool:
        """Whether the estate's partition is held here now (for the alert engine's ``owns``)."""
        return partition_of(estate, self.store.partitions) in self.held

    def fence(self, conn: sa.Connection, partition: int) -> int:
        """Inside the caller's commit transaction: lock and check this worker's lease on
        ``partition`` (``cluster.pg.fence``); on LeaseLost the partition is let go here
        (``on_lose``) before the error reaches the caller, who rolls back."""
        epoch = self.epoch_of(partition)
        try:
            # a transaction left open by a cut-off host ends well before its lease does
            fence(conn, partition, self.worker, epoch, self.store.ttl_ms // 3)
        except LeaseLost:
            self._lose({partition: epoch}, "its commit was fenced")
            raise
        return epoch

    def status(self) -> dict[str, Any]:
        """For /healthz and the logs."""
        held = self.held
        return {
            "worker": self.worker,
            "partitions": self.store.partitions,
            "held": sorted(held),
            "epochs": {str(p): e for p, e in sorted(held.items())},
            "members": self.members,
            "rounds": self.rounds,
            "failed_rounds": self.failed_rounds,
            "last_error": self.last_error,
            "lease_ttl_ms": self.store.ttl_ms,
            "renew_ms": self.renew_ms,
        }

    # --- running -----------------------------------------------------------------------------
    def start(self) -> None:
        self.store.migrate()
        for name, target in (("rounds", self._run), ("expiry", self._watch)):
            t = threading.Thread(target=target, name=f"leases-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, release: bool = True) -> None:
        """Stop the rounds; with ``release``, let every partition go (``on_lose`` first) and
        leave the members, so the others take over at their next round, not a TTL later."""
        self._stop.set()
        for t in self._threads:
            t.join(self.store.ttl_ms / 1000)
        if not release:
            return
        held = self.held
        self._lose(held, "stopping")
        try:
            for p, e in held.items():
                self.store.release(self.worker, p, e)
            self.store.leave(self.worker)
        except sa.exc.DBAPIError as exc:  # they expire on their own a TTL later
            log.warning("leases: could not release on stop (%s)", _first_line(exc))

    def _run(self) -> None:
        while not self._stop.is_set():
            started = self.clock()
            self.round()
            self._stop.wait(max(0.0, self.renew_ms / 1000 - (self.clock() - started)))

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_S):
            self.expire()

    def round(self) -> None:
        """One round: heartbeat, read, renew, release, claim. A database error skips the
        rest of the round; the leases it could not renew expire here on their deadline."""
        sent = self.clock()
        try:
            snap = self.store.read(self.worker)
            todo = plan(self.worker, self.held, snap.owners(), snap.members, self.store.partitions)
            if todo.renew:
                sent = self.clock()
                kept = self.store.renew(self.worker, todo.renew)
                self._renewed({p: todo.renew[p] for p in kept}, sent)
                lost = {p: e for p, e in todo.renew.items() if p not in kept}
                self._lose(lost, "its renewal was refused")
            for p, e in todo.release.items():
                self._lose({p: e}, "the assignment gives it to another worker")
                self.store.release(self.worker, p, e)
            if todo.claim:
                sent = self.clock()
                won = self.store.claim(self.worker, todo.claim)
                self._renewed(won, sent, new=True)
            self.members = snap.members
            self.last_round_ms = snap.now_ms
            self.rounds += 1
            self.last_error = ""
        except Exception as exc:  # the rounds must go on; what is not renewed expires here
            self.failed_rounds += 1
            self.last_error = _first_line(exc)
            unexpected = not isinstance(exc, sa.exc.DBAPIError)
            log.warning(
                "leases: round failed (%s); %d held",
                self.last_error,
                len(self._held),
                exc_info=unexpected,
            )

    def expire(self) -> None:
        """Let go of what was not renewed in time (the database may have let it expire)."""
        now = self.clock()
        with self._lock:
            late = {p: self._held[p] for p, d in self._deadline.items() if now >= d}
        self._lose(late, "it was not renewed in time")

    def _renewed(self, epochs: dict[int, int], sent: float, new: bool = False) -> None:
        deadline = sent + (self.store.ttl_ms - self.margin_ms) / 1000
        started: dict[int, int] = {}
        with self._lock:
            for p, e in epochs.items():
                if new:
                    self._held[p] = e
                    started[p] = e
                if self._held.get(p) == e:  # not let go meanwhile (fenced, expired)
                    self._deadline[p] = deadline
        if started:
            with self._callbacks:
                for p, e in sorted(started.items()):
                    log.info("leases: %s acquired partition %d at epoch %d", self.worker, p, e)
                    try:
                        self.on_acquire(p, e)
                    except Exception:
                        log.exception("leases: on_acquire(%d) failed; letting it go", p)
                        self._lose({p: e}, "on_acquire failed")

    def _lose(self, epochs: dict[int, int], why: str) -> None:
        gone: list[int] = []
        with self._lock:
            for p, e in epochs.items():
                if self._held.get(p) == e:
                    del self._held[p]
                    self._deadline.pop(p, None)
                    gone.append(p)
        if not gone:
            return
        with self._callbacks:
            for p in sorted(gone):
                log.info("leases: %s lets partition %d go: %s", self.worker, p, why)
                try:
                    self.on_lose(p)
                except Exception:
                    log.exception("leases: on_lose(%d) failed", p)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
