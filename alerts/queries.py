"""What people read (the API): alarms, rescues, silences, warnings, weather levels, plans,
activations, drills, the engine's health. Every read takes the engine's lock, so it sees a
step whole: never an alarm changed in memory but not yet written, nor half a commit.

``StoredQueries`` answers from the alerts' tables alone (``ReadParts``), which is what a
process without the engine reads (an API node of a scaled-out deployment: the owners write
every change there before telling anyone); ``Queries`` is the engine's, which adds what only
memory holds (weather levels observed by stations, the engine's health)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from alerts.alarms import Alarm
from alerts.drills import year_bounds, yearly_counts
from alerts.plans import Plan
from alerts.records import Records
from alerts.store import AlertStore
from ingest.state import NotFound

__all__ = ["Queries", "ReadParts", "StoredQueries"]


def _no_open_alarm(_alarm_id: str) -> Alarm | None:
    return None


@dataclass(frozen=True)
class ReadParts:
    """What reads need: the store, the plans, a clock, estates' regions; the engine's lock and
    its open alarms where there is an engine. ``weather``: an estate's weather levels, from
    whoever holds them (None: nobody here)."""

    store: AlertStore
    plans: dict[str, Plan]
    clock: Callable[[], int]
    region: Callable[[str], str]
    lock: AbstractContextManager[Any] = field(default_factory=threading.RLock)
    open_alarm: Callable[[str], Alarm | None] = _no_open_alarm
    weather: Callable[[str], list[dict[str, Any]]] | None = None


class StoredQueries:
    def __init__(self, parts: ReadParts) -> None:
        self.rec = parts

    def now(self) -> int:
        """The clock that decides what is overdue (the engine's, where there is one)."""
        return self.rec.clock()

    def list_alarms(
        self,
        estate: str | None = None,
        state: Sequence[str] | None = None,
        severity: Sequence[str] | None = None,
        limit: int = 100,
        offset: int = 0,
        estates: Collection[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first. ``estates``: only these (the caller's), None: all."""
        with self.rec.lock:
            found = self.rec.store.list_alarms(estate, state, severity, limit, offset, estates)
            return [a.as_dict() for a in found]

    def get_alarm(self, alarm_id: str) -> dict[str, Any]:
        with self.rec.lock:
            alarm = self.rec.open_alarm(alarm_id) or self.rec.store.get_alarm(alarm_id)
            if alarm is None:
                raise NotFound(f"alarm {alarm_id!r} not found")
            return {**alarm.as_dict(), "timeline": self.rec.store.alarm_timeline(alarm_id)}

    def rescues(
        self, estate: str | None = None, estates: Collection[str] | None = None
    ) -> list[dict[str, Any]]:
        """Every entrapment: trapped → released, its deadline, and whether it was breached."""
        with self.rec.lock:
            return self.rec.store.rescues(estate, estates)

    def get_silence(self, silence_id: str) -> dict[str, Any]:
        with self.rec.lock:
            found = [s for s in self.rec.store.silences() if s.id == silence_id]
            if not found:
                raise NotFound(f"silence {silence_id!r} not found")
            return found[0].as_dict(self.rec.clock())

    def list_silences(
        self, active: bool | None = None, estates: Collection[str] | None = None
    ) -> list[dict[str, Any]]:
        """``estates``: only silences limited to one of these (None: all, global ones too)."""
        with self.rec.lock:
            now = self.rec.clock()
            items = self.rec.store.silences()
        if active is not None:
            items = [s for s in items if s.active(now) == active]
        if estates is not None:
            items = [s for s in items if s.estate is not None and s.estate in estates]
        return [s.as_dict(now) for s in items]

    def list_warnings(
        self, active: bool | None = None, estates: Collection[str] | None = None
    ) -> list[dict[str, Any]]:
        """``estates``: only warnings covering one of these (by name or by region)."""
        with self.rec.lock:
            now = self.rec.clock()
            items = self.rec.store.warnings()
            regions = {e: self.rec.region(e) for e in estates or ()}
        if active is not None:
            items = [w for w in items if w.active(now) == active]
        if estates is not None:
            items = [w for w in items if any(w.covers(e, r) for e, r in regions.items())]
        return [w.as_dict(now) for w in items]

    def weather_levels(self, estate: str) -> list[dict[str, Any]]:
        """Held in the owner's memory (observed by its stations): asked of ``weather``."""
        if self.rec.weather is None:
            raise NotFound(f"weather levels of {estate!r} are not held here")
        return self.rec.weather(estate)

    def list_plans(self) -> list[dict[str, Any]]:
        with self.rec.lock:
            return [_plan_dict(p) for p in self.rec.plans.values()]

    def list_activations(
        self,
        estate: str | None = None,
        active: bool | None = None,
        limit: int = 100,
        estates: Collection[str] | None = None,
    ) -> list[dict[str, Any]]:
        with self.rec.lock:
            found = self.rec.store.list_activations(estate, active, limit, estates)
        return [a.as_dict(self.rec.plans.get(a.plan)) for a in found]

    def get_activation(self, activation_id: str) -> dict[str, Any]:
        with self.rec.lock:
            act = self.rec.store.get_activation(activation_id)
            if act is None:
                raise NotFound(f"plan activation {activation_id!r} not found")
            timeline = self.rec.store.activation_timeline(activation_id)
        return {**act.as_dict(self.rec.plans.get(act.plan)), "timeline": timeline}

    def list_drills(
        self,
        estate: str | None = None,
        plan: str | None = None,
        year: int | None = None,
        estates: Collection[str] | None = None,
    ) -> dict[str, Any]:
        """Drills, newest first; with an estate and a year, also the yearly count per plan
        against the number required."""
        since, until = year_bounds(year) if year is not None else (None, None)
        with self.rec.lock:
            items = self.rec.store.list_drills(estate, plan, since, until, estates=estates)
        out: dict[str, Any] = {"items": [d.as_dict() for d in items], "total": len(items)}
        if estate is not None and year is not None:
            out["yearly"] = yearly_counts(items, self.rec.plans, estate, year)
        return out


class Queries(StoredQueries):
    """The engine's reads: the stored ones under the engine's lock, with its open alarms in
    memory, and what only memory holds."""

    def __init__(self, rec: Records) -> None:
        parts = ReadParts(rec.store, rec.plans, lambda: rec.clock(), rec.estates.region, rec.lock)
        super().__init__(
            dataclasses.replace(parts, open_alarm=rec.alarms.live, weather=self._weather)
        )
        self.records = rec

    def _weather(self, estate: str) -> list[dict[str, Any]]:
        rec = self.records
        with rec.lock:
            region = rec.estates.region(estate)
            levels = rec.weather.estate_levels(estate, region, rec.clock())
        return [lv.as_dict() for lv in levels.values()]

    def status(self) -> dict[str, Any]:
        rec = self.records
        with rec.lock:
            return {
                "rules": len(rec.rules.defaults),
                "rule_files": len(rec.rules.files),
                "open_alarms": len(rec.alarms.open),
                "active_plans": len(rec.plan_book.active),
                "devices_watched": len(rec.evaluator.clocks),
                "notify_worker": rec.outbox.running,
            }


def _plan_dict(p: Plan) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": {"zh": p.name_zh, "en": p.name_en},
        "hazards": [h.value for h in p.hazards],
        "levels": {
            lvl.roman: {
                "weather": pl.weather.colour if pl.weather else None,
                "rules": sorted(pl.rules),
                "together": [[sorted(alts) for alts in g] for g in pl.together],
                "confirm": pl.confirm,
                "person": pl.person,
                "tasks": [
                    {"id": t.id, "text": t.text_zh, "role": t.role, "due_ms": t.due_ms}
                    for t in pl.tasks
                ],
            }
            for lvl, pl in sorted(p.levels.items())
        },
        "drill": {"cron": p.drill_cron, "per_year": p.drills_per_year},
    }
