"""The yearly report, right (issue 13): plan levels as they were, uptime from registration,
no English in the Chinese downloads, estates by name."""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime
from pathlib import Path

from openpyxl import load_workbook

from alerts.alarms.model import Alarm, AlarmState
from alerts.engine import AlertEngine
from alerts.plans.activation import PlanActivation
from alerts.plans.model import ResponseLevel
from alerts.rules.spec import Severity
from alerts.store import AlertStore, StoreBatch
from ingest.state import StateStore
from protocol.catalog import default_catalog
from protocol.clock import SHANGHAI
from supervision.report import ReportInputs, to_csv, to_xlsx, yearly_report

CAT = default_catalog()
T0 = int(datetime(2026, 3, 2, 9, 0, tzinfo=SHANGHAI).timestamp() * 1000)
HOUR = 3_600_000
# Latin words a Chinese download may still hold: ids, codes of devices, the product's name
ALLOWED = {"north", "total", "gw"}  # ids are codes: the estate's, a device's ("gw-01")


def _setup(tmp_path: Path) -> tuple[StateStore, AlertEngine]:
    state = StateStore.open(f"sqlite:///{tmp_path / 's.db'}")
    state.add_estate("north", "北苑小区", "呼伦贝尔市")
    state.add_gateway("north", "gw-01")
    engine = AlertEngine(state.engine, CAT, clock=lambda: T0)
    return state, engine


def _activations(store: AlertStore, levels: list[ResponseLevel]) -> None:
    batch = StoreBatch()
    for i, lvl in enumerate(levels):
        act = PlanActivation(
            f"pa-{i}", "north", "snowstorm", lvl, T0 + i * HOUR, T0 + i * HOUR, 2 * HOUR,
            max_level=lvl, levels_reached=[int(lvl)], ended_ms=T0 + i * HOUR + 60_000,
        )  # fmt: skip
        batch.activations[act.id] = act
    store.write(batch)


def test_plan_levels_export_as_they_were_activated(tmp_path: Path) -> None:
    """Before: the number stored (Ⅰ = 4 … Ⅳ = 1) was read the other way round, so a Ⅲ
    activation exported as "II"."""
    state, engine = _setup(tmp_path)
    known = [ResponseLevel.IV, ResponseLevel.III, ResponseLevel.III, ResponseLevel.I]
    _activations(engine.store, known)
    report = yearly_report(
        ReportInputs(state, CAT, engine.plans, lambda *_: {}), 2026, now_ms=T0 + 10 * HOUR
    )
    (north,) = report["estates"]
    assert north["activations"] == {"snowstorm": {"IV": 1, "III": 2, "I": 1}}
    wb = load_workbook(io.BytesIO(to_xlsx(report)))
    rows = [tuple(c.value for c in r) for r in wb["预案"].iter_rows(min_row=2)]
    mine = [(lvl, n) for est, plan, lvl, n in rows if est == "北苑小区"]
    assert mine == [("Ⅰ级响应", 1), ("Ⅲ级响应", 2), ("Ⅳ级响应", 1)]
    assert {plan for _, plan, _, _ in rows} == {"暴雪应急预案"} or all(
        re.search("[\u4e00-\u9fff]", plan) for _, plan, _, _ in rows
    )
    engine.stop()
    state.close()


def test_uptime_counts_from_the_devices_registration(tmp_path: Path) -> None:
    state, engine = _setup(tmp_path)
    # registered 10 hours before the report; data in 10 of those hours: all up
    state.add_devices([("north", "lift-1", "elevator", "gw-01", T0)])
    report = yearly_report(
        ReportInputs(state, CAT, engine.plans, lambda *_: {"lift-1": 10}),
        2026,
        now_ms=T0 + 10 * HOUR,
    )
    assert report["estates"][0]["device_uptime_pct"] == 100.0
    engine.stop()
    state.close()


def test_the_chinese_downloads_hold_no_english(tmp_path: Path) -> None:
    state, engine = _setup(tmp_path)
    _activations(engine.store, [ResponseLevel.III])
    alarm = Alarm(
        "al-1", "x-rule", "north", "gw-01", "gateway", "gw-01", Severity.MAJOR,
        AlarmState.RESOLVED, "网关离线", "Gateway offline", T0, T0, fired_ms=T0, raised_ms=T0,
        acked_ms=T0 + 60_000, resolved_ms=T0 + 120_000, closed_ms=T0 + 120_000,
    )  # fmt: skip
    engine.store.write(StoreBatch(alarms={alarm.id: alarm}))
    report = yearly_report(
        ReportInputs(state, CAT, engine.plans, lambda *_: {}), 2026, now_ms=T0 + 10 * HOUR
    )
    (north,) = report["estates"]
    assert north["alarms"] == {"other": {"critical": 0, "major": 1, "minor": 0, "warning": 0}}
    texts = [cell for row in csv.reader(io.StringIO(to_csv(report))) for cell in row]
    wb = load_workbook(io.BytesIO(to_xlsx(report)))
    texts += list(wb.sheetnames)
    for ws in wb.worksheets:
        texts += [str(c.value) for row in ws.iter_rows() for c in row if c.value is not None]
    english = {w for t in texts for w in re.findall(r"[A-Za-z]{2,}", t)} - ALLOWED
    assert not english, english
    assert "北苑小区" in texts and "其他" in texts and "重要" in texts
    # and English throughout when asked
    en = load_workbook(io.BytesIO(to_xlsx(report, "en")))
    assert en.sheetnames == ["Summary", "Alarms", "Plans", "Drills", "Alarm quality"]
    engine.stop()
    state.close()
