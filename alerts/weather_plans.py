"""Weather → plans: a station's readings step its CMA levels, and each weather plan of an
estate follows its sources (the observed level per hazard, each official warning covering the
estate). Functions over the records, called under the engine's lock with the step's
:class:`Changes`."""

from __future__ import annotations

from typing import Any

from alerts.changes import Changes
from alerts.followups import plan_changed
from alerts.plans import Plan, ResponseLevel, Source
from alerts.records import Records
from alerts.weather import Hazard, OfficialWarning
from alerts.weather.board import EstateHazardLevel

__all__ = ["estates_covered", "judge_stations", "observe_station", "weather_plans"]

Readings = dict[tuple[str, str], list[tuple[int, dict[str, Any]]]]


def observe_station(rec: Records, estate: str, station: str, now: int) -> None:
    windows = rec.windows

    def value_of(metric: str, agg: Any) -> float | None:
        return windows.value(estate, station, metric, agg, now)

    rec.weather.observe_station(estate, station, value_of, rec.estates.profile(estate).zone)


def judge_stations(
    rec: Records, stations: Readings, judged: dict[tuple[str, str], int], now: int, ch: Changes
) -> None:
    """At each station reading, in time order: a station reports once a minute, so this is one
    evaluation (~40 aggregates) per minute live, and a replayed backlog or a faster-than-real
    scenario still steps its levels at the reading that crossed the threshold (the windows
    answer "as of" any time). ``judged``: (estate, station) -> the newest reading time judged.
    """
    for (estate, dev), readings in stations.items():
        last = judged.get((estate, dev), -1)
        for ts, metrics in sorted(readings, key=lambda x: x[0]):
            # Levels step forward in time only: an older reading that arrives late joins the
            # windows but does not take the level back (with windows of an hour, judging the
            # past again would lower and raise it anew).
            if ts < last:
                continue
            last = judged[(estate, dev)] = ts
            observe_station(rec, estate, dev, ts)
            reading = {"device": dev, "ts": ts, "metrics": metrics}
            # Stamped with the reading's time while it is current; late (a backlog, a
            # replay) with the service's clock, so the plan lasts in real time.
            wall = ts if now - ts <= rec.late_after_ms else now
            weather_plans(rec, estate, ts, ch, reading, wall=wall)


def weather_plans(
    rec: Records,
    estate: str,
    now: int,
    ch: Changes,
    reading: dict[str, Any] | None = None,
    wall: int | None = None,
) -> None:
    """Weather levels as of ``now`` (a station reading's time); the activation's own times
    (start, steps, task deadlines) are ``wall``, the service's clock, so a plan raised from a
    replayed or faster-than-real station lasts and falls due in real time."""
    wall = now if wall is None else wall
    region = rec.estates.region(estate)
    levels = rec.weather.estate_levels(estate, region, now)
    for plan in rec.plans.values():
        if not plan.hazards:
            continue
        wanted = _sources(rec, plan, levels, estate, region, now, reading)
        # Raise first, then drop: replacing one warning by another must not stand down.
        for src in sorted(wanted.values(), key=lambda s: -s.level):
            by = "warning" if src.key.startswith("warning:") else "weather"
            change = rec.plan_book.set_source(estate, plan.id, src, wall, by=by)
            plan_changed(rec, change, ch)
        act = rec.plan_book.active.get((estate, plan.id))
        if act is None:
            continue
        for key in [k for k in act.sources if k.startswith("warning:") and k not in wanted]:
            why = {"reason": "warning expired or cancelled", "reason_code": "warning_gone"}
            gone = Source(key, ResponseLevel.NONE, why)
            change = rec.plan_book.set_source(
                estate, plan.id, gone, wall, by="warning", stand_down_now=True
            )
            plan_changed(rec, change, ch)


def _sources(
    rec: Records,
    plan: Plan,
    levels: dict[Hazard, EstateHazardLevel],
    estate: str,
    region: str,
    now: int,
    reading: dict[str, Any] | None,
) -> dict[str, Source]:
    """The plan's weather sources now: the observed level per hazard, each warning in force."""
    wanted: dict[str, Source] = {}
    for hazard in plan.hazards:
        hl = levels[hazard]
        detail: dict[str, Any] = {
            "hazard": hazard.value,
            "weather_level": hl.observed.colour,
            "station": hl.station,
            "evidence": list(hl.evidence),
        }
        if reading is not None and reading["device"] == hl.station:
            detail["reading"] = reading
        obs = plan.level_for_weather(hl.observed)
        wanted[f"observed:{hazard.value}"] = Source(f"observed:{hazard.value}", obs, detail)
        for w in rec.weather.warnings.values():
            if w.hazard is hazard and w.active(now) and w.covers(estate, region):
                key = f"warning:{w.id}"
                wd = {
                    "hazard": hazard.value,
                    "weather_level": w.level.colour,
                    "warning": w.as_dict(),
                }
                wanted[key] = Source(key, plan.level_for_weather(w.level), wd)
    return wanted


def estates_covered(rec: Records, w: OfficialWarning) -> set[str]:
    """The estates (of this engine) an official warning covers, by name or by region."""
    regions = {e: rec.estates.region(e) for e in rec.known_estates()}
    return {e for e in rec.weather.estates_covered(w, regions) if rec.owns(e)}
