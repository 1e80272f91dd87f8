"""The MQTT edge of ingest: broker → bounded queue of payloads → one writer thread (judge,
commit, acknowledge) → stores.

Messages are acknowledged to the broker (paho-mqtt manual ack) only after what they carry is
committed, so a crash before the commit makes the broker deliver them again. The queue between
the network thread and the writer is bounded: when the writer falls behind, the network thread
waits, stops reading the socket, and the broker holds the backlog.

A commit that fails is told apart by its cause (``is_transient``): a store that is locked,
unreachable or full is retried, with backoff, until it takes the batch; anything else is taken
to be a message's fault, and the batch is split in halves, and those again, until the message
the store refuses is found alone: that one is dead-lettered (``store_refused``) and
acknowledged, the rest committed. So no message can stop ingest for every estate (issue 12).
"""

from __future__ import annotations

import enum
import itertools
import logging
import queue
import sqlite3
import ssl
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import paho.mqtt.client as mqtt
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import Histogram

from ingest.pipeline import Delivery, judge
from ingest.shards import estate_subscriptions, shard_of
from ingest.state import DeadLetter, StateStore
from ingest.telemetry import EstateBatch, PreparedRows, TelemetryWriter
from protocol.catalog import Catalog
from protocol.clock import now_ms
from protocol.endpoint import MqttEndpoint
from protocol.messages import MAX_FUTURE_MS
from protocol.topics import service_subscriptions

log = logging.getLogger(__name__)


# Called on the writer thread after each commit with the committed deliveries (readings, events,
# statuses), so rules see exactly what was stored without re-reading the database.
CommitListener = Callable[[Sequence[Delivery]], None]
T = TypeVar("T")


class GatewayRegistry:
    """Registered estates and gateways, cached; a miss reloads from the state store at most
    once a second, so a gateway registered by another process is let in soon after."""

    def __init__(self, state: StateStore, refresh_s: float = 1.0) -> None:
        self._state = state
        self._refresh_s = refresh_s
        self._gateways: set[tuple[str, str]] = set()
        self._estates: set[str] = set()
        self._loaded_at = -1e9
        self.reload()

    @property
    def estates(self) -> set[str]:
        return set(self._estates)

    def reload(self) -> None:
        self._estates = {e["id"] for e in self._state.list_estates()}
        self._gateways = self._state.registered_gateways()
        self._loaded_at = time.monotonic()

    def _reload_if_stale(self) -> None:
        if time.monotonic() - self._loaded_at >= self._refresh_s:
            self.reload()

    def has_estate(self, estate: str) -> bool:
        if estate not in self._estates:
            self._reload_if_stale()
        return estate in self._estates

    def has_gateway(self, estate: str, gw: str) -> bool:
        if (estate, gw) not in self._gateways:
            self._reload_if_stale()
        return (estate, gw) in self._gateways


@dataclass
class IngestStats:
    received: int = 0
    committed_messages: int = 0
    readings: int = 0
    events: int = 0
    commits: int = 0
    last_commit_ms: int | None = None
    last_commit_duration_s: float = 0.0
    commit_failures: int = 0  # store calls that failed (each retry and each split counts)
    poison_messages: int = 0  # messages the store refused alone: dead-lettered and acknowledged
    failing_since: float | None = None  # monotonic time the writer began retrying, while it does
    last_error: str | None = None  # the last commit failure, shortened
    duplicates: int = 0
    newest_reading_ts: int | None = None  # the latest reading time committed (device clock)
    dead_letters: Counter[str] = field(default_factory=Counter)
    gateway_last_seen: dict[tuple[str, str], int] = field(default_factory=dict)
    # replaced whole after each commit, so readers on other threads see a consistent dict
    gateway_lost: dict[tuple[str, str], int] = field(default_factory=dict)
    # (monotonic time, committed messages, readings) after recent commits, for rates
    samples: deque[tuple[float, int, int]] = field(default_factory=lambda: deque(maxlen=512))

    def rates(self, now: float, window_s: float) -> tuple[float, float]:
        """Messages and readings committed per second over about the last window_s."""
        samples = list(self.samples)
        if not samples:
            return 0.0, 0.0
        base = samples[0]  # the newest sample at or before the window's start, else the oldest
        for sample in samples:
            if sample[0] > now - window_s:
                break
            base = sample
        last = samples[-1]
        span = max(now - base[0], 1e-9)
        return (last[1] - base[1]) / span, (last[2] - base[2]) / span


_PUBACK = struct.Struct("!BBH")  # MQTT 3.1.1 PUBACK: type 4, remaining length 2, packet id


def ack_all(client: mqtt.Client, mids: Sequence[int]) -> None:
    """Acknowledge QoS 1 messages, in the order they were received, as one write: paho's
    ack() queues a packet and wakes the network thread (a syscall) per message, and that
    thread then sends each with a send() of its own; here a commit's PUBACKs go as one entry
    of paho's packet queue. _packet_queue is paho's own (private) call; without it, ack()."""
    queue_packet = getattr(client, "_packet_queue", None)
    if queue_packet is None or len(mids) == 1:
        for mid in mids:
            client.ack(mid, 1)
        return
    data = b"".join([_PUBACK.pack(mqtt.PUBACK, 2, mid) for mid in mids])
    queue_packet(mqtt.PUBACK, data, 0, 0)


# What a queued message costs besides its payload (its record and the topic string).
_OVERHEAD_BYTES = 200


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


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


class _Handoff(Generic[T]):
    """Between two of ingest's threads: events first, then telemetry, then the end, each in
    the order put. Telemetry takes one of ``capacity`` slots (its backpressure); events take
    none, so an event never waits for a telemetry slot to free (their bytes are already bounded
    by their lane's budget, which is released only after their commit)."""

    EVENTS, TELEMETRY, END = 0, 1, 2

    def __init__(self, capacity: int) -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, T | None]] = queue.PriorityQueue()
        self._slots = threading.Semaphore(capacity)
        self._order = itertools.count()

    def put(self, rank: int, item: T | None, timeout: float | None = None) -> bool:
        """False if telemetry found no slot within ``timeout`` (nothing was put)."""
        if rank == self.TELEMETRY and not self._slots.acquire(timeout=timeout):
            return False
        self._queue.put((rank, next(self._order), item))
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
            self._slots.release()
        return rank, item


@dataclass(eq=False)
class _Lane:
    """One MQTT session and its bounded queue. Events have a lane of their own: a fire alarm
    must not wait behind a telemetry backlog (GB 26875: the monitoring centre within 10 s),
    and telemetry backpressure must not hold back the events' socket."""

    name: str
    client: mqtt.Client
    queue: queue.Queue[_Received]
    events: bool
    budget: ByteBudget
    generation: int = 0
    connected: threading.Event = field(default_factory=threading.Event)

    def wants(self, topic_filter: str) -> bool:
        return topic_filter.endswith("/events") == self.events


class _Outcome(enum.Enum):
    STORED = 1  # committed (or nothing to store): goes to the listeners
    DUPLICATE = 2  # its (gateway, seq) was stored before
    POISON = 3  # the store refused it alone: dead-lettered


# The reason of a message dead-lettered because the store refused it (not the decoder).
STORE_REFUSED = "store_refused"

# Statuses of a store's HTTP API (InfluxDB) that blame the data, not the store.
_DATA_STATUSES = frozenset({400, 413, 422})


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
        if isinstance(e, sqlite3.OperationalError | OSError):
            return True  # locked, busy, read-only, disk full or I/O; OSError: the network
        status = getattr(e, "status", None)
        if type(status) is int and 400 <= status < 600:  # an HTTP store (InfluxDB)
            return status not in _DATA_STATUSES
        if type(e).__module__.split(".")[0] == "urllib3":
            return True  # connection refused, timeouts, retries used up
        e = getattr(e, "orig", None) or e.__cause__ or e.__context__
    return False


def _shorten(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(slots=True)
class _Received:
    topic: str
    payload: bytes
    received_ms: int
    mid: int
    qos: int
    generation: int
    lane: _Lane
    weight: int
    delivery: Delivery | None = None  # judged on the decoder thread
    rows: PreparedRows | None = None  # its readings encoded for the store, ditto
    # Set by the writer as parts of a commit succeed, so a retry or a split redoes only the
    # rest: its dead letters are stored / what became of it.
    lettered: bool = False
    outcome: _Outcome | None = None


# A telemetry batch's readings while events are arriving (the last within INCIDENT_S): an
# event waits for the commit in progress, and at 10,000 readings that was p99 ~200 ms more.
INCIDENT_BATCH_READINGS = 4000
INCIDENT_S = 10.0
# Readings a listener call gets at most from a large commit (see Ingest._listen_loop).
LISTEN_READINGS = 2000


def _parts(deliveries: list[Delivery], readings: int) -> list[list[Delivery]]:
    """Consecutive runs of deliveries with about ``readings`` readings each (a delivery is
    never split)."""
    parts: list[list[Delivery]] = []
    part: list[Delivery] = []
    count = 0
    for d in deliveries:
        part.append(d)
        count += d.reading_count
        if count >= readings:
            parts.append(part)
            part, count = [], 0
    if part:
        parts.append(part)
    return parts


def _rank(pending: list[_Received]) -> int:
    # a batch is all events or all telemetry (see _next_batch)
    return _Handoff.EVENTS if pending[0].lane.events else _Handoff.TELEMETRY


class Ingest:
    def __init__(
        self,
        endpoint: MqttEndpoint,
        state: StateStore,
        telemetry: TelemetryWriter,
        catalog: Catalog,
        root: str = "estates",
        queue_size: int = 1000,
        queue_bytes: int = 8 << 20,
        linger_s: float = 0.1,
        max_batch_readings: int = 20_000,
        client_id: str = "estatewatch-ingest",
        shard: tuple[int, int] | None = None,
        stall_s: float = 60.0,
        max_future_ms: int = MAX_FUTURE_MS,
    ) -> None:
        self.endpoint = endpoint
        self.max_future_ms = max_future_ms  # the clock skew allowed a gateway
        self.state = state
        self.telemetry = telemetry
        self.catalog = catalog
        self.root = root
        self.registry = GatewayRegistry(state)
        # (index, count): this process takes only the estates that hash to it, see shards.py
        self.shard = shard if shard and shard[1] > 1 else None
        self._subscribed_estates: set[str] = set()
        self._pending_subscriptions: dict[int, list[str]] = {}
        self.stats = IngestStats()
        self.commit_seconds: Histogram | None = None  # set by whoever exports metrics
        self.linger_s = linger_s
        self.max_batch_readings = max_batch_readings
        self._last_event = -1e9  # monotonic time the decoder last took an event
        self._known_devices = state.known_devices()
        self._closing = threading.Event()  # disconnecting on purpose
        self._stopping = threading.Event()  # the writer drains the queue and ends
        # stopping while the store fails: the writer gave up, and the decoder stops with it
        self._abandoned = threading.Event()
        # the writer's health: not stuck in one batch (or its retries) for longer than this
        self.stall_s = stall_s
        self._writer_progress = time.monotonic()  # last time it was idle or finished a batch
        self._decoder_progress = time.monotonic()  # last turn of the decoder's loop
        self._listeners: list[CommitListener] = []
        self._maintenance: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue(16)
        self._maintenance_lock = threading.Lock()
        # decoder: lanes → judge + rows → hand-off (one telemetry batch ahead; events overtake
        # it) → writer: commit, ack. SQLite's half of a commit runs without the interpreter
        # lock, so the decoder's Python work overlaps it on the other core.
        self._handoff: _Handoff[list[_Received]] = _Handoff(1)
        self._decoder = threading.Thread(
            target=self._decode_loop, name="ingest-decoder", daemon=True
        )
        self._writer = threading.Thread(target=self._write_loop, name="ingest-writer", daemon=True)
        # writer → listeners (rules, live stream) on a thread of their own, in commit order
        # but events first: bounded, so listeners that fall behind hold the writer back.
        self._committed: _Handoff[list[Delivery]] = _Handoff(2)
        self._notifier = threading.Thread(
            target=self._listen_loop, name="ingest-listeners", daemon=True
        )
        if self.shard:
            client_id = f"{client_id}-{self.shard[0]}of{self.shard[1]}"
        # Bounded: a full queue blocks that lane's MQTT network thread, which is the
        # backpressure; the broker holds the rest.
        self.telemetry_lane = self._lane(
            "telemetry", client_id, queue_size, queue_bytes, events=False
        )
        self.events_lane = self._lane(
            "events", f"{client_id}-events", queue_size, queue_bytes, events=True
        )
        self.lanes = (self.telemetry_lane, self.events_lane)
        self.client = self.telemetry_lane.client  # publishes (alerts, plans) go out on it

    def _lane(self, name: str, client_id: str, size: int, max_bytes: int, events: bool) -> _Lane:
        lane = _Lane(
            name,
            self._make_client(client_id),
            queue.Queue(maxsize=size),
            events,
            ByteBudget(max_bytes),
        )
        lane.client.user_data_set(lane)
        return lane

    def _make_client(self, client_id: str) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,  # the broker keeps our subscription and queues while we are down
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        if self.endpoint.username:
            client.username_pw_set(self.endpoint.username, self.endpoint.password)
        if self.endpoint.tls:
            client.tls_set(ca_certs=self.endpoint.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    @property
    def subscribed_estates(self) -> list[str]:
        return sorted(self._subscribed_estates)

    def _my_estates(self) -> set[str]:
        assert self.shard is not None
        index, count = self.shard
        self.registry.reload()
        return {e for e in self.registry.estates if shard_of(e, count) == index}

    def _subscribe(self, lane: _Lane, estates: list[str]) -> None:
        filters = [
            (f, 1) for e in estates for f in estate_subscriptions(e, self.root) if lane.wants(f)
        ]
        if filters:
            _rc, mid = lane.client.subscribe(filters)
            if mid is not None and not lane.events:
                self._pending_subscriptions[mid] = estates  # counted once the broker confirms

    def subscribe_new_estates(self) -> None:
        """In a sharded deployment, subscribe to registered estates of this shard not yet
        subscribed (run after registrations; unregistered estates have no broker account)."""
        if self.shard is None:
            return
        fresh = sorted(self._my_estates() - self._subscribed_estates)
        for lane in self.lanes:
            self._subscribe(lane, fresh)

    def _on_subscribe(
        self, _c: mqtt.Client, lane: _Lane, mid: int, _codes: object, _props: object
    ) -> None:
        if not lane.events:
            self._subscribed_estates.update(self._pending_subscriptions.pop(mid, []))

    def add_listener(self, listener: CommitListener) -> None:
        """Register before start(); a listener that raises is logged and does not stop ingest."""
        self._listeners.append(listener)

    @property
    def connected(self) -> bool:
        return all(lane.connected.is_set() for lane in self.lanes)

    @property
    def queue_depth(self) -> int:
        return sum(lane.queue.qsize() for lane in self.lanes)

    @property
    def queue_capacity(self) -> int:
        return sum(lane.queue.maxsize for lane in self.lanes)

    @property
    def queued_bytes(self) -> int:
        return sum(lane.budget.used for lane in self.lanes)

    @property
    def queued_bytes_capacity(self) -> int:
        return sum(lane.budget.capacity for lane in self.lanes)

    def start(self, wait_s: float = 10.0) -> None:
        self.stats.samples.append((time.monotonic(), 0, 0))
        self._notifier.start()
        self._writer.start()
        self._decoder.start()
        for lane in self.lanes:
            lane.client.connect_async(self.endpoint.host, self.endpoint.port, keepalive=30)
            lane.client.loop_start()
        deadline = time.monotonic() + wait_s
        for lane in self.lanes:
            if wait_s and not lane.connected.wait(max(0.0, deadline - time.monotonic())):
                log.warning(
                    "ingest: %s lane not yet connected to %s, still trying",
                    lane.name,
                    self.endpoint.url,
                )

    def stop(self, timeout_s: float = 30.0, stuck_s: float = 5.0) -> bool:
        """Commit and acknowledge what was received, then disconnect. Messages arriving
        meanwhile stay unacknowledged, so the broker delivers them again next time. A store
        that fails meanwhile is not waited for (the writer gives up at its first failure),
        nor a writer that has finished no batch for ``stuck_s`` (one waiting on a locked
        database): what is not committed stays unacknowledged. False if the writer was left
        in its commit (then the caller must not close the stores under it)."""
        self._closing.set()
        with self._maintenance_lock:
            self._stopping.set()
        if self._writer.ident is None:  # a start that failed early never ran it
            self._cancel_maintenance()
            self._disconnect()
            return True
        deadline = time.monotonic() + timeout_s
        while self._writer.is_alive() and time.monotonic() < deadline:
            self._writer.join(0.05)
            if time.monotonic() - self._writer_progress > stuck_s:
                break
        stopped = not self._writer.is_alive()
        if not stopped:
            log.warning(
                "ingest: the writer is stuck in a commit; stopping without it (nothing of "
                "that commit is acknowledged: the broker delivers it again)"
            )
            self._abandoned.set()  # the decoder stops too
            self._committed.put(_Handoff.END, None)  # and the listeners, after what they have
        for thread in (self._decoder, self._notifier):
            thread.join(max(0.0, deadline - time.monotonic()))
        self._cancel_maintenance()
        self._disconnect()
        return stopped

    def _disconnect(self) -> None:
        for lane in self.lanes:
            lane.client.disconnect()
            lane.client.loop_stop()
            lane.connected.clear()

    def writer_health(self) -> dict[str, Any]:
        """Whether the writer is committing: not "ok" while it retries a failing store, or has
        been in one batch (or the queue has not moved) for longer than ``stall_s``, or its
        thread is gone."""
        now = time.monotonic()
        st = self.stats
        # the writer in one batch, or the decoder in one message (the lanes then fill)
        busy_s = now - min(self._writer_progress, self._decoder_progress)
        if not (self._writer.is_alive() and self._decoder.is_alive()):
            state = "stopped"
        elif st.failing_since is not None:
            state = "retrying"
        elif busy_s > self.stall_s:
            state = "stalled"
        else:
            state = "ok"
        return {
            "ok": state == "ok",
            "state": state,
            "busy_s": round(busy_s, 1),
            "stall_after_s": self.stall_s,
            "retrying_s": round(now - st.failing_since, 1) if st.failing_since else 0.0,
            "last_error": st.last_error,
            "last_commit_age_s": round(now_ms() / 1000 - st.last_commit_ms / 1000, 1)
            if st.last_commit_ms
            else None,
            "commit_failures": st.commit_failures,
            "poison_messages": st.poison_messages,
        }

    # --- MQTT network thread -----------------------------------------------------------------
    def _on_connect(
        self, client: mqtt.Client, lane: _Lane, _flags: object, reason: object, _props: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            log.error("ingest: broker refused the connection: %s", reason)
            return
        lane.generation += 1
        if self.shard is None:
            client.subscribe([(f, 1) for f in service_subscriptions(self.root) if lane.wants(f)])
        else:
            # a session the broker lost has no subscriptions: make this lane's again
            self._subscribe(lane, sorted(self._my_estates()))
        lane.connected.set()
        log.info("ingest: %s lane connected to %s", lane.name, self.endpoint.url)

    def _on_disconnect(
        self, _c: mqtt.Client, lane: _Lane, _flags: object, reason: object, _props: object
    ) -> None:
        lane.connected.clear()
        if not self._closing.is_set():
            log.warning("ingest: disconnected from broker (%s); reconnecting", reason)

    def _on_message(self, _c: mqtt.Client, lane: _Lane, msg: mqtt.MQTTMessage) -> None:
        if self._closing.is_set():
            return  # not acknowledged: the broker keeps it for the next session
        self.stats.received += 1
        # Only queue the bytes: decoding here would hold the interpreter lock against the
        # writer, whose SQLite steps release and retake it per row (a lock convoy).
        payload = bytes(msg.payload)
        weight = len(payload) + _OVERHEAD_BYTES
        # Both waits block while the writer is behind (backpressure), until stop() gives up on
        # them: the message is then not acknowledged, and the broker keeps it.
        if not lane.budget.acquire(weight, self._closing):
            return
        item = _Received(
            msg.topic, payload, now_ms(), msg.mid, msg.qos, lane.generation, lane, weight
        )
        while True:
            try:
                lane.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                if self._closing.is_set():
                    lane.budget.release(weight)
                    return

    def _judge(self, item: _Received) -> Delivery:
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

    # --- writer thread -----------------------------------------------------------------------
    def _next_batch(self) -> list[_Received]:
        """Events first, on their own; else a batch of telemetry up to the size limit or the
        linger time, cut short when an event arrives."""
        pending = self._take_events()
        if pending:
            return pending
        events = self.events_lane.queue
        telemetry = self.telemetry_lane.queue
        try:
            # short: an event arriving meanwhile waits for this timeout
            first = telemetry.get(timeout=0.01)
        except queue.Empty:
            return []
        pending = [first]
        readings = self._take(first)
        deadline = time.monotonic() + self.linger_s
        # While events are arriving (an incident: alarms seldom come alone), commits stay short,
        # since each event waits for the commit in progress; long ones otherwise cost less.
        if time.monotonic() - self._last_event < INCIDENT_S:
            limit = min(self.max_batch_readings, INCIDENT_BATCH_READINGS)
        else:
            limit = self.max_batch_readings
        while readings < limit and events.empty():
            try:
                item = telemetry.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = telemetry.get(timeout=min(remaining, 0.01))
                except queue.Empty:
                    continue
            pending.append(item)
            readings += self._take(item)
        return pending

    def _take_events(self) -> list[_Received]:
        """Every event waiting on its lane, judged."""
        events = self.events_lane.queue
        pending: list[_Received] = []
        while True:
            try:
                item = events.get_nowait()
            except queue.Empty:
                if pending:
                    self._last_event = time.monotonic()
                return pending
            self._take(item)
            pending.append(item)

    def _take(self, item: _Received) -> int:
        """Judge a message taken off a lane and encode its readings' rows; its reading
        count."""
        item.delivery = delivery = self._judge(item)
        if delivery.batch is not None:
            try:
                item.rows = self.telemetry.prepare_rows(delivery.batch)
            except Exception:  # the writer makes the rows itself then
                log.exception("ingest: could not prepare the rows of a message on %s", item.topic)
        return delivery.reading_count

    def run_maintenance(self, task: Callable[[], T]) -> Future[T]:
        """Run ``task`` on the writer thread between commits: SQLite has one writer, and
        rollups and purges are writes."""
        future: Future[T] = Future()
        while True:
            # under the lock stop() sets _stopping with, so nothing is queued after its drain
            with self._maintenance_lock:
                if self._stopping.is_set():  # the writer is going: nothing would run it
                    future.cancel()
                    return future
                try:
                    self._maintenance.put_nowait((task, future))
                    return future
                except queue.Full:
                    pass
            time.sleep(0.05)  # bounded: a caller waits rather than piling up

    def _cancel_maintenance(self) -> None:
        """After the writer has stopped: tasks still queued will not run; their callers get
        CancelledError at once instead of waiting out their timeout."""
        while True:
            try:
                _task, future = self._maintenance.get_nowait()
            except queue.Empty:
                return
            future.cancel()

    def _run_maintenance(self) -> None:
        while True:
            try:
                task, future = self._maintenance.get_nowait()
            except queue.Empty:
                return
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(task())
                except Exception as exc:
                    log.exception("ingest: maintenance task failed")
                    future.set_exception(exc)
                self._writer_progress = time.monotonic()  # a long task is not a stuck writer

    def _decode_loop(self) -> None:
        """Judge batches off the lanes and hand them to the writer, at most one ahead: the
        hand-off is bounded, so a slow store holds the decoder, then the lanes, then the
        broker. Ends (after a last None) once stopping and the lanes are drained."""
        while not self._abandoned.is_set():
            self._decoder_progress = time.monotonic()
            pending = self._next_batch()
            if pending:
                rank = _rank(pending)
                # While telemetry waits for its slot, events arriving still go ahead: they
                # must not wait behind the commit in progress *and* this batch.
                while not self._handoff.put(rank, pending, timeout=0.01):
                    self._decoder_progress = time.monotonic()  # waiting for the writer
                    if self._abandoned.is_set():
                        return  # the writer is gone: nothing of these is acknowledged
                    events = self._take_events()
                    if events:
                        self._handoff.put(_Handoff.EVENTS, events)
            elif self._stopping.is_set():
                self._handoff.put(_Handoff.END, None)
                return

    def _write_loop(self) -> None:
        while True:
            self._run_maintenance()
            try:
                _, pending = self._handoff.get(timeout=0.05)
            except queue.Empty:
                self._writer_progress = time.monotonic()  # idle: nothing is waiting for it
                self.telemetry.flush_latest_if_due()
                continue
            if pending is None:  # the decoder has drained the lanes and stopped
                self.telemetry.flush_latest_if_due()
                self._committed.put(_Handoff.END, None)
                return
            delay = 0.5
            while not self._commit(pending):
                # The store itself failed (locked, unreachable): never drop what was received,
                # retry until it takes the batch. Unacked messages stay with the broker
                # meanwhile, and the full queue holds back more. A stop does not wait for it.
                if self._closing.wait(delay):
                    self._abandon(pending)
                    return
                delay = min(delay * 2, 10.0)
            self._writer_progress = time.monotonic()
            fresh = [
                p.delivery
                for p in pending
                if p.outcome is _Outcome.STORED and p.delivery is not None
            ]
            freed: dict[ByteBudget, int] = {}
            acks: dict[_Lane, list[int]] = {}
            for item in pending:
                # an ack on a newer connection would name another message: skip it, the
                # broker redelivers and the seq book drops the repeat
                # (QoS 1 at most: the subscriptions are QoS 1, so the broker sends no QoS 2)
                if item.qos > 0 and item.generation == item.lane.generation:
                    acks.setdefault(item.lane, []).append(item.mid)
                freed[item.lane.budget] = freed.get(item.lane.budget, 0) + item.weight
            for lane, mids in acks.items():
                ack_all(lane.client, mids)
            for budget, weight in freed.items():  # one wake-up a lane, not one a message
                budget.release(weight)
            if self._listeners:
                self._committed.put(_rank(pending), fresh)

    def _abandon(self, pending: list[_Received]) -> None:
        """Stopping while the store fails: leave the batch unacknowledged (the broker delivers
        it again) and end the writer, the decoder and the listeners."""
        log.warning(
            "ingest: stopping while the store fails; %d messages are left unacknowledged for "
            "the broker to deliver again",
            sum(p.outcome is None for p in pending),
        )
        self._abandoned.set()
        freed: dict[ByteBudget, int] = {}
        for item in pending:
            freed[item.lane.budget] = freed.get(item.lane.budget, 0) + item.weight
        for budget, weight in freed.items():
            budget.release(weight)
        self._committed.put(_Handoff.END, None)

    def _listen_loop(self) -> None:
        """Hand each commit's deliveries to the listeners, in commit order (a commit of events
        before telemetry commits still waiting), off the writer: rule evaluation is Python,
        the writer's commit mostly SQLite without the interpreter lock, so the two overlap.
        A large telemetry commit goes in parts of about LISTEN_READINGS readings, and an
        events commit that arrives meanwhile goes between two parts: an alarm does not wait
        for the rules to get through 10,000 readings first."""
        while True:
            rank, deliveries = self._committed.get()
            if deliveries is None:
                return
            if rank == _Handoff.EVENTS:
                self._notify(deliveries)
                continue
            for part in _parts(deliveries, LISTEN_READINGS):
                self._notify(part)
                for events in self._committed.take_events():
                    self._notify(events)

    def _notify(self, deliveries: list[Delivery]) -> None:
        for listener in self._listeners:
            try:
                listener(deliveries)
            except Exception:
                log.exception("ingest: commit listener %r failed", listener)

    def _commit(self, pending: list[_Received]) -> bool:
        """Store what of ``pending`` is not yet stored; True once every message is stored, a
        duplicate or dead-lettered, False when the store failed (try again later)."""
        ok = self._store_or_split([p for p in pending if p.outcome is None])
        st = self.stats
        if ok:
            st.failing_since = None
        elif st.failing_since is None:
            st.failing_since = time.monotonic()
        return ok

    def _store_or_split(self, items: list[_Received]) -> bool:
        """Store ``items``; when the store refuses them for something other than its own state,
        store each half on its own, down to the one message at fault, which is dead-lettered.
        False on a failure of the store itself (see is_transient)."""
        if not items:
            return True
        try:
            self._store(items)
            return True
        except Exception as exc:
            self.stats.commit_failures += 1
            self.stats.last_error = _shorten(exc)
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

    def _poison(self, item: _Received, exc: Exception) -> bool:
        """The store refuses this message alone: dead-letter it (bounded, with the reason) so
        it is acknowledged and never tried again. False if even that could not be stored."""
        d = item.delivery
        letter = DeadLetter(
            item.received_ms,
            item.topic,
            STORE_REFUSED,
            f"the store refused this message: {_shorten(exc, 800)}",
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
        item.outcome = _Outcome.POISON
        self.stats.poison_messages += 1
        self.stats.dead_letters[STORE_REFUSED] += 1
        return True

    def _store(self, items: list[_Received]) -> None:
        """Store one batch of messages (raises when a store fails). Each step marks the
        messages it finished, so after a failure a retry or a split does only the rest."""
        started = time.perf_counter()
        with_batch: list[_Received] = []
        batches: list[EstateBatch] = []
        prepared: list[PreparedRows | None] = []  # beside batches, index for index
        for p in items:
            if p.delivery is not None and p.delivery.batch is not None:
                with_batch.append(p)
                batches.append(p.delivery.batch)
                prepared.append(p.rows)
        s = self.stats
        # A redelivered message's bad items were dead-lettered the first time. Dead letters
        # go first: a crash before the readings commit repeats them (at least once), while
        # the readings themselves are stored exactly once.
        dup_index = self.telemetry.find_duplicates(batches)
        dups = {id(with_batch[i]) for i in dup_index}
        fresh_letters = [p for p in items if not p.lettered and id(p) not in dups]
        letters = [x for p in fresh_letters if p.delivery for x in p.delivery.dead_letters]
        self.state.add_dead_letters(letters)
        for p in items:
            p.lettered = True  # a duplicate's letters were stored the first time
        for letter in letters:
            s.dead_letters[letter.reason] += 1
        # Devices before their readings: one registered for readings that then fail is
        # harmless (it exists), while one missed after they commit would wait for its next.
        new_devices: dict[tuple[str, str], tuple[str, str, str, str, int]] = {}
        for i, b in enumerate(batches):
            if i in dup_index:
                continue
            # Registered when the service first heard of it (its uptime counts from
            # then), not at its data's time: a replay or backlog can be months old.
            heard = with_batch[i].received_ms
            for r in b.readings or b.events:
                key = (b.estate, r.dev)
                if key not in self._known_devices and key not in new_devices:
                    new_devices[key] = (b.estate, r.dev, r.kind, b.gateway, heard)
        self.state.add_devices(new_devices.values())
        self._known_devices.update(new_devices)
        result = self.telemetry.write(batches, dup_index, prepared)
        for i, p in enumerate(with_batch):
            p.outcome = _Outcome.DUPLICATE if i in result.duplicates else _Outcome.STORED
        s.committed_messages += len(with_batch)
        s.readings += result.readings
        s.events += result.events
        s.duplicates += len(result.duplicates)
        for b in batches:
            if b.readings and (
                s.newest_reading_ts is None or b.readings[-1].ts > s.newest_reading_ts
            ):
                s.newest_reading_ts = b.readings[-1].ts
        s.gateway_lost = {k: g.lost for k, g in self.telemetry.seqs.gateways.items()}
        for p in items:
            d = p.delivery
            if p.outcome is not None or d is None:
                continue
            if d.status is not None and d.estate and d.gateway:
                gs = d.status
                # A Last Will carries the time its gateway connected (it is set then);
                # the gateway dropped when the broker sent it, i.e. when it arrived.
                self.state.set_gateway_status(
                    d.estate,
                    d.gateway,
                    gs.state,
                    gs.ts if gs.state == "online" else p.received_ms,
                    gs.fw,
                    gs.buffered,
                    _int_or_none(gs.extra.get("dropped")),
                )
            if d.command_ack is not None:
                log.info(
                    "gateway %s/%s acknowledged command %s: ok=%s %s",
                    d.estate,
                    d.gateway,
                    d.command_ack.id,
                    d.command_ack.ok,
                    (d.command_ack.error or "")[:200],
                )
            p.outcome = _Outcome.STORED  # one status at a time: a retry skips those done
            s.committed_messages += 1
        s.commits += 1
        s.last_commit_ms = now_ms()
        s.last_commit_duration_s = time.perf_counter() - started
        if self.commit_seconds is not None:
            self.commit_seconds.observe(s.last_commit_duration_s)
        s.samples.append((time.monotonic(), s.committed_messages, s.readings))
        for p in items:
            d = p.delivery
            if d and d.estate and d.gateway and (d.batch is not None or d.status is not None):
                s.gateway_last_seen[(d.estate, d.gateway)] = d.received_ms
