"""The one small interface between the gateway core and whatever talks to devices.

A simulated estate is one adapter, a Modbus line (``gateway/modbus.py``) and a GB/T 26875.3
fire-panel link (``gateway/fire_receiver.py``) are others; ``gateway/registry.py`` builds them
from a config's ``[[adapters]]``. The core polls every adapter, buffers and publishes what it
returns, and hands it the commands addressed to its devices.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from protocol.messages import Command, Event, Reading


@dataclass
class Collected:
    """What an adapter gathered since it was last polled."""

    readings: list[Reading] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


class Inbox:
    """What a field adapter's own thread (a Modbus poller, a fire-panel listener) gathered for
    the gateway's next poll. Bounded: past ``max_readings`` / ``max_events`` the oldest goes and
    is counted, so a gateway that stops polling cannot let a field thread grow without end."""

    def __init__(self, max_readings: int, max_events: int) -> None:
        self._lock = threading.Lock()
        self._readings: deque[Reading] = deque(maxlen=max_readings)
        self._events: deque[Event] = deque(maxlen=max_events)
        self.dropped_readings = 0
        self.dropped_events = 0

    def put(self, readings: Iterable[Reading] = (), events: Iterable[Event] = ()) -> None:
        with self._lock:
            for reading in readings:
                self.dropped_readings += len(self._readings) == self._readings.maxlen
                self._readings.append(reading)
            for event in events:
                self.dropped_events += len(self._events) == self._events.maxlen
                self._events.append(event)

    def take(self) -> Collected:
        with self._lock:
            got = Collected(list(self._readings), list(self._events))
            self._readings.clear()
            self._events.clear()
        return got


def check_keys(
    cfg: Mapping[str, Any], allowed: Collection[str], where: str, error: type[Exception]
) -> None:
    """Refuses an ``[[adapters]]`` table with keys it does not know, naming the allowed ones."""
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise error(
            f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})"
        )


class InboxThread:
    """For an adapter that reads its devices on a thread of its own: the thread fills
    ``inbox``, ``poll`` takes what it holds; ``_run`` loops until ``_halt`` is set."""

    inbox: Inbox

    def _start_thread(self, name: str) -> None:
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        raise NotImplementedError

    def _stop_thread(self, timeout_s: float) -> None:
        self._halt.set()
        self._thread.join(timeout_s)

    def poll(self) -> Collected:
        return self.inbox.take()


@runtime_checkable
class DeviceAdapter(Protocol):
    """A source of readings and events that may also carry out commands.

    ``poll`` is called often (a fraction of a second apart) from one thread and must not block
    for long: a field-bus adapter polls its devices on its own schedule and returns what it has.
    Push-style links (a fire panel's serial line) queue what arrived, boundedly, until polled.
    """

    name: str

    def poll(self) -> Collected: ...

    def execute(self, command: Command) -> str | None:
        """Carry out a command for one of this adapter's devices: None when done, else a short
        reason for the ``cmd/ack`` error ("no such socket", "unknown action …")."""
        ...

    def owns(self, dev: str) -> bool:
        """Whether ``dev`` is behind this adapter (commands are routed by it)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class ReportsHealth(Protocol):
    """An adapter that says how its field side is doing (a slave that stopped answering, bad
    frames from a panel): the gateway status carries it under ``adapters``, keyed by name."""

    name: str

    def health(self) -> dict[str, Any]: ...
