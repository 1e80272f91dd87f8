"""Plan activations: a plan put into action for one estate, at a response level.

An activation's level is the highest level its sources ask for: the weather observed by the
estate's stations, official warnings, open alarms of the plan's rules, a person. It is raised
and lowered as they change, every step on its timeline with the reading or warning behind it.
Reaching a level adds that level's checklist (and the lower levels' not yet added). When every
source falls below Ⅳ the activation holds for the plan's hold time, then stands down, unless
the last source was an official warning that expired: that stands down at once. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from alerts.alarms.model import new_id
from alerts.plans.model import Plan, ResponseLevel

__all__ = [
    "ActivationChange",
    "ActivationEntry",
    "ActivationTask",
    "PlanActivation",
    "PlanBook",
    "Source",
]

SYSTEM = "rules"


@dataclass(frozen=True, slots=True)
class Source:
    key: str  # observed:<hazard> | warning:<id> | alarm:<id> | manual
    level: ResponseLevel
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "level": self.level.roman, "detail": self.detail}


@dataclass(slots=True)
class ActivationTask:
    task_id: str
    level: ResponseLevel
    text_zh: str
    text_en: str
    role: str
    added_ms: int
    due_ms: int
    done_ms: int | None = None
    done_by: str | None = None
    note: str | None = None
    overdue_ms: int | None = None  # when it was escalated as overdue

    @property
    def late(self) -> bool:
        return self.done_ms is not None and self.done_ms > self.due_ms

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.task_id,
            "level": self.level.roman,
            "text": self.text_zh,
            "text_en": self.text_en,
            "role": self.role,
            "added_ms": self.added_ms,
            "due_ms": self.due_ms,
            "done_ms": self.done_ms,
            "done_by": self.done_by,
            "note": self.note,
            "overdue_ms": self.overdue_ms,
            "late": self.late,
        }


@dataclass(frozen=True, slots=True)
class ActivationEntry:
    activation_id: str
    ts: int
    action: str  # activated, raised, lowered, below, resumed, task_done, task_overdue, stood_down
    by: str
    level: ResponseLevel
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ts": self.ts,
            "action": self.action,
            "by": self.by,
            "level": self.level.roman,
            "detail": self.detail,
        }


@dataclass(slots=True)
class PlanActivation:
    id: str
    estate: str
    plan: str
    level: ResponseLevel
    started_ms: int
    updated_ms: int
    hold_ms: int
    max_level: ResponseLevel = ResponseLevel.NONE
    levels_reached: list[int] = field(default_factory=list)
    sources: dict[str, Source] = field(default_factory=dict)
    tasks: dict[str, ActivationTask] = field(default_factory=dict)
    below_since_ms: int | None = None
    ended_ms: int | None = None
    ended_by: str | None = None
    summary: dict[str, Any] | None = None

    @property
    def active(self) -> bool:
        return self.ended_ms is None

    @property
    def desired(self) -> ResponseLevel:
        return max((s.level for s in self.sources.values()), default=ResponseLevel.NONE)

    def as_dict(self, plan: Plan | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "estate": self.estate,
            "plan": self.plan,
            "plan_name": {
                "zh": plan.name_zh if plan else self.plan,
                "en": plan.name_en if plan else self.plan,
            },
            "level": self.level.roman,
            "level_name": self.level.label_zh,
            "active": self.active,
            "started_ms": self.started_ms,
            "updated_ms": self.updated_ms,
            "ended_ms": self.ended_ms,
            "ended_by": self.ended_by,
            "below_since_ms": self.below_since_ms,
            "hold_ms": self.hold_ms,
            "max_level": self.max_level.roman,
            "levels_reached": [ResponseLevel(x).roman for x in self.levels_reached],
            "sources": [s.as_dict() for s in self.sources.values()],
            "tasks": [t.as_dict() for t in self.tasks.values()],
            "summary": self.summary,
        }


@dataclass(slots=True)
class ActivationChange:
    activation: PlanActivation
    entries: list[ActivationEntry]
    event: str | None = None  # plan_raised, plan_lowered, plan_stood_down, task_overdue: notify
    tasks: list[ActivationTask] = field(default_factory=list)  # tasks added or changed


class PlanBook:
    def __init__(self, plans: dict[str, Plan], default_hold_ms: int = 2 * 3_600_000) -> None:
        self.plans = plans
        self.default_hold_ms = default_hold_ms
        self.active: dict[tuple[str, str], PlanActivation] = {}

    def load(self, activations: list[PlanActivation]) -> None:
        for a in activations:
            if a.active:
                self.active[(a.estate, a.plan)] = a

    def find(self, activation_id: str) -> PlanActivation | None:
        for a in self.active.values():
            if a.id == activation_id:
                return a
        return None

    # --- sources -------------------------------------------------------------------------------
    def set_source(
        self,
        estate: str,
        plan_id: str,
        source: Source,
        now: int,
        by: str = SYSTEM,
        stand_down_now: bool = False,
    ) -> ActivationChange | None:
        """Set (level > NONE) or drop (level NONE) one source and settle the activation.

        ``stand_down_now``: the source dropped is an official warning that expired; if nothing
        else keeps the plan up, it stands down without the hold time.
        """
        act = self.active.get((estate, plan_id))
        if act is None:
            if source.level is ResponseLevel.NONE:
                return None
            plan = self.plans[plan_id]
            act = PlanActivation(
                id=new_id("pa"),
                estate=estate,
                plan=plan_id,
                level=ResponseLevel.NONE,
                started_ms=now,
                updated_ms=now,
                hold_ms=plan.hold_ms if plan.hold_ms is not None else self.default_hold_ms,
            )
            self.active[(estate, plan_id)] = act
        old = act.sources.get(source.key)
        if source.level is ResponseLevel.NONE:
            act.sources.pop(source.key, None)
        else:
            act.sources[source.key] = source
        if old is not None and old.level == source.level:
            return None  # same level from the same source: nothing to show
        return self._settle(act, source, now, by, stand_down_now)

    def _settle(
        self, act: PlanActivation, cause: Source, now: int, by: str, stand_down_now: bool
    ) -> ActivationChange | None:
        desired = act.desired
        change = ActivationChange(act, [])
        detail = {"source": cause.key, **cause.detail}
        if desired is ResponseLevel.NONE:
            if act.below_since_ms is None and act.level is not ResponseLevel.NONE:
                act.below_since_ms = now
                act.updated_ms = now
                change.entries.append(
                    ActivationEntry(
                        act.id, now, "below", by, act.level, {**detail, "hold_ms": act.hold_ms}
                    )
                )
            if stand_down_now:
                change.entries.extend(
                    self._end(
                        act,
                        now,
                        by,
                        {"reason": "official warning expired", "reason_code": "warning_expired"},
                    ).entries
                )
                change.event = "plan_stood_down"
            return change if change.entries else None
        if act.below_since_ms is not None:
            act.below_since_ms = None
            change.entries.append(ActivationEntry(act.id, now, "resumed", by, act.level, detail))
        if desired != act.level:
            first = act.level is ResponseLevel.NONE
            action = "activated" if first else ("raised" if desired > act.level else "lowered")
            act.level = desired
            act.updated_ms = now
            if desired > act.max_level:
                act.max_level = desired
            if not act.levels_reached or act.levels_reached[-1] != int(desired):
                act.levels_reached.append(int(desired))
            change.entries.append(ActivationEntry(act.id, now, action, by, desired, detail))
            change.event = "plan_lowered" if action == "lowered" else "plan_raised"
            change.tasks = self._add_tasks(act, desired, now)
        return change if change.entries else None

    def _add_tasks(
        self, act: PlanActivation, level: ResponseLevel, now: int
    ) -> list[ActivationTask]:
        added = []
        for lvl, spec in self.plans[act.plan].tasks_up_to(level):
            if spec.id in act.tasks:
                continue
            task = ActivationTask(
                task_id=spec.id,
                level=lvl,
                text_zh=spec.text_zh,
                text_en=spec.text_en,
                role=spec.role,
                added_ms=now,
                due_ms=now + spec.due_ms,
            )
            act.tasks[spec.id] = task
            added.append(task)
        return added

    # --- time ----------------------------------------------------------------------------------
    def tick(self, now: int) -> list[ActivationChange]:
        out = []
        for act in list(self.active.values()):
            if act.below_since_ms is not None and now - act.below_since_ms >= act.hold_ms:
                out.append(
                    self._end(
                        act,
                        now,
                        SYSTEM,
                        {"reason": "below Ⅳ for the hold time", "reason_code": "held_below"},
                    )
                )
                continue
            for task in act.tasks.values():
                if task.done_ms is None and task.overdue_ms is None and now > task.due_ms:
                    task.overdue_ms = now
                    entry = ActivationEntry(
                        act.id, now, "task_overdue", SYSTEM, act.level,
                        {"task": task.task_id, "role": task.role, "due_ms": task.due_ms},
                    )  # fmt: skip
                    out.append(ActivationChange(act, [entry], "task_overdue", [task]))
        return out

    # --- by people -----------------------------------------------------------------------------
    def complete_task(
        self, act: PlanActivation, task_id: str, by: str, now: int, note: str | None
    ) -> ActivationChange:
        task = act.tasks.get(task_id)
        if task is None:
            raise KeyError(f"activation {act.id} has no task {task_id!r}")
        if task.done_ms is not None:
            raise ValueError(f"task {task_id!r} was done by {task.done_by} already")
        task.done_ms, task.done_by, task.note = now, by, note
        act.updated_ms = now
        detail: dict[str, Any] = {"task": task_id, "late": task.late}
        if note:
            detail["note"] = note
        entry = ActivationEntry(act.id, now, "task_done", by, act.level, detail)
        return ActivationChange(act, [entry], None, [task])

    def stand_down(self, act: PlanActivation, by: str, now: int, reason: str) -> ActivationChange:
        if not act.active:
            raise ValueError(f"activation {act.id} has stood down already")
        return self._end(act, now, by, {"reason": reason})

    def _end(
        self, act: PlanActivation, now: int, by: str, detail: dict[str, Any]
    ) -> ActivationChange:
        act.ended_ms = now
        act.ended_by = by
        act.updated_ms = now
        act.summary = summarize(act, now)
        self.active.pop((act.estate, act.plan), None)
        entry = ActivationEntry(act.id, now, "stood_down", by, act.level, detail)
        return ActivationChange(act, [entry], "plan_stood_down")


def summarize(act: PlanActivation, now: int) -> dict[str, Any]:
    """The after-action summary: how long, which levels, which tasks late or not done."""
    tasks = list(act.tasks.values())
    on_time = [t.task_id for t in tasks if t.done_ms is not None and not t.late]
    late = [t.task_id for t in tasks if t.late]
    not_done = [t.task_id for t in tasks if t.done_ms is None]
    return {
        "duration_ms": now - act.started_ms,
        "max_level": act.max_level.roman,
        "levels_reached": [ResponseLevel(x).roman for x in act.levels_reached],
        "tasks_total": len(tasks),
        "tasks_on_time": on_time,
        "tasks_late": late,
        "tasks_not_done": not_done,
    }
