"""Remote cut-off of an e-bike charging socket (issue 13), end to end: the service with its own
Mosquitto, simulated estates playing a charger over-temperature through real gateways
(simulator adapter → gateway → MQTT), and people at the HTTP API.

- an operator cuts the hot socket from its alarm: the command is acknowledged by the gateway,
  the simulated socket's next readings show it off (0 W, idle), the alarm's timeline and the
  live stream show each state; another estate's operator gets 404, a viewer 403;
- a gateway that refuses (no such socket behind it) → failed with its reason; a gateway that
  never answers → timed_out;
- where ``auto_cutoff`` is on, the over-temperature alarm cuts the socket by itself, once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from estatewatch.service import Service
from gateway.publisher import now_ms
from gateway.runtime import Gateway
from simulators.adapter import SimulatorAdapter
from tests.conftest import service_settings
from tests.support import HOT_SOCKET, LiveStream, overheating_estate, report_unowned_socket, waiter

pytestmark = pytest.mark.integration

TOKEN = "test-admin-token-0123456789"
PASSWORD = "charging-shed-duty-2026"
HOT = HOT_SOCKET  # the first charger: the scenario's over-temperature fault takes it


wait_for = waiter(every=0.2)


@dataclass
class World:
    service: Service
    admin: httpx.Client
    gateways: dict[str, Gateway]
    mute_creds: dict[str, Any]  # a gateway that never reads its commands

    def as_user(self, username: str) -> httpx.Client:
        r = httpx.post(
            f"{self.service.url}/api/v1/login", json={"username": username, "password": PASSWORD}
        )
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        return httpx.Client(
            base_url=self.service.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("socket")
    service = Service(service_settings(tmp, auto_cutoff="e-auto", command_timeout_s=4))
    service.start()
    admin = httpx.Client(
        base_url=service.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    gateways: dict[str, Gateway] = {}
    try:
        for estate, name in (("e-manual", "东苑小区"), ("e-auto", "西苑小区")):
            r = admin.post("/api/v1/estates", json={"id": estate, "name": name})
            assert r.status_code == 201, r.text
        creds = {}
        for estate in ("e-manual", "e-auto"):
            r = admin.post(f"/api/v1/estates/{estate}/gateways", json={"id": "gw-01"})
            assert r.status_code == 201, r.text
            creds[estate] = r.json()["mqtt"]
        for username, role, estates in (
            ("op-manual", "operator", ["e-manual"]),
            ("op-auto", "operator", ["e-auto"]),
            ("viewer-manual", "viewer", ["e-manual"]),
        ):
            r = admin.post(
                "/api/v1/users",
                json={"username": username, "role": role, "estates": estates, "password": PASSWORD},
            )
            assert r.status_code == 201, r.text
        # the "never answers" gateway of the time-out test needs its broker account too
        r = admin.post("/api/v1/estates/e-manual/gateways", json={"id": "gw-mute"})
        assert r.status_code == 201, r.text
        world = World(service, admin, gateways, r.json()["mqtt"])
        for estate in ("e-manual", "e-auto"):
            gateways[estate] = overheating_estate(service.catalog, estate, creds[estate], tmp)
        yield world
    finally:
        for gw in gateways.values():
            gw.stop()
        service.stop()


def hot_alarm(api: httpx.Client, estate: str) -> dict[str, Any] | None:
    items = api.get("/api/v1/alarms", params={"estate": estate}).json()["items"]
    return next((a for a in items if a["rule"] == "ebike-socket-hot" and a["subject"] == HOT), None)


def socket_reading(api: httpx.Client, estate: str, dev: str) -> dict[str, Any] | None:
    r = api.get(f"/api/v1/estates/{estate}/devices", params={"device": dev})
    items = r.json()["items"]
    return items[0] if items else None


def command_state(api: httpx.Client, command_id: str, state: str) -> dict[str, Any] | None:
    got: dict[str, Any] = api.get(f"/api/v1/commands/{command_id}").json()
    return got if got["state"] == state else None


def test_an_operator_cuts_the_hot_socket_from_its_alarm(world: World) -> None:
    op = world.as_user("op-manual")
    alarm = wait_for(lambda: hot_alarm(op, "e-manual"), 60, "the socket over-temperature alarm")
    assert alarm["late"] is False and alarm["state"] == "firing"
    before = socket_reading(op, "e-manual", HOT)
    assert before is not None and before["metrics"]["power_w"] > 100
    assert not op.get(f"/api/v1/estates/e-manual/devices/{HOT}/commands").json()["items"]

    # who may: another estate's operator sees nothing, a viewer may only read
    other = world.as_user("op-auto")
    body = {
        "action": "socket.power_off",
        "reason": "插座 65℃ 以上，远程断电",
        "alarm_id": alarm["id"],
    }
    url = f"/api/v1/estates/e-manual/devices/{HOT}/commands"
    r = other.post(url, json=body)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = world.as_user("viewer-manual").post(url, json=body)
    assert r.status_code == 403
    # bad requests: unknown device, unknown action, a device that is no socket, bounds
    assert op.post("/api/v1/estates/e-manual/devices/nope/commands", json=body).status_code == 404
    r = op.post(url, json={**body, "action": "socket.explode"})
    assert r.status_code == 422 and "unknown action" in r.json()["error"]["message"]
    r = op.post("/api/v1/estates/e-manual/devices/b1-hydrant-1/commands", json=body)
    assert r.status_code == 422 and "ebike_charger" in r.json()["error"]["message"]
    assert op.post(url, json={**body, "reason": "x" * 201}).status_code == 422
    assert op.post(url, json={**body, "reason": "a\nb"}).status_code == 422
    assert op.post(url, json={**body, "extra": 1}).status_code == 422

    stream = LiveStream(op, "e-manual")
    try:
        r = op.post(url, json=body)
        assert r.status_code == 201, r.text
        cmd = r.json()
        assert cmd["state"] == "sent" and cmd["by"] == "op-manual" and cmd["dev"] == HOT
        assert cmd["alarm_id"] == alarm["id"] and cmd["action"] == "socket.power_off"
        assert cmd["gateway"] == "gw-01" and cmd["error"] is None and cmd["answered_ms"] is None
        done = wait_for(lambda: command_state(op, cmd["id"], "acknowledged"), 10, "the ack")
        assert cmd["sent_ms"] <= done["answered_ms"] <= now_ms()
        wait_for(lambda: len(stream.named("command")) >= 2, 10, "the states on the live stream")
    finally:
        stream.close()
    assert [(e["action"], e["command"]["id"]) for e in stream.named("command")[:2]] == [
        ("sent", cmd["id"]),
        ("acknowledged", cmd["id"]),
    ]

    # the simulated socket is off: its next readings draw nothing
    def cut() -> dict[str, Any] | None:
        dev = socket_reading(op, "e-manual", HOT)
        off = dev is not None and dev["last_seen_ms"] > before["last_seen_ms"]
        return dev if off and dev["metrics"]["power_w"] == 0 else None

    off = wait_for(cut, 30, "a reading of the socket with its power cut")
    assert off["metrics"]["state"] == "idle" and off["metrics"]["current_a"] == 0

    timeline = op.get(f"/api/v1/alarms/{alarm['id']}").json()["timeline"]
    steps = [(e["action"], e["by"]) for e in timeline if e["action"].startswith("command_")]
    assert steps == [("command_sent", "op-manual"), ("command_acknowledged", "gateway")]
    listed = op.get(f"/api/v1/estates/e-manual/devices/{HOT}/commands").json()["items"]
    assert [c["id"] for c in listed] == [cmd["id"]]
    # a viewer of the estate may read the command; another estate's operator may not
    assert world.as_user("viewer-manual").get(f"/api/v1/commands/{cmd['id']}").status_code == 200
    assert other.get(f"/api/v1/commands/{cmd['id']}").status_code == 404
    metrics = world.admin.get("/metrics").text
    assert 'estatewatch_commands_total{state="acknowledged"}' in metrics
    # and on again
    r = op.post(url, json={"action": "socket.power_on", "reason": "冷却后恢复"})
    assert r.status_code == 201
    wait_for(lambda: command_state(op, r.json()["id"], "acknowledged"), 10, "power_on's ack")


def test_a_refusing_gateway_fails_the_command_and_a_silent_one_times_it_out(
    world: World, tmp_path: Path
) -> None:
    op = world.as_user("op-manual")
    # A socket the gateway reports but no adapter of it owns: the gateway answers ok=false.
    report_unowned_socket(world.gateways["e-manual"], "ghost-ebc-1")
    wait_for(lambda: socket_reading(op, "e-manual", "ghost-ebc-1"), 20, "the ghost socket")
    r = op.post(
        "/api/v1/estates/e-manual/devices/ghost-ebc-1/commands",
        json={"action": "socket.power_off", "reason": "test"},
    )
    assert r.status_code == 201, r.text
    failed = wait_for(lambda: command_state(op, r.json()["id"], "failed"), 10, "the refusal")
    assert failed["error"] == "no device 'ghost-ebc-1' behind this gateway"
    assert failed["answered_ms"] is not None

    # A gateway that reports a socket and never reads its commands: timed out after 4 s.
    creds = world.mute_creds
    mute = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw-mute")
    mute.username_pw_set(creds["username"], creds["password"])
    mute.connect(creds["host"], creds["port"])
    mute.loop_start()
    try:
        ts = now_ms()
        reading = {"dev": "mute-ebc-1", "kind": "ebike_charger", "ts": ts, "m": {"power_w": 120.0}}
        body = {"v": 1, "gw": "gw-mute", "seq": 1, "sent": ts, "readings": [reading]}
        info = mute.publish("estates/e-manual/gw/gw-mute/telemetry", orjson.dumps(body), qos=1)
        info.wait_for_publish(10)
        wait_for(lambda: socket_reading(op, "e-manual", "mute-ebc-1"), 20, "the mute socket")
        r = op.post(
            "/api/v1/estates/e-manual/devices/mute-ebc-1/commands",
            json={"action": "socket.power_off"},
        )
        assert r.status_code == 201, r.text
        cmd = r.json()
        assert cmd["gateway"] == "gw-mute"
        time.sleep(2)
        assert command_state(op, cmd["id"], "sent")  # still waiting within its 4 s
        timed_out = wait_for(lambda: command_state(op, cmd["id"], "timed_out"), 10, "time-out")
        assert timed_out["answered_ms"] - timed_out["sent_ms"] >= 4000
        assert "gw-mute" in timed_out["error"]
    finally:
        mute.loop_stop()
        mute.disconnect()


def test_a_command_held_for_an_away_gateway_is_not_carried_out_after_its_time_out(
    world: World,
) -> None:
    """The broker keeps a gateway's commands while it is away (its session persists): one the
    service timed out must not cut the socket when the gateway comes back minutes later."""
    op = world.as_user("op-manual")
    gw = world.gateways["e-manual"]
    adapter = gw.adapters[0]
    assert isinstance(adapter, SimulatorAdapter)

    def drawing_since(sim_ms: int) -> dict[str, Any] | None:
        dev = socket_reading(op, "e-manual", HOT)
        fresh = dev is not None and (dev["last_seen_ms"] or 0) >= sim_ms
        return dev if fresh and dev["metrics"]["power_w"] > 0 else None

    wait_for(lambda: drawing_since(0), 30, "the socket drawing power (on again)")
    gw.publisher.hold_down(True)  # its uplink cut, no clean disconnect
    wait_for(lambda: not gw.publisher.connected, 10, "the gateway to drop")
    time.sleep(0.5)
    r = op.post(
        f"/api/v1/estates/e-manual/devices/{HOT}/commands",
        json={"action": "socket.power_off", "reason": "while away"},
    )
    assert r.status_code == 201, r.text
    cmd = r.json()
    wait_for(lambda: command_state(op, cmd["id"], "timed_out"), 10, "the time-out")
    carried = gw.counters.commands
    gw.publisher.hold_down(False)
    wait_for(lambda: gw.counters.commands > carried, 20, "the held command to reach the gateway")
    after = adapter.sim_now_ms()
    wait_for(lambda: drawing_since(after), 30, "a reading, after it, still drawing power")
    assert command_state(op, cmd["id"], "timed_out")


def test_the_over_temperature_alarm_cuts_the_socket_by_itself_where_auto_cutoff_is_on(
    world: World,
) -> None:
    op = world.as_user("op-auto")
    alarm = wait_for(lambda: hot_alarm(op, "e-auto"), 60, "the socket over-temperature alarm")
    assert alarm["late"] is False

    def auto_command() -> dict[str, Any] | None:
        items = op.get(f"/api/v1/estates/e-auto/devices/{HOT}/commands").json()["items"]
        return items[0] if items and items[0]["state"] == "acknowledged" else None

    cmd = wait_for(auto_command, 20, "the automatic cut-off, acknowledged")
    assert cmd["by"] == "rules" and cmd["rule"] == "ebike-socket-hot"
    assert cmd["alarm_id"] == alarm["id"] and cmd["action"] == "socket.power_off"
    timeline = op.get(f"/api/v1/alarms/{alarm['id']}").json()["timeline"]
    steps = [(e["action"], e["by"]) for e in timeline if e["action"].startswith("command_")]
    assert steps == [("command_sent", "rules"), ("command_acknowledged", "gateway")]

    def cut() -> dict[str, Any] | None:
        dev = socket_reading(op, "e-auto", HOT)
        return dev if dev is not None and dev["metrics"]["power_w"] == 0 else None

    wait_for(cut, 30, "a reading of the socket with its power cut")
    # once per alarm, and nothing for the estate without auto_cutoff
    assert len(op.get(f"/api/v1/estates/e-auto/devices/{HOT}/commands").json()["items"]) == 1
    manual = world.admin.get(f"/api/v1/estates/e-manual/devices/{HOT}/commands").json()["items"]
    assert all(c["by"] != "rules" for c in manual)


def test_commands_outlive_a_restart_and_one_left_waiting_times_out_after_it(
    tmp_path: Path,
) -> None:
    """The service stops while a command waits for a gateway that never answers: after the
    restart the answered command keeps its state and the waiting one times out."""
    settings = service_settings(tmp_path, command_timeout_s=3)
    service = Service(settings)
    service.start()
    admin = httpx.Client(
        base_url=service.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    try:
        assert admin.post("/api/v1/estates", json={"id": "e1", "name": "东苑"}).status_code == 201
        creds = admin.post("/api/v1/estates/e1/gateways", json={"id": "gw-01"}).json()["mqtt"]
        gw = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw-01")
        gw.username_pw_set(creds["username"], creds["password"])

        def refuse(client: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            cmd = orjson.loads(msg.payload)
            if cmd["dev"] == "ebc-1":  # answers for one socket only
                ack = {"v": 1, "id": cmd["id"], "ok": False, "ts": now_ms(), "error": "relay stuck"}
                client.publish("estates/e1/gw/gw-01/cmd/ack", orjson.dumps(ack), 1)

        gw.on_message = refuse
        gw.connect(creds["host"], creds["port"])
        gw.subscribe("estates/e1/gw/gw-01/cmd", 1)
        gw.loop_start()
        ts = now_ms()
        readings = [
            {"dev": d, "kind": "ebike_charger", "ts": ts, "m": {"power_w": 90.0}}
            for d in ("ebc-1", "ebc-2")
        ]
        body = {"v": 1, "gw": "gw-01", "seq": 1, "sent": ts, "readings": readings}
        gw.publish("estates/e1/gw/gw-01/telemetry", orjson.dumps(body), 1).wait_for_publish(10)
        wait_for(lambda: socket_reading(admin, "e1", "ebc-2"), 20, "the sockets")
        url = "/api/v1/estates/e1/devices/{}/commands"
        refused = admin.post(url.format("ebc-1"), json={"action": "socket.power_off"}).json()
        wait_for(lambda: command_state(admin, refused["id"], "failed"), 10, "the refusal")
        waiting = admin.post(url.format("ebc-2"), json={"action": "socket.power_off"}).json()
        assert waiting["state"] == "sent"
        gw.loop_stop()
        gw.disconnect()
    finally:
        service.stop()
    time.sleep(3.5)  # its deadline passes while the service is down

    again = Service(settings)
    again.start()
    try:
        api = httpx.Client(
            base_url=again.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )
        got = wait_for(lambda: command_state(api, waiting["id"], "timed_out"), 10, "time-out")
        assert got["answered_ms"] >= waiting["deadline_ms"]
        kept = api.get(f"/api/v1/commands/{refused['id']}").json()
        assert kept["state"] == "failed" and kept["error"] == "relay stuck"
    finally:
        again.stop()
