"""What a played estate writes as its ledger: its faults, and the weather episodes of its
station's readings, kept as they are played (``estatewatch simulate --truth``, the demo)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from gateway.adapter import Collected
from scoring.ledger import Cause, fault_causes, weather_causes, write_ledger
from simulators.estate import SimulatedEstate


class TruthRecorder:
    """Keeps the station's readings of one simulated estate as the gateway polls it."""

    def __init__(self, estate: SimulatedEstate) -> None:
        self.estate = estate
        spec = estate.spec
        self.station = next((d.id for d in spec.devices if d.kind == "weather_station"), None)
        self.readings: list[tuple[int, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def __call__(self, got: Collected) -> None:
        if self.station is None:
            return
        mine = [(r.ts, dict(r.metrics)) for r in got.readings if r.dev == self.station]
        if mine:
            with self._lock:
                self.readings += mine

    def causes(self) -> list[Cause]:
        spec = self.estate.spec
        played = self.estate.now_ms  # faults not yet reached were not played
        out = fault_causes(f for f in self.estate.fault_ledger() if f["start_ms"] < played)
        if self.station:
            with self._lock:
                readings = list(self.readings)
            out += weather_causes(spec.estate, self.station, spec.zone, readings)
        return out

    def write(self, path: str | Path) -> int:
        causes = self.causes()
        write_ledger(path, causes)
        return len(causes)
