"""An alarm that clears before anyone acknowledged it (ISA-18.2 / EEMUA 191 "return to normal,
unacknowledged"): a fire panel reset at 3 am ends the detector's alarm, but the alarm stays in
the live list, marked cleared, until a person acknowledges it; the acknowledgement closes it
and records who and when. It survives a restart, does not keep escalating, and the quality
figures still count it as closed by the equipment before anyone took it on."""

from __future__ import annotations

import pytest

from alerts.alarms import LIVE_STATES, InvalidTransition
from alerts.quality import alarm_quality, raised_alarms
from tests.alerts.conftest import MINUTE, EngineFactory, Paged, SimClock, Site

LIVE = [s.value for s in LIVE_STATES]
RULE = "fire-alarm-detector"


def _fire_then_reset(site: Site, clock: SimClock) -> dict[str, object]:
    site.event("smoke-1", "smoke_detector", "fire.alarm", zone="b3", point="smoke-1")
    (alarm,) = site.open_alarms(RULE)
    clock.advance(MINUTE)
    site.event("smoke-1", "smoke_detector", "fire.reset", point="smoke-1", by="panel_reset")
    return alarm


def _live(site: Site) -> list[dict[str, object]]:
    return [a for a in site.alarms(state=LIVE) if a["rule"] == RULE]


def test_a_fire_alarm_reset_unacknowledged_stays_listed_across_a_restart_until_acknowledged(
    database_url: str, make_engine: EngineFactory, clock: SimClock
) -> None:
    first = Site(make_engine(database_url), clock)
    alarm = _fire_then_reset(first, clock)
    reset_at = clock.now
    assert first.open_alarms(RULE) == []  # over for the rules: a new fire opens a new alarm
    (listed,) = _live(first)
    assert (listed["id"], listed["state"], listed["acked_by"]) == (alarm["id"], "cleared", None)
    assert listed["resolved_ms"] == reset_at and listed["resolved_by"] == "rules"
    first.engine.stop()

    clock.advance(10 * MINUTE)
    second = Site(make_engine(database_url), clock)
    (still,) = _live(second)
    assert (still["id"], still["state"]) == (alarm["id"], "cleared")
    clock.advance(MINUTE)
    acked = second.engine.acknowledge(alarm["id"], "王班长", "复位前已到现场")
    assert (acked["state"], acked["acked_by"], acked["acked_ms"]) == (
        "resolved",
        "王班长",
        clock.now,  # the person's wall time, not the reset's
    )
    assert acked["resolved_ms"] == reset_at  # still ended by the equipment, then
    assert _live(second) == []
    timeline = second.engine.get_alarm(alarm["id"])["timeline"]
    actions = [e["action"] for e in timeline if e["action"] != "notified"]
    assert actions == ["firing", "resolved", "acknowledged"]
    assert timeline[-1]["by"] == "王班长"
    with pytest.raises(InvalidTransition):
        second.engine.acknowledge(alarm["id"], "李四")


def test_a_cleared_alarm_does_not_escalate_and_cannot_be_resolved_instead(paged: Paged) -> None:
    site, clock, receivers = paged
    alarm = _fire_then_reset(site, clock)
    clock.advance(15 * MINUTE)  # past the supervisor's 10 min for an unacknowledged one
    site.engine.tick()
    assert receivers["supervisor"].events() == []
    assert receivers["control_room"].events() == ["firing", "resolved"]
    with pytest.raises(InvalidTransition, match="acknowledge"):
        site.engine.resolve(alarm["id"], "王班长")


def test_a_new_fire_while_the_old_one_waits_opens_a_second_alarm(site: Site, clock: SimClock):
    first = _fire_then_reset(site, clock)
    clock.advance(MINUTE)
    site.event("smoke-1", "smoke_detector", "fire.alarm", zone="b3", point="smoke-1")
    states = {a["id"]: a["state"] for a in _live(site)}
    (second,) = [i for i in states if i != first["id"]]
    assert states == {first["id"]: "cleared", second: "firing"}


def test_acknowledged_or_low_priority_alarms_close_with_their_condition(
    site: Site, clock: SimClock
) -> None:
    site.event("smoke-1", "smoke_detector", "fire.alarm", zone="b3", point="smoke-1")
    (alarm,) = site.open_alarms(RULE)
    site.engine.acknowledge(alarm["id"], "王班长")
    clock.advance(MINUTE)
    site.event("smoke-1", "smoke_detector", "fire.reset", point="smoke-1", by="panel_reset")
    assert site.engine.get_alarm(alarm["id"])["state"] == "resolved"
    assert _live(site) == []
    # ISA-18.2 lets low-priority alarms be non-latching: a minor one closes with its condition
    site.reading("pm-1", "power_meter", voltage_v=250.0)
    clock.advance(6 * MINUTE)
    site.reading("pm-1", "power_meter", voltage_v=251.0)
    site.engine.tick()
    (minor,) = site.open_alarms("power-voltage-abnormal")
    assert (minor["severity"], minor["state"]) == ("minor", "firing")
    site.reading("pm-1", "power_meter", voltage_v=220.0)
    assert site.engine.get_alarm(minor["id"])["state"] == "resolved"


def test_a_major_threshold_alarm_back_to_normal_waits_for_its_acknowledgement(
    site: Site, clock: SimClock
) -> None:
    site.reading("p1", "fire_pump", fault=True, running=False, auto=True)
    site.engine.tick()
    (alarm,) = site.open_alarms("fire-pump-fault")
    clock.advance(MINUTE)
    site.reading("p1", "fire_pump", fault=False, running=False, auto=True)
    site.engine.tick()
    got = site.engine.get_alarm(alarm["id"])
    assert (got["severity"], got["state"], got["resolved_by"]) == ("major", "cleared", "rules")


def test_quality_counts_a_cleared_alarm_acknowledged_afterwards_as_closed_unacknowledged(
    site: Site, clock: SimClock
) -> None:
    start = clock.now
    alarm = _fire_then_reset(site, clock)
    clock.advance(MINUTE)
    site.engine.acknowledge(alarm["id"], "王班长")
    site.event("smoke-2", "smoke_detector", "fire.alarm", zone="b3", point="smoke-2")
    (other,) = site.open_alarms(RULE)
    site.engine.acknowledge(other["id"], "王班长")
    clock.advance(MINUTE)
    site.event("smoke-2", "smoke_detector", "fire.reset", point="smoke-2", by="panel_reset")
    q = alarm_quality(raised_alarms(site.alarms()), start, clock.now + MINUTE)
    assert (q.alarms, q.acked, q.closed_unacked) == (2, 2, 1)
