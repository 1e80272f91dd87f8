"""Ingest's listeners thread: hands each commit's deliveries (readings, events, statuses: what
was stored, nothing else) to the listeners (the alert engine, the live stream), in commit order,
off the recorder's thread: rule evaluation is Python, a commit mostly SQLite without the
interpreter lock, so the two overlap. Nothing re-reads the database to learn what arrived."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from ingest.handoff import Handoff
from ingest.pipeline import Delivery

log = logging.getLogger(__name__)

# Called on the listeners thread after each commit with the committed deliveries (readings,
# events, statuses), so rules see exactly what was stored without re-reading the database.
CommitListener = Callable[[Sequence[Delivery]], None]

# Readings a listener call gets at most from a large commit (see Fanout.run).
LISTEN_READINGS = 2000

# Telemetry commits waiting for the listeners: QUEUED, and the recorder's commits in flight
# when it stopped starting new ones (recorder.IN_FLIGHT), which land without waiting.
QUEUED = 2
LANDING = 2

# What to do once every listener has had a commit's deliveries (its acknowledgement, for a
# scaled-out worker: see Recorder.ack_after_listeners).
Then = Callable[[], None]


def parts(deliveries: list[Delivery], readings: int) -> list[list[Delivery]]:
    """Consecutive runs of deliveries with about ``readings`` readings each (a delivery is
    never split)."""
    out: list[list[Delivery]] = []
    part: list[Delivery] = []
    count = 0
    for d in deliveries:
        part.append(d)
        count += d.reading_count
        if count >= readings:
            out.append(part)
            part, count = [], 0
    if part:
        out.append(part)
    return out


class Fanout:
    def __init__(self) -> None:
        self.listeners: list[CommitListener] = []
        # recorder → listeners, in commit order but events first: bounded, so listeners that
        # fall behind hold the recorder back, before its next telemetry commit (``room``)
        # rather than in ``put``, where events to land would wait behind it.
        self.handoff: Handoff[tuple[list[Delivery], Then | None]] = Handoff(QUEUED + LANDING)
        self.thread = threading.Thread(target=self.run, name="ingest-listeners", daemon=True)

    def add(self, listener: CommitListener) -> None:
        """Register before start; a listener that raises is logged and does not stop ingest."""
        self.listeners.append(listener)

    def put(self, rank: int, deliveries: list[Delivery], then: Then | None = None) -> None:
        """A commit's stored deliveries (on the recorder's thread; waits while two telemetry
        commits are still waiting for the listeners); ``then`` runs once the listeners have
        had them (at once when there are none)."""
        if self.listeners:
            self.handoff.put(rank, (deliveries, then))
        elif then is not None:
            then()

    def room(self, landing: int) -> bool:
        """Whether a new telemetry commit may start while ``landing`` are in flight: each of
        them, and it, finds a slot when it lands (the listeners only free slots meanwhile)."""
        if not self.listeners:
            return True
        return self.handoff.telemetry_waiting + landing < self.handoff.capacity

    def end(self) -> None:
        """The listeners get what was put before, then the thread ends."""
        self.handoff.put(Handoff.END, None)

    def run(self) -> None:
        """A large telemetry commit goes in parts of about LISTEN_READINGS readings, and an
        events commit that arrives meanwhile goes between two parts: an alarm does not wait
        for the rules to get through 10,000 readings first."""
        while True:
            rank, item = self.handoff.get()
            if item is None:
                return
            deliveries, then = item
            if rank == Handoff.EVENTS:
                self.notify(deliveries, then)
                continue
            for part in parts(deliveries, LISTEN_READINGS):
                self.notify(part)
                for events, after in self.handoff.take_events():
                    self.notify(events, after)
            if then is not None:
                then()

    def notify(self, deliveries: list[Delivery], then: Then | None = None) -> None:
        for listener in self.listeners:
            try:
                listener(deliveries)
            except Exception:
                log.exception("ingest: commit listener %r failed", listener)
        if then is not None:
            then()
