"""The bounded hand-offs between ingest's threads: ``ByteBudget`` (payload bytes a lane may hold
between its network thread and the decoder) and ``Handoff`` (decoder → recorder, recorder →
listeners: events first and without a slot, telemetry bounded)."""

from __future__ import annotations

import itertools
import queue
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class ByteBudget:
    """How many payload bytes a lane may hold between the network thread and the writer.
    Memory follows bytes, not messages (one message may carry 5,000 readings), so this is the
    bound that matters; a message larger than the whole budget still passes when the lane is
    empty."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._cv = threading.Condition()

    def acquire(self, n: int, give_up: threading.Event) -> bool:
        """Wait for room for n bytes; False (nothing taken) once ``give_up`` is set."""
        with self._cv:
            while self.used and self.used + n > self.capacity:
                if give_up.is_set():
                    return False
                self._cv.wait(0.1)
            self.used += n
            return True

    def release(self, n: int) -> None:
        with self._cv:
            self.used -= n
            self._cv.notify_all()


class Handoff(Generic[T]):
    """Between two of ingest's threads: events first, then telemetry, then the end, each in
    the order put. Telemetry takes one of ``capacity`` slots (its backpressure); events take
    none, so an event never waits for a telemetry slot to free (their bytes are already bounded
    by their lane's budget, which is released only after their commit)."""

    EVENTS, TELEMETRY, END = 0, 1, 2

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._queue: queue.PriorityQueue[tuple[int, int, T | None]] = queue.PriorityQueue()
        self._slots = threading.Semaphore(capacity)
        self._order = itertools.count()
        # set at each put: a consumer that also waits for something else (the recorder, for
        # its commits' answers) waits on one event for both
        self.waker: threading.Event | None = None
        # set at each telemetry get: a producer that must not block in put (the recorder,
        # which lands events meanwhile) waits for room on the event it waits on for the rest
        self.taker: threading.Event | None = None
        # telemetry put and got so far: each written by one thread (one producer, one
        # consumer), so their difference is read without a lock
        self._put_telemetry = 0
        self._got_telemetry = 0

    @property
    def telemetry_waiting(self) -> int:
        """Telemetry items put and not yet taken."""
        return self._put_telemetry - self._got_telemetry

    def put(self, rank: int, item: T | None, timeout: float | None = None) -> bool:
        """False if telemetry found no slot within ``timeout`` (nothing was put)."""
        if rank == self.TELEMETRY:
            if not self._slots.acquire(timeout=timeout):
                return False
            self._put_telemetry += 1
        self._queue.put((rank, next(self._order), item))
        if self.waker is not None:
            self.waker.set()
        return True

    def take_events(self) -> list[T]:
        """The events waiting now, taken out of turn (for a consumer between two parts of
        a telemetry item); whatever else is there stays in its place."""
        taken: list[T] = []
        while True:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                return taken
            if entry[0] != self.EVENTS:
                self._queue.put(entry)  # the same (rank, order): back where it was
                return taken
            if entry[2] is not None:
                taken.append(entry[2])

    def get(self, timeout: float | None = None) -> tuple[int, T | None]:
        """(rank, item); raises queue.Empty after ``timeout``."""
        rank, _order, item = self._queue.get(timeout=timeout)
        if rank == self.TELEMETRY:
            self._got_telemetry += 1
            self._slots.release()
            if self.taker is not None:
                self.taker.set()
        return rank, item
