"""The live stream over a real connection: a reading published by a gateway reaches a
subscribed dashboard as an SSE event, and only the estates the caller may read."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from api.live import LiveHub
from estatewatch.broker import ManagedMosquitto
from estatewatch.service import Service

pytestmark = pytest.mark.integration


def read_events(url: str, token: str, out: list[tuple[str, Any]], stop: threading.Event) -> None:
    with httpx.stream(
        "GET", url, headers={"Authorization": f"Bearer {token}"}, timeout=httpx.Timeout(5, read=30)
    ) as r:
        out.append(("status", r.status_code))
        event = None
        for line in r.iter_lines():
            if stop.is_set():
                return
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                out.append((event or "", orjson.loads(line[6:])))


def test_reading_reaches_the_dashboard_stream(service: Service) -> None:
    for e in ("live-a", "live-b"):
        service.state.add_estate(e, e)
        service.state.add_gateway(e, "gw-01")
    service.ingest.registry.reload()
    got: list[tuple[str, Any]] = []
    stop = threading.Event()
    url = f"{service.url}/api/v1/estates/live-a/stream"
    reader = threading.Thread(
        target=read_events, args=(url, "test-admin-token", got, stop), daemon=True
    )
    reader.start()
    deadline = time.monotonic() + 10
    while ("hello", {}) not in got and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ("status", 200) in got
    broker = service.broker
    assert isinstance(broker, ManagedMosquitto)
    now = int(time.time() * 1000)
    for e, temp in (("live-b", -5.0), ("live-a", -21.5)):
        creds = broker.issue_gateway_credentials(e, "gw-01", "estates")
        assert creds is not None
        c = mqtt.Client(CallbackAPIVersion.VERSION2)
        c.username_pw_set(creds.username, creds.password)
        c.connect(creds.host, creds.port)
        c.loop_start()
        c.publish(
            f"estates/{e}/gw/gw-01/telemetry",
            orjson.dumps(
                {
                    "v": 1,
                    "gw": "gw-01",
                    "seq": 1,
                    "sent": now,
                    "readings": [
                        {
                            "dev": "ws-01",
                            "kind": "weather_station",
                            "ts": now,
                            "m": {"temp_c": temp},
                        }
                    ],
                }
            ),
            1,
        ).wait_for_publish(5)
        c.disconnect()
        c.loop_stop()
    deadline = time.monotonic() + 10
    devices: list[Any] = []
    while not devices and time.monotonic() < deadline:
        devices = [d for ev, d in got if ev == "device"]
        time.sleep(0.05)
    stop.set()
    assert devices == [
        {
            "estate": "live-a",
            "dev": "ws-01",
            "kind": "weather_station",
            "ts": now,
            "metrics": {"temp_c": -21.5},
        }
    ]


def test_a_slow_subscriber_is_bounded_and_told_to_resync() -> None:
    async def run() -> list[bytes]:
        hub = LiveHub()
        sub = hub.subscribe(frozenset(["e"]))
        for i in range(2000):
            hub.publish("e", "device", {"i": i})
            hub.publish("other", "device", {"i": i})  # not this subscriber's estate
        await asyncio.sleep(0.05)  # let the loop deliver
        assert sub.queue.qsize() == 500
        frames = []

        async def never() -> bool:
            return False

        gen = hub.stream(sub, never)
        for _ in range(3):
            frames.append(await gen.__anext__())
        await gen.aclose()
        assert hub.subscribers == 0
        return frames

    frames = asyncio.run(run())
    assert frames[0].startswith(b"event: hello")
    assert frames[1].startswith(b"event: resync")
    assert b'"i":1500' in frames[2]  # the oldest were dropped, the newest kept
