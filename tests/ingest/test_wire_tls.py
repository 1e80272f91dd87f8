"""The lanes' MQTT client (ingest.wire) over TLS, as a lane configured with `tls` connects to
an external broker: a real Mosquitto with a TLS listener (certificates made by the openssl
command line for this test), messages small and larger than a chunk all arrive whole and in
order through TLS records (Mosquitto writes a record a packet, so a read here holds one
packet: the buffered socket passes TLS's reads and its pending bytes through), and what was
acknowledged is not delivered again after a reconnect."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from estatewatch.broker import free_port, wait_for_port
from ingest.lanes import ack_all
from ingest.wire import CHUNK, BufferedSocket, Publish, WireClient

pytestmark = pytest.mark.integration

TOPIC = "estates/wire-tls/gw/gw-01/telemetry"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A Mosquitto listening with TLS only, on a free port: (port, the CA's certificate)."""
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        pytest.fail("mosquitto is not installed: .ci/run installs it (apt-get install mosquitto)")
    if not shutil.which("openssl"):
        pytest.fail("openssl is not installed: apt-get install openssl")
    ca, key = tmp_path / "ca.crt", tmp_path / "ca.key"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", str(key), "-out", str(ca),
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", str(tmp_path / "server.key"), "-out", str(tmp_path / "server.csr"),
    )  # fmt: skip
    (tmp_path / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        "x509", "-req", "-in", str(tmp_path / "server.csr"), "-CA", str(ca), "-CAkey", str(key),
        "-CAcreateserial", "-days", "2", "-extfile", str(tmp_path / "ext.cnf"),
        "-out", str(tmp_path / "server.crt"),
    )  # fmt: skip
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\n"
        f"cafile {ca}\ncertfile {tmp_path / 'server.crt'}\nkeyfile {tmp_path / 'server.key'}\n"
        "max_inflight_messages 1000\nmax_queued_messages 100000\n"
        # as root Mosquitto would switch to a user that cannot read the key
        + ("user root\n" if os.geteuid() == 0 else "")
    )
    proc = subprocess.Popen([exe, "-c", str(conf)], stderr=subprocess.PIPE)
    try:
        assert wait_for_port("127.0.0.1", port, 10), "mosquitto with TLS did not start"
        yield port, ca
    finally:
        proc.terminate()
        proc.wait(10)


def _payloads(n: int) -> list[bytes]:
    sizes = [(1, 90, 400, 3_000, CHUNK + 7, 2 * CHUNK)[i % 6] for i in range(n)]
    return [f"{i:05d}".encode() + bytes([65 + i % 26]) * size for i, size in enumerate(sizes)]


def _publish(port: int, ca: Path, payloads: list[bytes]) -> None:
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"tls-pub-{time.monotonic_ns()}")
    pub.tls_set(ca_certs=str(ca))
    pub.max_inflight_messages_set(1000)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    for info in [pub.publish(TOPIC, p, 1) for p in payloads]:
        info.wait_for_publish(30)
    pub.disconnect()
    pub.loop_stop()


def test_over_tls_every_message_arrives_whole_and_acks_hold(
    tls_broker: tuple[int, Path],
) -> None:
    port, ca = tls_broker
    got: list[mqtt.MQTTMessage | Publish] = []
    connects: list[int] = []
    cv = threading.Condition()

    def on_connect(c: mqtt.Client, *_a: object) -> None:
        c.subscribe(TOPIC, 1)
        with cv:
            connects.append(1)
            cv.notify_all()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage | Publish) -> None:
        with cv:
            got.append(msg)
            cv.notify_all()

    def wait(what: str, check: object) -> None:
        with cv:
            assert cv.wait_for(check, 30), what  # type: ignore[arg-type]

    c = WireClient(
        CallbackAPIVersion.VERSION2,
        client_id="wire-tls-under-test",
        clean_session=False,
        protocol=mqtt.MQTTv311,
        manual_ack=True,
    )
    c.tls_set(ca_certs=str(ca))  # as Lanes does for an endpoint with tls
    c.max_inflight_messages_set(1000)
    c.reconnect_delay_set(1, 2)
    c.on_connect, c.on_message = on_connect, on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        wait("connected", lambda: len(connects) == 1)
        assert isinstance(c.socket(), BufferedSocket)
        time.sleep(0.3)  # subscribed
        sent = _payloads(300)
        _publish(port, ca, sent)
        wait("every message", lambda: len(got) >= len(sent))
        assert [m.payload for m in got] == sent  # whole, in order, through TLS records
        ack_all(c, [m.mid for m in got[:200]])
        time.sleep(0.5)  # the acks written
        sock = c.socket()
        assert sock is not None
        sock.close()  # the connection drops; paho reconnects the same session
        wait("reconnected", lambda: len(connects) == 2)
        wait("the unacknowledged again", lambda: len(got) >= len(sent) + 100)
        time.sleep(0.5)  # nothing more comes
        assert [m.payload for m in got[len(sent) :]] == sent[200:]
    finally:
        c.disconnect()
        c.loop_stop()
