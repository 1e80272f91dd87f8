"""Ingest's decoder thread: takes messages off the lanes (events first, on their own), judges
each once (``pipeline.judge``: decode, validate, dead letters) and encodes its readings as the
rows of ``readings`` (``TelemetryWriter.prepare_rows``), then hands a commit's worth to the
recorder. The hand-off holds one telemetry batch; events overtake it. A batch is short while
the recorder would otherwise idle (``IDLE_BATCH_READINGS``)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ingest.handoff import Handoff
from ingest.lanes import GatewayRegistry, Lanes, Received
from ingest.model import DeadLetter
from ingest.pipeline import Delivery, judge
from ingest.telemetry_store import TelemetryStore
from protocol.catalog import Catalog

log = logging.getLogger(__name__)

# A telemetry batch's readings while events are arriving (the last within INCIDENT_S): an
# event waits for the commit in progress, and at 10,000 readings that was p99 ~200 ms more.
INCIDENT_BATCH_READINGS = 4000
INCIDENT_S = 10.0

# A telemetry batch's readings when the recorder has nothing to commit (nothing in flight,
# nothing handed over): filling a long batch would leave the store idle meanwhile (draining a
# backlog, the first commit waited ~80 ms for 10,000 readings to be decoded and sent); once a
# commit is in flight, batches grow to their limit again.
IDLE_BATCH_READINGS = 2000


def _never() -> bool:
    return False


# What take_run takes off a lane at once: one-reading messages one lock and one check for events
# a run, not one each; a large message alone (a batch's readings overshoot its limit by less).
RUN_BYTES = 16 * 1024
RUN_MESSAGES = 64


def take_run(lane_queue: queue.Queue[Received]) -> list[Received]:
    """The messages at the head of a lane, in order, up to RUN_MESSAGES or RUN_BYTES (at least
    one, if any): under the queue's own lock, waking the network thread if it waits for
    room, as ``get`` does."""
    with lane_queue.mutex:
        waiting = lane_queue.queue
        run: list[Received] = []
        size = 0
        while waiting and len(run) < RUN_MESSAGES and size < RUN_BYTES:
            item = waiting.popleft()
            run.append(item)
            size += item.weight
        if run:
            lane_queue.not_full.notify(len(run))
    return run


def rank(pending: list[Received]) -> int:
    """A batch's place in a hand-off: all events or all telemetry (see Decoder.next_batch)."""
    return Handoff.EVENTS if pending[0].lane.events else Handoff.TELEMETRY


@dataclass(eq=False)
class Decoder:
    lanes: Lanes
    registry: GatewayRegistry
    catalog: Catalog
    telemetry: TelemetryStore
    handoff: Handoff[list[Received]]
    stopping: threading.Event  # the recorder drains what is queued and ends
    abandoned: threading.Event  # the recorder gave up: stop too
    root: str
    max_future_ms: int  # the clock skew allowed a gateway
    linger_s: float
    max_batch_readings: int
    # whether the recorder waits for work (Recorder.waiting_for_work)
    recorder_idle: Callable[[], bool] = field(default=_never)
    last_event: float = field(default=-1e9, init=False)  # monotonic time an event was last taken
    # last turn of the loop (health: not stuck)
    progress: float = field(default_factory=time.monotonic, init=False)
    thread: threading.Thread = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self.run, name="ingest-decoder", daemon=True)

    def run(self) -> None:
        """Judge batches off the lanes and hand them to the recorder, at most one ahead: the
        hand-off is bounded, so a slow store holds the decoder, then the lanes, then the
        broker. Ends (after a last END) once stopping and the lanes are drained."""
        while not self.abandoned.is_set():
            self.progress = time.monotonic()
            pending = self.next_batch()
            if pending:
                where = rank(pending)
                # While telemetry waits for its slot, events arriving still go ahead: they
                # must not wait behind the commit in progress *and* this batch.
                while not self.handoff.put(where, pending, timeout=0.01):
                    self.progress = time.monotonic()  # waiting for the recorder
                    if self.abandoned.is_set():
                        return  # the recorder is gone: nothing of these is acknowledged
                    events = self.take_events()
                    if events:
                        self.handoff.put(Handoff.EVENTS, events)
            elif self.stopping.is_set():
                self.handoff.put(Handoff.END, None)
                return

    def next_batch(self) -> list[Received]:
        """Events first, on their own; else a batch of telemetry up to the size limit or the
        linger time, cut short when an event arrives."""
        pending = self.take_events()
        if pending:
            return pending
        events = self.lanes.events.queue
        telemetry = self.lanes.telemetry.queue
        try:
            # short: an event arriving meanwhile waits for this timeout
            first = telemetry.get(timeout=0.01)
        except queue.Empty:
            return []
        pending = [first]
        readings = self.take(first)
        deadline = time.monotonic() + self.linger_s
        # While events are arriving (an incident: alarms seldom come alone), commits stay short,
        # since each event waits for the commit in progress; long ones otherwise cost less.
        if time.monotonic() - self.last_event < INCIDENT_S:
            limit = min(self.max_batch_readings, INCIDENT_BATCH_READINGS)
        else:
            limit = self.max_batch_readings
        while readings < limit and events.empty():
            if readings >= IDLE_BATCH_READINGS and self.recorder_idle():
                break  # the store waits: this much now, the next batch fills meanwhile
            run = take_run(telemetry)
            if not run:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    run = [telemetry.get(timeout=min(remaining, 0.01))]
                except queue.Empty:
                    continue
            for item in run:
                pending.append(item)
                readings += self.take(item)
        return pending

    def take_events(self) -> list[Received]:
        """Every event waiting on its lane, judged."""
        events = self.lanes.events.queue
        pending: list[Received] = []
        while True:
            try:
                item = events.get_nowait()
            except queue.Empty:
                if pending:
                    self.last_event = time.monotonic()
                return pending
            self.take(item)
            pending.append(item)

    def take(self, item: Received) -> int:
        """Judge a message taken off a lane and encode its readings' rows; its reading
        count."""
        item.delivery = delivery = self.judge(item)
        if delivery.batch is not None:
            try:
                item.rows = self.telemetry.prepare_rows(delivery.batch)
            except Exception:  # the recorder makes the rows itself then
                log.exception("ingest: could not prepare the rows of a message on %s", item.topic)
        return delivery.reading_count

    def judge(self, item: Received) -> Delivery:
        try:
            return judge(
                item.topic,
                item.payload,
                item.received_ms,
                self.registry,
                self.catalog,
                self.root,
                self.max_future_ms,
            )
        except Exception as exc:  # a bug must not stop ingest; keep the message for a person
            log.exception("ingest: could not judge a message on %s", item.topic)
            delivery = Delivery(topic=item.topic, received_ms=item.received_ms)
            delivery.dead_letters.append(
                DeadLetter(item.received_ms, item.topic, "internal_error", repr(exc), item.payload)
            )
            return delivery
