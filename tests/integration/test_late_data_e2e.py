"""Late data is history, not an emergency, and data never runs ahead of the wall clock
(issue 13), through the running service with its own Mosquitto: a gateway delivers a fire
alarm taken two hours ago (its backlog after an outage) and a reading from an hour ahead (a
gateway clock gone wrong), then a fire alarm of now. The old one is stored with its data time
and marked late, and goes neither to the control room's notices (MQTT ``alerts``) nor onto the
live feed; the one from the future is a dead letter, not a reading; the new one is paged and
announced as before. (The engine-level cases, deadman clocks on arrivals among them, are in
tests/alerts/test_late_data.py.)"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from estatewatch.service import Service
from gateway.publisher import now_ms
from tests.support import LiveStream, waiter

pytestmark = pytest.mark.integration

TOKEN = "test-admin-token-0123456789"
HOUR = 3_600_000
wait_for = waiter(20)


def _client(host: str, port: int, username: str | None, password: str | None) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2)
    if username:
        c.username_pw_set(username, password)
    c.connect(host, port)
    c.loop_start()
    return c


def test_a_backlog_alarm_is_recorded_late_and_neither_paged_nor_announced(
    service: Service,
) -> None:
    api = httpx.Client(
        base_url=service.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert api.post("/api/v1/estates", json={"id": "e1", "name": "东苑小区"}).status_code == 201
    creds = api.post("/api/v1/estates/e1/gateways", json={"id": "gw-01"}).json()["mqtt"]
    assert service.endpoint is not None
    ep = service.endpoint
    notices: list[dict[str, Any]] = []
    subscribed = threading.Event()
    siren = _client(ep.host, ep.port, ep.username, ep.password)
    siren.on_message = lambda _c, _u, m: notices.append(orjson.loads(m.payload))
    siren.on_subscribe = lambda *_a: subscribed.set()
    siren.subscribe("estates/e1/alerts", qos=1)
    assert subscribed.wait(5)
    stream = LiveStream(api, "e1")
    gw = _client(creds["host"], creds["port"], creds["username"], creds["password"])
    wait_for(gw.is_connected, 10, "the gateway's connection")
    seq = [0]

    def send(kind: str, items: list[dict[str, Any]]) -> None:
        seq[0] += 1
        body = {"v": 1, "gw": "gw-01", "seq": seq[0], "sent": now_ms(), kind: items}
        topic = "estates/e1/gw/gw-01/" + ("telemetry" if kind == "readings" else kind)
        gw.publish(topic, orjson.dumps(body), qos=1).wait_for_publish(10)

    def alarm_of(dev: str) -> dict[str, Any] | None:
        items = api.get("/api/v1/alarms", params={"estate": "e1"}).json()["items"]
        return next((a for a in items if a["subject"] == dev and a["state"] != "pending"), None)

    try:
        old = now_ms() - 2 * HOUR
        fire = {"kind": "fire_panel", "type": "fire.alarm", "data": {"zone": "b1-f3"}}
        send("events", [{"dev": "fap-old", "ts": old, **fire}])
        ahead = {"dev": "h-1", "kind": "fire_hydrant", "ts": now_ms() + HOUR}
        send("readings", [{**ahead, "m": {"pressure_mpa": 0.3}}])
        late = wait_for(lambda: alarm_of("fap-old"), 20, "the backlog's alarm")
        assert late["late"] is True and late["fired_ms"] == old
        assert late["state"] == "firing" and late["raised_ms"] >= old + 2 * HOUR - 60_000

        # the control: a fire of now is paged and announced
        send("events", [{"dev": "fap-new", "ts": now_ms(), **fire}])
        fresh = wait_for(lambda: alarm_of("fap-new"), 20, "the new alarm")
        assert fresh["late"] is False
        wait_for(
            lambda: any(fresh["id"] in orjson.dumps(n).decode() for n in notices),
            20,
            "the new alarm's notice",
        )
        wait_for(
            lambda: any(a.get("alarm", {}).get("id") == fresh["id"] for a in stream.named("alarm")),
            10,
            "the new alarm on the live feed",
        )
        time.sleep(1)  # what the old one would have sent has arrived by now
        assert not [n for n in notices if late["id"] in orjson.dumps(n).decode()]
        assert not [a for a in stream.named("alarm") if a.get("alarm", {}).get("id") == late["id"]]

        # nothing from an hour ahead is a reading: a dead letter that says why
        letters = wait_for(
            lambda: [
                d
                for d in api.get("/api/v1/deadletters").json()["items"]
                if d["reason"] == "future_timestamp"
            ],
            10,
            "the dead letter of the reading from the future",
        )
        assert len(letters) == 1
        devices = api.get("/api/v1/estates/e1/devices").json()["items"]
        assert all((d["last_seen_ms"] or 0) <= now_ms() for d in devices), devices
        assert "h-1" not in {d["id"] for d in devices}
    finally:
        stream.close()
        for c in (gw, siren):
            c.loop_stop()
            c.disconnect()
