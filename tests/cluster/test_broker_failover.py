"""The service and its gateways on a 3-node clustered broker (NATS JetStream's MQTT, sessions
and QoS 1 messages replicated on every node): the node the service is on is killed -9 under a
steady load, every client moves to another node with its persistent session, and every reading
the gateways sent is stored exactly once; a fire alarm raised while the node is down alarms.

Run alone: ``pytest -m cluster`` (the marker)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from estatewatch.broker import free_port
from gateway.buffer import ForwardBuffer
from gateway.publisher import GatewayPublisher, LinkSettings
from ingest.state import StateStore
from protocol.clock import now_ms
from protocol.endpoint import parse_mqtt_url
from protocol.messages import Event, Reading
from tests.cluster.nats import NatsCluster, nats_available, nats_cluster
from tests.support import settings_file, waiter

pytestmark = [
    pytest.mark.integration,
    pytest.mark.cluster,
    pytest.mark.skipif(not nats_available(), reason="nats-server is not installed"),
]

ESTATE = "cluster-e"
GATEWAYS = ("gw-01", "gw-02")
TOKEN = "test-admin-token-0123456789"
PER_MESSAGE = 10  # readings a gateway hands its buffer every TICK_S
TICK_S = 0.02
wait_for = waiter(timeout=30.0, every=0.1)


def value(gw: int, n: int) -> float:
    """Reading n of gateway gw: a pressure that says which it is (0.3 MPa and up: no alarm)."""
    return 0.3 + (gw * 1_000_000 + n) / 1e8


class Load:
    """Gateways handing readings to their buffers at a steady rate, each one a new value."""

    def __init__(self, gateways: list[GatewayPublisher]) -> None:
        self.gateways = gateways
        self.sent: list[set[float]] = [set() for _ in gateways]
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(len(gateways))
        ]

    def _run(self, i: int) -> None:
        n, last_ts = 0, 0
        while not self._stop.wait(TICK_S):
            last_ts = max(now_ms(), last_ts + 1)
            batch = [
                Reading(f"wp-{i}-{k}", "water_pressure", last_ts, {"pressure_mpa": value(i, n + k)})
                for k in range(PER_MESSAGE)
            ]
            self.gateways[i].publish_telemetry(batch)
            self.sent[i].update(r.metrics["pressure_mpa"] for r in batch)  # type: ignore[misc]
            n += PER_MESSAGE

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)


def stored_values(telemetry: Path) -> tuple[int, set[float]]:
    """(rows, their values) of the service's telemetry file, read as a bystander."""
    if not telemetry.exists():
        return 0, set()
    conn = sqlite3.connect(f"file:{telemetry}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute(
            "SELECT num FROM readings WHERE series IN (SELECT id FROM series WHERE metric = ?)",
            ("pressure_mpa",),
        ).fetchall()
    except sqlite3.OperationalError:
        return 0, set()
    finally:
        conn.close()
    return len(rows), {v for (v,) in rows}


def start_service(tmp: Path, cluster: NatsCluster, api_port: int) -> subprocess.Popen[bytes]:
    data = tmp / "data"
    data.mkdir()
    state = StateStore.open(f"sqlite:///{data / 'estatewatch.db'}")
    state.add_estate(ESTATE, "集群测试小区")
    for gw in GATEWAYS:
        state.add_gateway(ESTATE, gw)
    state.close()
    nodes = ", ".join(f'"{u}"' for u in cluster.mqtt_urls)  # the list form of the setting
    config = settings_file(tmp, api_port, TOKEN, f"mqtt_url = [{nodes}]\n")
    log = open(tmp / "service.log", "wb")  # noqa: SIM115 - lives with the process
    return subprocess.Popen(
        [sys.executable, "-m", "estatewatch.cli", "run", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def gateway(tmp: Path, cluster: NatsCluster, gw: str, first: int) -> GatewayPublisher:
    """A gateway whose node list starts at node ``first`` (the fleet spread over the nodes)."""
    urls = cluster.mqtt_urls
    endpoint = parse_mqtt_url(urls[first:] + urls[:first])
    buffer = ForwardBuffer(
        tmp / f"{gw}.buffer.db", batch_max_readings=PER_MESSAGE, batch_linger_ms=20, durable=False
    )
    link = LinkSettings(reconnect_min_s=0.2, reconnect_max_s=2.0, status_interval_s=5.0)
    return GatewayPublisher(ESTATE, gw, endpoint, tmp, buffer=buffer, link=link)


def test_a_broker_node_killed_under_load_loses_nothing_and_stores_nothing_twice(
    tmp_path: Path,
) -> None:
    (tmp_path / "nats").mkdir()
    with nats_cluster(tmp_path / "nats") as nc:
        api_port = free_port()
        service = start_service(tmp_path, nc, api_port)
        api = httpx.Client(
            base_url=f"http://127.0.0.1:{api_port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=5,
        )
        gws: list[GatewayPublisher] = []
        try:
            run_scenario(tmp_path, nc, service, api, gws)
        finally:
            for g in gws:
                g.stop()
            service.terminate()
            try:
                service.wait(20)
            except subprocess.TimeoutExpired:
                service.kill()


def health(api: httpx.Client) -> dict[str, Any]:
    try:
        r = api.get("/healthz")
    except httpx.HTTPError:
        return {}
    return r.json() if r.status_code == 200 else {}


def run_scenario(
    tmp: Path,
    nc: NatsCluster,
    service: subprocess.Popen[bytes],
    api: httpx.Client,
    gws: list[GatewayPublisher],
) -> None:
    victim = nc.nodes[0]  # the first of the service's list: where its clients are

    def service_log() -> str:
        return (tmp / "service.log").read_text(errors="replace")[-3000:]

    assert wait_for(lambda: health(api).get("broker", {}).get("connected")), service_log()
    nodes = health(api)["broker"]["nodes"]
    assert {c["node"] for c in nodes.values()} == {victim.mqtt_url}, nodes
    assert set(nodes) == {"telemetry", "events", "notices", "commands"}

    gws += [gateway(tmp, nc, gw, first=i) for i, gw in enumerate(GATEWAYS)]
    for g in gws:
        assert g.start(wait_s=10), f"{g.gw} did not connect"
    assert gws[0].node_url == victim.mqtt_url  # this one loses its node too
    # a smoke detector the service knows before the fault
    gws[0].publish_telemetry([Reading("sd-01", "smoke_detector", now_ms(), {"status_word": 0})])
    load = Load(gws)
    load.start()
    time.sleep(4)
    nc.kill(victim)
    killed_ms = now_ms()
    # the fault, raised while the node is down: gw-01 holds it until it is on another node
    gws[0].publish_events([Event("sd-01", "smoke_detector", killed_ms, "fire.alarm", {})])
    time.sleep(4)
    load.stop()

    sent = [len(s) for s in load.sent]
    expected = set().union(*load.sent)
    telemetry = tmp / "data" / "telemetry.db"
    drained = wait_for(lambda: all(g.buffered.messages == 0 for g in gws))
    arrived = wait_for(lambda: stored_values(telemetry)[0] >= len(expected))
    rows, values = stored_values(telemetry)
    assert drained and arrived, (sent, rows, [g.buffered for g in gws], service_log())
    assert rows == len(expected), f"{rows - len(expected)} readings stored twice"
    assert values == expected  # each one the gateways sent, none missing

    # the gateways' seqs: the service has every one up to the last, none missing
    books = {g["id"]: g for g in api.get(f"/api/v1/estates/{ESTATE}/gateways").json()["items"]}
    for g in gws:
        assert books[g.gw]["max_seq"] == g.buffered.last_seq
        assert books[g.gw]["lost_messages"] == 0

    alarms = api.get("/api/v1/alarms", params={"estate": ESTATE}).json()["items"]
    fire = [a for a in alarms if a["rule"] == "fire-alarm-detector"]
    assert len(fire) == 1, alarms

    nodes = health(api)["broker"]["nodes"]
    for name in ("telemetry", "events", "notices", "commands"):
        assert nodes[name]["node"] != victim.mqtt_url, nodes
        assert nodes[name]["failovers"] >= 1
    assert gws[0].node_url != victim.mqtt_url
    assert service.poll() is None
    print(
        f"\nfailover: {sum(sent)} readings sent by {len(gws)} gateways "
        f"({[g.buffered.last_seq for g in gws]} messages), {rows} stored, "
        f"duplicates refused {[books[g.gw]['duplicates'] for g in gws]}, clients now on "
        f"{ {n: c['node'] for n, c in nodes.items()} }"
    )
