"""The engine end to end in simulated time: readings and events in as ingest commits them,
alarms, escalations, notifications and plan activations out, state kept across restarts."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from alerts.rules.loader import BUNDLED_RULES, RuleFileError
from tests.alerts.conftest import (
    HOUR,
    MINUTE,
    SECOND,
    EngineFactory,
    Paged,
    RecordingNotifier,
    SimClock,
    Site,
    roles,
)


def timeline_steps(site: Site, activation_id: str) -> list[tuple[str, str]]:
    return [
        (e["action"], e["level"]) for e in site.engine.get_activation(activation_id)["timeline"]
    ]


def test_snowfall_raises_the_snowstorm_plan_step_by_step_and_stands_it_down(
    make_engine: EngineFactory, sqlite_url: str, clock: SimClock
) -> None:
    published: list[tuple[str, bytes, bool]] = []
    site = Site(make_engine(sqlite_url, publish=lambda *a: published.append(a)), clock)
    start = clock.now
    # 0.5 mm (water equivalent) every 10 minutes for 200 minutes, then dry for a day
    for i in range(24 * 6):
        site.reading("ws-01", "weather_station", snow_mm=0.5 if i < 20 else 0.0, temp_c=-8.0)
        site.engine.tick()
        clock.advance(10 * MINUTE)

    (act,) = site.engine.list_activations(estate="e1")
    assert act["plan"] == "snowstorm" and not act["active"]
    timeline = site.engine.get_activation(act["id"])["timeline"]
    overdue = [e for e in timeline if e["action"] == "task_overdue"]
    ended = next(e["ts"] for e in timeline if e["action"] == "stood_down")
    due_before_end = [t for t in act["tasks"] if t["due_ms"] < ended]
    assert len(overdue) == len(due_before_end) > 0  # nobody ticked the checklist
    timeline = [e for e in timeline if e["action"] != "task_overdue"]
    # (changed with issue 11: an observed level lasts while the snow falls, not while the
    # 12 h sum stays high; the plan's 2 h hold does the stand-down)
    assert [(e["action"], e["level"]) for e in timeline] == [
        ("activated", "Ⅳ"),  # 4 mm in 12 h: blue
        ("raised", "Ⅲ"),  # 6 mm in 12 h: yellow
        ("raised", "Ⅱ"),  # 10 mm in 6 h: orange
        ("below", "Ⅱ"),  # no snow for an hour
        ("stood_down", "Ⅱ"),  # after the 2 h hold
    ]
    # each step with the reading and the aggregate that made it
    steps = {e["action"] + e["level"]: e for e in timeline}
    blue = steps["activatedⅣ"]
    assert blue["ts"] == start + 7 * 10 * MINUTE  # the 8th reading
    assert blue["detail"]["reading"]["metrics"]["snow_mm"] == 0.5
    assert blue["detail"]["evidence"][0]["value"] == pytest.approx(4.0)
    assert steps["raisedⅢ"]["detail"]["evidence"][0]["value"] == pytest.approx(6.0)
    orange = steps["raisedⅡ"]["detail"]["evidence"][0]
    assert (orange["window"], orange["value"]) == ("6h", pytest.approx(10.0))
    assert steps["raisedⅡ"]["ts"] == start + 19 * 10 * MINUTE
    below, down = steps["belowⅡ"], steps["stood_downⅡ"]
    # the last snow at 190 min leaves the 1 h window at 250 min
    assert below["ts"] == start + 25 * 10 * MINUTE
    assert 2 * HOUR <= down["ts"] - below["ts"] < 2 * HOUR + 10 * MINUTE

    summary = act["summary"]
    assert summary["max_level"] == "Ⅱ"
    assert summary["levels_reached"] == ["Ⅳ", "Ⅲ", "Ⅱ"]
    assert summary["tasks_total"] == len(act["tasks"]) > 0
    assert set(summary["tasks_not_done"]) == {t["id"] for t in act["tasks"]}
    # the estate's current activations went out retained, the last one empty
    plans = [(p, r) for t, p, r in published if t == "estates/e1/plans"]
    assert plans and all(retained for _, retained in plans)
    assert plans[-1][0].endswith(b'"activations":[]}')


def test_a_pending_for_alarm_fires_on_time_after_a_restart(
    database_url: str, make_engine: EngineFactory, clock: SimClock
) -> None:
    first = Site(make_engine(database_url), clock)
    start = clock.now
    first.reading("h1", "fire_hydrant", pressure_mpa=0.05)  # below 0.07 MPa, for: 5m
    (pending,) = first.open_alarms()
    assert pending["state"] == "pending"
    clock.advance(2 * MINUTE)
    first.engine.stop()

    cr = RecordingNotifier("cr")
    second = Site(make_engine(database_url, receivers={"control_room": [cr]}), clock)
    clock.now = start + 5 * MINUTE - SECOND
    second.engine.tick()
    assert second.open_alarms()[0]["state"] == "pending"
    clock.now = start + 5 * MINUTE
    second.engine.tick()
    (fired,) = second.open_alarms()
    assert (fired["id"], fired["state"], fired["fired_ms"]) == (
        pending["id"],
        "firing",
        start + 5 * MINUTE,
    )
    assert cr.events() == ["firing"]
    actions = [e["action"] for e in second.engine.get_alarm(fired["id"])["timeline"]]
    assert actions == ["pending", "firing", "notified"]


def test_an_acknowledged_alarm_stays_acknowledged_across_a_restart(
    database_url: str, make_engine: EngineFactory, clock: SimClock
) -> None:
    cr = RecordingNotifier("cr")
    first = Site(make_engine(database_url, receivers={"control_room": [cr]}), clock)
    first.reading("p1", "fire_pump", fault=True, running=False, auto=True)
    first.engine.tick()
    (alarm,) = first.open_alarms()
    clock.advance(MINUTE)
    first.engine.acknowledge(alarm["id"], "王班长", "电工已派")
    first.engine.stop()

    clock.advance(MINUTE)
    second = Site(make_engine(database_url, receivers={"control_room": [cr]}), clock)
    second.reading("p1", "fire_pump", fault=True)  # still faulty: nothing new
    second.engine.tick()
    (still,) = second.open_alarms()
    assert (still["id"], still["state"], still["acked_by"]) == (
        alarm["id"],
        "acknowledged",
        "王班长",
    )
    clock.advance(MINUTE)
    second.reading("p1", "fire_pump", fault=False)
    second.engine.tick()
    assert second.open_alarms() == []
    assert cr.events() == ["firing", "resolved"]  # once each, across the restart


def test_deadman_clocks_and_windows_survive_a_restart(
    make_engine: EngineFactory, sqlite_url: str, clock: SimClock
) -> None:
    first = Site(make_engine(sqlite_url), clock)
    first.reading("h1", "fire_hydrant", pressure_mpa=0.3)
    for _ in range(7):
        first.reading("ws-01", "weather_station", snow_mm=0.5)
        clock.advance(10 * MINUTE)
    first.engine.stop()

    second = Site(make_engine(sqlite_url), clock)
    second.reading("ws-01", "weather_station", snow_mm=0.5)  # the 8th: 4 mm in 12 h
    (act,) = second.engine.list_activations(estate="e1", active=True)
    assert (act["plan"], act["level"]) == ("snowstorm", "Ⅳ")
    second.engine.tick()  # a minute's grace for ingest's backlog after a start
    assert second.open_alarms("no-data") == []
    clock.advance(20 * MINUTE)  # the hydrant last spoke 90 min ago; it never does again
    second.engine.tick()
    assert "h1" in [a["subject"] for a in second.open_alarms("no-data")]


def test_trapped_passengers_escalate_at_5_minutes_and_breach_at_30(paged: Paged) -> None:
    site, clock, receivers = paged
    start = clock.now
    site.event("lift-b2-1", "elevator", "elevator.trapped", floor=7, people=True)
    site.engine.tick()
    assert receivers["control_room"].events() == ["firing"]

    def at(ms: int) -> None:
        clock.now = start + ms
        site.engine.tick()

    at(5 * MINUTE - SECOND)
    assert receivers["supervisor"].events() == []
    at(5 * MINUTE)
    assert receivers["supervisor"].events() == ["escalated"]
    at(30 * MINUTE - SECOND)
    assert receivers["authority"].events() == []
    (alarm,) = site.open_alarms("elevator-trapped")
    assert not alarm["deadline_breached"]
    at(30 * MINUTE)
    assert receivers["authority"].events() == ["deadline_breached"]
    (alarm,) = site.open_alarms("elevator-trapped")
    assert alarm["deadline_breached"]
    (rescue,) = site.engine.rescues("e1")
    assert (rescue["breached"], rescue["released_ms"]) == (True, None)

    at(40 * MINUTE)
    site.event("lift-b2-1", "elevator", "elevator.released", floor=7)
    (rescue,) = site.engine.rescues("e1")
    assert (rescue["duration_ms"], rescue["breached"]) == (40 * MINUTE, True)
    actions = [e["action"] for e in site.engine.get_alarm(alarm["id"])["timeline"]]
    assert actions == [
        "firing",
        "notified",
        "escalated",
        "deadline_breached",
        "escalated",
        "resolved",
    ]


def test_a_release_at_12_minutes_records_a_12_minute_rescue(paged: Paged) -> None:
    site, clock, receivers = paged
    start = clock.now
    site.event("lift-b2-1", "elevator", "elevator.trapped", floor=7, people=True)
    (alarm,) = site.open_alarms()
    clock.now = start + 3 * MINUTE
    site.engine.acknowledge(alarm["id"], "监控中心-李")
    clock.now = start + 5 * MINUTE
    site.engine.tick()
    assert receivers["supervisor"].events() == []  # acknowledged in time
    clock.now = start + 12 * MINUTE
    site.event("lift-b2-1", "elevator", "elevator.released", floor=7)
    (rescue,) = site.engine.rescues("e1")
    assert (rescue["trapped_ms"], rescue["released_ms"]) == (start, start + 12 * MINUTE)
    assert (rescue["duration_ms"], rescue["breached"]) == (12 * MINUTE, False)
    clock.now = start + 31 * MINUTE
    site.engine.tick()
    assert receivers["authority"].events() == []
    # the entrapment plan followed the alarm: Ⅲ while trapped, stood down after its hold
    (act,) = site.engine.list_activations(estate="e1", active=False)
    assert act["plan"] == "elevator_entrapment" and act["max_level"] == "Ⅲ"
    assert any(t["id"] == "call-maintenance" for t in act["tasks"])


def test_a_silence_mutes_only_what_it_matches_and_only_while_it_lasts(paged: Paged) -> None:
    site, clock, receivers = paged
    matchers = [{"name": "estate", "value": "e1"}, {"name": "device", "value": "p1"}]
    silence = site.engine.add_silence(matchers, clock.now + HOUR, "王工", "泵房检修")
    site.reading("p1", "fire_pump", fault=True)
    site.reading("p2", "fire_pump", fault=True)
    site.engine.tick()
    by_dev = {a["subject"]: a for a in site.open_alarms()}
    assert by_dev["p1"]["silenced_by"] == silence["id"]
    assert by_dev["p2"]["silenced_by"] is None
    assert receivers["control_room"].about("fire-pump-fault") == ["p2"]
    clock.advance(HOUR)  # the silence ends with p1 still faulty: now it is told
    site.engine.tick()
    assert receivers["control_room"].about("fire-pump-fault") == ["p2", "p1"]
    assert [s["active"] for s in site.engine.list_silences()] == [False]


def test_an_elevator_in_maintenance_raises_no_fault_alarm(site: Site) -> None:
    site.reading("lift-1", "elevator", mode="maintenance", floor=3)
    site.event("lift-1", "elevator", "elevator.overrun_top", floor=18, speed_ms=1.2)
    site.event("lift-1", "elevator", "elevator.door_open_running", floor=3)
    assert site.open_alarms() == []
    # people trapped during maintenance still count
    site.event("lift-1", "elevator", "elevator.trapped", floor=3, people=True)
    assert [a["rule"] for a in site.open_alarms()] == ["elevator-trapped"]
    site.reading("lift-1", "elevator", mode="normal", floor=3)
    site.event("lift-1", "elevator", "elevator.overrun_top", floor=18, speed_ms=1.2)
    rules = sorted(a["rule"] for a in site.open_alarms())
    assert rules == ["elevator-dangerous-fault", "elevator-trapped"]


def test_a_gateway_offline_hides_its_devices_no_data_alarms(site: Site, clock: SimClock) -> None:
    other = Site(site.engine, clock, gateway="gw-02")
    site.reading("h1", "fire_hydrant", pressure_mpa=0.3)
    other.reading("h2", "fire_hydrant", pressure_mpa=0.3)
    site.deliver(status="offline")  # gw-01's Last Will
    clock.advance(16 * MINUTE)  # three hydrant intervals and more
    site.engine.tick()
    rules = sorted((a["rule"], a["subject"]) for a in site.open_alarms())
    assert rules == [("gateway-offline", "gw-01"), ("no-data", "h2")]
    site.deliver(status="online")
    site.reading("h1", "fire_hydrant", pressure_mpa=0.3)
    assert [a["subject"] for a in site.open_alarms()] == ["h2"]


def test_a_flapping_sensor_is_held_not_renotified(paged: Paged) -> None:
    site, clock, receivers = paged
    for i in range(12):  # a loose contact: fault on, fault off, every minute
        site.reading("p1", "fire_pump", fault=i % 2 == 0)
        site.engine.tick()
        clock.advance(MINUTE)
    (alarm,) = site.open_alarms()
    assert alarm["flapping"] and alarm["state"] == "firing"
    assert receivers["control_room"].events() == [
        "firing", "resolved", "firing", "resolved", "firing", "flapping",
    ]  # fmt: skip
    clock.advance(15 * MINUTE)  # quiet (fault off) for the hold time
    site.engine.tick()
    assert site.open_alarms("fire-pump-fault") == []
    assert len([a for a in site.alarms() if a["rule"] == "fire-pump-fault"]) == 3


def test_a_rule_file_with_a_mistake_is_refused_and_the_rules_in_force_stay(
    make_engine: EngineFactory, sqlite_url: str, tmp_path: Path
) -> None:
    rules_dir = tmp_path / "rules"
    shutil.copytree(BUNDLED_RULES, rules_dir)
    engine = make_engine(sqlite_url, rules_dir=rules_dir)
    bad = rules_dir / "site.yaml"
    bad.write_text(
        "rules:\n  - id: pump-room-cold\n    kinds: [room_temp]\n    severity: major\n"
        "    summary: 泵房温度低\n    when: {metric: temp_c, below: 5, clear: 3}\n"
    )
    with pytest.raises(RuleFileError) as err:
        engine.reload_rules()
    assert f"{bad}:6:" in str(err.value) and "clear level must not be below 5" in str(err.value)
    site = Site(engine, SimClock())
    site.reading("h1", "fire_hydrant", pressure_mpa=0.01)
    assert [a["rule"] for a in site.open_alarms()] == ["hydrant-pressure-low"]

    bad.write_text(bad.read_text().replace("clear: 3", "clear: 6"))
    engine.reload_rules()
    site.reading("pump-room", "room_temp", temp_c=2.0)
    assert "pump-room-cold" in [a["rule"] for a in site.open_alarms()]


def test_an_official_warning_activates_plans_and_its_expiry_stands_them_down(paged: Paged) -> None:
    site, clock, receivers = paged
    site.reading("ws-01", "weather_station", wind_speed_ms=3.0)  # the estate is known
    warning = site.engine.post_warning(
        "strong_wind", "orange", clock.now, clock.now + 3 * HOUR, "气象台转发", estates=["e1"]
    )
    assert warning["estates_covered"] == ["e1"]
    (act,) = site.engine.list_activations(estate="e1", active=True)
    assert (act["plan"], act["level"]) == ("strong_wind", "Ⅱ")
    assert act["sources"][-1]["detail"]["warning"]["id"] == warning["id"]
    site.engine.tick()  # delivers what is due (the notify thread does it when started)
    assert "plan_raised" in [n.event for n in receivers["control_room"].sent]
    clock.advance(3 * HOUR + MINUTE)
    site.engine.tick()
    (done,) = site.engine.list_activations(estate="e1")
    assert not done["active"]
    assert [e["action"] for e in site.engine.get_activation(done["id"])["timeline"]][-2:] == [
        "below",
        "stood_down",
    ]
    assert done["ended_ms"] == clock.now  # at once: no hold after an expired warning


def test_tasks_done_late_or_not_at_all_show_in_the_summary(paged: Paged) -> None:
    site, clock, receivers = paged
    act = site.engine.activate_plan("e1", "fire", "II", "值班经理", "3 号楼确认起火")
    due = {t["id"]: t["due_ms"] for t in act["tasks"]}
    assert {"verify", "extinguish", "call-119", "evacuate"} <= set(due)
    clock.advance(MINUTE)
    site.engine.complete_task(act["id"], "call-119", "监控中心-李")
    # (issue 11: a confirmed fire puts the linkage in automatic within 2 min too)
    site.engine.complete_task(act["id"], "linkage-auto", "监控中心-李")
    clock.advance(4 * MINUTE)
    site.engine.tick()  # verify (3 min) is overdue now
    overdue = [n for n in receivers["supervisor"].sent if n.event == "task_overdue"]
    assert [n.payload["task"]["id"] for n in overdue] == ["verify"]
    site.engine.complete_task(act["id"], "verify", "保安-赵")
    with pytest.raises(ValueError, match="done by 保安-赵 already"):
        site.engine.complete_task(act["id"], "verify", "保安-赵")
    done = site.engine.stand_down(act["id"], "值班经理", "明火已扑灭")
    summary = done["summary"]
    assert summary["tasks_on_time"] == ["call-119", "linkage-auto"]
    assert summary["tasks_late"] == ["verify"]
    assert "evacuate" in summary["tasks_not_done"]
    assert summary["duration_ms"] == 5 * MINUTE


def test_listeners_hear_every_change_after_it_is_stored(site: Site) -> None:
    heard: list[dict[str, Any]] = []
    site.engine.add_listener(heard.append)
    site.event("fap-1", "fire_panel", "fire.alarm", zone="b3-f12")
    kinds = [(h["type"], h["action"], h["estate"]) for h in heard]
    assert ("alarm", "firing", "e1") in kinds
    assert ("plan", "activated", "e1") in kinds  # the fire plan at Ⅲ
    alarm_id = next(h["alarm"]["id"] for h in heard if h["type"] == "alarm")
    assert site.engine.get_alarm(alarm_id)["state"] == "firing"


def test_changes_the_database_refused_are_written_when_it_is_back(
    make_engine: EngineFactory,
    sqlite_url: str,
    clock: SimClock,
    receivers: dict[str, RecordingNotifier],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    site = Site(make_engine(sqlite_url, receivers=roles(receivers)), clock)
    real_write = site.engine.store.write

    def away(_batch: Any) -> None:
        raise sa.exc.OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(site.engine.store, "write", away)
    site.reading("p1", "fire_pump", fault=True)
    assert site.open_alarms() == []  # not stored yet
    monkeypatch.setattr(site.engine.store, "write", real_write)
    clock.advance(SECOND)
    site.engine.tick()
    (alarm,) = site.open_alarms()
    assert alarm["rule"] == "fire-pump-fault"
    assert receivers["control_room"].events() == ["firing"]


def test_low_temperature_levels_follow_the_zone_each_estate_names(
    make_engine: EngineFactory, sqlite_url: str, clock: SimClock
) -> None:
    """(issue 11) -30 °C is blue in Hulunbuir and orange in Hohhot, by the zone each estate
    names in its settings; an estate that names none gets no observed level: no guessing from
    the region's text, no Henan default for Inner Mongolia."""
    from ingest.state import StateStore

    state = StateStore.open(sqlite_url)
    state.add_estate("e1", "北苑", "内蒙古自治区呼伦贝尔市", zone="hulunbuir")
    state.add_estate("e2", "新华", "呼和浩特市", zone="hohhot")
    state.add_estate("e3", "海拉尔", "内蒙古自治区呼伦贝尔市海拉尔区")
    engine = make_engine(sqlite_url)
    for estate in ("e1", "e2", "e3"):
        Site(engine, clock, estate=estate).reading("ws-01", "weather_station", temp_c=-30.0)
    levels = {
        a["estate"]: a["level"] for a in engine.list_activations() if a["plan"] == "severe_cold"
    }
    assert levels == {"e1": "Ⅳ", "e2": "Ⅱ"}
    state.close()


def test_shards_keep_and_tell_only_their_own_estates(
    make_engine: EngineFactory, sqlite_url: str, clock: SimClock
) -> None:
    """Ingest split over processes: each engine owns some estates of the shared database."""
    told = {"a": RecordingNotifier("cr-a"), "b": RecordingNotifier("cr-b")}
    shard_a = make_engine(
        sqlite_url, owns=lambda e: e == "e1", receivers={"control_room": [told["a"]]}
    )
    shard_b = make_engine(
        sqlite_url, owns=lambda e: e == "e2", receivers={"control_room": [told["b"]]}
    )
    Site(shard_a, clock, estate="e1").reading("p1", "fire_pump", fault=True)
    shard_b.tick()
    shard_a.tick()
    assert (told["a"].events(), told["b"].events()) == (["firing"], [])
    restarted_b = make_engine(sqlite_url, owns=lambda e: e == "e2")
    assert restarted_b.alarms.open == {}
    # a warning posted through one process reaches the others within a minute
    shard_a.post_warning("sandstorm", "yellow", clock.now, clock.now + HOUR, "auth", estates=["e2"])
    Site(shard_b, clock, estate="e2").reading("ws-01", "weather_station", visibility_m=9000.0)
    clock.advance(MINUTE)
    shard_b.tick()
    (act,) = shard_b.list_activations(estate="e2", active=True)
    assert (act["plan"], act["level"]) == ("sandstorm", "Ⅲ")


def test_a_late_older_station_reading_does_not_take_the_level_back(
    make_engine: EngineFactory, sqlite_url: str, clock: SimClock
) -> None:
    """(issue 11) Levels look back an hour now: a reading from before the storm that arrives
    late joins the windows, but the level is not judged again in the past."""
    from ingest.pipeline import Delivery
    from ingest.telemetry import EstateBatch
    from protocol.messages import Reading

    site = Site(make_engine(sqlite_url), clock)
    start = clock.now
    for _ in range(60):
        site.reading("ws-01", "weather_station", snow_mm=0.1, temp_c=-5.0)
        clock.advance(MINUTE)
    (act,) = site.engine.list_activations(estate="e1")
    assert act["level"] == "Ⅲ"  # 6 mm in 12 h: yellow
    late = Reading("ws-01", "weather_station", start - 2 * HOUR, {"snow_mm": 0.0, "temp_c": -3.0})
    d = Delivery("estates/e1/gw/gw-01/telemetry", clock.now, "e1", "gw-01")
    d.batch = EstateBatch("e1", "gw-01", [late], [])
    site.engine.on_committed([d])
    steps = timeline_steps(site, act["id"])
    assert steps[-1] == ("raised", "Ⅲ") and ("below", "Ⅲ") not in steps
