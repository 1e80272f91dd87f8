"""Nothing lost, nothing stored twice: the service killed mid-stream, the broker restarted
mid-run, and a stream of valid, duplicate and bad messages whose counters must agree."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from estatewatch.broker import ManagedMosquitto, free_port
from estatewatch.service import Service
from tests.support import (
    SeqsSeen,
    managed_run_env,
    mosquittos_over,
    run_env,
    seed_state,
    start_run,
    stop_run,
    waiter,
)

pytestmark = pytest.mark.integration

ESTATE, GW = "durable-e", "gw-01"
PER_MESSAGE = 100


wait_for = waiter(every=0.05)


def message(seq: int, base_ts: int) -> bytes:
    """Reading i of message seq carries (seq * 100 + i) / 1e6 MPa, so every stored value says
    which message and position it came from."""
    readings = [
        {
            "dev": f"d-{i:03d}",
            "kind": "water_pressure",
            "ts": base_ts + seq * 1000,
            "m": {"pressure_mpa": (seq * PER_MESSAGE + i) / 1e6},
        }
        for i in range(PER_MESSAGE)
    ]
    return orjson.dumps({"v": 1, "gw": GW, "seq": seq, "sent": base_ts, "readings": readings})


class Publisher:
    """A gateway as a bare paho client: QoS 1, waits for the broker's PUBACK of each message."""

    def __init__(self, broker: ManagedMosquitto) -> None:
        creds = broker.issue_gateway_credentials(ESTATE, GW, "estates")
        assert creds is not None
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="durability-gw", clean_session=False
        )
        self.client.username_pw_set(creds.username, creds.password)
        self.client.max_inflight_messages_set(100)
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect(creds.host, creds.port)
        self.client.loop_start()
        self.base_ts = int(time.time() * 1000) - 3_600_000

    def publish(self, seqs: range) -> None:
        topic = f"estates/{ESTATE}/gw/{GW}/telemetry"
        infos = [self.client.publish(topic, message(s, self.base_ts), 1) for s in seqs]
        for info in infos:
            info.wait_for_publish(30)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def stored(path: Path) -> tuple[int, int, set[float]]:
    """(rows, distinct (series, ts), values) in the telemetry file, read as a bystander."""
    if not path.exists():
        return 0, 0, set()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        distinct = conn.execute(
            "SELECT count(*) FROM (SELECT DISTINCT series, ts FROM readings)"
        ).fetchone()[0]
        values = {v for (v,) in conn.execute("SELECT num FROM readings")}
        return rows, distinct, values
    except sqlite3.OperationalError:
        return 0, 0, set()
    finally:
        conn.close()


def expected_values(seqs: range) -> set[float]:
    return {(s * PER_MESSAGE + i) / 1e6 for s in seqs for i in range(PER_MESSAGE)}


def test_killed_three_times_while_100000_readings_arrive_stores_each_once(
    mosquitto: ManagedMosquitto, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    seed_state(data, ESTATE, "断电测试小区", GW)
    env = run_env(data, mosquitto.endpoint, free_port(), "test-admin-token-0123456789")
    telemetry = data / "telemetry.db"

    def start() -> subprocess.Popen[bytes]:
        return start_run(env)

    pub = Publisher(mosquitto)
    service = start()
    # The first start creates the service's persistent session; from then on the broker keeps
    # its messages whenever it is down.
    api = f"http://127.0.0.1:{env['ESTATEWATCH_API_PORT']}/healthz"

    def connected() -> bool:
        try:
            return bool(httpx.get(api, timeout=1).json()["broker"]["connected"])
        except httpx.HTTPError:
            return False

    wait_for(connected, 30, "the service to connect", every=0.2)
    kills = 0
    try:
        for phase in range(4):  # 4 × 250 messages × 100 readings
            seqs = range(phase * 250 + 1, (phase + 1) * 250 + 1)
            pub.publish(seqs)  # the broker holds them (persistent session) if the service is down
            if phase == 3:
                break
            # kill -9 while this phase is being stored: some of it committed, some not
            floor = phase * 250 * PER_MESSAGE
            wait_for(lambda f=floor: stored(telemetry)[0] > f, 60, "the service to store")
            service.send_signal(signal.SIGKILL)
            service.wait(10)
            kills += 1
            service = start()
        total = 1000 * PER_MESSAGE
        wait_for(lambda: stored(telemetry)[0] >= total, 120, "all readings", every=0.3)
        time.sleep(1.0)  # anything stored twice would show up now
        rows, distinct, values = stored(telemetry)
        assert kills == 3
        assert rows == total
        assert distinct == total
        assert values == expected_values(range(1, 1001))
        conn = sqlite3.connect(f"file:{telemetry}?mode=ro", uri=True)
        assert conn.execute("SELECT count(*) FROM message_seqs").fetchone()[0] == 1000
        max_seq, missing = conn.execute("SELECT max_seq, missing FROM gateway_seqs").fetchone()
        assert (max_seq, missing) == (1000, "[]")
        conn.close()
    finally:
        pub.close()
        stop_run(service, 15)


def registered_publisher(service: Service, estate_name: str) -> Publisher:
    """ESTATE (named so) and its gateway GW registered in the service, and GW's publisher on
    the service's own broker."""
    service.state.add_estate(ESTATE, estate_name)
    service.state.add_gateway(ESTATE, GW)
    service.ingest.registry.reload()
    broker = service.broker
    assert isinstance(broker, ManagedMosquitto)
    return Publisher(broker)


def test_broker_restarted_mid_run_loses_nothing(service: Service) -> None:
    pub = registered_publisher(service, "重启测试小区")
    telemetry = service.settings.telemetry_path
    try:
        pub.publish(range(1, 301))
        wait_for(lambda: stored(telemetry)[0] > 0, 30, "the first readings")
        broker = service.broker
        broker.stop()  # mid-run; persistence is written on the way down
        assert not broker.running
        time.sleep(1.0)
        broker.start()
        # the gateway reconnects (its own buffering is the gateway's tests' business); the
        # service may still be reconnecting: the broker keeps its session's messages meanwhile
        wait_for(pub.client.is_connected, 30, "the gateway to reconnect", every=0.1)
        pub.publish(range(301, 501))
        total = 500 * PER_MESSAGE
        wait_for(lambda: stored(telemetry)[0] >= total, 90, "all readings", every=0.3)
        time.sleep(1.0)
        rows, distinct, values = stored(telemetry)
        assert (rows, distinct) == (total, total)
        assert values == expected_values(range(1, 501))
    finally:
        pub.close()


def test_counters_agree_for_valid_duplicate_and_bad_messages(service: Service) -> None:
    api = httpx.Client(
        base_url=service.url, headers={"Authorization": "Bearer test-admin-token-0123456789"}
    )
    pub = registered_publisher(service, "计数测试小区")
    topic = f"estates/{ESTATE}/gw/{GW}/telemetry"
    base = pub.base_ts
    try:
        pub.publish(range(1, 21))  # 20 valid messages
        pub.publish(range(5, 10))  # 5 duplicates, as a gateway replaying its buffer would
        pub.publish(range(22, 23))  # 21 never comes: a gap of one
        bad = [
            b"{not json",
            orjson.dumps({"v": 9, "gw": GW, "seq": 100, "sent": base, "readings": []}),
            orjson.dumps(
                {
                    "v": 1,
                    "gw": "gw-99",
                    "seq": 101,
                    "sent": base,
                    "readings": [
                        {
                            "dev": "d-000",
                            "kind": "water_pressure",
                            "ts": base,
                            "m": {"pressure_mpa": 1},
                        }
                    ],
                }
            ),
            orjson.dumps(
                {
                    "v": 1,
                    "gw": GW,
                    "seq": 23,
                    "sent": base,
                    "readings": [
                        {
                            "dev": "d-000",
                            "kind": "water_pressure",
                            "ts": base,
                            "m": {"pressure_mpa": 99},
                        },
                        {
                            "dev": "d-001",
                            "kind": "water_pressure",
                            "ts": base,
                            "m": {"pressure_mpa": 0.2},
                        },
                    ],
                }
            ),
        ]
        for payload in bad:
            pub.client.publish(topic, payload, 1).wait_for_publish(10)
        valid = 21 * PER_MESSAGE + 1  # seqs 1..20 and 22, and the good reading of seq 23

        def settled() -> dict[str, Any] | None:
            h = api.get("/healthz").json()["ingest"]
            return h if h["committed_messages"] >= 30 else None

        h = wait_for(settled, 30, "every message committed", every=0.2)
        assert h["readings"] == valid
        assert h["duplicates"] == 5
        assert h["dead_letters"] == {
            "invalid_json": 1,
            "unknown_version": 1,
            "gw_mismatch": 1,
            "out_of_range": 1,
        }
        assert h["lost_messages"] == 1
        assert stored(service.settings.telemetry_path)[0] == valid
        letters = api.get("/api/v1/deadletters").json()
        assert letters["counts"] == h["dead_letters"]
        gw = api.get(f"/api/v1/estates/{ESTATE}/gateways").json()["items"][0]
        assert (gw["max_seq"], gw["lost_messages"], gw["duplicates"]) == (23, 1, 5)
        text = api.get("/metrics").text
        assert f"estatewatch_ingest_readings_total {float(valid)}" in text
        assert "estatewatch_ingest_duplicates_total 5.0" in text
        assert 'estatewatch_ingest_rejects_total{reason="out_of_range"} 1.0' in text
        assert f'estatewatch_gateway_lost_messages{{estate="{ESTATE}",gateway="{GW}"}} 1.0' in text
        assert "estatewatch_ingest_commit_seconds_count" in text
        assert "estatewatch_ingest_queue_depth 0.0" in text
    finally:
        pub.close()


def test_listeners_see_each_message_once(service: Service) -> None:
    """Rules are fed from the commit, so a duplicate must not reach them a second time."""
    seen = SeqsSeen()
    service.ingest.add_listener(seen)
    pub = registered_publisher(service, "监听测试小区")
    try:
        pub.publish(range(1, 11))
        pub.publish(range(3, 6))
        # Listeners run after the commit's counters move, so wait on the listener itself: a
        # sentinel sent after the repeats reaches it only once the repeats' commit was handed on.
        pub.publish(range(11, 12))

        wait_for(lambda: 11 in seen, 20, "the sentinel at the listener")
        assert service.ingest.stats.committed_messages >= 14
        assert seen.sorted() == list(range(1, 12))
    finally:
        pub.close()


def test_killed_three_times_with_its_own_broker_loses_no_reading(tmp_path: Path) -> None:
    """Finding 3 of issue 12: `estatewatch run` with the Mosquitto it starts itself, a gateway
    (its buffer on disk, QoS 1) sending numbered readings, the service killed with SIGKILL (its
    process alone: the broker lives on) three times under load. Every reading is stored once,
    never two brokers run over the data dir, the gateway keeps its one address, and the
    gateway's last seq is the service's (no tail lost uncounted)."""
    from gateway.buffer import ForwardBuffer
    from gateway.publisher import GatewayPublisher, LinkSettings
    from protocol.endpoint import MqttEndpoint
    from protocol.messages import Reading

    data = tmp_path / "data"
    token = "durability-admin-token-0123456789"
    api_port = free_port()
    env = managed_run_env(data, api_port, token)
    conf = data / "broker" / "mosquitto.conf"
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{api_port}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    logs: list[Path] = []

    def start() -> subprocess.Popen[bytes]:
        logs.append(tmp_path / f"run-{len(logs)}.log")
        with open(logs[-1], "wb") as err:
            return subprocess.Popen(
                [sys.executable, "-m", "estatewatch.cli", "run"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def up() -> bool:
        try:
            return api.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    # what the process list shows, all along: never two brokers over this data dir
    most_brokers, broker_pids = 0, set()
    watching = threading.Event()

    def watch() -> None:
        nonlocal most_brokers
        while not watching.wait(0.05):
            pids = mosquittos_over(conf)
            most_brokers = max(most_brokers, len(pids))
            broker_pids.update(pids)

    service = start()
    watcher = threading.Thread(target=watch, daemon=True)
    pub: GatewayPublisher | None = None
    producing = threading.Event()
    produced = 0
    try:
        wait_for(up, 60, "the service", every=0.2)
        watcher.start()
        assert api.post("/api/v1/estates", json={"id": ESTATE, "name": "断电测试小区"}).is_success
        r = api.post(f"/api/v1/estates/{ESTATE}/gateways", json={"id": GW})
        creds = r.json()["mqtt"]
        broker_port = creds["port"]
        pub = GatewayPublisher(
            ESTATE,
            GW,
            MqttEndpoint(creds["host"], broker_port, creds["username"], creds["password"]),
            tmp_path / "gw",
            buffer=ForwardBuffer(tmp_path / "gw.buffer.db", batch_linger_ms=100),
            link=LinkSettings(reconnect_min_s=0.2, reconnect_max_s=1.0, max_inflight=20),
        )
        assert pub.start(10)
        base_ts = int(time.time() * 1000) - 3_600_000

        def produce() -> None:
            nonlocal produced
            assert pub is not None
            while not producing.is_set():  # 500 readings a second, ten at a time
                batch = [
                    Reading(
                        f"d-{i % 50:03d}", "water_pressure", base_ts + i, {"pressure_mpa": i / 1e6}
                    )
                    for i in range(produced, produced + 10)
                ]
                pub.publish_telemetry(batch)
                produced += 10
                time.sleep(0.02)

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        telemetry = data / "telemetry.db"
        for kill in range(3):
            floor = stored(telemetry)[0]
            wait_for(lambda f=floor: stored(telemetry)[0] > f + 1000, 60, "readings stored")
            os.kill(service.pid, signal.SIGKILL)  # the service's process only
            service.wait(10)
            time.sleep(1.0)  # the gateway goes on publishing to the orphaned broker
            assert len(mosquittos_over(conf)) == 1, f"kill {kill}: the broker outlives the service"
            service = start()
            wait_for(up, 60, "the restarted service", every=0.2)
        time.sleep(2.0)
        producing.set()
        producer.join(10)
        wait_for(lambda: pub is not None and pub.buffered.messages == 0, 60, "the gateway drained")
        wait_for(lambda: stored(telemetry)[0] >= produced, 60, "all readings", every=0.3)
        time.sleep(1.0)  # anything stored twice would show up now
        rows, distinct, values = stored(telemetry)
        assert produced >= 5000
        assert (rows, distinct) == (produced, produced)
        assert values == {i / 1e6 for i in range(produced)}
        assert most_brokers == 1
        assert len(broker_pids) == 4  # one per start: each restart replaced the orphan
        assert mosquittos_over(conf) == [int((data / "broker" / "mosquitto.pid").read_text())]
        for log_file in logs[1:]:
            assert "still running" in log_file.read_text(), log_file.read_text()
        last_seq = pub.buffered.last_seq
        gws = api.get(f"/api/v1/estates/{ESTATE}/gateways").json()["items"]
        assert (gws[0]["max_seq"], gws[0]["lost_messages"]) == (last_seq, 0)
        assert api.get("/healthz").json()["broker"]["state"] == "up"
        assert creds["port"] == broker_port == pub.endpoint.port
    finally:
        producing.set()
        watching.set()
        if pub is not None:
            pub.stop()
        stop_run(service, 30)
        left = mosquittos_over(conf)
        for pid in left:  # a failure above must not leave a broker behind
            os.kill(pid, signal.SIGKILL)
    assert left == []  # a clean stop takes its broker with it
