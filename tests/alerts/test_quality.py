"""The alarm-management figures on inputs small enough to check by hand."""

from __future__ import annotations

import pytest

from alerts.quality import RaisedAlarm, alarm_quality, percentile, raised_alarms

MIN = 60_000
HOUR = 60 * MIN
T0 = 1_767_225_600_000  # 2026-01-01T00:00Z


def a(rule: str, subject: str, at_ms: int, cleared: int | None = 0, acked: int | None = None):
    return RaisedAlarm(
        rule, subject, T0 + at_ms, None if cleared is None else T0 + at_ms + cleared, acked
    )


def test_rate_flood_chatter_stale_top_and_ack_by_hand() -> None:
    alarms = [
        # 12 alarms in the window 00:10–00:20: a flood (> 10); 3 of them one alarm within 50 s
        *[a("pipe-freeze", f"pt-{i}", 10 * MIN + i * 30_000) for i in range(9)],
        a("no-data", "wp-1", 15 * MIN),
        a("no-data", "wp-1", 15 * MIN + 20_000),
        a("no-data", "wp-1", 15 * MIN + 50_000),
        # 11 alarms in 00:30–00:40: also a flood (11 > 10), inside a declared emergency
        *[a("gas-lel-high", "gd-1", 30 * MIN + i * 50_000) for i in range(11)],
        # one alarm open at the end of the 2-day period: 47 h active → stale
        a("room-temp-low", "rt-1", 1 * HOUR, cleared=None),
        # one alarm active 25 h then cleared → stale; acknowledged after 120 s
        a(
            "hydrant-pressure-low",
            "fh-1",
            2 * HOUR,
            cleared=25 * HOUR,
            acked=T0 + 2 * HOUR + 120_000,
        ),
        # acknowledged after 60 s, active 1 h
        a("fire-alarm", "sd-1", 3 * HOUR, cleared=HOUR, acked=T0 + 3 * HOUR + 60_000),
        # before the period: not counted
        a("fire-alarm", "sd-1", -HOUR),
    ]
    q = alarm_quality(alarms, T0, T0 + 48 * HOUR, emergencies=[(T0 + 30 * MIN, T0 + 40 * MIN)])
    assert q.alarms == 12 + 11 + 3
    assert q.hours == 48
    assert q.per_hour == pytest.approx(26 / 48)
    assert q.windows == 48 * 6
    assert q.flood_windows == 2
    assert [f["alarms"] for f in q.floods] == [12, 11]
    assert q.flood_share == pytest.approx(2 / 288)
    assert q.peak_10min == 12
    # The 11 gas alarms fell inside the emergency: 15 outside over 47 h 50 min = 287 windows.
    assert q.alarms_outside_emergencies == 15
    assert q.per_10min_outside_emergencies == pytest.approx(15 / 287)
    # no-data on wp-1: 3 within 50 s → chattering; gas-lel-high: 11 times but 50 s apart,
    # so at most 2 within any 60 s → not chattering.
    assert q.chattering == [{"rule": "no-data", "subject": "wp-1", "in_60s": 3, "alarms": 3}]
    assert [(s["rule"], s["active_h"], s["open"]) for s in q.stale] == [
        ("room-temp-low", 47.0, True),
        ("hydrant-pressure-low", 25.0, False),
    ]
    assert q.top[0] == {"rule": "gas-lel-high", "subject": "gd-1", "alarms": 11, "share": 0.423077}
    assert q.top[1] == {"rule": "no-data", "subject": "wp-1", "alarms": 3, "share": 0.115385}
    assert len(q.top) == 10
    assert q.acked == 2
    assert (q.ack_p50_s, q.ack_p90_s) == (60.0, 120.0)
    # closed with nobody's acknowledgement: the 23 cleared and never acknowledged (the open
    # room-temp-low is not closed; the two acknowledged ones were)
    assert q.closed_unacked == 23


def test_chatter_needs_three_within_sixty_seconds_inclusive() -> None:
    three_in_60 = [a("r", "d", 0), a("r", "d", 30_000), a("r", "d", 60_000)]
    three_in_61 = [a("r", "d", 0), a("r", "d", 30_000), a("r", "d", 61_000)]
    assert alarm_quality(three_in_60, T0, T0 + HOUR).chattering[0]["in_60s"] == 3
    assert alarm_quality(three_in_61, T0, T0 + HOUR).chattering == []


def test_from_api_dicts_leaves_pending_out_and_empty_period_is_refused() -> None:
    items = [
        {"rule": "r", "subject": "d", "fired_ms": T0, "resolved_ms": None, "acked_ms": None},
        {"rule": "r", "subject": "d", "fired_ms": None, "started_ms": T0},
    ]
    got = raised_alarms(items)
    assert got == [RaisedAlarm("r", "d", T0, None, None)]
    with pytest.raises(ValueError, match="empty period"):
        alarm_quality(got, T0, T0)


def test_percentile_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([5, 1, 3, 2, 4], 50) == 3
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90) == 9
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 99) == 10


def test_time_to_acknowledge_runs_from_when_the_alarm_reached_the_control_room() -> None:
    """A late alarm: its data is 3 h old when it arrives, and it is acknowledged 60 s after it
    reached the control room. Timed from the data it would read 3 h 1 min (one clock, #13)."""
    late = RaisedAlarm(
        "no-data", "wp-1", T0, None, T0 + 3 * HOUR + 60_000, reached_ms=T0 + 3 * HOUR
    )
    q = alarm_quality([late], T0, T0 + 4 * HOUR)
    assert (q.acked, q.ack_p50_s) == (1, 60.0)
    (got,) = raised_alarms(
        [{"rule": "r", "fired_ms": T0, "raised_ms": T0 + HOUR, "acked_ms": T0 + HOUR + 5_000}]
    )
    assert got.reached_ms == T0 + HOUR


def test_load_figures_count_an_alarm_when_it_reached_the_room_chattering_when_it_began() -> None:
    """A gateway's 3-hour backlog arrives at once (issue 11): its 12 alarms began over those
    hours (data time) but reached the operator in one 10-minute window: that window is a flood
    of the operator's, and the rate counts them in the hour they came; an alarm that began in
    the period but reached the room after it is not this period's load. Chattering is about the
    condition: three starts within 60 s of data time, however they arrived."""
    back = T0 + 4 * HOUR  # the gateway is back
    late = [
        RaisedAlarm("pipe-freeze", f"pt-{i}", T0 + HOUR + i * 15 * MIN, reached_ms=back + i * 1000)
        for i in range(12)
    ]
    chatter = [  # came on time, 25 s apart: chattering on data time
        RaisedAlarm(
            "no-data", "wp-1", T0 + 5 * HOUR + i * 25_000, reached_ms=T0 + 5 * HOUR + i * 25_000
        )
        for i in range(3)
    ]
    spread = [  # began 20 s apart in the backlog, reached the room 10 min apart: still chattering
        RaisedAlarm("no-data", "wp-2", T0 + 2 * HOUR + i * 20_000, reached_ms=back + i * 10 * MIN)
        for i in range(3)
    ]
    after = RaisedAlarm("fire-alarm", "sd-1", T0 + 5 * HOUR, reached_ms=T0 + 7 * HOUR)
    q = alarm_quality([*late, *chatter, *spread, after], T0, T0 + 6 * HOUR)
    assert q.alarms == 12 + 3 + 3 + 1  # the month's alarms: by when they began
    assert q.reached == 12 + 3 + 3  # the operator's: the last one came after the period
    assert q.per_hour == pytest.approx(18 / 6)
    assert q.floods == [{"start_ms": back, "alarms": 13}]  # 12 late + the first of wp-2
    assert q.peak_10min == 13
    assert q.late == 12 + 3
    assert {c["subject"] for c in q.chattering} == {"wp-1", "wp-2"}
    assert q.as_dict()["clocks"]["floods"] == "wall"
    assert q.as_dict()["clocks"]["chattering"] == "data"


def test_closed_with_nobodys_acknowledgement_counts_the_equipments_and_timers_closes() -> None:
    """A fire alarm the panel's reset closed before anyone acknowledged it (issue 11) is one; an
    alarm a person resolved, or one acknowledged first, is not."""
    reset = RaisedAlarm("fire-alarm-detector", "sd-1", T0, T0 + 10 * MIN, resolved_by="rules")
    person = RaisedAlarm("fire-alarm-detector", "sd-2", T0, T0 + 10 * MIN, resolved_by="duty-1")
    acked = RaisedAlarm("fire-alarm", "fap-1", T0, T0 + 10 * MIN, T0 + MIN, resolved_by="rules")
    still_open = RaisedAlarm("fire-alarm", "fap-2", T0)
    q = alarm_quality([reset, person, acked, still_open], T0, T0 + HOUR)
    assert q.closed_unacked == 1
