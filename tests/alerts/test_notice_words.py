"""What people read in a notice is Chinese (issue 13): no "状态：firing", no
"对象：lift-1（elevator）", no English roles or rule conditions; the estate by its name."""

from __future__ import annotations

import re

from alerts.engine import AlertEngine
from alerts.notify import Notification
from alerts.notify.text import describe
from ingest.pipeline import Delivery
from ingest.state import StateStore
from ingest.telemetry import EstateBatch
from protocol.catalog import default_catalog
from protocol.messages import Reading
from tests.alerts.conftest import MINUTE, RecordingNotifier, SimClock, roles


def _english(lines: list[str], allowed: set[str]) -> set[str]:
    return {w for line in lines for w in re.findall(r"[A-Za-z]{2,}", line)} - allowed


def test_an_alarm_notice_names_everything_in_chinese(tmp_path: object, clock: SimClock) -> None:
    state = StateStore.open(f"sqlite:///{tmp_path}/s.db")  # type: ignore[str-bytes-safe]
    state.add_estate("e1", "东苑小区", "呼和浩特市")
    state.add_gateway("e1", "gw-01")
    sup = {
        "control_room": RecordingNotifier("cr"),
        "supervisor": RecordingNotifier("sup"),
        "authority": RecordingNotifier("auth"),
    }
    engine = AlertEngine(
        state.engine, default_catalog(), clock, receivers=roles(sup), startup_grace_ms=0
    )
    for _ in range(12):
        reading = Reading("wp-1", "water_pressure", clock.now, {"pressure_mpa": 0.05})
        batch = EstateBatch("e1", "gw-01", [reading])
        engine.on_committed(
            [Delivery("estates/e1/gw/gw-01/telemetry", clock.now, "e1", "gw-01", batch=batch)]
        )
        clock.advance(MINUTE)
        engine.tick()
    notes = sup["control_room"].sent + sup["supervisor"].sent
    assert notes, "nobody was told of the low pressure"
    for n in notes:
        title, lines = describe(n)
        body = lines[:-1]  # the last line is the English summary, for who needs it
        assert _english([title, *body], {"wp", "MPa"}) == set(), (title, body)  # units stay
        text = "\n".join(body)
        assert "小区：东苑小区" in text
        if "alarm" not in n.payload:
            continue  # a plan's notice (the water-supply plan): checked below
        assert "对象：wp-1（供水压力监测）" in text
        assert "状态：未确认" in text
        assert re.search(r"条件：供水压力 < 0\.1 MPa", text), (text, n.payload["alarm"]["detail"])
    told = {describe(n)[1][-2] for n in sup["supervisor"].sent}
    assert any("通知对象：主管" in t for t in told) or not sup["supervisor"].sent
    engine.stop()
    state.close()


def test_a_plan_and_a_drill_notice_name_the_estate() -> None:
    act = {"plan_name": {"zh": "暴雪应急预案"}, "level_name": "Ⅲ级响应", "estate": "e1"}
    task = {"text": "清扫积雪", "role": "cleaning", "due_ms": 0}
    n = Notification(
        "k", "cr", "e1", "task_overdue",
        {"activation": act, "task": task, "estate_name": "东苑小区"}, 0,
    )  # fmt: skip
    title, lines = describe(n)
    assert title.startswith("【预案任务逾期】")
    assert lines[0] == "小区：东苑小区"
    assert "（保洁）" in lines[2] and not _english(lines, set())


def test_every_actor_the_service_writes_in_a_timeline_has_a_label() -> None:
    """Timelines show who did a step: people by name, the service's own actors by label
    ("系统规则", not "rules")."""
    from alerts.alarms.model import SYSTEM
    from alerts.labels import Labels
    from alerts.plans.activation import SYSTEM as PLAN_SYSTEM

    lb = Labels(default_catalog())
    for actor in {SYSTEM, PLAN_SYSTEM, "weather", "warning"}:
        zh, en = lb.text(f"actor.{actor}"), lb.text(f"actor.{actor}", "en")
        assert zh != f"actor.{actor}" and not re.search("[A-Za-z]", zh), actor
        assert en != zh
