"""Climate zones and each estate's own settings: the heating season, the low-temperature zone,
the elevator rescue arrival deadline (issue 11).

An estate names its zone explicitly (``estates.zone``): nothing is guessed from the region's
name. The numbers live in ``zones.yaml``; an estate may override its heating season and its
rescue deadline.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from alerts.datafile import load_yaml
from protocol.clock import SHANGHAI

__all__ = [
    "BUNDLED_ZONES",
    "DEFAULT_RESCUE_ARRIVAL_MIN",
    "EstateProfile",
    "Season",
    "Zone",
    "load_zones",
    "parse_season",
]

BUNDLED_ZONES = Path(__file__).with_name("zones.yaml")
# TSG T5002-2017: the maintenance technician arrives within 30 min in a city with districts
# (设区的市), within 1 h elsewhere.
DEFAULT_RESCUE_ARRIVAL_MIN = 30
_SEASON_RE = re.compile(r"(\d\d)-(\d\d)/(\d\d)-(\d\d)")


@dataclass(frozen=True, slots=True)
class Season:
    """From one month-day to another, inclusive; may run over the new year."""

    start: tuple[int, int]
    end: tuple[int, int]

    def contains(self, ts_ms: int) -> bool:
        d = dt.datetime.fromtimestamp(ts_ms / 1000, SHANGHAI)
        md = (d.month, d.day)
        if self.start <= self.end:
            return self.start <= md <= self.end
        return md >= self.start or md <= self.end

    def text(self) -> str:
        return f"{self.start[0]:02d}-{self.start[1]:02d}/{self.end[0]:02d}-{self.end[1]:02d}"


def parse_season(text: str) -> Season:
    """``"10-15/04-15"`` → Season; ValueError with the reason otherwise."""
    m = _SEASON_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"heating season {text!r}: write it as MM-DD/MM-DD, e.g. 10-15/04-15")
    a, b, c, d = (int(x) for x in m.groups())
    for month, day in ((a, b), (c, d)):
        try:
            dt.date(2024, month, day)  # a leap year: 02-29 is a date
        except ValueError:
            raise ValueError(f"heating season {text!r}: {month:02d}-{day:02d} is no date") from None
    return Season((a, b), (c, d))


@dataclass(frozen=True, slots=True)
class Zone:
    id: str
    label_zh: str
    label_en: str
    heating_season: Season


def load_zones(path: Path = BUNDLED_ZONES) -> dict[str, Zone]:
    doc = load_yaml(path).mapping(frozenset({"zones"}))
    out: dict[str, Zone] = {}
    for zid, zn in doc.child("zones").items():
        zn.mapping(frozenset({"zh", "en", "heating_season"}))
        season_node = zn.child("heating_season")
        try:
            season = parse_season(season_node.text())
        except ValueError as exc:
            raise season_node.error(str(exc)) from None
        out[zid] = Zone(zid, zn.child("zh").text(), zn.child("en").text(), season)
    if not out:
        raise doc.child("zones").error("no zones defined")
    return out


@dataclass(frozen=True, slots=True)
class EstateProfile:
    """What the alert engine needs to know of an estate besides its devices."""

    zone: str = ""
    heating_season: Season | None = None  # None: no season known, heating rules always apply
    # Minutes for the lift technician to arrive; None: the rule's own (rescue_deadline, 30 min)
    rescue_arrival_min: int | None = None

    def in_heating_season(self, ts_ms: int) -> bool:
        return self.heating_season is None or self.heating_season.contains(ts_ms)

    @classmethod
    def of(
        cls,
        zones: dict[str, Zone],
        zone: str = "",
        heating_season: str = "",
        rescue_arrival_min: int | None = None,
    ) -> EstateProfile:
        """From an estate's stored settings; a season that does not parse is the zone's."""
        season: Season | None = None
        if heating_season:
            try:
                season = parse_season(heating_season)
            except ValueError:
                season = None
        if season is None and zone in zones:
            season = zones[zone].heating_season
        return cls(zone, season, rescue_arrival_min or None)
