"""Trapped at a landing vs between floors (GB/T 24476-2023 平层关人 / 非平层关人; issue 11
item 10): two rules, told apart by the event's door_zone, each with the arrival deadline of
TSG T5002-2017; between floors (or not said) is the worse case, and the notice says why."""

from __future__ import annotations

from alerts.notify import Notification
from alerts.notify.text import describe
from tests.alerts.conftest import MINUTE, SimClock, Site


def test_between_floors_is_critical_at_a_landing_major_both_with_the_deadline(
    site: Site, clock: SimClock
) -> None:
    site.event("lift-1", "elevator", "elevator.trapped", floor=7, people=True, door_zone=False)
    site.event("lift-2", "elevator", "elevator.trapped", floor=1, people=True, door_zone=True)
    site.event("lift-3", "elevator", "elevator.trapped", floor=4, people=True)  # not said
    got = {a["subject"]: a for a in site.open_alarms()}
    assert {s: (a["rule"], a["severity"]) for s, a in got.items()} == {
        "lift-1": ("elevator-trapped", "critical"),
        "lift-2": ("elevator-trapped-landing", "major"),
        "lift-3": ("elevator-trapped", "critical"),  # unknown: assume the worse case
    }
    assert "非平层" in got["lift-1"]["summary"]["zh"]
    assert "平层关门" in got["lift-2"]["summary"]["zh"]
    assert {a["deadline_ms"] - clock.now for a in got.values()} == {30 * MINUTE}
    # the release ends either; the arrival is recorded on either
    site.engine.technician_arrived(got["lift-2"]["id"], "维保-张")
    site.event("lift-2", "elevator", "elevator.released", floor=1)
    r = next(r for r in site.engine.rescues("e1") if r["alarm_id"] == got["lift-2"]["id"])
    assert r["arrived_by"] == "维保-张" and r["released_ms"] == clock.now


def test_the_notice_names_the_case_and_the_arrival_deadline(site: Site) -> None:
    site.event("lift-2", "elevator", "elevator.trapped", floor=1, people=True, door_zone=True)
    (alarm,) = site.open_alarms("elevator-trapped-landing")
    title, lines = describe(Notification("k", "sms", "e1", "firing", {"alarm": alarm}, 0))
    assert "平层关门" in title
    assert any("平层关人" in line for line in lines)
    assert any(line.startswith("到场时限") for line in lines), lines
