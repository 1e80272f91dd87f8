"""Ingest's counters, read by /healthz, /metrics and the benches on other threads.

Who writes what: ``received`` is counted by each lane's network thread in a slot of its own and
summed on read (no lost update between the two threads, no lock on the hot path); everything
else is written by the recorder (writer) thread alone. The containers a reader iterates
(dead letters by reason, gateways last seen, rate samples) change only under ``lock``, and
``gateway_lost`` is replaced whole."""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

LANE_NAMES = ("telemetry", "events")


@dataclass
class IngestStats:
    # one slot per lane, each written by that lane's network thread alone; never resized
    received_by_lane: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LANE_NAMES, 0))
    committed_messages: int = 0
    readings: int = 0
    events: int = 0
    commits: int = 0
    last_commit_ms: int | None = None
    last_commit_duration_s: float = 0.0
    commit_failures: int = 0  # store calls that failed (each retry and each split counts)
    poison_messages: int = 0  # messages the store refused alone: dead-lettered and acknowledged
    failing_since: float | None = None  # monotonic time the writer began retrying, while it does
    last_error: str | None = None  # the last commit failure, shortened
    duplicates: int = 0
    newest_reading_ts: int | None = None  # the latest reading time committed (device clock)
    dead_letters: Counter[str] = field(default_factory=Counter)
    gateway_last_seen: dict[tuple[str, str], int] = field(default_factory=dict)
    # replaced whole after each commit, so readers on other threads see a consistent dict
    gateway_lost: dict[tuple[str, str], int] = field(default_factory=dict)
    # (monotonic time, committed messages, readings) after recent commits, for rates
    samples: deque[tuple[float, int, int]] = field(default_factory=lambda: deque(maxlen=512))
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    # a scaled-out worker's partition sessions count on their own lanes (come and go with the
    # leases; folded into the slots above when closed): their sum, given by ingest.lanes
    received_open: Callable[[], int] = field(default=lambda: 0, repr=False, compare=False)

    @property
    def received(self) -> int:
        """MQTT messages received, both lanes (all sessions)."""
        return sum(self.received_by_lane.values()) + self.received_open()

    def dead_letter_counts(self) -> dict[str, int]:
        """Dead letters by reason, a copy."""
        with self.lock:
            return dict(self.dead_letters)

    def last_seen(self) -> dict[tuple[str, str], int]:
        """(estate, gateway) → when its last message arrived (wall ms), a copy."""
        with self.lock:
            return dict(self.gateway_last_seen)

    def rates(self, now: float, window_s: float) -> tuple[float, float]:
        """Messages and readings committed per second over about the last window_s."""
        with self.lock:
            samples = list(self.samples)
        if not samples:
            return 0.0, 0.0
        base = samples[0]  # the newest sample at or before the window's start, else the oldest
        for sample in samples:
            if sample[0] > now - window_s:
                break
            base = sample
        last = samples[-1]
        span = max(now - base[0], 1e-9)
        return (last[1] - base[1]) / span, (last[2] - base[2]) / span
