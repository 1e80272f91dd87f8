"""The live stream: changes pushed to dashboards as Server-Sent Events, per estate.

``publish`` is called from any thread (the ingest writer, the alerts engine); each subscriber
has bounded buffers on the API's event loop. Alarms, plans, events and gateway states come
first, in order: an alarm must not wait behind a snowstorm's worth of readings. Device updates
are coalesced per device (a dashboard shows "now", so a device's newer reading replaces one not
yet sent), so under load they cost one frame per device per send, not one per reading. A
subscriber too slow to keep up loses its oldest urgent events and is told to reload
(``resync``) rather than letting memory grow; one that has taken nothing for ``stall_s`` while
updates wait (a client that does not read: its socket is full) is dropped: its buffers are
freed, it gets no more work, and its stream ends as soon as its connection moves.

Streams are bounded: ``per_user`` open streams per user and ``total`` in all (a refused one is
told why, 429 or 503). A stream belongs to a user and a token: ``end_user`` and ``end_tokens``
end them at once when the user is disabled, deleted or logs out, and each stream re-checks its
token at every keepalive (a revocation by another process, an expiry).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

QUEUE_SIZE = 500  # urgent events (alarms, plans, device events, gateways) kept per subscriber
DEVICE_SLOTS = 20_000  # devices with an update waiting, per subscriber (a large estate: 5,000)
FRAMES_PER_SEND = 2_000  # frames joined into one write
BYTES_PER_SEND = 256 << 10  # … and at most this many bytes (what a stuck socket may hold)
PER_USER = 8  # open streams per user (a few tabs and screens of a control room)
TOTAL = 200  # open streams in all
STALL_S = 10.0  # a subscriber that takes nothing this long while updates wait is dropped

Update = tuple[str, str, dict[str, Any]]  # (estate, event, data)
# An update as subscribers hold it: its estate, its device (None: an urgent event) and its SSE
# frame, encoded once by publish_many for every subscriber (not once per subscriber)
Frame = tuple[str, tuple[str, str] | None, bytes]


def _frame(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class LiveFull(Exception):
    """No stream for this caller now: too many open (its own, 429, or everyone's, 503)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(eq=False)
class Subscription:
    estates: frozenset[str] | None  # None: every estate
    loop: asyncio.AbstractEventLoop
    owner: str = ""  # the user it belongs to
    token_hash: str | None = None  # the token it was opened with (None: the bootstrap admin)
    stall_s: float = STALL_S
    urgent: deque[bytes] = field(default_factory=deque)
    devices: dict[tuple[str, str], bytes] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    overflowed: bool = False
    closed: bool = False  # the stream ends: service stopping, token revoked, client too slow
    dropped: bool = False  # closed because it did not read
    waiting_since: float = 0.0  # monotonic time since which updates wait untaken

    def close(self) -> None:
        """Runs on the subscriber's loop. Frees what was waiting: a stream stuck on a full
        socket keeps only the chunk it is sending."""
        self.closed = True
        self.urgent.clear()
        self.devices.clear()
        self.wake.set()

    def wants(self, estate: str) -> bool:
        return self.estates is None or estate in self.estates

    @property
    def pending(self) -> int:
        return len(self.urgent) + len(self.devices)

    def offer_many(self, updates: Sequence[Frame]) -> None:
        """Runs on the subscriber's loop."""
        if self.closed:
            return
        now = time.monotonic()
        if not self.pending:
            self.waiting_since = now
        elif now - self.waiting_since > self.stall_s:
            self.dropped = True  # it has not read for stall_s: it is not coming back
            self.close()
            return
        for _estate, key, frame in updates:
            if key is not None:
                if key not in self.devices and len(self.devices) >= DEVICE_SLOTS:
                    self.overflowed = True
                    continue
                self.devices[key] = frame
            else:
                if len(self.urgent) >= QUEUE_SIZE:
                    self.urgent.popleft()
                    self.overflowed = True
                self.urgent.append(frame)
        self.wake.set()

    def take(self, limit: int = FRAMES_PER_SEND) -> bytes:
        """What to send next: a resync notice when something was dropped, the urgent events,
        then device updates, up to ``limit`` frames."""
        out: list[bytes] = []
        size = 0
        self.waiting_since = time.monotonic()
        if self.overflowed:
            self.overflowed = False
            out.append(b"event: resync\ndata: {}\n\n")
        while self.urgent and len(out) < limit and size < BYTES_PER_SEND:
            out.append(self.urgent.popleft())
            size += len(out[-1])
        # the oldest keys in one scan: popping next(iter(...)) one at a time rescans the
        # emptied front of the dict every time (quadratic: seconds of event loop for 20,000)
        for key in list(itertools.islice(self.devices, max(0, limit - len(out)))):
            if size >= BYTES_PER_SEND:
                break
            out.append(self.devices.pop(key))
            size += len(out[-1])
        if not self.pending:
            self.wake.clear()
        return b"".join(out)


class LiveHub:
    def __init__(
        self, per_user: int = PER_USER, total: int = TOTAL, stall_s: float = STALL_S
    ) -> None:
        self._subs: set[Subscription] = set()
        self._lock = threading.Lock()
        self.published = 0
        self.per_user = per_user
        self.total = total
        self.stall_s = stall_s
        self.refused = 0  # streams refused by the bounds
        self.dropped = 0  # subscribers dropped for not reading

    def subscribe(
        self, estates: frozenset[str] | None, owner: str = "", token_hash: str | None = None
    ) -> Subscription:
        """A new subscriber, or ``LiveFull`` beyond the bounds. A dropped or ended stream
        counts until its connection is gone: what bounds memory is open connections."""
        sub = Subscription(
            estates, asyncio.get_running_loop(), owner, token_hash, stall_s=self.stall_s
        )
        with self._lock:
            mine = sum(1 for s in self._subs if s.owner == owner)
            if mine >= self.per_user:
                self.refused += 1
                raise LiveFull(
                    429, f"{owner} has {mine} live streams open (at most {self.per_user})"
                )
            if len(self._subs) >= self.total:
                self.refused += 1
                raise LiveFull(503, f"the service has {self.total} live streams open: try later")
            self._subs.add(sub)
        return sub

    def _end(self, which: Callable[[Subscription], bool]) -> int:
        with self._lock:
            subs = [s for s in self._subs if which(s)]
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(sub.close)
            except RuntimeError:  # its loop has closed already
                self.unsubscribe(sub)
        return len(subs)

    def end_user(self, username: str) -> int:
        """End every stream of a user (disabled, deleted, password rotated)."""
        return self._end(lambda s: s.owner == username)

    def end_tokens(self, token_hashes: set[str]) -> int:
        """End the streams opened with these tokens (logged out)."""
        return self._end(lambda s: s.token_hash is not None and s.token_hash in token_hashes)

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def close(self) -> None:
        """End every open stream (the service is stopping), so the server need not wait out
        its graceful-shutdown timeout for streams that never end on their own."""
        self._end(lambda s: True)

    def publish(self, estate: str, event: str, data: dict[str, Any]) -> None:
        self.publish_many([(estate, event, data)])

    def publish_many(self, updates: Sequence[Update]) -> None:
        """Hand a batch (one commit's) to every subscriber that may see it: one wake-up of its
        loop per batch, not per update."""
        with self._lock:
            subs = [s for s in self._subs if not s.closed]
        if not subs:
            return
        # encoded once, shared read-only by every subscriber's loop
        every: list[Frame] = []
        by_estate: dict[str, list[Frame]] = {}
        for estate, event, data in updates:
            key = (estate, str(data.get("dev", ""))) if event == "device" else None
            f = (estate, key, _frame(event, {"estate": estate, **data}))
            every.append(f)
            by_estate.setdefault(estate, []).append(f)
        for sub in subs:
            if sub.estates is None:
                mine = every
            elif len(sub.estates) == 1:
                mine = by_estate.get(next(iter(sub.estates)), [])
            else:  # in publish order across its estates
                mine = [f for f in every if f[0] in sub.estates]
            if not mine:
                continue
            self.published += len(mine)
            try:
                sub.loop.call_soon_threadsafe(sub.offer_many, mine)
            except RuntimeError:  # its loop has closed: the client went away
                self.unsubscribe(sub)

    async def stream(
        self,
        sub: Subscription,
        is_disconnected: Callable[[], Any],
        keepalive_s: float = 15.0,
        still_valid: Callable[[], bool] | None = None,
    ) -> AsyncIterator[bytes]:
        """SSE frames for one subscriber until the client goes away, its token is revoked
        (``still_valid`` is asked at every keepalive) or it is dropped."""
        try:
            yield b"event: hello\ndata: {}\n\n"
            while not sub.closed:
                if not sub.pending and not sub.overflowed:
                    try:
                        await asyncio.wait_for(sub.wake.wait(), keepalive_s)
                    except TimeoutError:
                        if await is_disconnected():
                            return
                        if still_valid and not await asyncio.to_thread(still_valid):
                            return
                        yield b": keepalive\n\n"
                        continue
                if sub.closed:
                    return
                chunk = sub.take()
                if chunk:
                    yield chunk
        finally:
            if sub.dropped:
                self.dropped += 1
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
