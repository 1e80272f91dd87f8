"""A simulated estate for the walking skeleton: devices of every family, each reporting at its
catalog interval with plausible, seeded values.

Realistic signals (diurnal and seasonal climate, charging sessions, lift trips), estate spec
files and scripted scenarios come with the simulator issue; this module keeps the same shape
(a spec in, readings due at a time out) so they can grow in place.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from protocol.catalog import Catalog, Metric, ValueType
from protocol.messages import Reading, Value

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class EstateSpec:
    estate: str
    name: str
    region: str
    gateway: str
    january_mean_c: float  # climate: Hohhot about -11 °C, Hailar about -25 °C (REFERENCE §6)
    devices: tuple[tuple[str, str], ...] = field(default=())  # (device id, kind)


def small_estate(
    estate: str,
    name: str,
    region: str,
    january_mean_c: float,
    buildings: int = 3,
    gateway: str = "gw-01",
) -> EstateSpec:
    """About 15 devices a building plus the estate's shared plant: every family is present."""
    devices: list[tuple[str, str]] = [
        ("fire-panel-1", "fire_panel"),
        ("fire-pump-1", "fire_pump"),
        ("fire-tank-1", "fire_water_tank"),
        ("fire-lane-1", "fire_lane_monitor"),
        ("heating-1", "heating_station"),
        ("power-main", "power_meter"),
        ("water-tank-1", "water_tank"),
        ("gas-boiler-room", "gas_detector"),
        ("telecom-1", "telecom_cabinet"),
        ("ws-01", "weather_station"),
    ]
    for b in range(1, buildings + 1):
        devices += [
            (f"b{b}-lift-1", "elevator"),
            (f"b{b}-hydrant-1", "fire_hydrant"),
            (f"b{b}-hydrant-2", "fire_hydrant"),
            (f"b{b}-sprinkler-1", "sprinkler"),
            (f"b{b}-smoke-1", "smoke_detector"),
            (f"b{b}-door-1", "fire_door"),
            (f"b{b}-water-1", "water_pressure"),
            (f"b{b}-room-1", "room_temp"),
            (f"b{b}-pipe-1", "pipe_temp"),
            (f"b{b}-cam-1", "ebike_camera"),
        ]
        devices += [(f"b{b}-ebc-s{s:02d}", "ebike_charger") for s in range(1, 5)]
    return EstateSpec(estate, name, region, gateway, january_mean_c, tuple(devices))


def outdoor_temp_c(spec: EstateSpec, t_ms: int) -> float:
    """Seasonal plus diurnal cycle: coldest mid-January and at dawn, warmest mid-July and 15:00."""
    day_of_year = (t_ms / 86_400_000) % 365.25
    seasonal = spec.january_mean_c + 17.5 * (
        1 - math.cos(2 * math.pi * (day_of_year - 15) / 365.25)
    )
    hour = (t_ms / HOUR_MS + 8) % 24  # Asia/Shanghai
    return seasonal + 6 * math.cos(2 * math.pi * (hour - 15) / 24)


Gen = Callable[[float, np.random.Generator], Value]

# Per-metric signals; any metric not listed gets a neutral value from its catalog range.
SIGNALS: dict[str, Gen] = {
    "pressure_mpa": lambda out, rng: round(0.32 + rng.normal(0, 0.01), 3),
    "level_m": lambda out, rng: round(4.2 + rng.normal(0, 0.02), 2),
    "level_pct": lambda out, rng: round(78 + rng.normal(0, 1.5), 1),
    "status_word": lambda out, rng: 0,
    "wind_speed_ms": lambda out, rng: round(abs(rng.normal(4, 1.5)), 1),
    "wind_gust_ms": lambda out, rng: round(abs(rng.normal(7, 2)), 1),
    "snow_mm": lambda out, rng: 0.0,
    "rain_mm": lambda out, rng: 0.0,
    "visibility_m": lambda out, rng: round(float(rng.uniform(9000, 20000))),
    "humidity_pct": lambda out, rng: round(float(rng.uniform(30, 60)), 1),
    "road_temp_c": lambda out, rng: round(out - 1 + rng.normal(0, 0.3), 1),
    "supply_temp_c": lambda out, rng: round(max(45.0, 75 - out) + rng.normal(0, 0.5), 1),
    "return_temp_c": lambda out, rng: round(max(35.0, 50 - out / 2) + rng.normal(0, 0.5), 1),
    "supply_pressure_mpa": lambda out, rng: round(0.6 + rng.normal(0, 0.01), 3),
    "return_pressure_mpa": lambda out, rng: round(0.35 + rng.normal(0, 0.01), 3),
    "voltage_v": lambda out, rng: round(230 + rng.normal(0, 2), 1),
    "current_a": lambda out, rng: round(abs(rng.normal(3, 0.5)), 2),
    "power_kw": lambda out, rng: round(abs(rng.normal(120, 15)), 1),
    "lel_pct": lambda out, rng: round(abs(rng.normal(0.5, 0.3)), 1),
    "speed_ms": lambda out, rng: round(float(rng.choice([0.0, 1.0, 1.75])), 2),
    "floor": lambda out, rng: int(rng.integers(1, 19)),
    "machine_room_temp_c": lambda out, rng: round(18 + rng.normal(0, 1), 1),
    "power_w": lambda out, rng: round(float(rng.choice([0.0, 0.0, 180.0, 240.0])), 1),
}
KIND_SIGNALS: dict[tuple[str, str], Gen] = {
    ("weather_station", "temp_c"): lambda out, rng: round(out + rng.normal(0, 0.2), 1),
    ("room_temp", "temp_c"): lambda out, rng: round(21 + rng.normal(0, 0.4), 1),
    ("pipe_temp", "temp_c"): lambda out, rng: round(max(out + 12, 6.0) + rng.normal(0, 0.3), 1),
    ("fire_water_tank", "temp_c"): lambda out, rng: round(8 + rng.normal(0, 0.3), 1),
    ("telecom_cabinet", "temp_c"): lambda out, rng: round(24 + rng.normal(0, 1), 1),
    ("ebike_charger", "temp_c"): lambda out, rng: round(max(out, 5.0) + rng.normal(8, 2), 1),
}
BOOLEANS_TRUE = {"power_ok", "link_up", "auto", "online"}


def _neutral(metric: Metric, rng: np.random.Generator) -> Value:
    if metric.type is ValueType.BOOLEAN:
        return metric.name in BOOLEANS_TRUE
    if metric.type is ValueType.ENUM:
        return metric.values[0]
    lo = metric.min if metric.min is not None else 0.0
    hi = metric.max if metric.max is not None else lo + 100
    value = max(lo, min(hi, lo + (hi - lo) * 0.1))
    return int(value) if metric.type is ValueType.INTEGER else round(value, 2)


class SimulatedEstate:
    """Which devices report when, and what they say; deterministic for a seed."""

    def __init__(self, spec: EstateSpec, catalog: Catalog, seed: int, start_ms: int) -> None:
        unknown = sorted({k for _, k in spec.devices if k not in catalog.kinds})
        if unknown:
            raise ValueError(f"estate {spec.estate}: kinds not in the catalog: {unknown}")
        self.spec = spec
        self.catalog = catalog
        self.rng = np.random.default_rng(seed)
        # Spread first reports over a few seconds so a gateway doesn't burst at start.
        offsets = self.rng.integers(0, 3000, size=len(spec.devices))
        self._next_ms = start_ms + offsets
        self._interval_ms = np.array(
            [catalog.kinds[k].interval_s * 1000 for _, k in spec.devices], dtype=np.int64
        )

    def reading(self, dev: str, kind: str, t_ms: int) -> Reading:
        out = outdoor_temp_c(self.spec, t_ms)
        metrics: dict[str, Value] = {}
        for name, metric in self.catalog.kinds[kind].metrics.items():
            gen = KIND_SIGNALS.get((kind, name)) or SIGNALS.get(name)
            value = gen(out, self.rng) if gen else _neutral(metric, self.rng)
            if metric.type in (ValueType.NUMBER, ValueType.INTEGER) and not isinstance(value, str):
                lo = metric.min if metric.min is not None else -math.inf
                hi = metric.max if metric.max is not None else math.inf
                value = type(value)(min(hi, max(lo, value)))
            metrics[name] = value
        return Reading(dev=dev, kind=kind, ts=t_ms, metrics=metrics)

    def due(self, now_ms: int) -> list[Reading]:
        """Readings of every device whose report time has come."""
        idx = np.flatnonzero(self._next_ms <= now_ms)
        out = []
        for i in idx:
            dev, kind = self.spec.devices[i]
            out.append(self.reading(dev, kind, int(self._next_ms[i])))
        self._next_ms[idx] += self._interval_ms[idx]
        # A device that fell far behind (e.g. the process slept) reports once, not a burst.
        behind = self._next_ms < now_ms
        self._next_ms[behind] = now_ms + self._interval_ms[behind]
        return out
