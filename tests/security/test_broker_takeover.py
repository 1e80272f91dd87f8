"""Adversary tests of the broker the service runs: a gateway with valid credentials of its own
estate tries to take the service's MQTT sessions or another gateway's, to reach the service's
listener, and to push a packet beyond the contract's size. Real Mosquitto, started by the
service (the ``service`` fixture), real clients."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from estatewatch.broker import GatewayCredentials, ManagedMosquitto
from estatewatch.service import Service
from protocol.messages import Command, encode_command
from tests.support import waiter

pytestmark = pytest.mark.integration

VICTIM, ATTACKER, GW = "victim-e", "attacker-e", "gw-01"
SERVICE_IDS = ("estatewatch-ingest", "estatewatch-ingest-events")


wait_for = waiter(every=0.05)


def register(service: Service, estate: str) -> GatewayCredentials:
    service.state.add_estate(estate, estate)
    service.state.add_gateway(estate, GW)
    assert service.ingest is not None
    service.ingest.registry.reload()
    broker = service.broker
    assert isinstance(broker, ManagedMosquitto)
    return broker.issue_gateway_credentials(estate, GW, "estates")


class Client:
    """A paho client that records its CONNACK and every disconnect."""

    def __init__(
        self, creds: GatewayCredentials, client_id: str, clean: bool, port: int | None = None
    ) -> None:
        self.connack: list[Any] = []
        self.disconnects: list[Any] = []
        self.messages: list[mqtt.MQTTMessage] = []
        self.ready = threading.Event()
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean,
            protocol=mqtt.MQTTv311,
        )
        self.c.username_pw_set(creds.username, creds.password)
        self.c.on_connect = lambda *a: (self.connack.append(a[3]), self.ready.set())
        self.c.on_disconnect = lambda *a: self.disconnects.append(a[3])
        self.c.on_message = lambda _c, _u, m: self.messages.append(m)
        self.c.max_inflight_messages_set(100)
        self.c.connect(creds.host, port or creds.port, keepalive=30)
        self.c.loop_start()
        assert self.ready.wait(10), f"no CONNACK for {client_id}"

    @property
    def accepted(self) -> bool:
        return not getattr(self.connack[0], "is_failure", False)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def reading_message(seq: int, base_ts: int) -> bytes:
    reading = {
        "dev": "d-001",
        "kind": "water_pressure",
        "ts": base_ts + seq,
        "m": {"pressure_mpa": seq / 1e6},
    }
    return orjson.dumps({"v": 1, "gw": GW, "seq": seq, "sent": base_ts, "readings": [reading]})


def stored_values(path: Path) -> set[float]:
    if not path.exists():
        return set()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return {v for (v,) in conn.execute("SELECT num FROM readings")}
    except sqlite3.OperationalError:
        return set()
    finally:
        conn.close()


def test_a_gateway_posing_as_the_service_loses_no_other_estates_readings(
    service: Service,
) -> None:
    """Finding 2 of issue 12: a gateway connecting as ``estatewatch-ingest`` with a clean
    session, again and again, made the broker drop another estate's acknowledged messages."""
    victim = register(service, VICTIM)
    attacker = register(service, ATTACKER)
    n = 2000
    base_ts = int(time.time() * 1000) - 3_600_000
    pub = Client(victim, f"gw-{VICTIM}-{GW}", clean=False)
    stop = threading.Event()
    accepted: list[bool] = []

    def attack() -> None:
        # ten rounds of each service id, half a second each, while the victim publishes
        for _ in range(10):
            for cid in SERVICE_IDS:
                if stop.is_set():
                    return
                c = Client(attacker, cid, clean=True)
                accepted.append(c.accepted)
                time.sleep(0.5)
                c.close()

    thread = threading.Thread(target=attack)
    thread.start()
    try:
        topic = f"estates/{VICTIM}/gw/{GW}/telemetry"
        for start in range(1, n + 1, 100):  # spread over the attack's ten seconds
            infos = [
                pub.c.publish(topic, reading_message(s, base_ts), 1)
                for s in range(start, start + 100)
            ]
            for info in infos:
                info.wait_for_publish(30)
                assert info.is_published()
            time.sleep(0.4)
        thread.join(60)
        expected = {s / 1e6 for s in range(1, n + 1)}
        telemetry = service.settings.telemetry_path
        wait_for(lambda: stored_values(telemetry) >= expected, 60, "every acknowledged reading")
        assert accepted and all(accepted)  # the broker let it in, as itself
        assert stored_values(telemetry) == expected
        assert service.ingest is not None
        assert sum(service.ingest.stats.gateway_lost.values()) == 0
    finally:
        stop.set()
        thread.join(30)
        pub.close()


def test_a_gateway_cannot_take_another_gateways_session(service: Service) -> None:
    victim = register(service, VICTIM)
    attacker = register(service, ATTACKER)
    gw = Client(victim, f"gw-{VICTIM}-{GW}", clean=False)
    subscribed = threading.Event()
    gw.c.on_subscribe = lambda *a: subscribed.set()
    gw.c.subscribe(f"estates/{VICTIM}/gw/{GW}/cmd", 1)
    assert subscribed.wait(5)
    try:
        # the id the gateway asks for, and the username the broker gives it as its id
        for cid in (f"gw-{VICTIM}-{GW}", victim.username, f"gw-{ATTACKER}-{GW}"):
            for _ in range(3):
                c = Client(attacker, cid, clean=True)
                assert c.accepted
                time.sleep(0.3)
                c.close()
        assert gw.disconnects == []
        assert gw.c.is_connected()
        # its session is whole: a command the service sends reaches it
        assert service.ingest is not None
        cmd = Command("c-1", int(time.time() * 1000), "d-001", "socket.power_off", {})
        service.ingest.client.publish(
            f"estates/{VICTIM}/gw/{GW}/cmd", encode_command(cmd), qos=1
        ).wait_for_publish(5)
        wait_for(lambda: gw.messages, 10, "the command at the victim gateway")
    finally:
        gw.close()


def test_gateway_credentials_do_not_open_the_services_listener(service: Service) -> None:
    attacker = register(service, ATTACKER)
    assert service.endpoint is not None
    assert service.endpoint.port != attacker.port
    c = Client(attacker, SERVICE_IDS[0], clean=True, port=service.endpoint.port)
    try:
        assert not c.accepted
    finally:
        c.close()


def test_a_packet_beyond_the_contract_never_reaches_the_service(service: Service) -> None:
    """CONTRACT.md: a message is at most 1 MiB. The broker refuses a bigger packet (and drops
    the connection) instead of holding it and handing it on."""
    attacker = register(service, ATTACKER)
    assert service.ingest is not None
    ingest = service.ingest
    topic = f"estates/{ATTACKER}/gw/{GW}/telemetry"
    big = Client(attacker, "big", clean=True)
    try:
        big.c.publish(topic, b"x" * (3 << 19), 1)  # 1.5 MiB
        wait_for(lambda: big.disconnects, 10, "the broker to drop the connection")
    finally:
        big.close()
    # a message at the limit still passes (and is judged by ingest, not by the broker)
    before = ingest.stats.received
    ok = Client(attacker, "ok", clean=True)
    try:
        ok.c.publish(topic, b"y" * (1 << 20), 1).wait_for_publish(10)
        wait_for(lambda: ingest.stats.received > before, 10, "the 1 MiB message at ingest")
        assert ingest.stats.received == before + 1  # the 1.5 MiB one never arrived
    finally:
        ok.close()
