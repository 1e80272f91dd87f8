"""Two `run --role ingest` processes split the estates; a `run --role api` process serves both."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from estatewatch.broker import ManagedMosquitto, free_port
from ingest.shards import shard_of
from tests.support import publish_temperature

pytestmark = pytest.mark.integration

ESTATES = ("shard-a", "shard-d")  # crc32 puts them on shards 0 and 1 of 2


def test_two_ingest_shards_and_an_api_process(mosquitto: ManagedMosquitto, tmp_path: Path) -> None:
    assert {shard_of(e, 2) for e in ESTATES} == {0, 1}
    ep = mosquitto.endpoint
    base = {
        **os.environ,
        "ESTATEWATCH_DATA_DIR": str(tmp_path / "data"),
        "ESTATEWATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}",
        "ESTATEWATCH_MQTT_URL": f"mqtt://{ep.username}:{ep.password}@{ep.host}:{ep.port}",
        "ESTATEWATCH_INGEST_SHARDS": "2",
        "ESTATEWATCH_ADMIN_TOKEN": "test-admin-token-0123456789",
        "ESTATEWATCH_LOG_LEVEL": "WARNING",
    }
    procs = []
    ports = {}
    for name, args in (
        ("api", ["--role", "api"]),
        ("s0", ["--role", "ingest", "--shard", "0"]),
        ("s1", ["--role", "ingest", "--shard", "1"]),
    ):
        ports[name] = free_port()
        env = {**base, "ESTATEWATCH_API_PORT": str(ports[name])}
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - lives with the process
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "estatewatch.cli", "run", *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    try:

        def client(name: str) -> httpx.Client:
            return httpx.Client(
                base_url=f"http://127.0.0.1:{ports[name]}",
                headers={"Authorization": "Bearer test-admin-token-0123456789"},
                timeout=5,
            )

        def up(name: str) -> bool:
            try:
                return client(name).get("/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        deadline = time.monotonic() + 60
        while not all(up(n) for n in ports) and time.monotonic() < deadline:
            time.sleep(0.2)
        logs = {n: (tmp_path / f"{n}.log").read_text(errors="replace")[-2000:] for n in ports}
        assert all(up(n) for n in ports), logs
        api = client("api")
        for e in ESTATES:
            assert api.post("/api/v1/estates", json={"id": e, "name": e}).status_code == 201
            assert (
                api.post(f"/api/v1/estates/{e}/gateways", json={"id": "gw-01"}).status_code == 201
            )
        # each shard subscribes to its own new estates within a few seconds
        deadline = time.monotonic() + 60
        subs: list[object] = []
        while time.monotonic() < deadline:
            subs = [client(n).get("/healthz").json()["ingest"]["estates"] for n in ("s0", "s1")]
            if subs == [["shard-a"], ["shard-d"]]:
                break
            time.sleep(0.2)
        logs = {n: (tmp_path / f"{n}.log").read_text(errors="replace")[-2000:] for n in ports}
        assert subs == [["shard-a"], ["shard-d"]], logs
        now = int(time.time() * 1000)
        for i, e in enumerate(ESTATES):
            creds = mosquitto.issue_gateway_credentials(e, "gw-01", "estates")
            assert creds is not None
            publish_temperature(creds, e, -20.0 - i, now, 10)

        def both_visible() -> dict[str, float]:
            out = {}
            for e in ESTATES:
                items = api.get(f"/api/v1/estates/{e}/devices").json()["items"]
                # a device is registered just before its readings commit: listed, no value yet
                if items and "temp_c" in items[0]["metrics"]:
                    out[e] = items[0]["metrics"]["temp_c"]
            return out

        deadline = time.monotonic() + 20
        got: dict[str, float] = {}
        while time.monotonic() < deadline and len(got) < 2:
            got = both_visible()
            time.sleep(0.2)
        assert got == {"shard-a": -20.0, "shard-d": -21.0}
        # each estate was stored by its own shard, in that shard's file
        s0 = client("s0").get("/healthz").json()["ingest"]
        s1 = client("s1").get("/healthz").json()["ingest"]
        assert (s0["readings"], s1["readings"]) == (1, 1)
        assert (tmp_path / "data" / "telemetry-0of2.db").exists()
        assert (tmp_path / "data" / "telemetry-1of2.db").exists()
        command_through_the_api_process(mosquitto, api, now)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


def command_through_the_api_process(
    mosquitto: ManagedMosquitto, api: httpx.Client, now: int
) -> None:
    """(issue 13) A socket command sent through the API process reaches the gateway; its answer
    is settled by the ingest shard that owns the estate, and the API process reads it."""
    creds = mosquitto.issue_gateway_credentials("shard-a", "gw-01", "estates")
    assert creds is not None
    gw = mqtt.Client(CallbackAPIVersion.VERSION2)
    gw.username_pw_set(creds.username, creds.password)

    def carry_out(client: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        cmd = orjson.loads(msg.payload)
        ack = {"v": 1, "id": cmd["id"], "ok": True, "ts": int(time.time() * 1000)}
        client.publish("estates/shard-a/gw/gw-01/cmd/ack", orjson.dumps(ack), 1)

    gw.on_message = carry_out
    gw.connect(creds.host, creds.port)
    gw.subscribe("estates/shard-a/gw/gw-01/cmd", 1)
    gw.loop_start()
    try:
        socket = {"dev": "ebc-1", "kind": "ebike_charger", "ts": now, "m": {"power_w": 150.0}}
        body = {"v": 1, "gw": "gw-01", "seq": 2, "sent": now, "readings": [socket]}
        gw.publish("estates/shard-a/gw/gw-01/telemetry", orjson.dumps(body), 1).wait_for_publish(10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            r = api.post(
                "/api/v1/estates/shard-a/devices/ebc-1/commands",
                json={"action": "socket.power_off", "reason": "scale-out"},
            )
            if r.status_code != 404:  # the device is registered once its reading is stored
                break
            time.sleep(0.2)
        assert r.status_code == 201, r.text
        state = r.json()["state"]
        while time.monotonic() < deadline and state == "sent":
            time.sleep(0.2)
            state = api.get(f"/api/v1/commands/{r.json()['id']}").json()["state"]
        assert state == "acknowledged"
    finally:
        gw.loop_stop()
        gw.disconnect()
