"""The gateway's MQTT side (CONTRACT.md): what is buffered goes out, in order, at most
``max_inflight`` QoS 1 messages at a time; acknowledged messages leave the buffer.

One thread owns the MQTT client: it connects (credentials, TLS; to a clustered broker's next
node when one is lost, with exponential backoff and jitter once every node failed: the
protocol/failover.py rules, same client id so the session follows), publishes the retained
``online`` status with how much is buffered, resends what the broker never acknowledged, then
keeps the pipe full, live events first. A fresh client per connection means nothing of the
backlog lives in paho's memory: the buffer on disk is the only truth.
Commands arriving on ``cmd`` are handed, through a bounded queue, to whoever runs the adapters;
their acks go back on ``cmd/ack``.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.buffer import BufferStats, ForwardBuffer
from protocol.clock import now_ms
from protocol.endpoint import MqttEndpoint
from protocol.failover import Failover
from protocol.messages import (
    Command,
    CommandAck,
    Event,
    MessageRejected,
    Reading,
    decode_command,
    encode_command_ack,
    encode_status,
)
from protocol.topics import Channel, gateway_topic

log = logging.getLogger(__name__)

T = TypeVar("T")  # what a buffer stores: readings or events

COMMAND_QUEUE = 256  # commands waiting for the adapter thread; more are refused, not queued


@dataclass(frozen=True)
class LinkSettings:
    keepalive_s: int = 30
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 60.0
    max_inflight: int = 20
    status_interval_s: float = 30.0
    client_cert: str | None = None  # TLS client certificate and key (PEM), when the broker asks
    client_key: str | None = None


@dataclass
class LinkStats:
    connected: bool = False
    connects: int = 0
    sent_messages: int = 0
    acked_messages: int = 0
    last_error: str | None = None
    refused: bool = False  # the broker refused the credentials (the last time it answered)


class Delivery:
    """What ``publish_*`` returns: wait until the broker has acknowledged those items."""

    def __init__(self, buffer: ForwardBuffer, row_id: int) -> None:
        self._buffer, self._row_id = buffer, row_id

    def wait_for_publish(self, timeout: float | None = None) -> bool:
        return self._buffer.wait_delivered(self._row_id, 3600.0 if timeout is None else timeout)


class GatewayPublisher:
    """Buffer on disk + the MQTT link that drains it."""

    def __init__(
        self,
        estate: str,
        gw: str,
        endpoint: MqttEndpoint,
        state_dir: Path,
        root: str = "estates",
        fw: str = "estatewatch-gateway 0.2",
        max_inflight: int = 20,
        buffer: ForwardBuffer | None = None,
        link: LinkSettings | None = None,
    ) -> None:
        self.estate, self.gw, self.root, self.fw = estate, gw, root, fw
        self.endpoint = endpoint
        self.settings = link or LinkSettings(max_inflight=max_inflight)
        self.buffer = buffer or ForwardBuffer(state_dir / f"{estate}.{gw}.buffer.db")
        self.stats = LinkStats()
        s = self.settings
        self.failover = Failover(endpoint, s.reconnect_min_s, s.reconnect_max_s, stable_s=10.0)
        self.commands: queue.Queue[Command] = queue.Queue(COMMAND_QUEUE)
        self._acks_out: deque[CommandAck] = deque(maxlen=COMMAND_QUEUE)
        self._stop = threading.Event()
        self._held_down = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        # Optional fields for the status message (adapters' field-side health); additive.
        self.status_extra: Callable[[], dict[str, Any]] | None = None

    def topic(self, channel: Channel) -> str:
        return gateway_topic(self.estate, self.gw, channel, self.root)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -- what callers use -------------------------------------------------------------------

    def start(self, wait_s: float = 10.0) -> bool:
        """Start the link thread; True once connected (it keeps trying in the background)."""
        self._thread = threading.Thread(target=self._run, name=f"gw-link-{self.gw}", daemon=True)
        self._thread.start()
        return self._connected.wait(wait_s)

    def publish_telemetry(self, readings: Sequence[Reading]) -> list[Delivery]:
        """Buffer readings on disk; they go out in batches (by size and linger time)."""
        return self._buffered(self.buffer.add_readings, readings)

    def publish_events(self, events: Sequence[Event]) -> list[Delivery]:
        """Buffer events on disk; they go out at once, before any waiting telemetry."""
        return self._buffered(self.buffer.add_events, events)

    def _buffered(self, add: Callable[[Sequence[T]], int], items: Sequence[T]) -> list[Delivery]:
        """Store ``items`` with ``add`` and wake the link for them (none given: nothing to do)."""
        if not items:
            return []
        row = add(items)
        self._wake.set()
        return [Delivery(self.buffer, row)]

    def acknowledge(self, ack: CommandAck) -> None:
        self._acks_out.append(ack)
        self._wake.set()

    def hold_down(self, down: bool) -> None:
        """Cut (or restore) the network link, as a broken uplink would: no clean disconnect,
        so the broker publishes the Last Will."""
        if down:
            self._held_down.set()
        else:
            self._held_down.clear()
        self._wake.set()

    @property
    def buffered(self) -> BufferStats:
        return self.buffer.stats

    def stop(self, drain_s: float = 0.0) -> None:
        """Optionally wait up to ``drain_s`` for the buffer to empty, announce ``offline``
        (retained) and disconnect."""
        deadline = time.monotonic() + drain_s
        while drain_s and self.connected and time.monotonic() < deadline:
            if self.buffer.stats.messages == 0:
                break
            time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(15)
        self.buffer.close()

    # -- the link thread --------------------------------------------------------------------

    def _status(self, state: str) -> bytes:
        st = self.buffer.stats
        extra: dict[str, Any] = {}
        if self.status_extra is not None and state == "online":
            try:
                extra["adapters"] = self.status_extra()
            except Exception:
                log.exception("adapter health failed; status sent without it")
        return encode_status(
            self.gw,
            state,
            now_ms(),
            fw=self.fw,
            buffered=st.messages if state == "online" else None,
            buffered_readings=st.readings,
            dropped=st.dropped_readings,
            **extra,
        )

    def _new_client(self) -> mqtt.Client:
        ep = self.endpoint
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"gw-{self.estate}-{self.gw}",
            clean_session=False,  # the broker keeps our cmd subscription while we are away
            protocol=mqtt.MQTTv311,
        )
        if ep.username:
            client.username_pw_set(ep.username, ep.password)
        if ep.tls:
            client.tls_set(
                ca_certs=ep.ca_file,
                certfile=self.settings.client_cert,
                keyfile=self.settings.client_key,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        client.max_inflight_messages_set(self.settings.max_inflight + 2)
        client.will_set(self.topic(Channel.STATUS), self._status("offline"), 1, True)
        return client

    @property
    def node_url(self) -> str:
        """The broker node the link uses (or tries next)."""
        return self.failover.node_url

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._held_down.is_set():
                self._wake.wait(0.2)
                self._wake.clear()
                continue
            client = self._new_client()
            session = _Session(self, client)
            try:
                session.run()
            except Exception as exc:  # a broken link must never end the gateway
                self.stats.last_error = str(exc)
                log.warning("gateway %s/%s: link error: %s", self.estate, self.gw, exc)
            finally:
                self._connected.clear()
                self.stats.connected = False
                with contextlib.suppress(Exception):
                    client.loop_stop()
            if self._stop.is_set():
                break
            lost = self.failover.node_url
            delay = self.failover.lost()
            log.info(
                "gateway %s/%s: broker %s unreachable (%s); trying %s in %.1f s",
                self.estate,
                self.gw,
                lost,
                self.stats.last_error,
                self.failover.node_url,
                delay,
            )
            self._stop.wait(delay)


class _Session:
    """One connection: connect, announce, resend, pump; returns when the link breaks."""

    def __init__(self, pub: GatewayPublisher, client: mqtt.Client) -> None:
        self.pub = pub
        self.client = client
        self.inflight: dict[int, int] = {}  # paho mid -> seq
        self.acked: list[int] = []
        self.connack: Any = None
        self.lasted_s = 0.0
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        client.on_message = self._on_message

    def _on_connect(self, _c: object, _u: object, _f: object, reason: Any, _p: object) -> None:
        self.connack = reason

    def _on_publish(self, _c: object, _u: object, mid: int, _rc: object, _p: object) -> None:
        seq = self.inflight.pop(mid, None)
        if seq is not None:
            self.acked.append(seq)

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        pub = self.pub
        try:
            cmd = decode_command(bytes(msg.payload))
        except MessageRejected as exc:
            log.warning("gateway %s/%s: bad command ignored: %s", pub.estate, pub.gw, exc)
            return
        try:
            pub.commands.put_nowait(cmd)
        except queue.Full:
            pub.acknowledge(CommandAck(cmd.id, False, now_ms(), "gateway busy: too many commands"))

    def run(self) -> None:
        pub, client = self.pub, self.client
        host, port = pub.failover.node
        try:
            client.connect(host, port, keepalive=pub.settings.keepalive_s)
        except (OSError, ssl.SSLError) as exc:
            pub.stats.last_error = f"{type(exc).__name__}: {exc}"
            return
        deadline = time.monotonic() + 10
        while self.connack is None:
            rc = client.loop(0.1)
            if self.connack is not None:
                break  # a refusal comes as a CONNACK and an error from the same loop()
            if rc != mqtt.MQTT_ERR_SUCCESS or time.monotonic() > deadline:
                pub.stats.last_error = "no answer to CONNECT"
                return
        if getattr(self.connack, "is_failure", False):
            pub.stats.last_error = f"broker refused the connection: {self.connack}"
            pub.stats.refused = True
            log.error(
                "gateway %s/%s: %s: check the gateway's username, password and ACL",
                pub.estate,
                pub.gw,
                pub.stats.last_error,
            )
            client.disconnect()
            return
        started = time.monotonic()
        pub.failover.connected()
        client.subscribe(pub.topic(Channel.CMD), 1)
        client.publish(pub.topic(Channel.STATUS), pub._status("online"), 1, True)
        pub.stats.connects += 1
        pub.stats.refused = False
        pub.stats.connected = True
        pub._connected.set()
        next_status = time.monotonic() + pub.settings.status_interval_s
        try:
            while not pub._stop.is_set():
                if pub._held_down.is_set():
                    self._cut()
                    return
                self._pump()
                if time.monotonic() >= next_status:
                    client.publish(pub.topic(Channel.STATUS), pub._status("online"), 1, True)
                    next_status = time.monotonic() + pub.settings.status_interval_s
                # loop() waits on the socket; a short timeout keeps new buffer rows moving.
                rc = client.loop(0.02 if self.inflight or pub._wake.is_set() else 0.1)
                pub._wake.clear()
                if self.acked:
                    acked, self.acked = self.acked, []
                    pub.buffer.delivered(acked)
                    pub.stats.acked_messages += len(acked)
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    pub.stats.last_error = f"connection lost ({mqtt.error_string(rc)})"
                    return
            self._goodbye()
        finally:
            self.lasted_s = time.monotonic() - started

    def _pump(self) -> None:
        pub, client = self.pub, self.client
        while pub._acks_out:
            ack = pub._acks_out.popleft()
            client.publish(pub.topic(Channel.CMD_ACK), encode_command_ack(ack), 1)
        while len(self.inflight) < pub.settings.max_inflight:
            skip = set(self.inflight.values()) | set(self.acked)
            msg = pub.buffer.next_message(skip)
            if msg is None:
                return
            channel = Channel.EVENTS if msg.channel == 0 else Channel.TELEMETRY
            info = client.publish(pub.topic(channel), msg.payload(pub.gw, now_ms()), 1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return  # the socket broke; loop() notices and the session ends
            self.inflight[info.mid] = msg.seq
            pub.stats.sent_messages += 1

    def _cut(self) -> None:
        """Drop the TCP connection without DISCONNECT, as a lost uplink does."""
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.pub.stats.last_error = "network held down by the scenario"

    def _goodbye(self) -> None:
        pub, client = self.pub, self.client
        info = client.publish(pub.topic(Channel.STATUS), pub._status("offline"), 1, True)
        deadline = time.monotonic() + 5
        while not info.is_published() and time.monotonic() < deadline:
            if client.loop(0.05) != mqtt.MQTT_ERR_SUCCESS:
                break
            if self.acked:
                pub.buffer.delivered(self.acked)
                self.acked = []
        client.disconnect()
        client.loop(0.1)
