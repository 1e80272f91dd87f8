"""Weather levels by the CMA warning criteria, from what an estate's weather station observed.

Pure: :func:`Criteria.level` takes a function that answers "aggregate of metric over window"
and returns the highest level whose criteria hold, with the evidence (which aggregate, which
value). The numbers live in ``cma.yaml``.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Any

from alerts.datafile import DataFileError, Node, format_duration, load_yaml
from alerts.windows import AGGREGATES, Aggregate

__all__ = [
    "BUNDLED_CRITERIA",
    "Criteria",
    "Criterion",
    "Hazard",
    "HazardCriteria",
    "Observed",
    "WeatherLevel",
    "check_criteria",
    "load_criteria",
    "wind_force",
]

BUNDLED_CRITERIA = Path(__file__).with_name("cma.yaml")


class WeatherLevel(IntEnum):
    NONE = 0
    BLUE = 1  # Ⅳ general
    YELLOW = 2  # Ⅲ heavier
    ORANGE = 3  # Ⅱ severe
    RED = 4  # Ⅰ most severe

    @property
    def colour(self) -> str:
        return self.name.lower()

    @property
    def zh(self) -> str:
        return ("无", "蓝色", "黄色", "橙色", "红色")[self]

    @classmethod
    def parse(cls, text: str) -> WeatherLevel:
        """``blue`` / ``蓝色`` / ``IV`` / ``Ⅳ`` → BLUE."""
        t = text.strip().lower()
        for level in cls:
            if t in (level.colour, level.zh, _ROMAN[level].lower(), _ROMAN_ASCII[level].lower()):
                return level
        raise ValueError(f"unknown warning level {text!r}: use blue, yellow, orange or red")


_ROMAN = ("-", "Ⅳ", "Ⅲ", "Ⅱ", "Ⅰ")
_ROMAN_ASCII = ("-", "IV", "III", "II", "I")


class Hazard(StrEnum):
    STRONG_WIND = "strong_wind"
    SNOWSTORM = "snowstorm"
    COLD_WAVE = "cold_wave"
    SANDSTORM = "sandstorm"
    RAINSTORM = "rainstorm"
    ROAD_ICING = "road_icing"
    LOW_TEMPERATURE = "low_temperature"


def wind_force(speed_ms: float, scale: tuple[float, ...]) -> int:
    """Wind force (0..17) of a speed, from the lower bound of each force in m/s."""
    return max(0, bisect.bisect_right(scale, speed_ms) - 1)


# value_of(metric, aggregate) -> the aggregate's current value, or None if unknown
ValueOf = Callable[[str, Aggregate], float | None]
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Criterion:
    """One comparison, or all/any of nested criteria."""

    metric: str = ""
    agg: Aggregate | None = None
    op: str = ""  # at_least, at_most, above, below
    threshold: float = 0.0
    force: int | None = None  # for force_at_least: the force asked for
    parts: tuple[Criterion, ...] = ()
    all: bool = False

    def aggregates(self) -> Iterable[tuple[str, Aggregate]]:
        if self.agg is not None:
            yield self.metric, self.agg
        for p in self.parts:
            yield from p.aggregates()

    def text(self) -> str:
        if self.parts:
            joiner = " and " if self.all else " or "
            return "(" + joiner.join(p.text() for p in self.parts) + ")"
        assert self.agg is not None
        what = f"{self.agg.fn}({self.metric}, {format_duration(self.agg.window_ms)})"
        if self.force is not None:
            return f"force of {what} ≥ {self.force} (≥ {self.threshold:g} m/s)"
        sign = {"at_least": "≥", "at_most": "≤", "above": ">", "below": "<"}[self.op]
        return f"{what} {sign} {self.threshold:g}"

    def holds(self, value_of: ValueOf, evidence: list[dict[str, Any]]) -> bool:
        if self.parts:
            found: list[dict[str, Any]] = []
            results = []
            for p in self.parts:
                got: list[dict[str, Any]] = []
                ok = p.holds(value_of, got)
                results.append(ok)
                if ok:
                    found.extend(got)
                    if not self.all:
                        break
            ok = all(results) if self.all else any(results)
            if ok:
                evidence.extend(found)
            return ok
        assert self.agg is not None
        v = value_of(self.metric, self.agg)
        if v is None:
            return False
        x, tol = self.threshold, _EPS * max(1.0, abs(self.threshold))
        if self.op == "at_least":
            ok = v >= x - tol
        elif self.op == "at_most":
            ok = v <= x + tol
        elif self.op == "above":
            ok = v > x + tol
        else:
            ok = v < x - tol
        if ok:
            evidence.append(
                {
                    "metric": self.metric,
                    "aggregate": self.agg.fn,
                    "window": format_duration(self.agg.window_ms),
                    "value": round(v, 6),
                    "test": self.text(),
                }
            )
        return ok


@dataclass(frozen=True, slots=True)
class Observed:
    level: WeatherLevel
    evidence: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class HazardCriteria:
    hazard: Hazard
    label_zh: str
    label_en: str
    levels: dict[WeatherLevel, Criterion] = field(default_factory=dict)
    # low temperature: climate zone -> level -> Tmin threshold (≤)
    zones: dict[str, dict[WeatherLevel, float]] = field(default_factory=dict)
    metric: str = ""
    window_ms: int = 0

    def for_zone(self, zone: str) -> dict[WeatherLevel, Criterion]:
        """The criteria in the estate's climate zone: named exactly (an estate in Hailar must
        not get another region's thresholds because a name contains a name); none if the
        zone is not one of this hazard's."""
        if not self.zones:
            return self.levels
        chosen = self.zones.get(zone, {})
        agg = Aggregate("min", self.window_ms)
        return {lvl: Criterion(self.metric, agg, "at_most", t) for lvl, t in sorted(chosen.items())}

    def level(self, value_of: ValueOf, zone: str = "") -> Observed:
        levels = self.for_zone(zone)
        for lvl in sorted(levels, reverse=True):
            evidence: list[dict[str, Any]] = []
            if levels[lvl].holds(value_of, evidence):
                return Observed(lvl, tuple(evidence))
        return Observed(WeatherLevel.NONE)

    def aggregates(self) -> Iterable[tuple[str, Aggregate]]:
        for c in self.levels.values():
            yield from c.aggregates()
        if self.zones:
            yield self.metric, Aggregate("min", self.window_ms)


@dataclass(frozen=True)
class Criteria:
    kind: str
    wind_scale_ms: tuple[float, ...]
    hazards: dict[Hazard, HazardCriteria]

    def wind_force(self, speed_ms: float) -> int:
        return wind_force(speed_ms, self.wind_scale_ms)

    def levels(self, value_of: ValueOf, zone: str = "") -> dict[Hazard, Observed]:
        return {h: c.level(value_of, zone) for h, c in self.hazards.items()}

    def zones(self) -> frozenset[str]:
        """The climate zones some hazard has thresholds for."""
        return frozenset(z for c in self.hazards.values() for z in c.zones)

    def window_needs(self) -> Iterable[tuple[str, str, Aggregate]]:
        for c in self.hazards.values():
            for metric, agg in c.aggregates():
                yield self.kind, metric, agg


# --- loading ----------------------------------------------------------------------------------

_OPS = ("at_least", "at_most", "above", "below", "force_at_least")


def load_criteria(path: Path = BUNDLED_CRITERIA) -> Criteria:
    doc = load_yaml(path).mapping(frozenset({"kind", "wind_scale_ms", "hazards"}))
    scale_node = doc.child("wind_scale_ms")
    scale = tuple(n.number() for n in scale_node.seq())
    if list(scale) != sorted(scale) or len(scale) < 13:
        raise scale_node.error("wind_scale_ms must rise and cover at least force 0..12")
    hazards: dict[Hazard, HazardCriteria] = {}
    for name, hn in doc.child("hazards").items():
        try:
            hazard = Hazard(name)
        except ValueError:
            known = ", ".join(h.value for h in Hazard)
            raise (
                doc.child("hazards").child(name).error(f"unknown hazard {name!r} (known: {known})")
            ) from None
        hazards[hazard] = _hazard(hazard, hn, scale)
    missing = sorted(set(Hazard) - set(hazards))
    if missing:
        raise doc.child("hazards").error(f"criteria missing for {', '.join(missing)}")
    return Criteria(doc.child("kind").text(), scale, hazards)


def _hazard(hazard: Hazard, node: Node, scale: tuple[float, ...]) -> HazardCriteria:
    colours = {lvl.colour: lvl for lvl in WeatherLevel if lvl}
    node.mapping(frozenset({"zh", "en", "metric", "window", "zones", "regions", *colours}))
    zh, en = node.child("zh").text(), node.child("en").text()
    if node.has("regions"):
        raise node.child("regions").error(
            "'regions' (matched by substring) is now 'zones': thresholds per climate zone, "
            "which each estate names (estates.zone)"
        )
    if node.has("zones"):
        zones: dict[str, dict[WeatherLevel, float]] = {}
        for zone, zn in node.child("zones").items():
            zn.mapping(frozenset(colours))
            zones[zone] = {colours[c]: n.number() for c, n in zn.items()}
        if not zones:
            raise node.child("zones").error("no zones defined")
        return HazardCriteria(
            hazard,
            zh,
            en,
            zones=zones,
            metric=node.child("metric").text(),
            window_ms=node.child("window").duration_ms(),
        )
    levels = {colours[c]: _criterion(n, scale) for c, n in node.items() if c in colours}
    if not levels:
        raise node.error(f"{hazard.value}: no levels defined")
    return HazardCriteria(hazard, zh, en, levels)


def _criterion(node: Node, scale: tuple[float, ...]) -> Criterion:
    if isinstance(node.value, list):
        return Criterion(parts=tuple(_criterion(n, scale) for n in node.seq()), all=False)
    node.mapping()
    for joiner in ("all", "any"):
        if node.has(joiner):
            node.mapping(frozenset({joiner}))
            parts = tuple(_criterion(n, scale) for n in node.child(joiner).seq())
            return Criterion(parts=parts, all=joiner == "all")
    node.mapping(frozenset({"metric", "agg", "window", *_OPS}))
    fn = node.child("agg").text()
    if fn not in AGGREGATES:
        raise node.child("agg").error(f"unknown aggregate {fn!r}")
    agg = Aggregate(fn, node.child("window").duration_ms())
    ops = [op for op in _OPS if node.has(op)]
    if len(ops) != 1:
        raise node.error(f"give exactly one of {', '.join(_OPS)}")
    op = ops[0]
    if op == "force_at_least":
        force = node.child(op).integer(minimum=0)
        if force >= len(scale):
            raise node.child(op).error(f"force {force} is beyond the wind scale")
        return Criterion(node.child("metric").text(), agg, "at_least", scale[force], force=force)
    return Criterion(node.child("metric").text(), agg, op, node.child(op).number())


def check_criteria(criteria: Criteria, kinds: Mapping[str, Iterable[str]], source: str) -> None:
    """The station kind must exist and report every metric the criteria use."""
    if criteria.kind not in kinds:
        raise DataFileError([f"{source}:1: unknown station kind {criteria.kind!r}"])
    known = set(kinds[criteria.kind])
    unknown = sorted({m for _k, m, _a in criteria.window_needs() if m not in known})
    if unknown:
        raise DataFileError([f"{source}:1: kind {criteria.kind!r} reports no {', '.join(unknown)}"])
