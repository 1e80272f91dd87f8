"""A fire alarm clears when the equipment says so (issue 11): a detector's ``fire.reset`` (the
panel's reset, or the detector's own restore, as the GB/T 26875.3 receiver sends them) resolves
its alarm; the timeline names the event, and nobody's acknowledgement is invented."""

from __future__ import annotations

from tests.alerts.conftest import MINUTE, SimClock, Site


def test_a_detectors_fire_alarm_is_resolved_by_the_reset_and_recorded_as_such(
    site: Site, clock: SimClock
) -> None:
    site.event("smoke-1", "smoke_detector", "fire.alarm", zone="b3", point="smoke-1")
    (alarm,) = site.open_alarms("fire-alarm-detector")
    clock.advance(10 * MINUTE)
    reset_at = clock.now
    site.event("smoke-1", "smoke_detector", "fire.reset", point="smoke-1", by="panel_reset")
    assert site.open_alarms("fire-alarm-detector") == []
    got = site.engine.get_alarm(alarm["id"])
    # over, but listed until a person acknowledges it (test_alarm_rtn)
    assert got["state"] == "cleared" and got["resolved_ms"] == reset_at
    assert got["acked_ms"] is None and got["acked_by"] is None  # no person acknowledged it
    (closed,) = [e for e in got["timeline"] if e["action"] == "resolved"]
    assert closed["by"] == "rules"  # the equipment, not a person
    assert closed["detail"]["event"] == "fire.reset"
    assert closed["detail"]["data"]["by"] == "panel_reset"


def test_another_detectors_reset_leaves_the_alarm_standing(site: Site) -> None:
    site.event("smoke-1", "smoke_detector", "fire.alarm", zone="b3", point="smoke-1")
    site.event("smoke-2", "smoke_detector", "fire.reset", point="smoke-2", by="restored")
    assert [a["subject"] for a in site.open_alarms("fire-alarm-detector")] == ["smoke-1"]
