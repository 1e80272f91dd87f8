"""Plans as data (every hazard of the government document, zh-CN, levels Ⅳ–Ⅰ) and how an
activation follows its sources."""

from __future__ import annotations

import re

import pytest

from alerts.plans import PlanBook, ResponseLevel, Source, load_plans
from alerts.weather import Hazard, WeatherLevel

PLANS = load_plans()
MIN = 60_000
IV, III, II, I, NONE = (  # noqa: E741 - the roman levels
    ResponseLevel.IV,
    ResponseLevel.III,
    ResponseLevel.II,
    ResponseLevel.I,
    ResponseLevel.NONE,
)
CJK = re.compile(r"[\u4e00-\u9fff]")


def test_a_plan_for_every_hazard_the_document_lists() -> None:
    # 主要内容 (三) 2: fire, electricity, gas, water, heating, elevators, telecom, sandstorm,
    # strong wind, rainstorm, snowstorm, severe cold
    assert set(PLANS) == {
        "fire", "power_outage", "gas_leak", "water_supply", "heating_failure",
        "elevator_entrapment", "telecom_outage", "sandstorm", "strong_wind", "rainstorm",
        "snowstorm", "severe_cold",
    }  # fmt: skip
    for plan in PLANS.values():
        assert CJK.search(plan.name_zh), plan.id
        assert set(plan.levels) == {IV, III, II, I}, plan.id
        for pl in plan.levels.values():
            assert pl.tasks, (plan.id, pl.level)
            for t in pl.tasks:
                assert CJK.search(t.text_zh) and t.role and t.due_ms > 0, (plan.id, t.id)
            assert pl.weather or pl.rules or pl.person, (plan.id, pl.level)
        assert plan.drill_cron and plan.drills_per_year >= 1


def test_weather_plans_follow_the_warning_colour() -> None:
    snow = PLANS["snowstorm"]
    assert set(snow.hazards) == {Hazard.SNOWSTORM, Hazard.ROAD_ICING}
    assert [snow.level_for_weather(w) for w in WeatherLevel] == [NONE, IV, III, II, I]
    assert set(PLANS["severe_cold"].hazards) == {Hazard.COLD_WAVE, Hazard.LOW_TEMPERATURE}
    # sandstorms have no blue signal: Ⅳ is for a person to call
    assert PLANS["sandstorm"].level_for_weather(WeatherLevel.BLUE) is NONE
    assert PLANS["elevator_entrapment"].level_for_rule("elevator-trapped") is III
    assert PLANS["gas_leak"].level_for_rule("gas-lel-very-high") is II


def src(level: ResponseLevel, key: str = "observed:snowstorm") -> Source:
    return Source(key, level, {"value": int(level)})


def test_raise_lower_hold_and_stand_down() -> None:
    book = PlanBook(PLANS)
    c = book.set_source("e1", "snowstorm", src(IV), 0)
    assert c is not None and [e.action for e in c.entries] == ["activated"]
    act = c.activation
    assert {t.task_id for t in c.tasks} == {t.id for t in PLANS["snowstorm"].levels[IV].tasks}
    c = book.set_source("e1", "snowstorm", src(II), MIN)  # straight past Ⅲ: its tasks too
    assert c is not None and c.event == "plan_raised" and act.level is II
    assert {t.level for t in act.tasks.values()} == {IV, III, II}
    assert book.set_source("e1", "snowstorm", src(II), 2 * MIN) is None  # no change
    c = book.set_source("e1", "snowstorm", src(III), 3 * MIN)
    assert c is not None and c.event == "plan_lowered"
    c = book.set_source("e1", "snowstorm", src(NONE), 4 * MIN)
    assert c is not None and [e.action for e in c.entries] == ["below"]
    c = book.set_source("e1", "snowstorm", src(IV), 5 * MIN)  # back before the hold ran out
    assert c is not None and [e.action for e in c.entries] == ["resumed", "lowered"]
    book.set_source("e1", "snowstorm", src(NONE), 6 * MIN)
    waiting = book.tick(6 * MIN + act.hold_ms - 1)
    assert {c.event for c in waiting} == {"task_overdue"}  # nobody ticked the checklist
    (done,) = book.tick(6 * MIN + act.hold_ms)
    assert done.event == "plan_stood_down" and not act.active
    assert act.summary is not None and act.summary["levels_reached"] == ["Ⅳ", "Ⅱ", "Ⅲ", "Ⅳ"]
    assert book.active == {}


def test_the_level_is_the_highest_source() -> None:
    book = PlanBook(PLANS)
    book.set_source("e1", "snowstorm", src(IV), 0)
    book.set_source("e1", "snowstorm", src(II, "warning:w1"), MIN)
    act = book.active[("e1", "snowstorm")]
    assert act.level is II
    book.set_source("e1", "snowstorm", src(NONE), 2 * MIN)  # the station calms down
    assert act.level is II and act.below_since_ms is None
    c = book.set_source("e1", "snowstorm", src(NONE, "warning:w1"), 3 * MIN, stand_down_now=True)
    assert c is not None and c.event == "plan_stood_down" and act.ended_ms == 3 * MIN


def test_tasks_done_and_overdue() -> None:
    book = PlanBook(PLANS)
    act = book.set_source("e1", "fire", src(II, "manual"), 0).activation  # type: ignore[union-attr]
    book.complete_task(act, "call-119", "李", MIN, None)
    with pytest.raises(ValueError, match="already"):
        book.complete_task(act, "call-119", "李", MIN, None)
    with pytest.raises(KeyError):
        book.complete_task(act, "dance", "李", MIN, None)
    # verify (3 min), linkage-auto (2 min) and extinguish? (5 min) → not extinguish yet
    # (issue 11: the confirmed level's linkage to automatic replaced pumps-auto)
    overdue = book.tick(4 * MIN)
    assert [c.tasks[0].task_id for c in overdue] == ["verify", "linkage-auto"]
    assert book.tick(5 * MIN) == []  # told once
    assert [c.tasks[0].task_id for c in book.tick(5 * MIN + 1)] == ["extinguish"]
    book.complete_task(act, "verify", "赵", 6 * MIN, "误报")
    assert act.tasks["verify"].late and not act.tasks["call-119"].late
