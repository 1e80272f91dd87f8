"""Drills: cron schedules in Beijing time, scheduled drills recorded as held, counted per year."""

from __future__ import annotations

from datetime import datetime

from alerts.drills import next_drill, year_bounds
from protocol.clock import SHANGHAI
from tests.alerts.conftest import HOUR, EngineFactory, RecordingNotifier, SimClock, Site


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=SHANGHAI).timestamp() * 1000)


def test_cron_in_beijing_time() -> None:
    assert next_drill("0 9 10 11 *", ms(2026, 1, 10)) == ms(2026, 11, 10, 9)
    assert next_drill("0 9 10 11 *", ms(2026, 11, 10, 9)) == ms(2027, 11, 10, 9)
    assert year_bounds(2026) == (ms(2026, 1, 1), ms(2027, 1, 1))


def test_a_due_drill_is_scheduled_told_and_recorded(
    sqlite_url: str, make_engine: EngineFactory
) -> None:
    clock = SimClock(ms(2026, 11, 9, 12))
    cr = RecordingNotifier("cr")
    engine = make_engine(sqlite_url, receivers={"control_room": [cr]})
    engine.clock = clock  # this test's own calendar
    engine.outbox.clock = clock
    site = Site(engine, clock)
    site.reading("h1", "fire_hydrant", pressure_mpa=0.3)  # the estate is known
    engine.tick()  # first sight: schedules count from now
    clock.now = ms(2026, 11, 10, 9) + HOUR  # the snowstorm drill (10 Nov, 09:00) is due
    engine.tick()
    scheduled = engine.list_drills("e1", "snowstorm", 2026)["items"]
    assert [(d["status"], d["scheduled_ms"]) for d in scheduled] == [
        ("scheduled", ms(2026, 11, 10, 9))
    ]
    assert [n.event for n in cr.sent if "drill" in n.payload] == ["drill_due"]
    engine.tick()  # not twice
    assert len(engine.list_drills("e1", "snowstorm", 2026)["items"]) == 1

    engine.record_drill(
        "e1", "snowstorm", clock.now, "王经理", ["王经理", "保洁组"], "融雪剂不足",
        "合格", drill_id=scheduled[0]["id"],
    )  # fmt: skip
    engine.record_drill("e1", "fire", ms(2026, 4, 15, 9), "王经理", ["全体"], "", "合格")
    report = engine.list_drills("e1", year=2026)
    yearly = {y["plan"]: y for y in report["yearly"]}
    assert (yearly["snowstorm"]["held"], yearly["snowstorm"]["short"]) == (1, 0)
    assert (yearly["fire"]["held"], yearly["fire"]["required"], yearly["fire"]["short"]) == (
        1,
        2,
        1,
    )
    assert yearly["rainstorm"]["held"] == 0
    held = [d for d in report["items"] if d["plan"] == "snowstorm"]
    assert held[0]["findings"] == "融雪剂不足" and held[0]["recorded_by"] == "王经理"
