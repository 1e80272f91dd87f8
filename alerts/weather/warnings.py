"""Official weather warnings (预警信号) posted by a person or a feed: a hazard, a colour, the
estates or region they cover, and when they are issued and expire."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alerts.weather.levels import Hazard, WeatherLevel

__all__ = ["OfficialWarning"]


@dataclass(frozen=True, slots=True)
class OfficialWarning:
    id: str
    hazard: Hazard
    level: WeatherLevel
    issued_ms: int
    expires_ms: int
    estates: tuple[str, ...] = ()  # the estates it covers, or ...
    region: str = ""  # ... every estate whose region contains this text
    text: str = ""
    source: str = ""  # e.g. 呼和浩特市气象台
    created_by: str = ""
    created_ms: int = 0
    cancelled_ms: int | None = None

    def __post_init__(self) -> None:
        if not self.estates and not self.region:
            raise ValueError("a warning covers some estates or a region")
        if self.expires_ms <= self.issued_ms:
            raise ValueError("a warning must expire after it is issued")
        if self.level is WeatherLevel.NONE:
            raise ValueError("a warning has a colour: blue, yellow, orange or red")

    def active(self, now: int) -> bool:
        if self.cancelled_ms is not None and self.cancelled_ms <= now:
            return False
        return self.issued_ms <= now < self.expires_ms

    def covers(self, estate: str, region: str) -> bool:
        if estate in self.estates:
            return True
        return bool(self.region) and self.region in region

    def as_dict(self, now: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "hazard": self.hazard.value,
            "level": self.level.colour,
            "issued_ms": self.issued_ms,
            "expires_ms": self.expires_ms,
            "estates": list(self.estates),
            "region": self.region,
            "text": self.text,
            "source": self.source,
            "created_by": self.created_by,
            "created_ms": self.created_ms,
            "cancelled_ms": self.cancelled_ms,
        }
        if now is not None:
            out["active"] = self.active(now)
        return out
