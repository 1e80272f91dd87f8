"""The estates as alerts sees them: name, region and profile (zone, heating season, rescue
minutes), read through an injected look-up and cached for a few minutes, since every weather
evaluation and notice asks for them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence

import sqlalchemy as sa

from alerts.zones import EstateProfile, Zone
from ingest.directory import EstateRecord

__all__ = ["EstateDirectory", "EstateLookup"]

log = logging.getLogger(__name__)

# every registered estate; None: no state store beside the alerts tables
EstateLookup = Callable[[], Sequence[EstateRecord] | None]

_REFRESH_MS = 5 * 60_000


class EstateDirectory:
    """``records``: every registered estate (ingest's ``estate_records``). ``region`` and
    ``profile``, when given, answer for one estate instead of the records."""

    def __init__(
        self,
        records: EstateLookup,
        zones: dict[str, Zone],
        region: Callable[[str], str] | None = None,
        profile: Callable[[str], EstateProfile] | None = None,
    ) -> None:
        self._records = records
        self._zones = zones
        self._region_of = region
        self._profile_of = profile
        self._regions: dict[str, str] = {}
        self._profiles: dict[str, EstateProfile] = {}
        self._names: dict[str, str] = {}
        self.ids: set[str] = set()  # the registered estates, as of the last refresh
        self._loaded_ms = -(10**15)

    def region(self, estate: str) -> str:
        """The estate's region text (low-temperature thresholds, regional warnings)."""
        self._refresh()
        found = self._regions.get(estate)
        if found is None:
            found = self._region_of(estate) if self._region_of is not None else ""
            if estate:
                self._regions[estate] = found
        return found

    def profile(self, estate: str) -> EstateProfile:
        """The estate's zone, heating season and rescue deadline."""
        self.region(estate)
        found = self._profiles.get(estate)
        if found is None:
            found = self._profile_of(estate) if self._profile_of is not None else EstateProfile()
            if estate:
                self._profiles[estate] = found
        return found

    def name(self, estate: str) -> str:
        self._refresh()
        return self._names.get(estate, estate)

    def known(self) -> set[str]:
        self.region("")  # refreshes the registered estates now and then
        return self.ids | set(self._regions)

    def unregistered(self, estates: Collection[str]) -> list[str]:
        """The estates named that the state store does not know (without one: none)."""
        if not estates:
            return []
        try:
            records = self._records()
        except sa.exc.SQLAlchemyError:
            log.exception("alerts: could not read the registered estates")
            return []
        if records is None:
            return []
        return sorted(set(estates) - {r.id for r in records})

    def _refresh(self) -> None:
        now = time.monotonic_ns() // 1_000_000
        if now - self._loaded_ms <= _REFRESH_MS:
            return
        self._loaded_ms = now
        try:
            records = list(self._records() or ())
        except sa.exc.SQLAlchemyError:
            log.exception("alerts: could not read estate regions")
            records = []
        else:
            self._names = {r.id: r.name or r.id for r in records}
        self.ids = {r.id for r in records}
        self._regions = {r.id: r.region for r in records} if self._region_of is None else {}
        self._profiles = (
            {
                r.id: EstateProfile.of(self._zones, r.zone, r.heating_season, r.rescue_arrival_min)
                for r in records
            }
            if self._profile_of is None
            else {}
        )
