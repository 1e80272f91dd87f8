"""The fire plan in the order of GB 25201 §5.3 and the lift rescue measured by the arrival
(TSG T5002-2017), in the engine (issue 11)."""

from __future__ import annotations

import pytest

from alerts.alarms import InvalidTransition
from alerts.plans import load_plans
from ingest.state import StateStore
from tests.alerts.conftest import MINUTE, EngineFactory, Paged, SimClock, Site


def fire_level(site: Site) -> str | None:
    acts = [a for a in site.engine.list_activations(estate=site.estate) if a["plan"] == "fire"]
    return acts[0]["level"] if acts and acts[0]["active"] else None


@pytest.fixture
def site(make_engine: EngineFactory, sqlite_url: str, clock: SimClock) -> Site:
    return Site(make_engine(sqlite_url), clock)


def test_any_fire_alarm_is_iv_to_verify_in_3_minutes(site: Site) -> None:
    site.event("fap-1", "fire_panel", "fire.alarm", zone="b3", point="smoke-1", status_word=3)
    assert fire_level(site) == "Ⅳ"
    (act,) = site.engine.list_activations(estate="e1")
    verify = next(t for t in act["tasks"] if t["id"] == "verify")
    assert verify["role"] == "control_room" and verify["due_ms"] - act["started_ms"] == 3 * MINUTE
    assert {t["id"] for t in act["tasks"]} == {"verify", "record"}  # no 119 on one alarm


def test_one_unconfirmed_alarm_never_reaches_iii(site: Site, clock: SimClock) -> None:
    site.event("smoke-1", "smoke_detector", "fire.alarm", zone="b3", point="smoke-1")
    site.event("fap-1", "fire_panel", "fire.alarm", zone="b3", point="smoke-1")  # the same one
    for _ in range(30):
        clock.advance(MINUTE)
        site.engine.tick()
    assert fire_level(site) == "Ⅳ"


def test_detector_and_manual_call_point_confirm_a_fire(site: Site) -> None:
    site.event("fap-1", "fire_panel", "fire.alarm", zone="b3", point="smoke-1")
    site.event("fap-1", "fire_panel", "fire.manual_call", zone="b3", point="mcp-3")
    assert fire_level(site) == "Ⅲ"
    (act,) = site.engine.list_activations(estate="e1")
    assert {"call-119", "linkage-auto", "evacuate"} <= {t["id"] for t in act["tasks"]}


def test_water_flow_and_pressure_switch_confirm_a_fire(site: Site) -> None:
    site.event("spr-1", "sprinkler", "fire.water_flow", zone="b3")
    assert fire_level(site) == "Ⅳ"
    site.event("spr-1", "sprinkler", "fire.pressure_switch", zone="b3")
    assert fire_level(site) == "Ⅲ"


def test_a_person_confirms_a_fire(site: Site) -> None:
    site.event("smoke-1", "smoke_detector", "fire.alarm", zone="b3", point="smoke-1")
    (alarm,) = site.open_alarms("fire-alarm-detector")
    site.engine.confirm(alarm["id"], "值班员-王", "3 号楼 12 层确有烟火")
    assert fire_level(site) == "Ⅲ"
    timeline = site.engine.get_alarm(alarm["id"])["timeline"]
    assert ("confirmed", "值班员-王") in [(e["action"], e["by"]) for e in timeline]
    # a gas alarm is not one a person confirms into a fire
    site.reading("gas-1", "gas_detector", lel_pct=30.0, valve_open=False)
    (gas,) = site.open_alarms("gas-lel-high")
    with pytest.raises(InvalidTransition, match="not one to confirm"):
        site.engine.confirm(gas["id"], "值班员-王")


def test_the_rescue_deadline_is_the_technicians_arrival(paged: Paged) -> None:
    """Arrival within 30 min meets the deadline even if the release takes longer; a late
    arrival breaches it even if the release follows at once."""
    site, clock, receivers = paged
    start = clock.now
    site.event("lift-1", "elevator", "elevator.trapped", floor=7, people=True, door_zone=False)
    (alarm,) = site.open_alarms("elevator-trapped")
    assert alarm["deadline_ms"] == start + 30 * MINUTE
    clock.advance(25 * MINUTE)
    site.event("lift-1", "elevator", "elevator.technician_arrived", technician="维保-张")
    clock.advance(20 * MINUTE)  # 45 min: released after the deadline, but they were there
    site.engine.tick()
    assert [n.event for n in receivers["authority"].sent] == []
    site.event("lift-1", "elevator", "elevator.released", floor=7)
    (r1,) = site.engine.rescues("e1")
    assert (r1["arrived_ms"], r1["arrived_by"]) == (start + 25 * MINUTE, "维保-张")
    assert r1["released_ms"] == start + 45 * MINUTE and not r1["breached"]

    # the second one: the technician arrives at 35 min (late), released at 36
    second = clock.now
    site.event("lift-2", "elevator", "elevator.trapped", floor=3, people=True, door_zone=True)
    (alarm2,) = site.open_alarms("elevator-trapped-landing")  # the same deadline at a landing
    clock.advance(31 * MINUTE)
    site.engine.tick()
    assert "deadline_breached" in [n.event for n in receivers["authority"].sent]
    clock.advance(4 * MINUTE)
    site.engine.technician_arrived(alarm2["id"], "控制室-李", "维保电话确认到场")
    clock.advance(MINUTE)
    site.event("lift-2", "elevator", "elevator.released", floor=3)
    r2 = next(r for r in site.engine.rescues("e1") if r["alarm_id"] == alarm2["id"])
    assert r2["arrived_ms"] == second + 35 * MINUTE and r2["breached"]
    assert r2["released_ms"] == second + 36 * MINUTE


def test_an_estate_outside_a_city_with_districts_has_an_hour(
    make_engine: EngineFactory, sqlite_url: str, clock: SimClock
) -> None:
    state = StateStore.open(sqlite_url)
    state.add_estate("e1", "旗里小区", "锡林郭勒盟某旗", zone="xilingol", rescue_arrival_min=60)
    site = Site(make_engine(sqlite_url), clock)
    site.event("lift-1", "elevator", "elevator.trapped", floor=2, people=True)
    (alarm,) = site.open_alarms("elevator-trapped")
    assert alarm["deadline_ms"] == alarm["started_ms"] + 60 * MINUTE
    state.close()


def test_gas_and_storm_plans_say_what_to_do() -> None:
    plans = load_plans()
    gas = {t.id for pl in plans["gas_leak"].levels.values() for t in pl.tasks}
    assert {"close-valve", "cut-supply"} <= gas
    # clean-up is on the checklist from the lowest level a storm reaches, not only at Ⅰ
    for pid in ("strong_wind", "sandstorm", "snowstorm", "rainstorm"):
        plan = plans[pid]
        lowest = min(pl.level for pl in plan.levels.values() if pl.weather is not None)
        ids = {t.id for _lvl, t in plan.tasks_up_to(lowest)}
        assert "clean-after" in ids, pid
    # plan text: ℃ and ～ without spaces, 住户/业主 not 居民
    for plan in plans.values():
        for pl in plan.levels.values():
            for t in pl.tasks:
                assert "居民" not in t.text_zh and " ℃" not in t.text_zh and "°C" not in t.text_zh
                assert " ～" not in t.text_zh and "～ " not in t.text_zh


def test_the_control_room_is_told_whether_the_car_is_at_a_landing(paged: Paged) -> None:
    """GB/T 24476-2023 tells trapped at a landing (平层关人) from between floors (非平层)."""
    from alerts.notify.text import describe

    site, _, receivers = paged
    site.event("lift-1", "elevator", "elevator.trapped", floor=7, people=True, door_zone=False)
    site.event("lift-2", "elevator", "elevator.trapped", floor=1, people=True, door_zone=True)
    site.engine.tick()
    said = {
        n.payload["alarm"]["subject"]: describe(n)[1]
        for n in receivers["control_room"].sent
        if str(n.payload.get("alarm", {}).get("rule", "")).startswith("elevator-trapped")
    }
    assert any("非平层关人" in line for line in said["lift-1"])
    assert any(line.startswith("位置：平层关人") for line in said["lift-2"])
    assert any(line.startswith("到场时限") for line in said["lift-1"])
