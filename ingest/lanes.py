"""The MQTT edge of ingest: two sessions ("lanes"), each with its network thread and a bounded
queue of received payloads, and the broker's subscriptions.

Events have a lane of their own: a fire alarm must not wait behind a telemetry backlog (GB 26875:
the monitoring centre within 10 s), and telemetry backpressure must not hold back the events'
socket. A network thread only queues a message's bytes (decoding there would hold the
interpreter lock against the writer); when its lane is full it waits, stops reading its socket,
and the broker holds the backlog. Messages are acknowledged (paho-mqtt manual ack) by the
recorder once committed (``ack_all``).

A scaled-out worker (issue 16, ``PartitionSessions``) has no session of its own: per partition
it holds it opens that partition's two sessions (persistent ids, shared subscriptions to the
partition's estates), which feed the same two queues and byte budgets, so memory is bounded by
the worker whatever the number of partitions. Losing a partition closes its sessions at once;
what they delivered and is not yet committed is dropped unacknowledged (``Lane.revoked``), and
the broker hands it to the partition's next owner."""

from __future__ import annotations

import enum
import logging
import queue
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from ingest.handoff import ByteBudget
from ingest.pipeline import Delivery
from ingest.shards import estate_subscriptions, shard_of
from ingest.state import StateStore
from ingest.stats import IngestStats
from ingest.telemetry_store import PreparedRows
from ingest.wire import Publish, WireClient
from protocol.clock import now_ms
from protocol.endpoint import MqttEndpoint
from protocol.failover import Failover, hop
from protocol.topics import estate_slot, service_subscriptions

log = logging.getLogger(__name__)

# What a queued message costs besides its payload (its record and the topic string).
OVERHEAD_BYTES = 200
KEEPALIVE_S = 30
# A resumed session's unacknowledged messages come again at once on connecting; later copies
# with DUP set are a broker's own redelivery to this connection (NATS' ack_wait, 30 s): those
# were this process's, which gives them to its rules itself.
REDELIVERY_WINDOW_S = 10.0
# A subscription the broker refused (SUBACK 0x80: a clustered broker electing a leader, an ACL
# being reloaded) is asked for again after this long while the lane stays connected: else the
# lane would hear nothing until its next connection.
RESUBSCRIBE_S = 1.0


class GatewayRegistry:
    """Registered estates and gateways, cached; a miss reloads from the state store at most
    once a second, so a gateway registered by another process is let in soon after. The sets
    are replaced whole, never changed in place, so readers on other threads need no lock."""

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
        self.reload_if_older(self._refresh_s)

    def reload_if_older(self, seconds: float) -> None:
        if time.monotonic() - self._loaded_at >= seconds:
            self.reload()

    def has_estate(self, estate: str) -> bool:
        if estate not in self._estates:
            self._reload_if_stale()
        return estate in self._estates

    def has_gateway(self, estate: str, gw: str) -> bool:
        if (estate, gw) not in self._gateways:
            self._reload_if_stale()
        return (estate, gw) in self._gateways


@dataclass(eq=False)
class Lane:
    """One MQTT session and its bounded queue (see the module's docstring)."""

    name: str
    client: mqtt.Client
    queue: queue.Queue[Received]
    events: bool
    budget: ByteBudget
    failover: Failover  # the broker node this session is on, and the next (a cluster)
    generation: int = 0  # connections so far: an ack names a message of one connection
    connected: threading.Event = field(default_factory=threading.Event)
    partition: int | None = None  # a scaled-out worker's session of one partition
    # set when the session closes: its network thread stops waiting for room in the queue
    closed: threading.Event = field(default_factory=threading.Event)
    # the partition was lost: what this session delivered is neither committed nor acked
    revoked: bool = False
    received: int = 0  # a partition session's messages (its network thread's own count)
    connected_at: float = 0.0  # monotonic time of its last connect

    def wants(self, topic_filter: str) -> bool:
        return topic_filter.endswith("/events") == self.events


class Outcome(enum.Enum):
    STORED = 1  # committed (or nothing to store): goes to the listeners
    DUPLICATE = 2  # its (gateway, seq) was stored before
    POISON = 3  # the store refused it alone: dead-lettered
    NOT_OWNER = 4  # its estate's partition is no longer ours: dropped, not acknowledged


@dataclass(frozen=True)
class PartitionSessions:
    """A scaled-out worker's sessions (issue 16), as the composition root names them from
    ``cluster.partitions`` (which ingest may not import): ``count`` partitions (an estate's is
    ``protocol.topics.estate_slot``, as ``cluster.partitions.partition_of``), a partition's
    persistent client id, and its topic filters over some of its estates."""

    count: int
    session_id: Callable[[int], str]
    subscriptions: Callable[[int, Iterable[str], str], list[str]]

    def partition_of(self, estate: str) -> int:
        return estate_slot(estate, self.count)


@dataclass(slots=True)
class Received:
    """One message from its lane's network thread to its acknowledgement."""

    topic: str
    payload: bytes
    received_ms: int
    mid: int
    qos: int
    generation: int
    lane: Lane
    weight: int
    delivery: Delivery | None = None  # judged on the decoder thread
    rows: PreparedRows | None = None  # its readings encoded for the store, ditto
    # Set by the recorder as parts of a commit succeed, so a retry or a split redoes only the
    # rest: its dead letters are stored / what became of it.
    lettered: bool = False
    outcome: Outcome | None = None
    # Handed to a telemetry write whose outcome is unknown if it failed (the store process
    # died): found stored on the retry, it was that write's, not a duplicate from the broker.
    written: bool = False
    # Sent again by the broker to this session's first connection in this process (DUP): it
    # went to a previous holder of the session (a dead or cut-off worker, this process before
    # a crash), which never acknowledged it. Found stored, that holder committed it but died
    # before acknowledging, i.e. before its rules were given it (they are, after the ack): it
    # goes to the listeners here, not dropped as a duplicate. (Dying after the ack was queued
    # and before the broker had it, the rules see it twice, once in each holder.)
    redelivered: bool = False


_PUBACK = struct.Struct("!BBH")  # MQTT 3.1.1 PUBACK: type 4, remaining length 2, packet id

# Paho has no public call that queues several packets as one write: its ack() queues a packet
# and wakes the network thread (a syscall) per message, and that thread sends each with a
# send() of its own. Measured with a real Mosquitto at 20,000 one-reading messages, ack() per
# message costs ~5 us more CPU a message than one write per commit (~+20 % of paho's own
# receive-and-ack cost); bench 1's one-reading target met 0.52 only with the one write. So
# ack_all uses paho's private _packet_queue (pinned: paho-mqtt >=2.1,<3; tested against a
# real broker in tests/integration/test_batched_acks.py) and falls back to the public ack()
# for good the first time that call is missing or refuses its arguments.
_batched_acks = True


def ack_all(client: mqtt.Client, mids: Sequence[int]) -> None:
    """Acknowledge QoS 1 messages, in the order they were received, as one write (see
    above); one message, or a paho without the private call, goes through ack()."""
    global _batched_acks
    queue_packet = getattr(client, "_packet_queue", None) if _batched_acks else None
    if queue_packet is not None and len(mids) > 1:
        data = b"".join([_PUBACK.pack(mqtt.PUBACK, 2, mid) for mid in mids])
        try:
            queue_packet(mqtt.PUBACK, data, 0, 0)
            return
        except TypeError:  # paho changed its private call: nothing was queued
            log.warning("ingest: paho's packet queue changed; acknowledging one by one")
            _batched_acks = False
    for mid in mids:
        client.ack(mid, 1)


class Lanes:
    """The telemetry and events lanes, their MQTT callbacks and the subscriptions. In a
    sharded deployment the estates subscribed change on the network threads (a broker's
    confirmation, a reconnect) and the scheduler's (new estates): under ``_subscriptions``."""

    def __init__(
        self,
        endpoint: MqttEndpoint,
        registry: GatewayRegistry,
        stats: IngestStats,
        closing: threading.Event,
        root: str,
        client_id: str,
        shard: tuple[int, int] | None,
        queue_size: int,
        queue_bytes: int,
        partitions: PartitionSessions | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.registry = registry
        self.stats = stats
        self.root = root
        self.shard = shard
        self.partitions = partitions
        self._closing = closing  # disconnecting on purpose
        self._subscriptions = threading.Lock()
        # confirmed by the broker: subscribed estates by telemetry lane (a sharded process
        # has one; a scaled-out worker one per partition)
        self._confirmed: dict[Lane, set[str]] = {}
        # by SUBSCRIBE until the broker answers: its filters, and the estates a telemetry lane
        # counts as subscribed once it is granted
        self._asked: dict[tuple[Lane, int], tuple[list[tuple[str, int]], list[str] | None]] = {}
        # a scaled-out worker's sessions of the partitions it holds: (telemetry, events)
        self._held: dict[int, tuple[Lane, Lane]] = {}
        if partitions is not None:
            stats.received_open = self._received_open
        if shard:
            client_id = f"{client_id}-{shard[0]}of{shard[1]}"
        # Bounded: a full queue blocks that lane's MQTT network thread, which is the
        # backpressure; the broker holds the rest.
        self.telemetry = self._lane("telemetry", client_id, queue_size, queue_bytes, events=False)
        self.events = self._lane(
            "events", f"{client_id}-events", queue_size, queue_bytes, events=True
        )
        self.all = (self.telemetry, self.events)

    def _lane(self, name: str, client_id: str, size: int, max_bytes: int, events: bool) -> Lane:
        lane = Lane(
            name, self._make_client(client_id, events), queue.Queue(maxsize=size), events,
            ByteBudget(max_bytes), Failover(self.endpoint, min_s=0.5, max_s=30.0),
        )  # fmt: skip
        lane.client.user_data_set(lane)
        return lane

    def _partition_lane(self, base: Lane, partition: int, client_id: str) -> Lane:
        """A partition's session feeding ``base``'s queue and budget (one bound a worker)."""
        lane = Lane(
            f"p{partition}-{base.name}", self._make_client(client_id, base.events), base.queue,
            base.events,
            base.budget, Failover(self.endpoint, min_s=0.5, max_s=30.0), partition=partition,
        )  # fmt: skip
        lane.client.user_data_set(lane)
        return lane

    def _make_client(self, client_id: str, events: bool) -> mqtt.Client:
        # Telemetry lanes read the wire in chunks (ingest.wire: the cost a message). An events
        # lane carries few messages, the ones that must never be lost: nothing to gain there,
        # so it keeps paho's own reads and the alarm path no new code.
        make = mqtt.Client if events else WireClient
        client = make(
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
        client.on_connect = self.on_connect
        client.on_disconnect = self.on_disconnect
        client.on_connect_fail = self.on_connect_fail
        client.on_message = self.on_message
        client.on_subscribe = self.on_subscribe
        return client

    # --- state read by other threads ---------------------------------------------------------
    @property
    def sessions(self) -> list[Lane]:
        """The MQTT sessions this process holds: its two lanes, or (scaled out) the two of
        each partition it holds."""
        if self.partitions is None:
            return list(self.all)
        with self._subscriptions:
            return [lane for pair in self._held.values() for lane in pair]

    @property
    def connected(self) -> bool:
        """Every session connected (a worker holding no partition has none to be down)."""
        return all(lane.connected.is_set() for lane in self.sessions)

    @property
    def subscribed_estates(self) -> list[str]:
        with self._subscriptions:
            if self.partitions is not None:
                return sorted({e for lane, es in self._confirmed.items() for e in es})
            return sorted(self._confirmed.get(self.telemetry, set()))

    def _received_open(self) -> int:
        with self._subscriptions:
            return sum(lane.received for pair in self._held.values() for lane in pair)

    @property
    def held_partitions(self) -> list[int]:
        with self._subscriptions:
            return sorted(self._held)

    def partition_sessions(self) -> dict[int, dict[str, object]]:
        """Per held partition: its sessions' client ids and connection state, its estates."""
        with self._subscriptions:
            held = dict(self._held)
            confirmed = {lane: sorted(es) for lane, es in self._confirmed.items()}
        return {
            p: {
                "session_id": self.partitions.session_id(p) if self.partitions else None,
                "connected": {lane.name: lane.connected.is_set() for lane in pair},
                "node": pair[0].failover.node_url,
                "estates": confirmed.get(pair[0], []),
            }
            for p, pair in sorted(held.items())
        }

    # --- subscriptions (sharded deployments, partitions) -------------------------------------
    def _pairs(self) -> list[tuple[Lane, Lane]]:
        """(telemetry, events) of each session pair subscribing by estate."""
        if self.partitions is None:
            return [(self.telemetry, self.events)]
        with self._subscriptions:
            return list(self._held.values())

    def _estates_for(self, lane: Lane) -> set[str]:
        """The registered estates whose messages ``lane`` takes (a shard's, a partition's)."""
        if self.partitions is not None and lane.partition is not None:
            partition, split = lane.partition, self.partitions.partition_of
            return {e for e in self.registry.estates if split(e) == partition}
        assert self.shard is not None
        index, count = self.shard
        return {e for e in self.registry.estates if shard_of(e, count) == index}

    def _filters(self, lane: Lane, estates: list[str]) -> list[str]:
        if self.partitions is not None and lane.partition is not None:
            found = self.partitions.subscriptions(lane.partition, estates, self.root)
        else:
            found = [f for e in estates for f in estate_subscriptions(e, self.root)]
        return [f for f in found if lane.wants(f)]

    def _subscribe(self, lane: Lane, estates: list[str]) -> None:
        filters = [(f, 1) for f in self._filters(lane, estates)]
        if not filters:
            return
        # Held across subscribe(): the broker's confirmation (on_subscribe, on the network
        # thread) must find the mid recorded.
        with self._subscriptions:
            self._ask(lane, filters, None if lane.events else estates)

    def _ask(
        self, lane: Lane, filters: list[tuple[str, int]], estates: list[str] | None = None
    ) -> None:
        """SUBSCRIBE (under ``_subscriptions``), kept until the broker answers."""
        _rc, mid = lane.client.subscribe(filters)
        if mid is not None:
            self._asked[(lane, mid)] = (filters, estates)

    def subscribe_new_estates(self) -> None:
        """In a sharded or partitioned deployment, subscribe to the registered estates of
        this shard or of each held partition not yet subscribed (run after registrations;
        unregistered estates have no broker account)."""
        if self.shard is None and self.partitions is None:
            return
        self.registry.reload()
        for telemetry, events in self._pairs():
            mine = self._estates_for(telemetry)
            with self._subscriptions:
                fresh = sorted(mine - self._confirmed.get(telemetry, set()))
            for lane in (telemetry, events):
                if not lane.closed.is_set():
                    self._subscribe(lane, fresh)

    # --- a scaled-out worker's partitions ----------------------------------------------------
    def open_partition(self, partition: int) -> None:
        """Open the partition's two persistent sessions (clean start off: the broker hands
        over what it queued while no one held it); they subscribe when connected. Quick: the
        connection is made by their own network threads."""
        assert self.partitions is not None, "not a scaled-out worker"
        client_id = self.partitions.session_id(partition)
        with self._subscriptions:
            if partition in self._held or self._closing.is_set():
                return
            pair = (
                self._partition_lane(self.telemetry, partition, client_id),
                self._partition_lane(self.events, partition, f"{client_id}-events"),
            )
            self._held[partition] = pair
        for lane in pair:
            host, port = lane.failover.node
            lane.client.connect_async(host, port, keepalive=KEEPALIVE_S)
            lane.client.loop_start()

    def close_partition(self, partition: int, wait: bool = False) -> None:
        """The partition is no longer ours: close its sessions at once. What they delivered
        and is not committed is not acknowledged from now on (``revoked``: the recorder drops
        it), so the broker keeps it in the session for the partition's next owner. Their
        network threads end on a thread of their own unless ``wait`` (one may be finishing a
        wait for room in the queue, up to 0.1 s: a worker losing many partitions at once must
        not spend that on each, one after the other, on its lease thread)."""
        with self._subscriptions:
            pair = self._held.pop(partition, None)
            if pair is None:
                return
            for lane in pair:
                self._confirmed.pop(lane, None)
            for key in [k for k in self._asked if k[0] in pair]:
                del self._asked[key]
        for lane in pair:
            lane.revoked = True
            lane.closed.set()  # its network thread stops waiting for room in the queue
            lane.connected.clear()
            lane.client.disconnect()
        if wait:
            self._end_sessions(pair)
        else:
            name = f"ingest-close-p{partition}"
            threading.Thread(
                target=self._end_sessions, args=(pair,), name=name, daemon=True
            ).start()

    def _end_sessions(self, pair: tuple[Lane, Lane]) -> None:
        for lane in pair:
            lane.client.loop_stop()
        with self._subscriptions:  # its count, final now, to its lane's slot (no thread of
            for lane, base in zip(pair, self.all, strict=True):  # a lane writes those here)
                self.stats.received_by_lane[base.name] += lane.received

    def close_sessions(self) -> None:
        """Stopping: the partitions' network threads stop waiting for room in the queue (the
        lanes' own give up on ``closing``)."""
        for lane in self.sessions:
            lane.closed.set()

    # --- connection --------------------------------------------------------------------------
    def connect(self, wait_s: float) -> None:
        if self.partitions is not None:
            return  # sessions open per partition as its lease is acquired
        for lane in self.all:
            host, port = lane.failover.node
            lane.client.connect_async(host, port, keepalive=KEEPALIVE_S)
            lane.client.loop_start()
        deadline = time.monotonic() + wait_s
        for lane in self.all:
            if wait_s and not lane.connected.wait(max(0.0, deadline - time.monotonic())):
                log.warning(
                    "ingest: %s lane not yet connected to %s, still trying",
                    lane.name,
                    self.endpoint.url,
                )

    def disconnect(self) -> None:
        if self.partitions is not None:
            for partition in self.held_partitions:
                self.close_partition(partition, wait=True)
            return
        for lane in self.all:
            lane.client.disconnect()
            lane.client.loop_stop()
            lane.connected.clear()

    # --- MQTT network threads ----------------------------------------------------------------
    def on_connect(
        self, client: mqtt.Client, lane: Lane, _flags: object, reason: object, _props: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            log.error("ingest: broker refused the connection: %s", reason)
            return
        lane.generation += 1
        lane.connected_at = time.monotonic()
        if self.shard is None and lane.partition is None:
            with self._subscriptions:
                self._ask(lane, [(f, 1) for f in service_subscriptions(self.root) if lane.wants(f)])
        else:
            # a session the broker lost has no subscriptions: make this lane's again
            try:
                self.registry.reload_if_older(1.0)  # many partitions connect at once
            except Exception as exc:  # not on this thread: paho's loop would end with it
                log.warning("ingest: %s: estates not reloaded (%s); known ones", lane.name, exc)
            self._subscribe(lane, sorted(self._estates_for(lane)))
        lane.failover.connected()
        lane.connected.set()
        log.info("ingest: %s lane connected to %s", lane.name, lane.failover.node_url)

    def on_disconnect(
        self, client: mqtt.Client, lane: Lane, _flags: object, reason: object, _props: object
    ) -> None:
        lane.connected.clear()
        if not (self._closing.is_set() or lane.closed.is_set()):
            lost = lane.failover.node_url
            hop(client, lane.failover, KEEPALIVE_S)  # same client id: the session follows
            log.warning(
                "ingest: %s lane disconnected from %s (%s); reconnecting to %s",
                lane.name, lost, reason, lane.failover.node_url,
            )  # fmt: skip

    def on_connect_fail(self, client: mqtt.Client, lane: Lane) -> None:
        if not (self._closing.is_set() or lane.closed.is_set()):
            hop(client, lane.failover, KEEPALIVE_S)

    def on_subscribe(
        self, _c: mqtt.Client, lane: Lane, mid: int, codes: list[ReasonCode], _props: object
    ) -> None:
        with self._subscriptions:
            filters, estates = self._asked.pop((lane, mid), ([], None))
            if any(c.is_failure for c in codes):
                log.error(
                    "ingest: %s lane: the broker refused %s (%s); asking again in %.0f s",
                    lane.name, [f for f, _q in filters], codes, RESUBSCRIBE_S,
                )  # fmt: skip
                again = threading.Timer(RESUBSCRIBE_S, self._ask_again, (lane, filters, estates))
                again.daemon = True
                again.start()
            elif estates is not None and (lane.partition is None or not lane.revoked):
                self._confirmed.setdefault(lane, set()).update(estates)

    def _ask_again(
        self, lane: Lane, filters: list[tuple[str, int]], estates: list[str] | None
    ) -> None:
        """A refused subscription, asked for again on the same connection (a new connection
        subscribes anew by itself)."""
        if self._closing.is_set() or lane.closed.is_set() or not lane.connected.is_set():
            return
        with self._subscriptions:
            self._ask(lane, filters, estates)

    def on_message(self, _c: mqtt.Client, lane: Lane, msg: mqtt.MQTTMessage | Publish) -> None:
        if self._closing.is_set() or lane.closed.is_set():
            return  # not acknowledged: the broker keeps it for the next session
        if lane.partition is None:
            self.stats.received_by_lane[lane.name] += 1  # this thread's own slot
        else:
            lane.received += 1  # ditto: a partition session's own count
        # Only queue the bytes: decoding here would hold the interpreter lock against the
        # writer, whose SQLite steps release and retake it per row (a lock convoy).
        payload = bytes(msg.payload)
        weight = len(payload) + OVERHEAD_BYTES
        # Both waits block while the writer is behind (backpressure), until stop() gives up on
        # them: the message is then not acknowledged, and the broker keeps it.
        give_up = self._closing if lane.partition is None else lane.closed
        if not lane.budget.acquire(weight, give_up):
            return
        item = Received(
            msg.topic, payload, now_ms(), msg.mid, msg.qos, lane.generation, lane, weight
        )
        if msg.dup:  # the clock is read only for a redelivery
            item.redelivered = (
                lane.generation == 1 and time.monotonic() - lane.connected_at < REDELIVERY_WINDOW_S
            )
        try:
            lane.queue.put_nowait(item)  # the usual case: room at once, no timed wait
            return
        except queue.Full:
            pass
        while True:
            try:
                lane.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                if give_up.is_set():
                    lane.budget.release(weight)
                    return
