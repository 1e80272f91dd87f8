"""The lanes' MQTT client: paho-mqtt's, reading its socket in chunks.

Paho reads a packet with several ``recv`` calls (its first byte, its remaining length byte by
byte, then its body) after a ``select`` of its own, and handles one packet a ``select``: at one
reading a message that is ~5 system calls and ~10 us of Python a message on the lane's network
thread, which holds the interpreter lock against the decoder meanwhile. ``WireClient`` gives
paho a socket that reads up to ``CHUNK`` bytes at a time and serves those small reads from
memory. Paho's own loop already skips the wait in ``select`` while a socket reports
``pending()`` bytes (as for TLS), so nothing read is left waiting. After paho has handled a
packet, the whole PUBLISH packets (QoS 0, or QoS 1 acknowledged by hand) that follow it in
memory go to ``on_message`` straight from the buffer as ``Publish`` records; anything else (a
SUBACK, a PINGRESP, a packet not yet whole) is left to paho, which reads on from there.
Acknowledging stays paho's (``ack``, or ``lanes.ack_all``).

This relies on private parts of paho's ``Client`` (pinned: paho-mqtt >=2.1,<3): the methods
``_create_socket`` (the socket it connects) and ``_handle_on_message``, and the attributes
``_in_packet`` (paho holds no part of a packet: the next byte in memory starts one) and
``_in_callback_mutex`` (held around a callback). Without the methods ``BUFFERED_READS`` is
False and the client is paho's own; without the attributes, paho handles every packet itself
(from memory); either logs a warning."""

from __future__ import annotations

import logging
import socket
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

log = logging.getLogger(__name__)

CHUNK = 64 * 1024  # bytes read from the socket at a time: the most a lane holds unhandled
READ_BURST = 200  # paho's reads from memory before its loop runs again (acks, pings)

_PRIVATE = ("_create_socket", "_handle_on_message")
BUFFERED_READS = all(callable(getattr(mqtt.Client, name, None)) for name in _PRIVATE)
if not BUFFERED_READS:
    log.warning("ingest: paho's client changed; the lanes read their sockets unbuffered")
_CALLBACK_LOCK = "_in_callback_mutex"  # instance attributes: checked on the first message
_IN_PACKET = "_in_packet"
_PUBLISH = 3


class Publish:
    """A PUBLISH read straight from memory, with the fields of paho's ``MQTTMessage`` the
    lanes read."""

    __slots__ = ("dup", "mid", "payload", "qos", "retain", "topic")

    def __init__(
        self, topic: str, payload: bytes, mid: int, qos: int, dup: bool, retain: bool
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.mid = mid
        self.qos = qos
        self.dup = dup
        self.retain = retain


class BufferedSocket:
    """A connected socket (plain or TLS) whose reads are served from a chunk read ahead;
    everything else is the socket's own."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""
        self._at = 0  # of _buffer, the next byte to hand out

    def __getattr__(self, name: str) -> Any:  # send, fileno, close, setblocking, ...
        return getattr(self._sock, name)

    def pending(self) -> int:
        """Bytes read but not yet handed out (and, TLS, decrypted but not yet read)."""
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return len(self._buffer) - self._at + inner

    def recv(self, size: int) -> bytes:
        """Up to ``size`` bytes: from memory, else from the socket (raising as it does when
        nothing is there)."""
        at = self._at
        held = len(self._buffer)
        if at < held:
            end = min(at + size, held)
            self._at = end
            return self._buffer[at:end]
        if size >= CHUNK:  # a large body: straight from the socket, not copied twice
            return self._sock.recv(size)
        data = self._sock.recv(CHUNK)
        if len(data) <= size:
            return data
        self._buffer = data
        self._at = size
        return data[:size]

    def take_publishes(self, qos1: bool) -> list[Publish]:
        """The whole PUBLISH packets (MQTT 3.1.1; QoS 1 too if ``qos1``) at the front of what
        is held, taken out in order; stops at anything else, or at a packet not yet whole."""
        buf, at, held = self._buffer, self._at, len(self._buffer)
        out: list[Publish] = []
        while at + 4 <= held:
            header = buf[at]
            qos = (header >> 1) & 3
            if header >> 4 != _PUBLISH or qos > int(qos1):
                break
            length, i, shift = 0, at + 1, 0
            while i < held and i - at <= 4:  # remaining length: 1 to 4 bytes
                byte = buf[i]
                i += 1
                length |= (byte & 127) << shift
                shift += 7
                if not byte & 128:
                    break
            else:
                break  # not all of it here yet (or malformed: paho's to judge)
            end = i + length
            size = (buf[i] << 8 | buf[i + 1]) if i + 2 <= held else 0
            if end > held or size == 0 or 2 + size + 2 * qos > length:
                break  # not whole yet, or not for us to judge
            try:
                topic = buf[i + 2 : i + 2 + size].decode()
            except UnicodeDecodeError:
                break  # paho hands it on with its own topic error
            body = i + 2 + size
            mid = 0
            if qos:
                mid = buf[body] << 8 | buf[body + 1]
                body += 2
            out.append(Publish(topic, buf[body:end], mid, qos, bool(header & 8), bool(header & 1)))
            at = end
        self._at = at
        return out


class WireClient(mqtt.Client):
    """Paho's client reading its socket in chunks (see the module's docstring). Its
    ``on_message`` gets a ``Publish`` for a PUBLISH read from memory, paho's ``MQTTMessage``
    for one paho read (both have topic, payload, mid, qos, dup and retain)."""

    _filtered = False  # message_callback_add() called: paho's matcher decides

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # PUBLISH packets parsed here only for MQTT 3.1.1 (no properties), and QoS 1 only
        # when paho does not acknowledge on receipt
        self._direct = len(args) <= 2 and kwargs.get("protocol", mqtt.MQTTv311) == mqtt.MQTTv311
        self._direct_qos1 = bool(kwargs.get("manual_ack", False))
        self._direct_warned = False

    def manual_ack_set(self, on: bool) -> None:
        self._direct_qos1 = on
        super().manual_ack_set(on)

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        if BUFFERED_READS and isinstance(sock, socket.socket):  # not a websocket wrapper
            return BufferedSocket(sock)
        return sock

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Paho handles one packet a call; then the PUBLISH packets after it in memory, and
        the rest of what was read through paho again."""
        rc = super().loop_read(max_packets)
        for _ in range(READ_BURST):
            sock = self.socket()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or not isinstance(sock, BufferedSocket):
                break
            if self._direct and self._between_packets():
                self._deliver(sock.take_publishes(self._direct_qos1))
            if sock.pending() <= 0 or self.socket() is not sock:
                break
            rc = super().loop_read(max_packets)
        return rc

    def _between_packets(self) -> bool:
        """Paho holds no part of a packet: the next byte held starts one."""
        state = getattr(self, _IN_PACKET, None)
        if isinstance(state, dict) and "command" in state:
            return bool(state["command"] == 0)
        self._no_direct("paho's packet state changed")
        return False

    def _no_direct(self, why: str) -> None:
        self._direct = False
        if not self._direct_warned:
            self._direct_warned = True
            log.warning("ingest: %s; paho reads every packet itself", why)

    def _deliver(self, publishes: list[Publish]) -> None:
        if not publishes:
            return
        on_message = self.on_message
        lock = getattr(self, _CALLBACK_LOCK, None)
        if self._filtered or on_message is None or lock is None or self.suppress_exceptions:
            if lock is None:
                self._no_direct("paho's callback lock changed")
            for p in publishes:  # paho's own delivery (matcher, logging, swallowing)
                super()._handle_on_message(p)  # type: ignore[arg-type]  # duck-typed
            return
        userdata = self.user_data_get()
        with lock:
            for p in publishes:
                on_message(self, userdata, p)  # type: ignore[arg-type]

    def message_callback_add(self, sub: str, callback: Any) -> None:
        self._filtered = True
        super().message_callback_add(sub, callback)

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        on_message = self.on_message
        lock = getattr(self, _CALLBACK_LOCK, None)
        if self._filtered or on_message is None or lock is None or self.suppress_exceptions:
            super()._handle_on_message(message)  # paho's own (logs and swallows, if asked)
            return
        with lock:
            on_message(self, self.user_data_get(), message)
