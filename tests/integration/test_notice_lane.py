"""Alarm and plan notices never wait behind telemetry (issue 13): with the telemetry lane held
full (its network thread blocked, as under backpressure), an alarm notice leaves at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from alerts.notify import Notification
from estatewatch.service import Service
from protocol.endpoint import MqttEndpoint
from tests.conftest import service_settings

pytestmark = pytest.mark.integration


def _client(ep: MqttEndpoint, cid: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, clean_session=True)
    if ep.username:
        c.username_pw_set(ep.username, ep.password)
    c.connect(ep.host, ep.port, keepalive=30)
    c.loop_start()
    return c


def test_an_alarm_notice_leaves_at_once_while_the_telemetry_lane_is_held_full(
    tmp_path: Path,
) -> None:
    svc = Service(service_settings(tmp_path, ingest_queue_size=4, commit_max_readings=10))
    svc.start()
    gate = threading.Event()
    flood = listener = None
    try:
        assert svc.ingest is not None and svc.alerts is not None and svc.endpoint is not None
        ep = svc.endpoint
        svc.state.add_estate("e1", "东苑小区", "呼和浩特市")
        svc.state.add_gateway("e1", "gw-01", "")
        svc.ingest.registry.reload()
        svc.ingest.subscribe_new_estates()
        gw_ep = ep
        if svc.broker is not None:
            creds = svc.broker.issue_gateway_credentials("e1", "gw-01", "estates")
            if creds is not None:
                gw_ep = MqttEndpoint(creds.host, creds.port, creds.username, creds.password)
        got: list[tuple[str, bytes, float]] = []
        subscribed = threading.Event()
        listener = _client(ep, "siren")
        listener.on_message = lambda _c, _u, m: got.append((m.topic, m.payload, time.monotonic()))
        listener.on_subscribe = lambda *_a: subscribed.set()
        listener.subscribe("estates/e1/alerts", qos=1)
        assert subscribed.wait(5)

        # Hold the writer, then flood the telemetry lane until its network thread blocks.
        held = svc.ingest.run_maintenance(gate.wait)
        deadline = time.monotonic() + 10
        while not held.running() and time.monotonic() < deadline:
            time.sleep(0.01)
        flood = _client(gw_ep, "gw-01")
        now = int(time.time() * 1000)
        for seq in range(1, 301):
            reading = {
                "dev": "p-1",
                "kind": "water_pressure",
                "ts": now,
                "m": {"pressure_mpa": 0.3},
            }
            body = {"v": 1, "gw": "gw-01", "seq": seq, "sent": now, "readings": [reading]}
            flood.publish("estates/e1/gw/gw-01/telemetry", orjson.dumps(body), qos=1)
        deadline = time.monotonic() + 10
        lane = svc.ingest.telemetry_lane
        while lane.queue.qsize() < lane.queue.maxsize and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lane.queue.qsize() == lane.queue.maxsize  # full: its network thread waits
        time.sleep(0.5)

        # What went out on the telemetry lane's own client waits with it ...
        svc.ingest.client.publish("estates/e1/alerts", b'{"via": "telemetry lane"}', qos=1)
        # ... an alarm notice does not.
        sent = time.monotonic()
        note = Notification(
            "al-1:firing:mqtt", "mqtt", "e1", "firing", {"alarm": {"id": "al-1"}}, 0
        )
        svc.alerts.outbox.notifiers["mqtt"].send(note)
        deadline = sent + 5
        while not any(b"al-1" in p for _, p, _ in got) and time.monotonic() < deadline:
            time.sleep(0.01)
        notices = [(p, t) for _, p, t in got if b"al-1" in p]
        assert notices, "the alarm notice did not leave while the telemetry lane was full"
        assert notices[0][1] - sent < 1.0
        assert not any(b"telemetry lane" in p for _, p, _ in got)  # the lane was really held
    finally:
        gate.set()
        for c in (flood, listener):
            if c is not None:
                c.loop_stop()
                c.disconnect()
        svc.stop()
