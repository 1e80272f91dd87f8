"""The ledger: one JSON line per cause, with what it must produce and by when.

Two kinds of cause:

- ``fault``: a fault the simulator injected (``SimulatedEstate.fault_ledger``): its type, the
  device (or building, or gateway), start and end. It must produce an alarm of its rule family
  on one of its devices before its deadline (:data:`FAULT_EXPECT`: the family, and how long the
  device model and the rule's ``for`` take: e.g. a room cools below 18 °C and must stay there
  2 h before ``room-temp-low`` fires).
- ``weather``: an episode in which the estate's own station data reaches a CMA level (hazard,
  level, first and last station reading at or above it). The episodes are computed here, from
  the station readings the simulator produced, with the service's own criteria
  (``alerts/weather/cma.yaml`` through :mod:`alerts.weather.levels`) and the service's own
  windows (:class:`alerts.window_bank.WindowBank`), evaluated at every station reading as the alert
  engine does. It must activate each plan on that hazard at the plan's level for it within
  :data:`WEATHER_DEADLINE_MS`.

The simulator does not import ``alerts/`` (imports go downward); it only writes down its
faults; this package, above both, adds the weather and the expectations.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from alerts.plans import Plan, ResponseLevel, load_plans
from alerts.weather import Criteria, WeatherLevel, load_criteria
from alerts.window_bank import WindowBank

MIN = 60_000
HOUR = 3_600_000

# fault type -> (rules any of which on one of its devices is a detection, deadline after start)
FAULT_EXPECT: dict[str, tuple[tuple[str, ...], int]] = {
    "fire_alarm": (("fire-alarm-detector", "fire-alarm"), 1 * MIN),  # GB 26875: 10 s to centre
    "fire_pump_failure": (("fire-pump-fault", "fire-fault", "fire-pump-not-auto"), 1 * MIN),
    "hydrant_pressure_loss": (("hydrant-pressure-low",), 25 * MIN),  # ~10 min fall + for 5m
    "elevator_trapped": (("elevator-trapped", "elevator-trapped-landing"), 2 * MIN),  # 30 s timer
    "charger_overheat": (("ebike-socket-hot",), 12 * MIN),  # 65 °C at 7 min
    "charger_drawing_after_full": (("ebike-power-after-full",), 40 * MIN),  # for 30m
    "gas_leak": (("gas-leak-event", "gas-lel-high", "gas-lel-very-high"), 10 * MIN),
    # rooms fall below 18 °C in about 1 h in winter, then for 2h; supply rules if it shows
    "heating_failure": (
        ("room-temp-low", "pipe-freeze", "heating-supply-cold", "heating-supply-falling"),
        4 * HOUR,
    ),
    "telecom_down": (("telecom-power-lost", "telecom-link-down"), 10 * MIN),
    "device_silent": (("no-data",), 20 * MIN),  # three reporting intervals (≤ 5 min each)
    "gateway_offline": (("gateway-offline",), 5 * MIN),  # for 2m
}
# How long a fault's consequences may still raise alarms after it ends (a room warming up
# again, a deadman clock, a pending 'for'): such alarms have that fault as their cause.
AFTERMATH_MS = 30 * MIN
WEATHER_DEADLINE_MS = 10 * MIN  # the station reports every minute; levels at each reading


@dataclass(frozen=True)
class Cause:
    cause: str  # fault | weather
    estate: str
    what: str  # fault type, or hazard
    start_ms: int
    end_ms: int
    deadline_ms: int
    device: str | None = None  # the fault's device, or the weather station
    level: str | None = None  # weather: blue, yellow, orange, red
    devices: tuple[str, ...] = ()  # subjects whose alarms this cause explains
    rules: tuple[str, ...] = ()  # fault: the rule family that must fire
    plans: dict[str, str] = field(default_factory=dict)  # weather: plan id -> level (Ⅳ..Ⅰ)

    @property
    def key(self) -> str:
        """What the tables group by: the fault type, or hazard/level."""
        return self.what if self.cause == "fault" else f"{self.what}/{self.level}"

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["devices"] = list(self.devices)
        d["rules"] = list(self.rules)
        d["must_produce"] = (
            {"alarm": list(self.rules), "on": list(self.devices)}
            if self.cause == "fault"
            else {"plans": self.plans}
        )
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Cause:
        return cls(
            cause=str(d["cause"]),
            estate=str(d["estate"]),
            what=str(d["what"]),
            start_ms=int(d["start_ms"]),
            end_ms=int(d["end_ms"]),
            deadline_ms=int(d["deadline_ms"]),
            device=d.get("device"),
            level=d.get("level"),
            devices=tuple(d.get("devices") or ()),
            rules=tuple(d.get("rules") or ()),
            plans=dict(d.get("plans") or {}),
        )


def fault_causes(ledger: Iterable[Mapping[str, Any]]) -> list[Cause]:
    """The simulator's fault records (``SimulatedEstate.fault_ledger``) with what each must
    produce."""
    out = []
    for f in ledger:
        ftype = str(f["fault"])
        rules, within = FAULT_EXPECT[ftype]
        devices = tuple(f.get("devices") or ())
        if ftype == "gateway_offline":
            devices = (str(f["gateway"]),)
        out.append(
            Cause(
                cause="fault",
                estate=str(f["estate"]),
                what=ftype,
                start_ms=int(f["start_ms"]),
                end_ms=int(f["end_ms"]),
                deadline_ms=int(f["start_ms"]) + within,
                device=f.get("device") or (devices[0] if devices else None),
                devices=devices,
                rules=rules,
            )
        )
    return out


class StationLevels:
    """CMA levels of one station's readings, fed in time order, as the alert engine judges
    them: the same criteria, the same windows, a judgement at every reading."""

    def __init__(
        self, estate: str, station: str, zone: str, criteria: Criteria | None = None
    ) -> None:
        self.estate, self.station, self.zone = estate, station, zone
        self.criteria = criteria or load_criteria()
        self.windows = WindowBank()
        for kind, metric, agg in self.criteria.window_needs():
            self.windows.track(kind, metric, agg)
        # hazard -> level -> [start, last] of the run in progress, and the finished runs
        self._open: dict[tuple[str, int], list[int]] = {}
        self.episodes: list[tuple[str, int, int, int]] = []  # hazard, level, start, end
        # the levels each hazard has (a sandstorm starts at yellow; no blue to reach)
        self._defined = {
            h: sorted(int(lvl) for lvl in hc.for_zone(zone))
            for h, hc in self.criteria.hazards.items()
        }

    def observe(self, ts: int, metrics: Mapping[str, Any]) -> None:
        w, estate, station = self.windows, self.estate, self.station
        w.observe(estate, station, dict(metrics), ts, self.criteria.kind)

        def value_of(metric: str, agg: Any) -> float | None:
            return w.value(estate, station, metric, agg, ts)

        for hazard, observed in self.criteria.levels(value_of, self.zone).items():
            for lvl in self._defined[hazard]:
                key = (hazard.value, lvl)
                run = self._open.get(key)
                if observed.level >= lvl:
                    if run is None:
                        self._open[key] = [ts, ts]
                    else:
                        run[1] = ts
                elif run is not None:
                    self.episodes.append((hazard.value, lvl, run[0], run[1]))
                    del self._open[key]

    def finish(self) -> list[tuple[str, int, int, int]]:
        for (hazard, lvl), (s, e) in sorted(self._open.items()):
            self.episodes.append((hazard, lvl, s, e))
        self._open = {}
        return sorted(self.episodes, key=lambda x: (x[2], x[0], x[1]))


def weather_causes(
    estate: str,
    station: str,
    zone: str,
    readings: Iterable[tuple[int, Mapping[str, Any]]],
    plans: Mapping[str, Plan] | None = None,
    criteria: Criteria | None = None,
) -> list[Cause]:
    """Every episode of the station's readings at or above a CMA level, with the plan levels
    it must activate."""
    levels = StationLevels(estate, station, zone, criteria)
    for ts, metrics in sorted(readings, key=lambda r: r[0]):
        levels.observe(ts, metrics)
    return episodes_to_causes(estate, station, levels.finish(), plans)


def episodes_to_causes(
    estate: str,
    station: str,
    episodes: Iterable[tuple[str, int, int, int]],
    plans: Mapping[str, Plan] | None = None,
) -> list[Cause]:
    plans = load_plans() if plans is None else plans
    out = []
    for hazard, lvl, start, end in episodes:
        wl = WeatherLevel(lvl)
        wanted = {
            p.id: p.level_for_weather(wl).roman
            for p in plans.values()
            if any(h.value == hazard for h in p.hazards)
            and p.level_for_weather(wl) > ResponseLevel.NONE
        }
        out.append(
            Cause(
                cause="weather",
                estate=estate,
                what=hazard,
                level=wl.colour,
                start_ms=start,
                end_ms=end,
                deadline_ms=start + WEATHER_DEADLINE_MS,
                device=station,
                devices=(station,),
                plans=wanted,
            )
        )
    return out


def write_ledger(path: str | Path, causes: Sequence[Cause]) -> None:
    with open(path, "wb") as f:
        for c in sorted(causes, key=lambda c: (c.start_ms, c.cause, c.what)):
            f.write(orjson.dumps(c.as_json()) + b"\n")


def read_ledger(path: str | Path) -> list[Cause]:
    out = []
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(Cause.from_json(orjson.loads(line)))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{n}: not a ledger line: {exc}") from None
    return out
