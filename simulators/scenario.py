"""Scenarios: a timeline of weather and faults, as data (``simulators/scenarios/*.toml``).

Weather keyframes set the outdoor conditions over time: continuous values (temperature offset,
wind, gusts, visibility, humidity) change linearly between the keyframes that name them;
precipitation rates (``snow_mm_h``, ``rain_mm_h``) hold from their keyframe until the next one,
so the snowfall any window receives is exact and a scenario can state when a warning threshold
is crossed (``[[expect]]``). Faults break one device (or a building, or the gateway's network)
for a while and produce the discrete events a real device would send.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from protocol.clock import SHANGHAI as SHANGHAI  # the one zone; named here too for older importers
from simulators.datafile import TableChecker
from simulators.spec import SpecError, resolve

SCENARIOS_DIR = Path(__file__).with_name("scenarios")

# Values between keyframes: linear; before the first keyframe: the quiet default.
CONTINUOUS = {
    "temp_offset_c": 0.0,
    "wind_ms": 3.0,
    "gust_ms": 6.0,
    "visibility_m": 15_000.0,
    "humidity_pct": 45.0,
    "pm10_ugm3": 60.0,  # a clean-ish city day; dust storms reach thousands
}
RATES = ("snow_mm_h", "rain_mm_h")

# Fault type -> the device kind it breaks (None: it targets a building or the gateway).
FAULT_KINDS: dict[str, str | None] = {
    "fire_pump_failure": "fire_pump",
    "hydrant_pressure_loss": "fire_hydrant",
    "fire_alarm": "smoke_detector",
    "elevator_trapped": "elevator",
    "charger_overheat": "ebike_charger",
    "charger_drawing_after_full": "ebike_charger",
    "gas_leak": "gas_detector",
    "heating_failure": None,
    "telecom_down": "telecom_cabinet",
    "device_silent": None,
    "gateway_offline": None,
}
HAZARD_LEVELS = {
    "snowstorm": ("blue", "yellow", "orange", "red"),
    "cold_wave": ("blue", "yellow", "orange", "red"),
    "sandstorm": ("yellow", "orange", "red"),
    "strong_wind": ("blue", "yellow", "orange", "red"),
}

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(d|h|m|s)")
_UNIT_MS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000}


class ScenarioError(SpecError):
    """A scenario file that cannot be used; the message names the file and the problem."""


def parse_duration_ms(text: str) -> int:
    """``"2h30m"``, ``"45m"``, ``"90s"``, ``"1d"`` → milliseconds; ValueError otherwise."""
    text = text.strip().replace(" ", "")
    if not text or _DURATION_RE.sub("", text):
        raise ValueError(f"{text!r} is not a duration such as 2h30m, 45m or 90s")
    return round(sum(float(n) * _UNIT_MS[u] for n, u in _DURATION_RE.findall(text)))


def parse_start_ms(text: str) -> int:
    """An ISO date or date-time; without an offset it is Asia/Shanghai time (UTC+8)."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a date-time such as 2026-01-15 or 2026-01-15T06:00+08:00"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=SHANGHAI)
    return int(dt.timestamp() * 1000)


@dataclass(frozen=True)
class Fault:
    type: str
    at_ms: int  # offset from the scenario start
    duration_ms: int
    device: str | None = None  # explicit device id
    kind: str | None = None  # else the nth device of this kind
    nth: int = 1
    building: int | None = None  # heating_failure


@dataclass(frozen=True)
class Expectation:
    """A warning threshold the scenario's weather station readings cross at a stated time."""

    hazard: str
    level: str
    at_ms: int


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    start_ms: int | None  # None: start now (or at --start)
    duration_ms: int | None  # None: runs until stopped
    keyframes: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    faults: tuple[Fault, ...] = ()
    expect: tuple[Expectation, ...] = ()
    source: str = "<code>"

    def value(self, name: str, offset_ms: np.ndarray) -> np.ndarray:
        """A continuous weather value at these offsets from the start."""
        frames = self.keyframes.get(name)
        if frames is None:
            return np.full(offset_ms.shape, CONTINUOUS[name])
        return np.asarray(np.interp(offset_ms, frames[0], frames[1]), dtype=np.float64)

    def cumulative_mm(self, name: str, offset_ms: np.ndarray) -> np.ndarray:
        """Precipitation fallen from the start to these offsets (exact for stepwise rates)."""
        frames = self.keyframes.get(name)
        if frames is None:
            return np.zeros(offset_ms.shape)
        at, rate = frames
        # Cumulative amount at each keyframe; the rate holds until the next keyframe.
        cum = np.concatenate([[0.0], np.cumsum(np.diff(at) * rate[:-1] / 3_600_000)])
        t = np.maximum(offset_ms, at[0]).astype(np.float64)
        i = np.clip(np.searchsorted(at, t, side="right") - 1, 0, len(at) - 1)
        return np.asarray(cum[i] + (t - at[i]) * rate[i] / 3_600_000, dtype=np.float64)

    def network_down(self, offset_ms: int) -> bool:
        return any(
            f.type == "gateway_offline" and f.at_ms <= offset_ms < f.at_ms + f.duration_ms
            for f in self.faults
        )


QUIET = Scenario("quiet-day", "nothing happens", None, None)


class _ScenarioLoader(TableChecker):
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, what: str) -> ScenarioError:
        return ScenarioError(f"scenario {self.source}: {where}: {what}")

    def duration(self, value: Any, where: str) -> int:
        if not isinstance(value, str):
            raise self.fail(where, f'must be a duration in quotes such as "2h30m", got {value!r}')
        try:
            return parse_duration_ms(value)
        except ValueError as exc:
            raise self.fail(where, str(exc)) from None

    def tables(self, doc: dict[str, Any], key: str) -> list[Any]:
        value = doc.get(key, [])
        if not isinstance(value, list):
            raise self.fail(key, f"must be an array of tables: [[{key}]]")
        return value

    def load(self, doc: dict[str, Any]) -> Scenario:
        self.table(doc, "top level", {"scenario", "weather", "faults", "expect"})
        head = self.table(
            doc.get("scenario"), "[scenario]", {"name", "description", "start", "duration"}
        )
        name = head.get("name")
        if not isinstance(name, str) or not name:
            raise self.fail("scenario.name", "must be a non-empty string")
        start_ms = None
        if "start" in head:
            try:
                start_ms = parse_start_ms(str(head["start"]))
            except ValueError as exc:
                raise self.fail("scenario.start", str(exc)) from None
        duration = (
            self.duration(head["duration"], "scenario.duration") if "duration" in head else None
        )

        points: dict[str, list[tuple[int, float]]] = {}
        for i, frame in enumerate(self.tables(doc, "weather")):
            where = f"[[weather]] #{i + 1}"
            f = self.table(frame, where, {"at", *CONTINUOUS, *RATES})
            at = self.duration(f.get("at"), f"{where}.at")
            for key, value in f.items():
                if key == "at":
                    continue
                if type(value) not in (int, float) or (key in RATES and value < 0):
                    raise self.fail(
                        f"{where}.{key}", f"must be a number (rates ≥ 0), got {value!r}"
                    )
                points.setdefault(key, []).append((at, float(value)))
        keyframes = {}
        for key, pts in points.items():
            ats = [a for a, _ in pts]
            if ats != sorted(ats) or len(set(ats)) != len(ats):
                raise self.fail(f"weather.{key}", "keyframes must be in time order, one per time")
            if key in RATES and ats[0] != 0:
                pts = [(0, 0.0), *pts]  # no precipitation before the first rate keyframe
            keyframes[key] = (
                np.array([a for a, _ in pts], dtype=np.float64),
                np.array([v for _, v in pts], dtype=np.float64),
            )

        faults = []
        for i, spec in enumerate(self.tables(doc, "faults")):
            where = f"[[faults]] #{i + 1}"
            f = self.table(
                spec, where, {"at", "type", "duration", "device", "kind", "nth", "building"}
            )
            ftype = f.get("type")
            if ftype not in FAULT_KINDS:
                raise self.fail(
                    f"{where}.type", f"unknown fault {ftype!r} (known: {', '.join(FAULT_KINDS)})"
                )
            if ftype == "heating_failure" and type(f.get("building")) is not int:
                raise self.fail(where, "heating_failure needs building = <number>")
            if ftype == "device_silent" and not (f.get("device") or f.get("kind")):
                raise self.fail(where, 'device_silent needs device = "<id>" or kind = "<kind>"')
            nth = f.get("nth", 1)
            if type(nth) is not int or nth < 1:
                raise self.fail(f"{where}.nth", "must be a whole number ≥ 1")
            faults.append(
                Fault(
                    type=ftype,
                    at_ms=self.duration(f.get("at"), f"{where}.at"),
                    duration_ms=self.duration(f.get("duration", "0s"), f"{where}.duration"),
                    device=f.get("device"),
                    kind=f.get("kind") or FAULT_KINDS[ftype],
                    nth=nth,
                    building=f.get("building"),
                )
            )

        expect = []
        for i, spec in enumerate(self.tables(doc, "expect")):
            where = f"[[expect]] #{i + 1}"
            e = self.table(spec, where, {"hazard", "level", "at"})
            hazard, level = e.get("hazard"), e.get("level")
            if hazard not in HAZARD_LEVELS or level not in HAZARD_LEVELS[hazard]:
                raise self.fail(where, f"unknown hazard/level {hazard!r}/{level!r}")
            expect.append(Expectation(hazard, level, self.duration(e.get("at"), f"{where}.at")))
        return Scenario(
            name=name,
            description=str(head.get("description", "")),
            start_ms=start_ms,
            duration_ms=duration,
            keyframes=keyframes,
            faults=tuple(sorted(faults, key=lambda x: x.at_ms)),
            expect=tuple(expect),
            source=self.source,
        )


def load_scenario(name_or_path: str | Path) -> Scenario:
    try:
        path = resolve(str(name_or_path), SCENARIOS_DIR, "scenario")
    except SpecError as exc:
        raise ScenarioError(str(exc)) from None
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"scenario {path}: cannot read it as TOML: {exc}") from exc
    return _ScenarioLoader(str(path)).load(doc)
