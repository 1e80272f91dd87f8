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
from protocol.messages import Event, Reading
from supervision.report import SHANGHAI, ReportInputs, to_csv, to_xlsx, yearly_report

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
    # north: passengers trapped at 09:00, released at 09:12
    engine.on_committed(
        [
            delivery(
                "north", events=[Event("lift-1", "elevator", T0, "elevator.trapped", {"floor": 7})]
            )
        ]
    )
    # (issue 11) the technician arrives at 09:08: the deadline is about the arrival
    now[0] = T0 + 8 * MIN
    arrived = Event("lift-1", "elevator", now[0], "elevator.technician_arrived", {})
    engine.on_committed([delivery("north", events=[arrived], ts=now[0])])
    now[0] = T0 + 12 * MIN
    engine.on_committed(
        [
            delivery(
                "north",
                events=[Event("lift-1", "elevator", now[0], "elevator.released", {})],
                ts=now[0],
            )
        ]
    )
    # south: trapped for 40 minutes: the 30-minute deadline is breached
    now[0] = T0 + 60 * MIN
    engine.on_committed(
        [
            delivery(
                "south",
                events=[Event("lift-1", "elevator", now[0], "elevator.trapped", {"floor": 3})],
                ts=now[0],
            )
        ]
    )
    for step in range(1, 41):
        now[0] = T0 + (60 + step) * MIN
        engine.tick()
    engine.on_committed(
        [
            delivery(
                "south",
                events=[Event("lift-1", "elevator", now[0], "elevator.released", {})],
                ts=now[0],
            )
        ]
    )
    # north: a fire alarm acknowledged after 2 minutes and resolved after 10
    now[0] = T0 + 200 * MIN
    engine.on_committed(
        [
            delivery(
                "north",
                events=[Event("fap-1", "fire_panel", now[0], "fire.alarm", {"zone": "b1"})],
                ts=now[0],
            )
        ]
    )
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
    assert rows[0][0] == "小区 estate" and [r[0] for r in rows[1:]] == ["north", "south", "total"]
    wb = load_workbook(io.BytesIO(to_xlsx(report)))
    assert wb.sheetnames == ["汇总 Summary", "告警 Alarms", "预案 Plans", "演练 Drills"]
    assert wb["汇总 Summary"]["A3"].value == "north"
    engine.stop()
    state.close()
