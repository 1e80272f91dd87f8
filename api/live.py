"""The live stream: changes pushed to dashboards as Server-Sent Events, per estate.

``publish`` is called from any thread (the ingest writer, the alerts engine); each subscriber
has bounded buffers on the API's event loop. Alarms, plans, events and gateway states come
first, in order: an alarm must not wait behind a snowstorm's worth of readings. Device updates
are coalesced per device (a dashboard shows "now", so a device's newer reading replaces one not
yet sent), so under load they cost one frame per device per send, not one per reading. A
subscriber too slow to keep up loses its oldest urgent events and is told to reload
(``resync``) rather than letting memory grow.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

QUEUE_SIZE = 500  # urgent events (alarms, plans, device events, gateways) kept per subscriber
DEVICE_SLOTS = 20_000  # devices with an update waiting, per subscriber (a large estate: 5,000)
FRAMES_PER_SEND = 2_000  # frames joined into one write

Update = tuple[str, str, dict[str, Any]]  # (estate, event, data)


def _frame(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


@dataclass(eq=False)
class Subscription:
    estates: frozenset[str] | None  # None: every estate
    loop: asyncio.AbstractEventLoop
    urgent: deque[tuple[str, dict[str, Any]]] = field(default_factory=deque)
    devices: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    overflowed: bool = False
    closed: bool = False  # the service is stopping: end the stream

    def close(self) -> None:
        """Runs on the subscriber's loop."""
        self.closed = True
        self.wake.set()

    def wants(self, estate: str) -> bool:
        return self.estates is None or estate in self.estates

    @property
    def pending(self) -> int:
        return len(self.urgent) + len(self.devices)

    def offer_many(self, updates: Sequence[Update]) -> None:
        """Runs on the subscriber's loop."""
        for estate, event, data in updates:
            if event == "device":
                key = (estate, str(data.get("dev", "")))
                if key not in self.devices and len(self.devices) >= DEVICE_SLOTS:
                    self.overflowed = True
                    continue
                self.devices[key] = data
            else:
                if len(self.urgent) >= QUEUE_SIZE:
                    self.urgent.popleft()
                    self.overflowed = True
                self.urgent.append((event, data))
        self.wake.set()

    def take(self, limit: int = FRAMES_PER_SEND) -> bytes:
        """What to send next: a resync notice when something was dropped, the urgent events,
        then device updates, up to ``limit`` frames."""
        out: list[bytes] = []
        if self.overflowed:
            self.overflowed = False
            out.append(b"event: resync\ndata: {}\n\n")
        while self.urgent and len(out) < limit:
            out.append(_frame(*self.urgent.popleft()))
        while self.devices and len(out) < limit:
            key = next(iter(self.devices))
            out.append(_frame("device", self.devices.pop(key)))
        if not self.pending:
            self.wake.clear()
        return b"".join(out)


class LiveHub:
    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        self._lock = threading.Lock()
        self.published = 0

    def subscribe(self, estates: frozenset[str] | None) -> Subscription:
        sub = Subscription(estates, asyncio.get_running_loop())
        with self._lock:
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def close(self) -> None:
        """End every open stream (the service is stopping), so the server need not wait out
        its graceful-shutdown timeout for streams that never end on their own."""
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(sub.close)
            except RuntimeError:  # its loop has closed already
                self.unsubscribe(sub)

    def publish(self, estate: str, event: str, data: dict[str, Any]) -> None:
        self.publish_many([(estate, event, data)])

    def publish_many(self, updates: Sequence[Update]) -> None:
        """Hand a batch (one commit's) to every subscriber that may see it: one wake-up of its
        loop per batch, not per update."""
        with self._lock:
            subs = list(self._subs)
        if not subs:
            return
        # built once, shared read-only by every subscriber's loop
        stamped = [(estate, event, {"estate": estate, **data}) for estate, event, data in updates]
        for sub in subs:
            mine = [u for u in stamped if sub.wants(u[0])]
            if not mine:
                continue
            self.published += len(mine)
            try:
                sub.loop.call_soon_threadsafe(sub.offer_many, mine)
            except RuntimeError:  # its loop has closed: the client went away
                self.unsubscribe(sub)

    async def stream(
        self, sub: Subscription, is_disconnected: Callable[[], Any], keepalive_s: float = 15.0
    ) -> AsyncIterator[bytes]:
        """SSE frames for one subscriber until the client goes away."""
        try:
            yield b"event: hello\ndata: {}\n\n"
            while not sub.closed:
                if not sub.pending and not sub.overflowed:
                    try:
                        await asyncio.wait_for(sub.wake.wait(), keepalive_s)
                    except TimeoutError:
                        if await is_disconnected():
                            return
                        yield b": keepalive\n\n"
                        continue
                if sub.closed:
                    return
                chunk = sub.take()
                if chunk:
                    yield chunk
        finally:
            self.unsubscribe(sub)


def device_updates(deliveries: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """(estate, event, data) for the dashboard from committed ingest deliveries: the newest
    reading per device across the whole commit (a dashboard needs "now", not every reading:
    under load one commit holds many readings of each device), events as they are, gateway
    statuses."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    newest: dict[tuple[str, str], Any] = {}
    for d in deliveries:
        if d.estate is None:
            continue
        if d.status is not None:
            out.append(
                (
                    d.estate,
                    "gateway",
                    {
                        "gateway": d.gateway,
                        "state": d.status.state,
                        "ts": d.status.ts,
                        "buffered": d.status.buffered,
                    },
                )
            )
        if d.batch is None:
            continue
        for r in d.batch.readings:
            key = (d.estate, r.dev)
            seen = newest.get(key)
            if seen is None or seen.ts <= r.ts:
                newest[key] = r
        for e in d.batch.events:
            out.append(
                (
                    d.estate,
                    "event",
                    {"dev": e.dev, "kind": e.kind, "ts": e.ts, "type": e.type, "data": e.data},
                )
            )
    for (estate, _dev), r in newest.items():
        out.append(
            (estate, "device", {"dev": r.dev, "kind": r.kind, "ts": r.ts, "metrics": r.metrics})
        )
    return out
