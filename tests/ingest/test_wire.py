"""The lanes' MQTT client (ingest.wire): paho's, reading its socket in chunks. Against a real
Mosquitto behind a proxy that cuts the broker's stream into TCP writes of any size: every
message arrives whole and in order (small and larger than a chunk), across a reconnect, and
only what was acknowledged is not delivered again; with the private calls missing it is
paho's client as before."""

from __future__ import annotations

import contextlib
import random
import select
import socket
import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import ingest.wire as wire
from estatewatch.broker import ManagedMosquitto
from ingest.lanes import ack_all
from ingest.wire import CHUNK, BufferedSocket, Publish, WireClient

pytestmark = pytest.mark.integration

TOPIC = "estates/wire/gw/gw-01/telemetry"


class SplittingProxy:
    """TCP between a client and the broker; the broker's bytes go on in writes of 1 to 700
    bytes at random, a pause now and then, so the client's reads end anywhere in a packet."""

    def __init__(self, broker_port: int) -> None:
        self.broker_port = broker_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.links: list[socket.socket] = []
        self.rng = random.Random(15)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.broker_port))
            self.links += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, split: bool) -> None:
        try:
            while data := src.recv(65536):
                while split and data:
                    n = self.rng.randint(1, 700)
                    dst.sendall(data[:n])
                    data = data[n:]
                    if self.rng.random() < 0.05:
                        time.sleep(0.001)
                if data:
                    dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            s.close()

    def cut(self) -> None:
        """Drop every connection at once (the client reconnects)."""
        for s in self.links:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        self.links.clear()

    def close(self) -> None:
        self.server.close()
        self.cut()


@pytest.fixture
def proxy(mosquitto: ManagedMosquitto) -> Iterator[SplittingProxy]:
    p = SplittingProxy(mosquitto.endpoint.port)
    yield p
    p.close()


def _payloads(n: int) -> list[bytes]:
    """Mostly small (one reading's size), some across and some beyond a chunk."""
    rng = random.Random(7)
    sizes = [
        rng.choice([1, 60, 150, 400, 3_000, CHUNK - 3, CHUNK + 5, 3 * CHUNK]) for _ in range(n)
    ]
    return [f"{i:06d}".encode() + bytes([65 + i % 26]) * size for i, size in enumerate(sizes)]


class Receiver:
    """A persistent session on a WireClient (manual acks, as the lanes)."""

    def __init__(self, port: int, broker: ManagedMosquitto) -> None:
        self.got: list[mqtt.MQTTMessage | Publish] = []
        self.cv = threading.Condition()
        self.connects = 0
        ep = broker.endpoint
        c = WireClient(
            CallbackAPIVersion.VERSION2,
            client_id="wire-under-test",
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        c.username_pw_set(ep.username, ep.password)
        c.max_inflight_messages_set(1000)
        c.reconnect_delay_set(1, 2)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c

    def _on_connect(self, c: mqtt.Client, *_a: object) -> None:
        c.subscribe(TOPIC, 1)
        with self.cv:
            self.connects += 1
            self.cv.notify_all()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage | Publish) -> None:
        with self.cv:
            self.got.append(msg)
            self.cv.notify_all()

    def wait(self, what: str, check: object, timeout: float = 30) -> None:
        with self.cv:
            assert self.cv.wait_for(check, timeout), what  # type: ignore[arg-type]

    def stop(self) -> None:
        time.sleep(0.3)  # let the network thread write the queued acks
        self.client.disconnect()
        self.client.loop_stop()


def _publish(broker: ManagedMosquitto, payloads: list[bytes]) -> None:
    ep = broker.endpoint
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"wire-pub-{time.monotonic_ns()}")
    pub.username_pw_set(ep.username, ep.password)
    pub.max_inflight_messages_set(1000)
    pub.connect(ep.host, ep.port)
    pub.loop_start()
    for info in [pub.publish(TOPIC, p, 1) for p in payloads]:
        info.wait_for_publish(30)
    pub.disconnect()
    pub.loop_stop()


def test_a_stream_cut_anywhere_arrives_whole_across_a_reconnect(
    mosquitto: ManagedMosquitto, proxy: SplittingProxy
) -> None:
    r = Receiver(proxy.port, mosquitto)
    r.wait("connected", lambda: r.connects == 1)
    assert isinstance(r.client.socket(), BufferedSocket)
    time.sleep(0.3)  # subscribed
    first = _payloads(400)
    _publish(mosquitto, first)
    r.wait("all of the first part", lambda: len(r.got) >= len(first))
    assert [m.payload for m in r.got] == first  # whole, in order
    assert [m.topic for m in r.got] == [TOPIC] * len(first)
    assert any(isinstance(m, Publish) for m in r.got)  # read straight from memory
    assert len({m.mid for m in r.got}) == len(first)
    acked = r.got[:250]
    ack_all(r.client, [m.mid for m in acked])
    time.sleep(0.5)  # the acks written
    proxy.cut()
    r.wait("reconnected", lambda: r.connects == 2)
    # the 150 unacknowledged come again on the new connection, then what follows
    second = _payloads(100)
    _publish(mosquitto, second)
    r.wait("redeliveries and the second part", lambda: len(r.got) >= len(first) + 150 + 100)
    after = [m.payload for m in r.got[len(first) :]]
    assert after == first[250:] + second
    assert all(m.dup for m in r.got[len(first) : len(first) + 150])
    r.stop()


def test_without_paho_s_private_calls_the_client_is_paho_s(
    mosquitto: ManagedMosquitto, proxy: SplittingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire, "BUFFERED_READS", False)
    r = Receiver(proxy.port, mosquitto)
    r.wait("connected", lambda: r.connects == 1)
    sock = r.client.socket()
    assert isinstance(sock, socket.socket) and not isinstance(sock, BufferedSocket)
    time.sleep(0.3)
    sent = _payloads(120)
    _publish(mosquitto, sent)
    r.wait("all", lambda: len(r.got) >= len(sent))
    assert [m.payload for m in r.got] == sent
    r.stop()


def test_without_paho_s_packet_state_paho_reads_every_packet(
    mosquitto: ManagedMosquitto, proxy: SplittingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire, "_IN_PACKET", "_in_packet_renamed")
    r = Receiver(proxy.port, mosquitto)
    r.wait("connected", lambda: r.connects == 1)
    assert isinstance(r.client.socket(), BufferedSocket)
    time.sleep(0.3)
    sent = _payloads(120)
    _publish(mosquitto, sent)
    r.wait("all", lambda: len(r.got) >= len(sent))
    assert [m.payload for m in r.got] == sent
    assert not any(isinstance(m, Publish) for m in r.got)
    r.stop()


def test_buffered_reads_return_the_stream_as_written() -> None:
    """paho's reads (1 byte, 1 byte, the rest) over a socket fed in random pieces."""
    a, b = socket.socketpair()
    b.setblocking(False)
    rng = random.Random(3)
    stream = bytes(rng.randrange(256) for _ in range(300_000))
    feeder = threading.Thread(target=_feed, args=(a, stream, rng), daemon=True)
    feeder.start()
    reader = BufferedSocket(b)
    out = bytearray()
    while len(out) < len(stream):
        size = rng.choice([1, 1, 2, 37, 5_000, CHUNK, 2 * CHUNK])
        try:
            data = reader.recv(size)
        except BlockingIOError:
            assert reader.pending() == 0  # nothing held back while paho would wait
            select.select([b], [], [], 1)
            continue
        assert 0 < len(data) <= size
        out += data
    assert bytes(out) == stream
    assert reader.pending() == 0
    feeder.join()
    a.close()
    reader.close()


def _feed(s: socket.socket, data: bytes, rng: random.Random) -> None:
    while data:
        n = rng.randint(1, 9_000)
        s.sendall(data[:n])
        data = data[n:]
