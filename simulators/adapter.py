"""The simulator as a gateway device adapter (:class:`gateway.adapter.DeviceAdapter`)."""

from __future__ import annotations

from collections.abc import Callable

from gateway.adapter import Collected
from protocol.messages import Command
from simulators.clock import SimClock
from simulators.estate import SimulatedEstate


class SimulatorAdapter:
    """Plays a simulated estate on a simulated clock; stops producing at ``end_ms``."""

    def __init__(self, estate: SimulatedEstate, clock: SimClock, end_ms: int | None = None) -> None:
        self.estate = estate
        self.clock = clock
        self.end_ms = end_ms
        self.name = f"simulator:{estate.spec.estate}"
        self._devices = {d.id for d in estate.spec.devices}
        # told everything the estate produced (e.g. the ledger's record of station readings)
        self.observers: list[Callable[[Collected], None]] = []

    @property
    def finished(self) -> bool:
        return self.end_ms is not None and self.estate.now_ms >= self.end_ms

    def sim_now_ms(self) -> int:
        now = self.clock.now_ms()
        return now if self.end_ms is None else min(now, self.end_ms)

    def poll(self) -> Collected:
        got = self.estate.advance(self.sim_now_ms())
        for observe in self.observers:
            observe(got)
        return got

    def owns(self, dev: str) -> bool:
        return dev in self._devices

    def execute(self, command: Command) -> str | None:
        return self.estate.command(command, self.sim_now_ms())

    def network_down(self) -> bool:
        return self.estate.network_down(self.sim_now_ms())

    def close(self) -> None:
        return None
