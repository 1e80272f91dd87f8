"""Inhibitions: a known cause keeps the alarms it explains from being raised.

A gateway that is offline explains why its devices send nothing, so their no-data alarms are
not raised (the gateway-offline alarm says it once). An elevator in maintenance or inspection
mode is being worked on, so its fault alarms are not raised. Outside an estate's heating
season its heating alarms (supply too cold, rooms below 18 °C) are not raised. Which source
hides which tag is data (the ``inhibit:`` section of a rules file); this module keeps the
sources' state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["InhibitRule", "Inhibitor"]


@dataclass(frozen=True, slots=True)
class InhibitRule:
    id: str
    hides_tag: str  # alarms of rules with this tag are not raised
    # Source: either the subject's gateway is offline ...
    gateway_offline: bool = False
    # ... or the device itself reports metric in values (same device as the hidden alarm).
    kind: str | None = None
    metric: str | None = None
    values: frozenset[object] = frozenset()
    # ... or the estate is outside its heating season.
    outside_heating_season: bool = False


class Inhibitor:
    def __init__(
        self,
        rules: tuple[InhibitRule, ...] = (),
        in_heating_season: Callable[[str, int], bool] | None = None,
    ) -> None:
        self.offline: set[tuple[str, str]] = set()  # (estate, gateway)
        # (estate, epoch ms) -> inside the estate's heating season (None: always)
        self.in_heating_season = in_heating_season
        self.modes: dict[tuple[str, str, str], object] = {}  # (estate, device, metric) -> value
        self.set_rules(rules)

    def set_rules(self, rules: tuple[InhibitRule, ...]) -> None:
        self.rules = rules
        self.watched: dict[str, tuple[str, ...]] = {}  # kind -> metrics to remember
        for r in rules:
            if r.kind and r.metric:
                metrics = self.watched.get(r.kind, ())
                if r.metric not in metrics:
                    self.watched[r.kind] = (*metrics, r.metric)

    def observe_status(self, estate: str, gateway: str, online: bool) -> None:
        if online:
            self.offline.discard((estate, gateway))
        else:
            self.offline.add((estate, gateway))

    def observe_reading(
        self, estate: str, dev: str, kind: str, metrics: Mapping[str, object]
    ) -> None:
        for metric in self.watched.get(kind, ()):
            if metric in metrics:
                self.modes[(estate, dev, metric)] = metrics[metric]

    def reason(
        self,
        tags: frozenset[str],
        estate: str,
        device: str,
        gateway: str | None,
        ts: int | None = None,
    ) -> str | None:
        """Why an alarm with these tags on this device must not be raised at ``ts`` (the
        reading's time), or None."""
        for r in self.rules:
            if r.hides_tag not in tags:
                continue
            if r.outside_heating_season:
                season = self.in_heating_season
                if ts is not None and season is not None and not season(estate, ts):
                    return f"{r.id}: outside the heating season"
            elif r.gateway_offline:
                if gateway is not None and (estate, gateway) in self.offline:
                    return f"{r.id}: gateway {gateway} is offline"
            elif r.metric is not None:
                value = self.modes.get((estate, device, r.metric))
                if value is not None and value in r.values:
                    return f"{r.id}: {r.metric} is {value}"
        return None
