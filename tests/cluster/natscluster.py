"""A 3-node NATS cluster with JetStream and its MQTT listener, on free ports of 127.0.0.1, for
the clustered-broker tests. ``stream_replicas = 3``: MQTT sessions, their subscriptions, QoS 1
messages and retained messages live in JetStream streams replicated on every node, so a
client that loses its node resumes its persistent session on another."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from estatewatch.broker import free_port

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def nats_available() -> bool:
    return Path(NATS_SERVER).is_file()


@dataclass
class NatsNode:
    name: str
    client_port: int
    route_port: int
    mqtt_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"


class NatsCluster:
    def __init__(self, folder: Path, size: int = 3) -> None:
        self.folder = folder
        self.nodes = [NatsNode(f"n{i}", free_port(), free_port(), free_port()) for i in range(size)]

    @property
    def mqtt_urls(self) -> list[str]:
        return [n.mqtt_url for n in self.nodes]

    def _conf(self, node: NatsNode) -> Path:
        routes = ", ".join(f"nats-route://127.0.0.1:{n.route_port}" for n in self.nodes)
        store = self.folder / f"js-{node.name}"
        # ack_wait: a QoS 1 message a dead node had sent but not seen acknowledged goes out
        # again after this long (30 s by default: longer than the tests wait)
        text = (
            f"server_name: {node.name}\n"
            f"listen: 127.0.0.1:{node.client_port}\n"
            f'jetstream {{ store_dir: "{store}", max_mem: 64MB, max_file: 1GB }}\n'
            f"cluster {{ name: estatewatch-test, listen: 127.0.0.1:{node.route_port}, "
            f"routes: [{routes}] }}\n"
            f'mqtt {{ listen: 127.0.0.1:{node.mqtt_port}, stream_replicas: 3, ack_wait: "5s" }}\n'
        )
        path = self.folder / f"{node.name}.conf"
        path.write_text(text)
        return path

    def start(self, node: NatsNode) -> None:
        log = open(self.folder / f"{node.name}.log", "ab")  # noqa: SIM115 - lives with the process
        node.proc = subprocess.Popen(
            [NATS_SERVER, "-c", str(self._conf(node))], stdout=log, stderr=subprocess.STDOUT
        )

    def start_all(self, timeout_s: float = 30.0) -> None:
        for node in self.nodes:
            self.start(node)
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:  # JetStream elects its leaders before MQTT sessions work
            while not mqtt_session_works(node) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert mqtt_session_works(node), f"{node.name} serves no MQTT: {self.log(node)}"

    def kill(self, node: NatsNode) -> None:
        """kill -9: no goodbye to the routes or the clients."""
        assert node.proc is not None
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(10)

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(10)
                except subprocess.TimeoutExpired:
                    node.proc.kill()

    def log(self, node: NatsNode) -> str:
        return (self.folder / f"{node.name}.log").read_text(errors="replace")[-2000:]


def mqtt_session_works(node: NatsNode) -> bool:
    """A persistent MQTT session can be made on the node (its JetStream streams exist)."""
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"probe-{node.name}", clean_session=False
    )
    try:
        c.connect("127.0.0.1", node.mqtt_port, keepalive=5)
    except OSError:
        return False
    c.loop_start()
    try:
        deadline = time.monotonic() + 3
        while not c.is_connected() and time.monotonic() < deadline:
            time.sleep(0.05)
        return c.is_connected()
    finally:
        c.disconnect()
        c.loop_stop()


@contextlib.contextmanager
def nats_cluster(folder: Path) -> Iterator[NatsCluster]:
    cluster = NatsCluster(folder)
    try:
        cluster.start_all()
        yield cluster
    finally:
        cluster.stop()
