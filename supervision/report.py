"""The yearly statistical report the seed document asks of the authority (年度统计分析报告).

Per estate and in total, for one calendar year in Asia/Shanghai: alarms by family and severity,
mean time to acknowledge and to resolve, trapped-passenger rescue times against the deadline,
fire-equipment availability, device uptime, plan activations by hazard and level, drills held
against the number required. Read from the stores with SQL; shaped as JSON, CSV and XLSX.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Font

from alerts.plans.model import Plan
from alerts.store import activations, alarms, drills, rescues
from ingest.state import StateStore
from protocol.catalog import Catalog

SHANGHAI = ZoneInfo("Asia/Shanghai")
HOUR_MS = 3_600_000
SEVERITIES = ("critical", "major", "minor", "warning")
# Fire-equipment faults that make it unavailable (a warning is not an outage)
OUTAGE_SEVERITIES = ("critical", "major")

# device -> hours with data in [lo, hi), for one estate (from the telemetry rollups)
HoursWithData = Callable[[str, int, int], dict[str, int]]


def year_bounds(year: int) -> tuple[int, int]:
    lo = datetime(year, 1, 1, tzinfo=SHANGHAI)
    hi = datetime(year + 1, 1, 1, tzinfo=SHANGHAI)
    return int(lo.timestamp() * 1000), int(hi.timestamp() * 1000)


@dataclass
class ReportInputs:
    state: StateStore
    catalog: Catalog
    plans: dict[str, Plan]
    hours_with_data: HoursWithData
    rescue_deadline_min: int = 30


def _minutes(ms: float | None) -> float | None:
    return None if ms is None else round(ms / 60_000, 1)


def _overlap(a0: int, a1: int, b0: int, b1: int) -> int:
    return max(0, min(a1, b1) - max(a0, b0))


def estate_report(
    inp: ReportInputs, estate: dict[str, Any], year: int, now_ms: int
) -> dict[str, Any]:
    lo, hi = year_bounds(year)
    end = min(hi, now_ms)
    eid = estate["id"]
    families = {k: v.family for k, v in inp.catalog.kinds.items()}
    engine = inp.state.engine
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                alarms.c.kind,
                alarms.c.severity,
                alarms.c.subject,
                alarms.c.fired_ms,
                alarms.c.acked_ms,
                alarms.c.resolved_ms,
            ).where(alarms.c.estate == eid, alarms.c.fired_ms >= lo, alarms.c.fired_ms < hi)
        ).all()
        rescue_rows = conn.execute(
            sa.select(
                rescues.c.trapped_ms,
                rescues.c.released_ms,
                rescues.c.duration_ms,
                rescues.c.breached,
                rescues.c.arrived_ms,
            ).where(rescues.c.estate == eid, rescues.c.trapped_ms >= lo, rescues.c.trapped_ms < hi)
        ).all()
        act_rows = conn.execute(
            sa.select(activations.c.plan, activations.c.max_level).where(
                activations.c.estate == eid,
                activations.c.started_ms >= lo,
                activations.c.started_ms < hi,
            )
        ).all()
        drill_rows = conn.execute(
            sa.select(drills.c.plan, sa.func.count())
            .where(
                drills.c.estate == eid,
                drills.c.status == "held",
                drills.c.held_ms >= lo,
                drills.c.held_ms < hi,
            )
            .group_by(drills.c.plan)
        ).all()

    by_family: dict[str, dict[str, int]] = {}
    ack_times, resolve_times = [], []
    fire_down_ms = 0
    for kind, severity, _subject, fired, acked, resolved in rows:
        fam = families.get(kind, "other")
        by_family.setdefault(fam, {s: 0 for s in SEVERITIES})
        by_family[fam][severity] = by_family[fam].get(severity, 0) + 1
        if acked is not None:
            ack_times.append(acked - fired)
        if resolved is not None:
            resolve_times.append(resolved - fired)
        if fam == "fire" and severity in OUTAGE_SEVERITIES:
            fire_down_ms += _overlap(fired, resolved or end, lo, end)

    devices = inp.state.list_devices(eid)
    fire_devices = [d for d in devices if families.get(d["kind"]) == "fire"]
    fire_device_ms = sum(_overlap(d["first_seen_ms"], end, lo, end) for d in fire_devices)
    hours = inp.hours_with_data(eid, lo, end)
    expected_hours = sum(_overlap(d["first_seen_ms"], end, lo, end) for d in devices) / HOUR_MS
    seen_hours = sum(
        min(hours.get(d["id"], 0), _overlap(d["first_seen_ms"], end, lo, end) / HOUR_MS + 1)
        for d in devices
    )

    durations = [r.duration_ms for r in rescue_rows if r.duration_ms is not None]
    # The deadline is about the technician's arrival (TSG T5002-2017); a release with no
    # arrival recorded stands for it.
    arrivals = [
        (r.arrived_ms or r.released_ms) - r.trapped_ms
        for r in rescue_rows
        if (r.arrived_ms or r.released_ms) is not None
    ]
    deadline = inp.rescue_deadline_min * 60_000
    plans_held = {p: int(n) for p, n in drill_rows}
    activations_by: dict[str, dict[str, int]] = {}
    for plan, level in act_rows:
        roman = {4: "IV", 3: "III", 2: "II", 1: "I"}.get(int(level), str(level))
        activations_by.setdefault(plan, {})
        activations_by[plan][roman] = activations_by[plan].get(roman, 0) + 1
    return {
        "estate": eid,
        "name": estate["name"],
        "region": estate["region"],
        "devices": len(devices),
        "alarms_total": len(rows),
        "alarms": by_family,
        "mean_ack_min": _minutes(sum(ack_times) / len(ack_times)) if ack_times else None,
        "mean_resolve_min": (
            _minutes(sum(resolve_times) / len(resolve_times)) if resolve_times else None
        ),
        "rescues": {
            "count": len(rescue_rows),
            "released": len(durations),
            "mean_min": _minutes(sum(durations) / len(durations)) if durations else None,
            "max_min": _minutes(max(durations)) if durations else None,
            "arrived": len(arrivals),
            "mean_arrival_min": _minutes(sum(arrivals) / len(arrivals)) if arrivals else None,
            "max_arrival_min": _minutes(max(arrivals)) if arrivals else None,
            "within_deadline": sum(1 for d in arrivals if d <= deadline),
            "breached": sum(1 for r in rescue_rows if r.breached),
            "deadline_min": inp.rescue_deadline_min,
        },
        "fire_availability_pct": (
            round(100 * (1 - fire_down_ms / fire_device_ms), 2) if fire_device_ms else None
        ),
        "device_uptime_pct": (
            round(100 * min(1.0, seen_hours / expected_hours), 2) if expected_hours else None
        ),
        "activations": activations_by,
        "drills": [
            {
                "plan": pid,
                "plan_name": plan.name_zh,
                "held": plans_held.get(pid, 0),
                "required": plan.drills_per_year,
                "short": max(0, plan.drills_per_year - plans_held.get(pid, 0)),
            }
            for pid, plan in sorted(inp.plans.items())
        ],
    }


def _total(parts: list[dict[str, Any]], deadline_min: int) -> dict[str, Any]:
    """Sums, and means weighted by what they are means of."""

    def wmean(key: str, weight: Callable[[dict[str, Any]], float]) -> float | None:
        pairs = [(p[key], weight(p)) for p in parts if p[key] is not None and weight(p)]
        w = sum(x for _, x in pairs)
        return round(sum(v * x for v, x in pairs) / w, 2) if w else None

    alarms_by: dict[str, dict[str, int]] = {}
    acts: dict[str, dict[str, int]] = {}
    for p in parts:
        for fam, sev in p["alarms"].items():
            tgt = alarms_by.setdefault(fam, {s: 0 for s in SEVERITIES})
            for s, n in sev.items():
                tgt[s] = tgt.get(s, 0) + n
        for plan, lv in p["activations"].items():
            tgt = acts.setdefault(plan, {})
            for level, n in lv.items():
                tgt[level] = tgt.get(level, 0) + n
    rescues_ = [p["rescues"] for p in parts]
    released = sum(r["released"] for r in rescues_)
    arrived = sum(r["arrived"] for r in rescues_)
    drills_: dict[str, dict[str, Any]] = {}
    for p in parts:
        for d in p["drills"]:
            t = drills_.setdefault(d["plan"], {**d, "held": 0, "required": 0, "short": 0})
            t["held"] += d["held"]
            t["required"] += d["required"]
            t["short"] += d["short"]
    return {
        "estate": "total",
        "name": "合计 Total",
        "region": "",
        "devices": sum(p["devices"] for p in parts),
        "alarms_total": sum(p["alarms_total"] for p in parts),
        "alarms": alarms_by,
        "mean_ack_min": wmean("mean_ack_min", lambda p: p["alarms_total"]),
        "mean_resolve_min": wmean("mean_resolve_min", lambda p: p["alarms_total"]),
        "rescues": {
            "count": sum(r["count"] for r in rescues_),
            "released": released,
            "mean_min": (
                round(sum((r["mean_min"] or 0) * r["released"] for r in rescues_) / released, 1)
                if released
                else None
            ),
            "max_min": max(
                (r["max_min"] for r in rescues_ if r["max_min"] is not None), default=None
            ),
            "arrived": arrived,
            "mean_arrival_min": (
                round(
                    sum((r["mean_arrival_min"] or 0) * r["arrived"] for r in rescues_) / arrived,
                    1,
                )
                if arrived
                else None
            ),
            "max_arrival_min": max(
                (r["max_arrival_min"] for r in rescues_ if r["max_arrival_min"] is not None),
                default=None,
            ),
            "within_deadline": sum(r["within_deadline"] for r in rescues_),
            "breached": sum(r["breached"] for r in rescues_),
            "deadline_min": deadline_min,
        },
        "fire_availability_pct": wmean("fire_availability_pct", lambda p: p["devices"]),
        "device_uptime_pct": wmean("device_uptime_pct", lambda p: p["devices"]),
        "activations": acts,
        "drills": list(drills_.values()),
    }


def yearly_report(
    inp: ReportInputs,
    year: int,
    estates: list[dict[str, Any]] | None = None,
    now_ms: int | None = None,
) -> dict[str, Any]:
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    chosen = estates if estates is not None else inp.state.list_estates()
    parts = [estate_report(inp, e, year, now) for e in chosen]
    return {
        "year": year,
        "generated_ms": now,
        "estates": parts,
        "total": _total(parts, inp.rescue_deadline_min),
    }


COLUMNS = [
    ("estate", "小区 estate"),
    ("name", "名称 name"),
    ("region", "地区 region"),
    ("devices", "设备数 devices"),
    ("alarms_total", "告警数 alarms"),
    ("mean_ack_min", "平均确认时间(分) mean time to acknowledge (min)"),
    ("mean_resolve_min", "平均处置时间(分) mean time to resolve (min)"),
    ("rescues.count", "困人次数 entrapments"),
    ("rescues.mean_arrival_min", "平均到场时间(分) mean technician arrival (min)"),
    ("rescues.max_arrival_min", "最长到场时间(分) latest technician arrival (min)"),
    ("rescues.mean_min", "平均救出时间(分) mean release (min)"),
    ("rescues.max_min", "最长救出时间(分) longest release (min)"),
    ("rescues.within_deadline", "时限内到场 arrived within deadline"),
    ("rescues.breached", "超时 deadline breached"),
    ("fire_availability_pct", "消防设施完好率% fire-equipment availability %"),
    ("device_uptime_pct", "设备在线率% device uptime %"),
    ("activations_total", "预案启动次数 plan activations"),
    ("drills_held", "演练次数 drills held"),
    ("drills_required", "应演练次数 drills required"),
]


def _flat(part: dict[str, Any]) -> list[Any]:
    row = []
    for key, _ in COLUMNS:
        if key == "activations_total":
            row.append(sum(sum(v.values()) for v in part["activations"].values()))
        elif key == "drills_held":
            row.append(sum(d["held"] for d in part["drills"]))
        elif key == "drills_required":
            row.append(sum(d["required"] for d in part["drills"]))
        elif "." in key:
            a, b = key.split(".")
            row.append(part[a][b])
        else:
            row.append(part[key])
    return ["" if v is None else v for v in row]


def to_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow([label for _, label in COLUMNS])
    for part in [*report["estates"], report["total"]]:
        w.writerow(_flat(part))
    return "\ufeff" + out.getvalue()  # BOM: Excel opens UTF-8 Chinese correctly


def _cells(values: list[Any]) -> list[Any]:
    # A worksheet cannot hold control characters: drop them rather than fail the download.
    return [ILLEGAL_CHARACTERS_RE.sub("", v) if isinstance(v, str) else v for v in values]


def to_xlsx(report: dict[str, Any]) -> bytes:
    wb = Workbook()
    ws = wb.active
    ws.title = "汇总 Summary"
    ws.append([f"{report['year']} 年度统计分析报告 · yearly statistical report"])
    ws["A1"].font = Font(bold=True, size=14)
    ws.append([label for _, label in COLUMNS])
    for cell in ws[2]:
        cell.font = Font(bold=True)
    for part in [*report["estates"], report["total"]]:
        ws.append(_cells(_flat(part)))
    al = wb.create_sheet("告警 Alarms")
    al.append(["小区 estate", "系统 family", *(f"{s}" for s in SEVERITIES)])
    for part in [*report["estates"], report["total"]]:
        for fam, sev in sorted(part["alarms"].items()):
            al.append(_cells([part["estate"], fam, *(sev.get(s, 0) for s in SEVERITIES)]))
    pl = wb.create_sheet("预案 Plans")
    pl.append(["小区 estate", "预案 plan", "级别 level", "次数 activations"])
    for part in [*report["estates"], report["total"]]:
        for plan, levels in sorted(part["activations"].items()):
            for level, n in sorted(levels.items()):
                pl.append(_cells([part["estate"], plan, level, n]))
    dr = wb.create_sheet("演练 Drills")
    dr.append(
        ["小区 estate", "预案 plan", "名称 name", "已演练 held", "应演练 required", "欠缺 short"]
    )
    for part in [*report["estates"], report["total"]]:
        for d in part["drills"]:
            dr.append(
                _cells(
                    [
                        part["estate"],
                        d["plan"],
                        d["plan_name"],
                        d["held"],
                        d["required"],
                        d["short"],
                    ]
                )
            )
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()
