"""The weather picture of every estate: per hazard, the level its stations observed, the level
of the official warnings that cover it, and the higher of the two (the estate's level)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from alerts.weather.levels import Criteria, Hazard, Observed, WeatherLevel
from alerts.weather.warnings import OfficialWarning
from alerts.windows import Aggregate

__all__ = ["EstateHazardLevel", "WeatherBoard"]


@dataclass(frozen=True, slots=True)
class EstateHazardLevel:
    hazard: Hazard
    level: WeatherLevel
    observed: WeatherLevel
    official: WeatherLevel
    station: str | None  # the station that observed the observed level
    warning: str | None  # the official warning that set the official level
    evidence: tuple[dict[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "hazard": self.hazard.value,
            "level": self.level.colour,
            "observed": self.observed.colour,
            "official": self.official.colour,
            "station": self.station,
            "warning": self.warning,
            "evidence": list(self.evidence),
        }


class WeatherBoard:
    def __init__(self, criteria: Criteria) -> None:
        self.criteria = criteria
        # estate -> station -> hazard -> what it observed
        self.observed: dict[str, dict[str, dict[Hazard, Observed]]] = {}
        self.warnings: dict[str, OfficialWarning] = {}

    def observe_station(
        self,
        estate: str,
        station: str,
        value_of: Callable[[str, Aggregate], float | None],
        zone: str,
    ) -> None:
        """What a station observed now; ``zone``: the estate's climate zone (zones.yaml)."""
        self.observed.setdefault(estate, {})[station] = self.criteria.levels(value_of, zone)

    def stations(self) -> Iterable[tuple[str, str]]:
        return [(e, st) for e, stations in self.observed.items() for st in stations]

    def add_warning(self, warning: OfficialWarning) -> None:
        self.warnings[warning.id] = warning

    def estate_levels(self, estate: str, region: str, now: int) -> dict[Hazard, EstateHazardLevel]:
        out = {}
        for hazard in self.criteria.hazards:
            obs, station = WeatherLevel.NONE, None
            evidence: tuple[dict[str, Any], ...] = ()
            for st, levels in self.observed.get(estate, {}).items():
                o = levels.get(hazard)
                if o is not None and o.level > obs:
                    obs, station, evidence = o.level, st, o.evidence
            official, warning_id = WeatherLevel.NONE, None
            for w in self.warnings.values():
                covers = w.hazard is hazard and w.active(now) and w.covers(estate, region)
                if covers and w.level > official:
                    official, warning_id = w.level, w.id
            out[hazard] = EstateHazardLevel(
                hazard, max(obs, official), obs, official, station, warning_id, evidence
            )
        return out

    def estates_covered(self, warning: OfficialWarning, regions: dict[str, str]) -> set[str]:
        """The estates (of those whose region is known) a warning covers."""
        found = {e for e, r in regions.items() if warning.covers(e, r)}
        return found | set(warning.estates)
