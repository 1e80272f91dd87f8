"""Emergency plans (应急预案) as data: response levels Ⅳ–Ⅰ, what activates each level, and the
checklist of each level (task, role, due in minutes). One YAML file per plan in ``data/``."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

from alerts.datafile import DataFileError, Node, load_yaml
from alerts.weather.levels import Hazard, WeatherLevel

__all__ = [
    "BUNDLED_PLANS",
    "Plan",
    "PlanLevel",
    "ResponseLevel",
    "TaskSpec",
    "load_plans",
]

BUNDLED_PLANS = Path(__file__).with_name("data")


class ResponseLevel(IntEnum):
    NONE = 0
    IV = 1  # 一般
    III = 2  # 较大
    II = 3  # 重大
    I = 4  # 特别重大  # noqa: E741

    @property
    def roman(self) -> str:
        return ("-", "Ⅳ", "Ⅲ", "Ⅱ", "Ⅰ")[self]

    @property
    def label_zh(self) -> str:
        return "未启动" if self is ResponseLevel.NONE else f"{self.roman}级响应"

    @classmethod
    def parse(cls, text: str) -> ResponseLevel:
        t = text.strip().upper()
        for lvl in cls:
            if lvl and t in (lvl.name, lvl.roman):
                return lvl
        raise ValueError(f"unknown response level {text!r}: use IV, III, II or I")

    @classmethod
    def of_weather(cls, level: WeatherLevel) -> ResponseLevel:
        """Plans respond at the roman level of the warning colour: blue → Ⅳ … red → Ⅰ."""
        return cls(int(level))


@dataclass(frozen=True, slots=True)
class TaskSpec:
    id: str
    text_zh: str
    text_en: str
    role: str
    due_ms: int  # after the level was reached


@dataclass(frozen=True, slots=True)
class PlanLevel:
    level: ResponseLevel
    weather: WeatherLevel | None  # the weather level (of the plan's hazards) that activates it
    rules: frozenset[str]  # alarms of these rules activate it
    person: bool  # a person may activate it
    tasks: tuple[TaskSpec, ...]
    # Independent signals that together activate it: any group whose every member (a set of
    # alternative rules) has an open alarm in the estate (e.g. detector + manual call point).
    together: tuple[tuple[frozenset[str], ...], ...] = ()
    # A person's confirmation of an alarm of the lower levels activates it (GB 25201 §5.3).
    confirm: bool = False


@dataclass(frozen=True)
class Plan:
    id: str
    name_zh: str
    name_en: str
    hazards: tuple[Hazard, ...]
    levels: dict[ResponseLevel, PlanLevel]
    hold_ms: int | None = None  # stand-down after this long below Ⅳ; None: the engine's default
    drill_cron: str | None = None
    drills_per_year: int = 0
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def level_for_weather(self, level: WeatherLevel) -> ResponseLevel:
        best = ResponseLevel.NONE
        for pl in self.levels.values():
            if pl.weather is not None and level >= pl.weather and pl.level > best:
                best = pl.level
        return best

    def level_for_rule(self, rule_id: str) -> ResponseLevel:
        best = ResponseLevel.NONE
        for pl in self.levels.values():
            if rule_id in pl.rules and pl.level > best:
                best = pl.level
        return best

    def level_for_together(self, open_rules: frozenset[str] | set[str]) -> ResponseLevel:
        """The highest level one of whose groups of independent signals is all open."""
        best = ResponseLevel.NONE
        for pl in self.levels.values():
            for group in pl.together:
                if pl.level > best and all(alts & open_rules for alts in group):
                    best = pl.level
        return best

    def level_for_confirmation(self, rule_id: str) -> ResponseLevel:
        """The level a person's confirmation of an alarm of ``rule_id`` raises the plan to."""
        if self.level_for_rule(rule_id) is ResponseLevel.NONE:
            return ResponseLevel.NONE
        best = ResponseLevel.NONE
        for pl in self.levels.values():
            if pl.confirm and pl.level > best:
                best = pl.level
        return best

    @property
    def together_rules(self) -> frozenset[str]:
        return frozenset(
            r for pl in self.levels.values() for g in pl.together for alts in g for r in alts
        )

    def tasks_up_to(self, level: ResponseLevel) -> list[tuple[ResponseLevel, TaskSpec]]:
        return [
            (lvl, t) for lvl in sorted(self.levels) if lvl <= level for t in self.levels[lvl].tasks
        ]

    @property
    def rules(self) -> frozenset[str]:
        return frozenset(r for pl in self.levels.values() for r in pl.rules) | self.together_rules


_PLAN_KEYS = frozenset({"id", "name", "weather", "hold", "drill", "levels", "description"})
_LEVEL_KEYS = frozenset({"activate", "tasks"})
_ACTIVATE_KEYS = frozenset({"weather", "rules", "person", "together", "confirm"})
_TASK_KEYS = frozenset({"id", "zh", "en", "role", "due"})


def load_plans(folder: Path = BUNDLED_PLANS) -> dict[str, Plan]:
    """Every ``*.yaml`` plan in the folder; raises DataFileError listing all mistakes."""
    problems: list[str] = []
    plans: dict[str, Plan] = {}
    for path in sorted(folder.glob("*.yaml")):
        try:
            plan = _plan(load_yaml(path))
        except DataFileError as exc:
            problems.extend(exc.problems)
            continue
        if plan.id in plans:
            problems.append(f"{path}:1: plan id {plan.id!r} also in {plans[plan.id].source}")
            continue
        plans[plan.id] = plan
    if problems:
        raise DataFileError(problems)
    return plans


def _plan(doc: Node) -> Plan:
    doc.mapping(_PLAN_KEYS)
    pid = doc.child("id").text()
    name = doc.child("name").mapping(frozenset({"zh", "en"}))
    hazards = []
    if doc.has("weather"):
        for n in doc.child("weather").seq_or_one():
            try:
                hazards.append(Hazard(n.text()))
            except ValueError:
                raise n.error(f"unknown hazard {n.value!r}") from None
    levels: dict[ResponseLevel, PlanLevel] = {}
    for key, ln in doc.child("levels").items():
        try:
            lvl = ResponseLevel.parse(key)
        except ValueError as exc:
            raise ln.error(str(exc)) from None
        levels[lvl] = _level(lvl, ln, bool(hazards))
    seen: dict[str, str] = {}
    for pl in levels.values():
        for t in pl.tasks:
            if t.id in seen:
                raise doc.child("levels").error(
                    f"task id {t.id!r} is in level {seen[t.id]} and {pl.level.roman}"
                )
            seen[t.id] = pl.level.roman
    missing = [lvl.roman for lvl in ResponseLevel if lvl and lvl not in levels]
    if missing:
        raise doc.child("levels").error(f"levels missing: {', '.join(missing)}")
    cron, per_year = None, 0
    if doc.has("drill"):
        dn = doc.child("drill").mapping(frozenset({"cron", "per_year"}))
        cron = dn.child("cron").text()
        if len(cron.split()) != 5:
            raise dn.child("cron").error("cron is five fields: minute hour day month weekday")
        per_year = dn.child("per_year").integer(minimum=0)
    return Plan(
        id=pid,
        name_zh=name.child("zh").text(),
        name_en=name.child("en").text(pid),
        hazards=tuple(hazards),
        levels=levels,
        hold_ms=doc.child("hold").duration_ms() if doc.has("hold") else None,
        drill_cron=cron,
        drills_per_year=per_year,
        source=doc.file,
    )


def _level(lvl: ResponseLevel, node: Node, has_weather: bool) -> PlanLevel:
    node.mapping(_LEVEL_KEYS)
    act = node.child("activate")
    weather = None
    rules: frozenset[str] = frozenset()
    person = True
    together: tuple[tuple[frozenset[str], ...], ...] = ()
    confirm = False
    if act.value is not None:
        act.mapping(_ACTIVATE_KEYS)
        if act.has("weather"):
            if not has_weather:
                raise act.child("weather").error("the plan names no weather hazards")
            try:
                weather = WeatherLevel.parse(act.child("weather").text())
            except ValueError as exc:
                raise act.child("weather").error(str(exc)) from None
        if act.has("rules"):
            rules = frozenset(act.child("rules").texts())
        if act.has("person"):
            person = act.child("person").boolean()
        if act.has("together"):
            groups = []
            for gn in act.child("together").seq():
                members = []
                for mn in gn.seq():
                    alts = frozenset(mn.texts()) if isinstance(mn.value, list) else {mn.text()}
                    members.append(frozenset(alts))
                if len(members) < 2:
                    raise gn.error("a group of independent signals needs two or more members")
                groups.append(tuple(members))
            together = tuple(groups)
        if act.has("confirm"):
            confirm = act.child("confirm").boolean()
    tasks = []
    seen: set[str] = set()
    for tn in node.child("tasks").seq():
        tn.mapping(_TASK_KEYS)
        tid = tn.child("id").text()
        if tid in seen:
            raise tn.error(f"task id {tid!r} twice in level {lvl.roman}")
        seen.add(tid)
        tasks.append(
            TaskSpec(
                id=tid,
                text_zh=tn.child("zh").text(),
                text_en=tn.child("en").text(tid),
                role=tn.child("role").text(),
                due_ms=tn.child("due").duration_ms(),
            )
        )
    if not tasks:
        raise node.error(f"level {lvl.roman} has no checklist")
    return PlanLevel(lvl, weather, rules, person, tuple(tasks), together, confirm)
