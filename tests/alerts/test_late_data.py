"""Late data is history, not an emergency (issue 13): readings that arrive long after they
were taken are stored and evaluated, their alarms recorded with the data's times and marked
late, nobody paged; deadman clocks run on arrivals."""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest

from alerts.engine import AlertEngine
from protocol.messages import Event, Reading
from tests.alerts.conftest import (
    HOUR,
    MINUTE,
    SECOND,
    EngineFactory,
    RecordingNotifier,
    SimClock,
    Site,
    roles,
)

DAY = 24 * HOUR


Published = list[tuple[str, bytes, bool]]


@pytest.fixture
def published() -> Published:
    return []


@pytest.fixture
def engine(
    make_engine: EngineFactory,
    sqlite_url: str,
    receivers: dict[str, RecordingNotifier],
    published: Published,
) -> AlertEngine:
    """Pages the three roles into ``receivers``, its MQTT notices into ``published``; deadman
    checks every 5 s."""
    return make_engine(
        sqlite_url,
        publish=lambda *a: published.append(a),
        receivers=roles(receivers),
        deadman_every_ms=5_000,
    )


@pytest.fixture
def site(engine: AlertEngine, clock: SimClock) -> Site:
    clock.advance(2 * MINUTE)  # past the start-up grace
    return Site(engine, clock)


class Late(NamedTuple):
    """What a late-data test drives and watches: the engine, its site past the start-up
    grace, the clock, the paged receivers and the MQTT notices published."""

    engine: AlertEngine
    site: Site
    clock: SimClock
    receivers: dict[str, RecordingNotifier]
    published: Published


@pytest.fixture
def late(
    engine: AlertEngine,
    site: Site,
    clock: SimClock,
    receivers: dict[str, RecordingNotifier],
    published: Published,
) -> Late:
    return Late(engine, site, clock, receivers, published)


def test_replaying_a_past_date_raises_no_flapping_no_data_alarms_and_pages_nobody(
    late: Late,
) -> None:
    """`simulate --start <yesterday>` at real speed for 14 minutes. Before: every device's
    deadman clock ran on the replayed timestamps, a day old, so each deadman check called
    every device silent and its next reading cleared it: 52 flapping no-data alarms on one
    estate and ~8,800 MQTT notices in 14 minutes."""
    engine, site, clock, receivers, published = late
    devices = [(f"wp-{i}", "water_pressure", 60) for i in range(20)]
    devices += [(f"lift-{i}", "elevator", 10) for i in range(5)]
    replay_start = clock.now - DAY
    next_due = {dev: 0 for dev, _, _ in devices}
    for second in range(14 * 60):
        data_now = replay_start + second * SECOND
        readings = []
        for dev, kind, every in devices:
            if second >= next_due[dev]:
                next_due[dev] = second + every
                if kind == "elevator":
                    m: dict[str, Any] = {"floor": 3, "mode": "normal", "running": False}
                else:
                    # wp-0's pressure falls for 8 minutes of the replayed day
                    low = dev == "wp-0" and 2 * 60 <= second < 10 * 60
                    m = {"pressure_mpa": 0.05 if low else 0.3}
                readings.append(Reading(dev, kind, data_now, m))
        if readings:
            site.deliver(readings=readings)
        engine.tick()
        clock.advance(SECOND)

    alarms = site.alarms(limit=1000)
    assert [a for a in alarms if a["rule"] == "no-data"] == []
    assert published == []  # no MQTT notice: nothing here is news
    assert [n for r in receivers.values() for n in r.sent] == []
    # The low pressure is stored as what it was: a late alarm, with the data's times.
    (low,) = [a for a in alarms if a["rule"] == "water-pressure-low"]
    assert low["late"] is True
    assert low["state"] == "resolved"
    assert low["started_ms"] == replay_start + 2 * MINUTE
    assert low["fired_ms"] == low["started_ms"] + 5 * MINUTE  # its 'for' ran on data time
    assert low["resolved_ms"] == replay_start + 10 * MINUTE
    assert low["raised_ms"] is not None and low["raised_ms"] >= replay_start + DAY
    assert low["escalated"] == 0 if "escalated" in low else True


def test_a_device_silent_in_wall_time_is_missed_whatever_its_timestamps_say(late: Late) -> None:
    engine, site, clock, receivers, _ = late
    # one reading taken an hour ago, arriving now; then nothing
    site.deliver(
        readings=[Reading("wp-1", "water_pressure", clock.now - HOUR, {"pressure_mpa": 0.3})]
    )
    for _ in range(3 * 60 - 10):
        engine.tick()
        clock.advance(SECOND)
    assert site.open_alarms("no-data") == []  # under 3 intervals since heard: not missing
    for _ in range(60):
        engine.tick()
        clock.advance(SECOND)
    (missing,) = site.open_alarms("no-data")
    assert missing["late"] is False  # a deadman alarm is about now
    assert "firing" in receivers["control_room"].events()


def test_a_backlog_whose_condition_cleared_is_history_one_still_holding_is_paged_once(
    late: Late,
) -> None:
    engine, site, clock, receivers, published = late
    now = clock.now
    # gateway back after 40 minutes offline: its backlog arrives in one commit
    backlog = []
    for i in range(40):
        t = now - 40 * MINUTE + i * MINUTE
        backlog.append(
            Reading("wp-a", "water_pressure", t, {"pressure_mpa": 0.05 if i < 15 else 0.3})
        )
        backlog.append(Reading("wp-b", "water_pressure", t, {"pressure_mpa": 0.05}))
    site.deliver(readings=backlog)
    engine.tick()
    by_subject = {
        a["subject"]: a for a in site.alarms(limit=100) if a["rule"] == "water-pressure-low"
    }
    a = by_subject["wp-a"]
    assert a["late"] and a["state"] == "resolved"  # held 15 minutes, 25 minutes ago
    assert a["to_ack_ms"] is None and a["to_resolve_ms"] is not None and a["to_resolve_ms"] >= 0
    b = by_subject["wp-b"]
    # still low in the newest data: an emergency now, raised now and paged once
    assert not b["late"] and b["state"] == "firing"
    assert b["raised_ms"] == clock.now
    assert b["fired_ms"] == now - 40 * MINUTE + 5 * MINUTE
    assert receivers["control_room"].about("water-pressure-low") == ["wp-b"]
    alerts = [p for p in published if p[0] == "estates/e1/alerts"]
    assert len(alerts) == 1 and b'"wp-b"' in alerts[0][1]
    for _ in range(30):
        engine.tick()
        clock.advance(SECOND)
    assert receivers["control_room"].about("water-pressure-low") == ["wp-b"]  # once


def test_a_late_entrapment_is_recorded_with_its_real_rescue_time_and_pages_nobody(
    late: Late,
) -> None:
    engine, site, clock, receivers, published = late
    trapped = clock.now - 2 * HOUR
    site.deliver(
        events=[
            Event("lift-1", "elevator", trapped, "elevator.trapped", {"floor": 7, "people": True}),
            Event("lift-1", "elevator", trapped + 20 * MINUTE, "elevator.released", {"floor": 7}),
        ]
    )
    for _ in range(10):
        engine.tick()
        clock.advance(SECOND)
    (a,) = site.alarms()
    assert a["late"] and a["state"] == "resolved"
    assert a["started_ms"] == trapped and a["resolved_ms"] == trapped + 20 * MINUTE
    (r,) = engine.rescues(estate="e1")
    assert r["duration_ms"] == 20 * MINUTE and not r["breached"]
    assert published == [] and [n for x in receivers.values() for n in x.sent] == []


def test_a_late_alarm_is_not_announced_live_but_a_persons_action_on_it_is(late: Late) -> None:
    engine, site, clock, receivers, published = late
    live: list[dict[str, Any]] = []
    engine.add_listener(live.append)
    old = clock.now - 2 * HOUR
    site.deliver(events=[Event("sd-1", "smoke_detector", old, "fire.alarm", {"zone": "b1"})])
    engine.tick()
    (a,) = site.open_alarms()
    assert a["late"] and a["state"] == "firing" and a["fired_ms"] == old
    assert [x for x in live if x["type"] == "alarm"] == []  # not flooded onto the live feed
    clock.advance(3 * MINUTE)
    acked = engine.acknowledge(a["id"], "duty-1")
    assert acked["to_ack_ms"] == 3 * MINUTE  # from when it reached the control room
    assert [x["action"] for x in live if x["type"] == "alarm"] == ["acknowledged"]
    assert published == [] and [n for x in receivers.values() for n in x.sent] == []
