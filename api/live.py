"""The live stream: changes pushed to dashboards as Server-Sent Events, per estate.

``publish`` is called from any thread (ingest's listeners, the alerts engine's); each subscriber
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
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
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
# What a subscriber is handed: the urgent frames in order, and the device frames by (estate,
# device), each SSE frame encoded once by publish_many for every subscriber
Frames = tuple[list[bytes], dict[tuple[str, str], bytes]]


def _frame(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def read_frames(lines: Iterable[str]) -> Iterator[tuple[str, Any]]:
    """(event, data) of each frame in the lines of a stream as ``_frame`` writes it: the
    reader's side, for clients (tests, benches)."""
    event = ""
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            yield event, orjson.loads(line[6:])


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
    # handed over by other threads, for the loop to offer (``hand``); a wake-up is pending
    inbox: deque[Frames] = field(default_factory=deque)
    scheduled: bool = False

    def close(self) -> None:
        """Runs on the subscriber's loop. Frees what was waiting: a stream stuck on a full
        socket keeps only the chunk it is sending."""
        self.closed = True
        self.inbox.clear()
        self.urgent.clear()
        self.devices.clear()
        self.wake.set()

    def wants(self, estate: str) -> bool:
        return self.estates is None or estate in self.estates

    @property
    def pending(self) -> int:
        return len(self.urgent) + len(self.devices)

    def hand(self, updates: Frames) -> None:
        """From any thread: queued for the loop, which is woken only when no wake-up is
        pending. Each ``call_soon_threadsafe`` writes to the loop's self-pipe, letting go of the
        interpreter lock and waiting to retake it behind every busy thread (9 % of the
        listeners thread at 40,000 readings/s, and an alarm's frame waited for it). Raises
        RuntimeError when the loop has closed."""
        self.inbox.append(updates)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        """Runs on the subscriber's loop: what was handed since the last wake-up, in order.
        The flag is cleared first, so an update handed meanwhile is drained here or wakes
        the loop again."""
        self.scheduled = False
        while self.inbox:
            self.offer_many(self.inbox.popleft())

    def offer_many(self, updates: Frames) -> None:
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
        urgent, devices = updates
        if devices:
            if len(self.devices) + len(devices) <= DEVICE_SLOTS:
                self.devices.update(devices)  # in C: a commit's worth costs little per stream
            else:
                for key, frame in devices.items():
                    if key not in self.devices and len(self.devices) >= DEVICE_SLOTS:
                        self.overflowed = True
                        continue
                    self.devices[key] = frame
        if urgent:
            self.urgent.extend(urgent)
            if len(self.urgent) > QUEUE_SIZE:
                for _ in range(len(self.urgent) - QUEUE_SIZE):
                    self.urgent.popleft()
                self.overflowed = True
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
        if self.devices and len(out) < limit and size < BYTES_PER_SEND:
            # the oldest keys in one scan (popping next(iter(...)) one at a time rescans the
            # emptied front of the dict every time: quadratic, seconds of event loop for
            # 20,000), as many as fit the byte budget at the first frame's size
            first = len(next(iter(self.devices.values())))
            n = min(limit - len(out), (BYTES_PER_SEND - size) // max(first, 1) + 1)
            keys = list(itertools.islice(self.devices, n))
            out.extend(map(self.devices.pop, keys))
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
        per_estate: dict[str, Frames] = {}
        for estate, event, data in updates:
            urgent, devices = per_estate.setdefault(estate, ([], {}))
            frame = _frame(event, {"estate": estate, **data})
            if event == "device":
                devices[(estate, str(data.get("dev", "")))] = frame
            else:
                urgent.append(frame)
        everything: Frames | None = None
        for sub in subs:
            if sub.estates is None or len(sub.estates) > 1:
                wanted = [e for e in per_estate if sub.wants(e)]
                if len(wanted) == len(per_estate):
                    if everything is None:
                        everything = _merge(list(per_estate.values()))
                    mine = everything
                else:
                    mine = _merge([per_estate[e] for e in wanted])
            else:
                mine = per_estate.get(next(iter(sub.estates)), ([], {}))
            count = len(mine[0]) + len(mine[1])
            if not count:
                continue
            self.published += count
            try:
                sub.hand(mine)
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


def _merge(parts: list[Frames]) -> Frames:
    if len(parts) == 1:
        return parts[0]
    urgent: list[bytes] = []
    devices: dict[tuple[str, str], bytes] = {}
    for u, d in parts:
        urgent.extend(u)
        devices.update(d)
    return urgent, devices


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
