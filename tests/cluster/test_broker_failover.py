"""The service and its gateways on a 3-node clustered broker (NATS JetStream's MQTT, sessions
and QoS 1 messages replicated on every node): the node the service is on is killed -9 under a
steady load; every client (ingest's two lanes, notices, commands, the gateways) moves to another
node with its persistent session; every reading the gateways sent is stored exactly once; a fire
alarm raised while the node is down alarms and is announced; a socket command still reaches its
gateway and its answer comes back.

Run alone: ``pytest -m cluster`` (the marker)."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from estatewatch.broker import free_port
from gateway.buffer import ForwardBuffer
from gateway.publisher import GatewayPublisher, LinkSettings
from ingest.state import StateStore
from protocol.clock import SHANGHAI, now_ms
from protocol.endpoint import parse_mqtt_url
from protocol.messages import CommandAck, Event, Reading
from tests.cluster.natscluster import NatsCluster, NatsNode, nats_available, nats_cluster
from tests.support import settings_file, waiter

pytestmark = [
    pytest.mark.integration,
    pytest.mark.cluster,
    pytest.mark.skipif(not nats_available(), reason="nats-server is not installed"),
]

ESTATE = "cluster-e"
GATEWAYS = ("gw-01", "gw-02")
SIM_ESTATE, SIM_GW = "hohhot-xinhua", "gw-01"  # `estatewatch simulate --spec small`
TOKEN = "test-admin-token-0123456789"
PER_MESSAGE = 10  # readings a gateway hands its buffer every TICK_S, one message each
TICK_S = 0.02
CLIENTS = ("telemetry", "events", "notices", "commands")
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
            self.sent[i].update(value(i, n + k) for k in range(PER_MESSAGE))
            n += PER_MESSAGE

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)


class Listener:
    """A siren's MQTT client on a node that stays up: the alarm notices it is told."""

    def __init__(self, node: NatsNode) -> None:
        self.notices: list[dict[str, Any]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="siren")
        self.client.on_message = lambda _c, _u, m: self.notices.append(orjson.loads(m.payload))
        self.client.connect("127.0.0.1", node.mqtt_port)
        self.client.subscribe(f"estates/{ESTATE}/alerts", 1)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def pressures_stored(telemetry: Path) -> tuple[int, set[float]]:
    """(rows, their values) of the load's metric in the service's telemetry file, read as a
    bystander."""
    if not telemetry.exists():
        return 0, set()
    conn = sqlite3.connect(f"file:{telemetry}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute(
            "SELECT num FROM readings WHERE series IN "
            "(SELECT id FROM series WHERE estate = ? AND metric = ?)",
            (ESTATE, "pressure_mpa"),
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
    state.add_estate(SIM_ESTATE, "呼和浩特 新华小区")
    for gw in GATEWAYS:
        state.add_gateway(ESTATE, gw)
    state.add_gateway(SIM_ESTATE, SIM_GW)
    state.close()
    nodes = ", ".join(f'"{u}"' for u in cluster.mqtt_urls)  # the list form of the setting
    config = settings_file(tmp, api_port, TOKEN, f"mqtt_url = [{nodes}]\n")
    log = open(tmp / "service.log", "wb")  # noqa: SIM115 - lives with the process
    return subprocess.Popen(
        [sys.executable, "-m", "estatewatch.cli", "run", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def start_simulate(tmp: Path, cluster: NatsCluster) -> subprocess.Popen[bytes]:
    """`estatewatch simulate` of the small estate, its broker the comma-separated node list:
    the last ten minutes played at ×60, so it ends about now."""
    start = (datetime.now(SHANGHAI) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%S")
    log = open(tmp / "simulate.log", "wb")  # noqa: SIM115 - lives with the process
    args = ["--spec", "small", "--speed", "60", "--start", start, "--for", "10m"]
    args += ["--broker", ",".join(cluster.mqtt_urls), "--state-dir", str(tmp / "sim")]
    return subprocess.Popen(
        [sys.executable, "-m", "estatewatch.cli", "simulate", *args, "--progress-every", "1"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def gateway(tmp: Path, cluster: NatsCluster, gw: str, first: int) -> GatewayPublisher:
    """A gateway whose node list starts at node ``first`` (a fleet spread over the nodes)."""
    urls = cluster.mqtt_urls
    endpoint = parse_mqtt_url(urls[first:] + urls[:first])
    buffer = ForwardBuffer(
        tmp / f"{gw}.buffer.db", batch_max_readings=PER_MESSAGE, batch_linger_ms=20, durable=False
    )
    link = LinkSettings(reconnect_min_s=0.2, reconnect_max_s=2.0, status_interval_s=5.0)
    return GatewayPublisher(ESTATE, gw, endpoint, tmp, buffer=buffer, link=link)


def health(api: httpx.Client) -> dict[str, Any]:
    try:
        r = api.get("/healthz")
    except httpx.HTTPError:
        return {}
    return r.json() if r.status_code == 200 else {}


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
        listener = Listener(nc.nodes[2])
        try:
            run_scenario(tmp_path, nc, service, api, gws, listener)
        finally:
            listener.close()
            for g in gws:
                g.stop()
            service.terminate()
            try:
                service.wait(20)
            except subprocess.TimeoutExpired:
                service.kill()


def run_scenario(
    tmp: Path,
    nc: NatsCluster,
    service: subprocess.Popen[bytes],
    api: httpx.Client,
    gws: list[GatewayPublisher],
    listener: Listener,
) -> None:
    victim = nc.nodes[0]  # the first of every list but gw-02's: where the clients start

    def log(name: str) -> str:
        return (tmp / f"{name}.log").read_text(errors="replace")[-3000:]

    assert wait_for(lambda: health(api).get("broker", {}).get("connected")), log("service")
    nodes = health(api)["broker"]["nodes"]
    assert set(nodes) == set(CLIENTS)
    assert {c["node"] for c in nodes.values()} == {victim.mqtt_url}, nodes

    gws += [gateway(tmp, nc, gw, first=i) for i, gw in enumerate(GATEWAYS)]
    for g in gws:
        assert g.start(wait_s=10), f"{g.gw} did not connect"
    assert gws[0].node_url == victim.mqtt_url  # this one loses its node too
    # a smoke detector and a charging socket the service knows before the node dies
    ts = now_ms()
    gws[0].publish_telemetry(
        [
            Reading("sd-01", "smoke_detector", ts, {"status_word": 0}),
            Reading("ebc-01", "ebike_charger", ts, {"power_w": 120.0}),
        ]
    )
    simulate = start_simulate(tmp, nc)
    load = Load(gws)
    load.start()
    time.sleep(4)
    nc.kill(victim)
    killed = time.monotonic()
    # the fault, raised while the node is down: gw-01 holds it until it is on another node
    gws[0].publish_events([Event("sd-01", "smoke_detector", now_ms(), "fire.alarm", {})])

    def moved() -> bool:  # every client of the service connected to another node
        nodes = health(api).get("broker", {}).get("nodes", {})
        return len(nodes) == len(CLIENTS) and all(
            c["connected"] and c["node"] != victim.mqtt_url for c in nodes.values()
        )

    assert wait_for(moved), (health(api), log("service"))
    failover_s = time.monotonic() - killed
    time.sleep(max(0.0, 4 - failover_s))  # the load goes on, on the other nodes
    load.stop()
    nodes = health(api)["broker"]["nodes"]
    assert all(c["failovers"] >= 1 for c in nodes.values()), nodes
    assert gws[0].node_url != victim.mqtt_url

    # each reading the load gave the gateways is stored once
    expected = set().union(*load.sent)
    telemetry = tmp / "data" / "telemetry.db"
    drained = wait_for(lambda: all(g.buffered.messages == 0 for g in gws))
    arrived = wait_for(lambda: pressures_stored(telemetry)[0] >= len(expected))
    rows, values = pressures_stored(telemetry)
    assert drained and arrived, (len(expected), rows, [g.buffered for g in gws], log("service"))
    assert rows == len(expected), f"{rows - len(expected)} readings stored twice"
    assert values == expected  # each one the gateways sent, none missing

    # `estatewatch simulate` on the node list: it ends once the broker has everything
    assert simulate.wait(60) == 0, log("simulate")
    out = log("simulate")
    done = re.search(r"done: every reading delivered .*\(last seq (\d+)\)", out)
    progress = re.findall(r"readings ([\d,]+) · events (\d+) .* seq (\d+)", out)
    assert done and progress, out
    sim_readings, sim_seq = int(progress[-1][0].replace(",", "")), int(done.group(1))
    assert "link up (" in out

    # the service's count and (gateway, seq) books against what each gateway sent
    total = sum(len(s) for s in load.sent) + 2 + sim_readings
    assert wait_for(lambda: health(api)["ingest"]["readings"] >= total)
    assert health(api)["ingest"]["readings"] == total
    last_seqs = {(ESTATE, g.gw): g.buffered.last_seq for g in gws} | {(SIM_ESTATE, SIM_GW): sim_seq}

    def books() -> dict[tuple[str, str], dict[str, Any]]:
        return {
            (e, g["id"]): g
            for e in (ESTATE, SIM_ESTATE)
            for g in api.get(f"/api/v1/estates/{e}/gateways").json()["items"]
        }

    # The fire event gw-01 held while its node was down may reach the service after every
    # reading did (seen once: its seq committed 4 s after the last reading's, over the moved
    # sessions): until then its seq is a gap in the book, not yet a loss. Wait, then judge.
    wait_for(lambda: all(books()[k]["lost_messages"] == 0 for k in last_seqs))
    book = books()
    for key, last in last_seqs.items():
        assert book[key]["max_seq"] == last, (key, book[key])
        assert book[key]["lost_messages"] == 0, (key, book[key])

    # the fault alarmed once, and the notice reached a siren on a surviving node
    alarms = api.get("/api/v1/alarms", params={"estate": ESTATE}).json()["items"]
    assert [a["rule"] for a in alarms].count("fire-alarm-detector") == 1, alarms
    assert wait_for(
        lambda: any(n["alarm"]["rule"] == "fire-alarm-detector" for n in listener.notices)
    ), listener.notices

    # a socket command through the commands session reaches gw-01 on its new node, and back
    r = api.post(
        f"/api/v1/estates/{ESTATE}/devices/ebc-01/commands",
        json={"action": "socket.power_off", "reason": "broker failover test"},
    )
    assert r.status_code == 201, r.text
    cmd = gws[0].commands.get(timeout=10)
    gws[0].acknowledge(CommandAck(cmd.id, True, now_ms(), None))
    assert wait_for(
        lambda: api.get(f"/api/v1/commands/{r.json()['id']}").json()["state"] == "acknowledged"
    )
    assert service.poll() is None
    print(
        f"\nfailover: every client of the service on another node {failover_s:.1f} s after the "
        f"kill; {total} readings sent by 3 gateways ({sum(last_seqs.values())} messages), "
        f"{rows} of the load's stored once each; duplicates dropped by the service "
        f"{health(api)['ingest']['duplicates']}; clients now on "
        f"{ {n: c['node'] for n, c in nodes.items()} }"
    )
