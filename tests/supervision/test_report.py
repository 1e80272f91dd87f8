"""The yearly report from real alarms, rescues and plan activations made by the alert engine."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from pathlib import Path

from openpyxl import load_workbook

from alerts.engine import AlertEngine
from ingest.pipeline import Delivery
from ingest.state import StateStore
from ingest.telemetry import EstateBatch, TelemetryReader, TelemetryWriter
from protocol.catalog import default_catalog
from protocol.clock import SHANGHAI
from protocol.messages import Event, Reading
from supervision.report import ReportInputs, to_csv, to_xlsx, yearly_report

CAT = default_catalog()
T0 = int(datetime(2026, 3, 2, 9, 0, tzinfo=SHANGHAI).timestamp() * 1000)
MIN = 60_000


def delivery(
    estate: str,
    readings: list[Reading] = (),
    events: list[Event] = (),  # type: ignore[assignment]
    ts: int = T0,
) -> Delivery:
    return Delivery(
        topic=f"estates/{estate}/gw/gw-01/telemetry",
        received_ms=ts,
        estate=estate,
        gateway="gw-01",
        batch=EstateBatch(estate, "gw-01", readings, events),
    )


def test_report_counts_alarms_rescues_and_uptime(tmp_path: Path) -> None:
    state = StateStore.open(f"sqlite:///{tmp_path / 's.db'}")
    for e in ("north", "south"):
        state.add_estate(e, f"{e} 小区", "呼和浩特市")
        state.add_gateway(e, "gw-01")
    state.add_devices(
        [
            ("north", "lift-1", "elevator", "gw-01", T0),
            ("north", "fap-1", "fire_panel", "gw-01", T0),
            ("south", "lift-1", "elevator", "gw-01", T0),
        ]
    )
    now = [T0]
    engine = AlertEngine(state.engine, CAT, clock=lambda: now[0])

    def happens(estate: str, event: Event) -> None:
        engine.on_committed([delivery(estate, events=[event], ts=now[0])])

    # north: passengers trapped at 09:00, released at 09:12
    happens("north", Event("lift-1", "elevator", T0, "elevator.trapped", {"floor": 7}))
    # (issue 11) the technician arrives at 09:08: the deadline is about the arrival
    now[0] = T0 + 8 * MIN
    arrived = Event("lift-1", "elevator", now[0], "elevator.technician_arrived", {})
    happens("north", arrived)
    now[0] = T0 + 12 * MIN
    happens("north", Event("lift-1", "elevator", now[0], "elevator.released", {}))
    # south: trapped for 40 minutes: the 30-minute deadline is breached
    now[0] = T0 + 60 * MIN
    happens("south", Event("lift-1", "elevator", now[0], "elevator.trapped", {"floor": 3}))
    for step in range(1, 41):
        now[0] = T0 + (60 + step) * MIN
        engine.tick()
    happens("south", Event("lift-1", "elevator", now[0], "elevator.released", {}))
    # north: a fire alarm acknowledged after 2 minutes and resolved after 10
    now[0] = T0 + 200 * MIN
    happens("north", Event("fap-1", "fire_panel", now[0], "fire.alarm", {"zone": "b1"}))
    fire = next(a for a in engine.list_alarms(estate="north") if a["kind"] == "fire_panel")
    now[0] += 2 * MIN
    engine.acknowledge(fire["id"], "duty-1")
    now[0] += 8 * MIN
    engine.resolve(fire["id"], "duty-1")

    # telemetry: north's lift reported in 3 distinct hours
    writer = TelemetryWriter(tmp_path / "t.db")
    writer.write(
        [
            EstateBatch(
                "north",
                "gw-01",
                readings=[
                    Reading("lift-1", "elevator", T0 + h * 3_600_000, {"floor": 1})
                    for h in range(3)
                ],
            )
        ]
    )
    writer.rollup()
    reader = TelemetryReader(tmp_path / "t.db")

    inputs = ReportInputs(state, CAT, engine.plans, reader.hours_with_data)
    report = yearly_report(inputs, 2026, now_ms=T0 + 6 * 3_600_000)
    north = next(p for p in report["estates"] if p["estate"] == "north")
    south = next(p for p in report["estates"] if p["estate"] == "south")
    assert north["rescues"]["count"] == 1 and north["rescues"]["mean_min"] == 12.0
    assert north["rescues"]["within_deadline"] == 1 and north["rescues"]["breached"] == 0
    assert north["rescues"]["mean_arrival_min"] == 8.0  # both times: arrival and release
    assert south["rescues"]["max_arrival_min"] == 40.0  # no arrival recorded: the release
    assert south["rescues"]["breached"] == 1 and south["rescues"]["max_min"] == 40.0
    assert north["alarms"]["fire"]["critical"] == 1
    assert north["mean_ack_min"] is not None
    assert north["fire_availability_pct"] is not None and north["fire_availability_pct"] < 100
    # 2 devices × 6 hours expected; the lift had data in 3 of them
    assert north["device_uptime_pct"] == 25.0
    total = report["total"]
    assert total["rescues"]["count"] == 2 and total["rescues"]["breached"] == 1
    assert total["alarms_total"] == north["alarms_total"] + south["alarms_total"]
    assert {d["plan"] for d in total["drills"]} == set(engine.plans)

    rows = list(csv.reader(io.StringIO(to_csv(report).lstrip("\ufeff"))))
    assert rows[0][:2] == ["小区编号", "小区"] and [r[0] for r in rows[1:]] == [
        "north",
        "south",
        "total",
    ]
    wb = load_workbook(io.BytesIO(to_xlsx(report)))
    assert wb.sheetnames == ["汇总", "告警", "预案", "演练", "告警质量"]
    assert wb["汇总"]["A3"].value == "north" and wb["汇总"]["B3"].value == "north 小区"
    engine.stop()
    state.close()


def test_report_and_month_figures_count_chatter_standing_and_acknowledgement(
    tmp_path: Path,
) -> None:
    """Known alarms through the real engine and store; the yearly report's and the month's
    alarm-management figures, worked out by hand."""
    from supervision.report import estate_alarm_quality, month_bounds

    state = StateStore.open(f"sqlite:///{tmp_path / 's.db'}")
    state.add_estate("east", "east 小区", "呼和浩特市")
    state.add_gateway("east", "gw-01")
    now = [T0]
    engine = AlertEngine(state.engine, CAT, clock=lambda: now[0])

    def fire(at: int) -> None:
        now[0] = at
        ev = Event("fap-1", "fire_panel", at, "fire.alarm", {"zone": "b1", "point": "sd-1"})
        engine.on_committed([delivery("east", events=[ev], ts=at)])

    # the panel's fire alarm three times in 40 s, resolved by the operator in between
    for i in range(3):
        fire(T0 + i * 20_000)
        if i < 2:
            (alarm,) = [a for a in engine.list_alarms("east") if a["state"] == "firing"]
            now[0] += 1_000
            engine.resolve(alarm["id"], "duty")
    (open_alarm,) = [a for a in engine.list_alarms("east") if a["state"] == "firing"]
    now[0] = T0 + 40_000 + 90_000
    engine.acknowledge(open_alarm["id"], "duty")  # 90 s after it was raised; never resolved

    lo, hi = month_bounds(2026, 3)
    q, days = estate_alarm_quality(state.engine, "east", lo, hi, now_ms=T0 + 30 * 3_600_000)
    assert q.alarms == 3
    assert q.chattering == [{"rule": "fire-alarm", "subject": "fap-1", "in_60s": 3, "alarms": 3}]
    # open from 09:00:40 on 2 March to the period's end (3 March 15:00): 30 h → standing
    assert [(s["rule"], s["open"], s["active_h"]) for s in q.stale] == [
        ("fire-alarm", True, round((30 * 3_600_000 - 40_000) / 3_600_000, 2))
    ]
    assert (q.acked, q.ack_p50_s) == (1, 90.0)
    assert q.top == [{"rule": "fire-alarm", "subject": "fap-1", "alarms": 3, "share": 1.0}]
    # days of March up to "now" (the 3rd): 1st none, 2nd three
    assert [d["alarms"] for d in days] == [0, 3, 0]

    inputs = ReportInputs(state, CAT, engine.plans, lambda e, a, b: {})
    report = yearly_report(inputs, 2026, now_ms=T0 + 30 * 3_600_000)
    (east,) = report["estates"]
    aq = east["alarm_quality"]
    assert (len(aq["chattering"]), len(aq["stale"]), aq["ack_p50_min"]) == (1, 1, 1.5)
    assert report["total"]["alarm_quality"]["chattering"][0]["estate"] == "east"
    header, row = list(csv.reader(io.StringIO(to_csv(report).lstrip("\ufeff"))))[:2]
    assert row[header.index("振荡告警")] == "1"
    assert "每小时告警数（按到达控制室时间）" in header  # the load figures' clock
    assert row[header.index("长期未消除告警（超过 24 小时）")] == "1"
    sheet = load_workbook(io.BytesIO(to_xlsx(report)))["告警质量"]
    kinds = [r[1] for r in sheet.iter_rows(min_row=3, values_only=True)]
    assert kinds.count("振荡") == 1 and kinds.count("长期未消除") == 1
    # the report says which clock each figure counts on (issue 11)
    assert (aq["clocks"]["per_hour"], aq["clocks"]["chattering"]) == ("wall", "data")
    assert "到达控制室" in str(sheet["A2"].value) and "数据时间" in str(sheet["A2"].value)


def test_a_new_estates_uptime_is_not_yet_measured_until_the_rollup_has_its_hours(
    tmp_path: Path,
) -> None:
    """Issue 11: devices that reported, before the first rollup reached them, showed 0 % uptime;
    the report says "not yet measured" (统计中) instead, and measures once the rollup ran."""
    state = StateStore.open(f"sqlite:///{tmp_path / 's.db'}")
    state.add_estate("new", "new 小区", "呼和浩特市")
    state.add_gateway("new", "gw-01")
    state.add_devices([("new", "wp-1", "water_pressure", "gw-01", T0)])
    engine = AlertEngine(state.engine, CAT, clock=lambda: T0)
    writer = TelemetryWriter(tmp_path / "t.db")
    batch = EstateBatch(
        "new", "gw-01", [Reading("wp-1", "water_pressure", T0, {"pressure_mpa": 0.3})]
    )
    writer.write([batch])
    reader = TelemetryReader(tmp_path / "t.db")
    inputs = ReportInputs(state, CAT, engine.plans, reader.hours_with_data)

    before = yearly_report(inputs, 2026, now_ms=T0 + 20 * MIN)
    (part,) = before["estates"]
    assert (part["device_uptime_pct"], part["device_uptime_pending"]) == (None, True)
    assert before["total"]["device_uptime_pending"] is True
    writer.rollup()
    after = yearly_report(inputs, 2026, now_ms=T0 + 20 * MIN)
    (part,) = after["estates"]
    assert (part["device_uptime_pct"], part["device_uptime_pending"]) == (100.0, False)
    assert after["total"]["device_uptime_pending"] is False
    engine.stop()
    state.close()
