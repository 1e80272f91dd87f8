"""The live stream: changes pushed to dashboards as Server-Sent Events, per estate.

``publish`` is called from any thread (the ingest writer, the alerts engine); each subscriber has
a bounded queue on the API's event loop. A subscriber too slow to keep up loses its oldest
events and is told to reload (``resync``) rather than letting memory grow.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

QUEUE_SIZE = 500


@dataclass(eq=False)
class Subscription:
    estates: frozenset[str] | None  # None: every estate
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_SIZE)
    )
    overflowed: bool = False

    def wants(self, estate: str) -> bool:
        return self.estates is None or estate in self.estates

    def offer(self, event: str, data: dict[str, Any]) -> None:
        """Runs on the subscriber's loop."""
        if self.queue.full():
            self.queue.get_nowait()
            self.overflowed = True
        self.queue.put_nowait((event, data))


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

    def publish(self, estate: str, event: str, data: dict[str, Any]) -> None:
        with self._lock:
            targets = [s for s in self._subs if s.wants(estate)]
        if not targets:
            return
        payload = {"estate": estate, **data}
        self.published += 1
        for sub in targets:
            try:
                sub.loop.call_soon_threadsafe(sub.offer, event, payload)
            except RuntimeError:  # its loop has closed: the client went away
                self.unsubscribe(sub)

    async def stream(
        self, sub: Subscription, is_disconnected: Callable[[], Any], keepalive_s: float = 15.0
    ) -> AsyncIterator[bytes]:
        """SSE frames for one subscriber until the client goes away."""
        try:
            yield b"event: hello\ndata: {}\n\n"
            while True:
                try:
                    event, data = await asyncio.wait_for(sub.queue.get(), keepalive_s)
                except TimeoutError:
                    if await is_disconnected():
                        return
                    yield b": keepalive\n\n"
                    continue
                if sub.overflowed:
                    sub.overflowed = False
                    yield b"event: resync\ndata: {}\n\n"
                yield b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
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
