"""The lanes' MQTT client: paho-mqtt's, reading its socket in chunks.

Paho reads a packet with several ``recv`` calls (its first byte, its remaining length byte by
byte, then its body) after a ``select`` of its own, and handles one packet a ``select``: at one
reading a message that is ~5 system calls a message on the lane's network thread, which holds
the interpreter lock against the decoder between them. ``WireClient`` gives paho a socket that
reads up to ``CHUNK`` bytes at a time and serves those small reads from memory, then handles
every whole packet already read before paho selects again. Paho's own loop already skips the
wait in ``select`` while a socket reports ``pending()`` bytes (as for TLS), so nothing read is
left waiting. A message's delivery skips paho's topic matcher when no per-topic callback is set
(the lanes set none).

This relies on two private methods of paho's ``Client`` (pinned: paho-mqtt >=2.1,<3):
``_create_socket`` (the socket it connects) and ``_handle_on_message`` (and the lock it holds
around a callback, ``_in_callback_mutex``). If a paho release no
longer has them, ``BUFFERED_READS`` is False, a warning is logged, and the client is paho's
own (its overrides are then never called: paho reads its socket as before)."""

from __future__ import annotations

import logging
import socket
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

log = logging.getLogger(__name__)

CHUNK = 64 * 1024  # bytes read from the socket at a time: the most a lane holds unhandled
READ_BURST = 200  # packets handled from memory before paho's loop runs again (acks, pings)

_PRIVATE = ("_create_socket", "_handle_on_message")
BUFFERED_READS = all(callable(getattr(mqtt.Client, name, None)) for name in _PRIVATE)
# held by paho around a callback (an instance attribute: checked on the first message)
_CALLBACK_LOCK = "_in_callback_mutex"
if not BUFFERED_READS:
    log.warning("ingest: paho's client changed; the lanes read their sockets unbuffered")


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


class WireClient(mqtt.Client):
    """Paho's client with buffered socket reads (see the module's docstring)."""

    _filtered = False  # message_callback_add() called: paho's matcher decides

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        if BUFFERED_READS and isinstance(sock, socket.socket):  # not a websocket wrapper
            return BufferedSocket(sock)
        return sock

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Paho handles one packet a call; then the rest of what was already read."""
        rc = super().loop_read(max_packets)
        for _ in range(READ_BURST):
            sock = self.socket()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or not isinstance(sock, BufferedSocket):
                break
            if sock.pending() <= 0:
                break
            rc = super().loop_read(max_packets)
        return rc

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
