"""Drills (应急演练): scheduled exercises of a plan, recorded with participants and findings, and
counted per estate, plan and year against the number the plan requires.

Schedules are cron expressions of the plan (``drill: {cron: "0 9 15 11 *", per_year: 1}``),
read in Asia/Shanghai time. When one comes due the engine records a *scheduled* drill and tells
the control room; a person records it as *held* (or *missed*) with what was found.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from apscheduler.triggers.cron import CronTrigger

from alerts.plans.model import Plan
from protocol.clock import SHANGHAI

__all__ = ["Drill", "DrillStatus", "next_drill", "year_bounds", "yearly_counts"]


class DrillStatus(StrEnum):
    SCHEDULED = "scheduled"
    HELD = "held"
    MISSED = "missed"


@dataclass(slots=True)
class Drill:
    id: str
    estate: str
    plan: str
    status: DrillStatus
    created_ms: int
    scheduled_ms: int | None = None
    held_ms: int | None = None
    participants: list[str] = field(default_factory=list)
    findings: str = ""
    outcome: str = ""
    recorded_by: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "estate": self.estate,
            "plan": self.plan,
            "status": self.status.value,
            "created_ms": self.created_ms,
            "scheduled_ms": self.scheduled_ms,
            "held_ms": self.held_ms,
            "participants": self.participants,
            "findings": self.findings,
            "outcome": self.outcome,
            "recorded_by": self.recorded_by,
        }


@functools.lru_cache(maxsize=256)
def _trigger(cron: str) -> CronTrigger:
    return CronTrigger.from_crontab(cron, timezone=SHANGHAI)


def next_drill(cron: str, after_ms: int) -> int | None:
    """The first time the cron schedule fires strictly after ``after_ms``."""
    after = datetime.fromtimestamp(after_ms / 1000, UTC)
    start = datetime.fromtimestamp((after_ms + 1000) / 1000, UTC)
    fire = _trigger(cron).get_next_fire_time(after, start.astimezone(SHANGHAI))
    return None if fire is None else int(fire.timestamp() * 1000)


def year_bounds(year: int) -> tuple[int, int]:
    """[start, end) of a calendar year in Asia/Shanghai, as epoch ms."""
    start = datetime(year, 1, 1, tzinfo=SHANGHAI)
    end = datetime(year + 1, 1, 1, tzinfo=SHANGHAI)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def yearly_counts(
    drills: Iterable[Drill], plans: dict[str, Plan], estate: str, year: int
) -> list[dict[str, Any]]:
    """Per plan: drills held in the year against the number required."""
    lo, hi = year_bounds(year)
    held: dict[str, int] = {}
    for d in drills:
        when = d.held_ms
        if (
            d.estate == estate
            and d.status is DrillStatus.HELD
            and when is not None
            and lo <= when < hi
        ):
            held[d.plan] = held.get(d.plan, 0) + 1
    out = []
    for pid, plan in sorted(plans.items()):
        n = held.get(pid, 0)
        out.append(
            {
                "plan": pid,
                "plan_name": plan.name_zh,
                "held": n,
                "required": plan.drills_per_year,
                "short": max(0, plan.drills_per_year - n),
            }
        )
    return out
