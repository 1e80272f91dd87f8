"""The live stream over a real connection: a reading published by a gateway reaches a
subscribed dashboard as an SSE event, and only the estates the caller may read."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import orjson
import pytest

from api.live import LiveHub, read_frames
from estatewatch.broker import ManagedMosquitto
from estatewatch.service import Service
from tests.support import publish_temperature

pytestmark = pytest.mark.integration


def read_events(url: str, token: str, out: list[tuple[str, Any]], stop: threading.Event) -> None:
    with httpx.stream(
        "GET", url, headers={"Authorization": f"Bearer {token}"}, timeout=httpx.Timeout(5, read=30)
    ) as r:
        out.append(("status", r.status_code))
        try:
            for frame in read_frames(r.iter_lines()):
                if stop.is_set():
                    return
                out.append(frame)
        except httpx.RemoteProtocolError:
            if not stop.is_set():  # the service stopping after the test is the expected end
                raise


def test_reading_reaches_the_dashboard_stream(service: Service) -> None:
    for e in ("live-a", "live-b"):
        service.state.add_estate(e, e)
        service.state.add_gateway(e, "gw-01")
    service.ingest.registry.reload()
    got: list[tuple[str, Any]] = []
    stop = threading.Event()
    url = f"{service.url}/api/v1/estates/live-a/stream"
    reader = threading.Thread(
        target=read_events, args=(url, "test-admin-token-0123456789", got, stop), daemon=True
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
        publish_temperature(creds, e, temp, now, 5)
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


def frames_of(chunks: list[bytes]) -> list[tuple[str, Any]]:
    """(event, data) of SSE chunks, each holding one or more frames."""
    out = []
    for frame in b"".join(chunks).split(b"\n\n"):
        lines = dict(line.split(b": ", 1) for line in frame.split(b"\n") if b": " in line)
        if b"event" in lines:
            out.append((lines[b"event"].decode(), orjson.loads(lines[b"data"])))
    return out


async def until_keepalive(hub: LiveHub, sub: Any) -> list[bytes]:
    """What the stream sends before its first keep-alive; then it is closed."""

    async def never() -> bool:
        return False

    gen = hub.stream(sub, never, keepalive_s=0.05)
    chunks = []
    while (chunk := await gen.__anext__()) != b": keepalive\n\n":
        chunks.append(chunk)
    await gen.aclose()
    return chunks


def drain(hub: LiveHub, publish: Any) -> list[tuple[str, Any]]:
    """Subscribe to estate "e", run ``publish(hub)``, then read what the stream sends."""

    async def run() -> list[bytes]:
        sub = hub.subscribe(frozenset(["e"]))
        publish(hub)
        await asyncio.sleep(0.05)  # let the loop deliver

        chunks = await until_keepalive(hub, sub)
        assert hub.subscribers == 0
        return chunks

    return frames_of(asyncio.run(run()))


def test_device_updates_are_coalesced_per_device() -> None:
    """A slow reader gets each device's newest reading once, not every reading in between."""

    def publish(hub: LiveHub) -> None:
        for i in range(2000):
            hub.publish("e", "device", {"dev": f"d-{i % 50}", "i": i})
            hub.publish("other", "device", {"dev": "x", "i": i})  # not this subscriber's

    got = drain(LiveHub(), publish)
    assert got[0] == ("hello", {})
    devices = [d for ev, d in got if ev == "device"]
    assert len(devices) == 50
    assert {d["dev"]: d["i"] for d in devices} == {f"d-{k}": 1950 + k for k in range(50)}
    assert all(d["estate"] == "e" for d in devices)
    assert "resync" not in [ev for ev, _ in got]


def test_an_alarm_overtakes_the_device_updates_before_it() -> None:
    def publish(hub: LiveHub) -> None:
        hub.publish_many([("e", "device", {"dev": f"d-{i}", "i": i}) for i in range(3000)])
        hub.publish("e", "alarm", {"alarm": {"subject": "panel-1"}})

    got = drain(LiveHub(), publish)
    events = [ev for ev, _ in got]
    assert events[1] == "alarm"  # right after hello, ahead of 3,000 device frames
    assert events.count("device") == 3000


def test_a_slow_subscriber_is_bounded_and_told_to_resync() -> None:
    def publish(hub: LiveHub) -> None:
        for i in range(2000):
            hub.publish("e", "alarm", {"i": i})
            hub.publish("other", "alarm", {"i": i})  # not this subscriber's estate

    got = drain(LiveHub(), publish)
    assert got[0] == ("hello", {})
    assert got[1] == ("resync", {})
    alarms = [d["i"] for ev, d in got if ev == "alarm"]
    assert alarms == list(range(1500, 2000))  # the oldest were dropped, the newest kept in order


def test_closing_the_hub_ends_open_streams() -> None:
    async def run() -> list[bytes]:
        hub = LiveHub()
        sub = hub.subscribe(None)

        async def never() -> bool:
            return False

        gen = hub.stream(sub, never, keepalive_s=30)
        frames = [await gen.__anext__()]
        hub.close()  # as Service.stop does, from another thread in the service
        frames += [f async for f in gen]  # ends now, not after the 30-s keepalive
        assert hub.subscribers == 0
        return frames

    assert asyncio.run(asyncio.wait_for(run(), 5)) == [b"event: hello\ndata: {}\n\n"]


def test_publishes_before_the_loop_runs_wake_it_once_and_keep_their_order() -> None:
    """Each wake-up of a subscriber's loop from another thread lets go of the interpreter
    lock (a self-pipe write): updates handed while one is pending ride on it, in order."""

    async def run() -> tuple[list[bytes], int]:
        hub = LiveHub()
        sub = hub.subscribe(frozenset(["e"]))
        wakes = 0
        call_soon = sub.loop.call_soon_threadsafe

        def counted(*args: Any) -> Any:
            nonlocal wakes
            wakes += 1
            return call_soon(*args)

        sub.loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        for i in range(100):  # the loop runs nothing meanwhile: one wake-up pending
            hub.publish("e", "alarm", {"i": i})
        assert wakes == 1
        await asyncio.sleep(0.01)
        hub.publish("e", "alarm", {"i": 100})  # after the loop drained: woken again
        assert wakes == 2

        return await until_keepalive(hub, sub), wakes

    chunks, _wakes = asyncio.run(run())
    alarms = [d["i"] for ev, d in frames_of(chunks) if ev == "alarm"]
    assert alarms == list(range(101))
