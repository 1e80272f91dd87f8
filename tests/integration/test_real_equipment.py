"""Real equipment through the real gateway process: ``estatewatch gateway --config FILE`` with a
Modbus line (pymodbus's own server standing in for a substation PLC and a dead slave) and a
GB/T 26875.3 listener (a simulated transmission device connecting to it over TCP), into the
real Mosquitto and the service: readings stored, a panel's fire alarm raises the alarm, and the
gateway status tells which slave stopped answering and how many frames were bad."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from estatewatch.broker import free_port
from estatewatch.service import Service
from gateway.gbt26875 import Cmd
from simulators.modbus_plant import PlantModbusServer
from simulators.transmission_device import TransmissionDevice
from tests.support import waiter

pytestmark = pytest.mark.integration

ESTATE, GW = "fire-estate", "gw-01"
EXAMPLES = Path(__file__).parents[2] / "gateway" / "examples"


wait_for = waiter(timeout=30.0, every=0.2)


def status_watcher(service: Service) -> tuple[list[dict[str, Any]], mqtt.Client]:
    """The gateway's status messages as the service's own broker account sees them."""
    ep = service.endpoint
    assert ep is not None
    seen: list[dict[str, Any]] = []
    lock = threading.Lock()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-status-watch")
    client.username_pw_set(ep.username, ep.password)
    client.on_connect = lambda c, *_: c.subscribe(f"estates/{ESTATE}/gw/{GW}/status", 1)

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with lock:
            seen.append(orjson.loads(msg.payload))

    client.on_message = on_message
    client.connect(ep.host, ep.port)
    client.loop_start()
    return seen, client


def test_modbus_and_fire_panel_through_the_gateway_process_to_an_alarm(
    service: Service, tmp_path: Path
) -> None:
    api = httpx.Client(
        base_url=service.url, headers={"Authorization": "Bearer test-admin-token-0123456789"}
    )
    assert (
        api.post("/api/v1/estates", json={"id": ESTATE, "name": "消防小区", "region": "呼和浩特市"})
        .status_code == 201
    )  # fmt: skip
    creds = api.post(f"/api/v1/estates/{ESTATE}/gateways", json={"id": GW}).json()["mqtt"]

    plant = PlantModbusServer(free_port(), framing="tcp")
    # 65.3 / 45.1 °C, 0.52 / 0.31 MPa, 20.2 °C apart
    plant.slave(1).write("holding", 0, [653, 451, 520, 310, 202])
    plant.slave(2).silent = True  # a substation whose controller does not answer
    plant.start()
    fire_port = free_port()
    shutil.copy(EXAMPLES / "fire-mapping.toml", tmp_path / "fire-mapping.toml")
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""
[gateway]
estate = "{ESTATE}"
id = "{GW}"
state_dir = "gw-state"
status_interval_s = 1
poll_interval_s = 0.1

[broker]
url = "mqtt://{creds["host"]}:{creds["port"]}"
username = "{creds["username"]}"
password = "{creds["password"]}"

[buffer]
batch_linger_ms = 100

[[adapters]]
type = "modbus"
name = "plant-room"
transport = "tcp"
host = "127.0.0.1"
port = {plant.port}
timeout_s = 0.3
retries = 0

[[adapters.devices]]
dev = "hs-1"
map = "heating-substation"
unit = 1
interval_s = 1

[[adapters.devices]]
dev = "hs-2"
map = "heating-substation"
unit = 2
interval_s = 1

[[adapters]]
type = "gbt26875"
name = "fire-control-room"
listen = "127.0.0.1:{fire_port}"
mapping = "fire-mapping.toml"
"""
    )
    statuses, watcher = status_watcher(service)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    gateway = subprocess.Popen(
        [sys.executable, "-m", "estatewatch.cli", "gateway", "--config", str(config),
         "--progress-every", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    device = TransmissionDevice("127.0.0.1", fire_port, confirm_timeout_s=2.0, resends=2)
    try:

        def connected() -> bool:
            try:
                device.connect(1.0)
                return True
            except OSError:
                return False

        wait_for(connected, what="the gateway's GB/T 26875.3 listener")
        assert wait_for(lambda: device.syncs, what="the receiver to set the device's clock")

        # The panel: normal, then a fire alarm; a detector behind it, then a bad frame.
        for word in (0b1, 0b11):
            reply = device.system_state(1, 1, word)
            assert reply is not None and reply.command == Cmd.CONFIRM
        reply = device.component_state(1, 1, 42, 1203, 0b11, "3号楼12层")
        assert reply is not None and reply.command == Cmd.CONFIRM
        # a whole frame of zeros (its checksum 0 is right): command 0 is no command, denied
        device.send_raw(b"@@" + bytes(25) + b"\x00##")
        denial = device.wait_reply(0, 5)
        assert denial is not None and denial.command == Cmd.DENY

        def fire_alarm() -> dict[str, Any] | None:
            items = api.get("/api/v1/alarms", params={"estate": ESTATE}).json()["items"]
            return next((a for a in items if a["rule"] == "fire-alarm"), None)

        alarm = wait_for(fire_alarm, what="the panel's fire alarm in the service")
        assert alarm["subject"] == "fap-1" and alarm["kind"] == "fire_panel"
        assert alarm["severity"] == "critical" and alarm["state"] == "firing"

        def devices() -> dict[str, Any] | None:
            items = api.get(f"/api/v1/estates/{ESTATE}/devices").json()["items"]
            got = {d["id"]: d for d in items}
            ready = {"hs-1", "fap-1", "smoke-b3-1203"} <= set(got) and all(
                got[d]["metrics"] for d in ("hs-1", "fap-1")
            )
            return got if ready else None

        got = wait_for(devices, what="the Modbus and fire devices in the API")
        assert got["hs-1"]["metrics"] == {
            "supply_temp_c": 65.3,
            "return_temp_c": 45.1,
            "supply_pressure_mpa": 0.52,
            "return_pressure_mpa": 0.31,
            "supply_return_diff_c": 20.2,
        }
        assert got["fap-1"]["metrics"]["status_word"] == 3
        assert "hs-2" not in got  # the silent slave sent nothing

        def reported() -> dict[str, Any] | None:
            online = [s for s in statuses if s.get("state") == "online" and "adapters" in s]
            if not online:
                return None
            a = online[-1]["adapters"]
            ok = (
                a["modbus:plant-room"]["devices"]["hs-2"]["state"] == "timeout"
                and a["gbt26875:fire-control-room"]["frames"] >= 4
            )
            return a if ok else None

        adapters = wait_for(reported, what="the slave's timeout in the gateway status")
        modbus = adapters["modbus:plant-room"]["devices"]
        assert modbus["hs-1"]["state"] == "ok"
        fire = adapters["gbt26875:fire-control-room"]
        assert fire["confirmed"] >= 3 and fire["connections"] == 1
        assert fire["bad_frames"]["bad_command"] == 1 and fire["denied"] == 1

        # The on-duty operator resets the panel (复位, bit 13): both fire alarms close, the
        # detector's too (issue 11), ended by the equipment and acknowledged by nobody: they
        # stay listed, cleared, until a person acknowledges them (ISA-18.2 RTN unack).
        reply = device.system_state(1, 1, 0b1 | 1 << 13)
        assert reply is not None and reply.command == Cmd.CONFIRM

        def closed() -> list[dict[str, Any]] | None:
            items = api.get("/api/v1/alarms", params={"estate": ESTATE}).json()["items"]
            fire_alarms = [a for a in items if a["rule"] in ("fire-alarm", "fire-alarm-detector")]
            done = len(fire_alarms) == 2 and all(a["state"] == "cleared" for a in fire_alarms)
            return fire_alarms if done else None

        for a in wait_for(closed, what="the fire alarms closed by the panel's reset"):
            assert (a["resolved_by"], a["acked_by"]) == ("rules", None), a
    finally:
        device.close()
        gateway.send_signal(signal.SIGTERM)
        out, _ = gateway.communicate(timeout=30)
        watcher.disconnect()
        watcher.loop_stop()
        plant.stop()
    assert gateway.returncode == 0, out
    assert "listening on 127.0.0.1" in out and "tcp 127.0.0.1" in out
    assert "Traceback" not in out
