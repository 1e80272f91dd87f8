"""The yearly statistical report the seed document asks of the authority (年度统计分析报告).

Per estate and in total, for one calendar year in Asia/Shanghai: alarms by family and severity,
mean time to acknowledge and to resolve, trapped-passenger rescue times against the deadline,
fire-equipment availability, device uptime, plan activations by hazard and level, drills held
against the number required, and the alarm-management figures of ISA-18.2 / EEMUA 191
(:mod:`alerts.quality`: alarms per hour, floods, chattering and standing alarms, bad actors,
time to acknowledge; :func:`estate_alarm_quality` also serves the "alarm quality" page per
month). Read from the stores with SQL; shaped as JSON, CSV and XLSX.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from alerts.alarms.model import alarm_durations
from alerts.labels import Labels
from alerts.plans.model import Plan, ResponseLevel
from alerts.quality import CLOCKS, AlarmQuality, RaisedAlarm, alarm_quality
from alerts.rules.spec import Severity
from alerts.tables import activations, alarms, drills, rescues
from ingest.state import StateStore
from protocol import clock
from protocol.catalog import Catalog
from protocol.clock import SHANGHAI

HOUR_MS = 3_600_000
SEVERITIES = tuple(s.value for s in Severity)
# Fire-equipment faults that make it unavailable (a warning is not an outage)
OUTAGE_SEVERITIES = (Severity.CRITICAL.value, Severity.MAJOR.value)

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


def month_bounds(year: int, month: int) -> tuple[int, int]:
    lo = datetime(year, month, 1, tzinfo=SHANGHAI)
    hi = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=SHANGHAI)
    return int(lo.timestamp() * 1000), int(hi.timestamp() * 1000)


def estate_alarm_quality(
    engine: sa.engine.Engine, estate: str, lo: int, hi: int, now_ms: int
) -> tuple[AlarmQuality, list[dict[str, Any]]]:
    """The alarm-management figures of one estate over [lo, hi) (up to now, if it is inside),
    plan activations counting as declared emergencies; and per day (Asia/Shanghai) its new
    alarms and flood windows, for a chart."""
    end = max(lo + 1, min(hi, now_ms))
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                alarms.c.id,
                alarms.c.rule,
                alarms.c.subject,
                alarms.c.fired_ms,
                alarms.c.resolved_ms,
                alarms.c.acked_ms,
                alarms.c.raised_ms,
                alarms.c.resolved_by,
                alarms.c.closed_ms,
            ).where(
                alarms.c.estate == estate,
                alarms.c.fired_ms.is_not(None),
                # began in the period (data time), or reached the control room in it (wall
                # time: a late one from before counts in the operator's load; alerts.quality)
                sa.or_(
                    sa.and_(alarms.c.fired_ms >= lo, alarms.c.fired_ms < end),
                    sa.and_(alarms.c.raised_ms >= lo, alarms.c.raised_ms < end),
                ),
            )
        ).all()
        acts = conn.execute(
            sa.select(activations.c.started_ms, activations.c.ended_ms).where(
                activations.c.estate == estate,
                activations.c.started_ms < end,
                sa.or_(activations.c.ended_ms.is_(None), activations.c.ended_ms > lo),
            )
        ).all()
    raised = [
        RaisedAlarm(
            r.rule,
            r.subject,
            r.fired_ms,
            r.resolved_ms,
            r.acked_ms,
            estate,
            r.id,
            r.raised_ms,
            r.resolved_by,
            r.closed_ms,
        )
        for r in rows
    ]
    q = alarm_quality(raised, lo, end, [(a.started_ms, a.ended_ms or end) for a in acts])
    days: list[dict[str, Any]] = []
    day = datetime.fromtimestamp(lo / 1000, SHANGHAI)
    while int(day.timestamp() * 1000) < end:
        d0 = int(day.timestamp() * 1000)
        day += timedelta(days=1)  # Asia/Shanghai keeps no summer time
        d1 = int(day.timestamp() * 1000)
        days.append(
            {
                "day_ms": d0,
                "alarms": sum(1 for a in raised if d0 <= a.raised_ms < d1),
                "flood_windows": sum(1 for f in q.floods if d0 <= f["start_ms"] < d1),
            }
        )
    return q, days


def rule_names(engine: sa.engine.Engine, estate: str, lo: int, hi: int) -> dict[str, list[str]]:
    """Each rule's summary (zh, en) as its latest alarm in [lo, hi) carried it, for a report
    that names rules in words rather than by their ids."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(alarms.c.rule, alarms.c.summary_zh, alarms.c.summary_en)
            .where(alarms.c.estate == estate, alarms.c.started_ms >= lo, alarms.c.started_ms < hi)
            .order_by(alarms.c.started_ms)
        ).all()
    return {r.rule: [r.summary_zh, r.summary_en] for r in rows}


def _quality_block(q: AlarmQuality) -> dict[str, Any]:
    """What the yearly report keeps of the figures: the numbers, the worst offenders."""
    return {
        "per_hour": round(q.per_hour, 3),
        "per_10min_outside_emergencies": round(q.per_10min_outside_emergencies, 3),
        "flood_windows": q.flood_windows,
        "flood_share_pct": round(100 * q.flood_share, 3),
        "peak_10min": q.peak_10min,
        "chattering": q.chattering,
        "stale": q.stale,
        "top": q.top,
        "ack_p50_min": None if q.ack_p50_s is None else round(q.ack_p50_s / 60, 1),
        "ack_p90_min": None if q.ack_p90_s is None else round(q.ack_p90_s / 60, 1),
        "clocks": CLOCKS,
    }


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
                alarms.c.resolved_ms,
                alarms.c.raised_ms,
                alarms.c.acked_ms,
                alarms.c.closed_ms,
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
    for kind, severity, _subject, fired, resolved, raised, acked, closed in rows:
        fam = families.get(kind, "other")
        by_family.setdefault(fam, {s: 0 for s in SEVERITIES})
        by_family[fam][severity] = by_family[fam].get(severity, 0) + 1
        took = alarm_durations(raised, acked, closed)  # the one definition, as the API's
        if took["to_ack_ms"] is not None:
            ack_times.append(took["to_ack_ms"])
        if took["to_resolve_ms"] is not None:
            resolve_times.append(took["to_resolve_ms"])
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
    # Devices first seen in the period have stored readings in it (that is how they came to
    # be); no hour of theirs in the rollups yet means the rollup has not reached them (a new
    # estate): not measured yet, rather than a false 0 %.
    uptime_pending = not hours and any(lo <= d["first_seen_ms"] < end for d in devices)

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
        # The level's name (a Ⅲ is "III"); the stored number counts the other way (Ⅰ = 4).
        roman = ResponseLevel(int(level)).name
        activations_by.setdefault(plan, {})
        activations_by[plan][roman] = activations_by[plan].get(roman, 0) + 1
    quality, _days = estate_alarm_quality(engine, eid, lo, hi, now_ms)
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
            round(100 * min(1.0, seen_hours / expected_hours), 2)
            if expected_hours and not uptime_pending
            else None
        ),
        "device_uptime_pending": uptime_pending,
        "activations": activations_by,
        "alarm_quality": {**_quality_block(quality), "rule_names": rule_names(engine, eid, lo, hi)},
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
        "name": "合计",
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
        # pending only while no estate's uptime is measured yet
        "device_uptime_pending": all(p["device_uptime_pending"] for p in parts) and bool(parts),
        "activations": acts,
        "alarm_quality": _total_quality(parts),
        "drills": list(drills_.values()),
    }


def _total_quality(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Rates are per estate, so the total's are the estates' means; lists are joined (each
    entry names its estate), the bad actors re-ranked over all."""
    qs = [p["alarm_quality"] for p in parts]

    def mean(key: str) -> float | None:
        vals = [q[key] for q in qs if q[key] is not None]
        return round(sum(vals) / len(vals), 3) if vals else None

    def joined(key: str) -> list[dict[str, Any]]:
        return [{"estate": p["estate"], **x} for p in parts for x in p["alarm_quality"][key]]

    total_alarms = sum(p["alarms_total"] for p in parts)
    top = sorted(joined("top"), key=lambda x: -x["alarms"])[:10]
    for x in top:
        x["share"] = round(x["alarms"] / total_alarms, 6) if total_alarms else 0.0
    return {
        "per_hour": mean("per_hour"),
        "per_10min_outside_emergencies": mean("per_10min_outside_emergencies"),
        "flood_windows": sum(q["flood_windows"] for q in qs),
        "flood_share_pct": mean("flood_share_pct"),
        "peak_10min": max((q["peak_10min"] for q in qs), default=0),
        "chattering": joined("chattering"),
        "stale": joined("stale"),
        "top": top,
        "ack_p50_min": mean("ack_p50_min"),
        "ack_p90_min": mean("ack_p90_min"),
        "clocks": CLOCKS,
    }


def yearly_report(
    inp: ReportInputs,
    year: int,
    estates: list[dict[str, Any]] | None = None,
    now_ms: int | None = None,
) -> dict[str, Any]:
    now = clock.now_ms() if now_ms is None else now_ms
    chosen = estates if estates is not None else inp.state.list_estates()
    parts = [estate_report(inp, e, year, now) for e in chosen]
    return {
        "year": year,
        "generated_ms": now,
        "estates": parts,
        "total": _total(parts, inp.rescue_deadline_min),
        "plan_names": {pid: {"zh": p.name_zh, "en": p.name_en} for pid, p in inp.plans.items()},
    }


COLUMNS = [
    "estate",
    "name",
    "region",
    "devices",
    "alarms_total",
    "mean_ack_min",
    "mean_resolve_min",
    "rescues.count",
    "rescues.mean_arrival_min",
    "rescues.max_arrival_min",
    "rescues.mean_min",
    "rescues.max_min",
    "rescues.within_deadline",
    "rescues.breached",
    "fire_availability_pct",
    "device_uptime_pct",
    "activations_total",
    "alarm_quality.per_hour",
    "alarm_quality.flood_windows",
    "chattering_count",
    "stale_count",
    "alarm_quality.ack_p50_min",
    "drills_held",
    "drills_required",
]
ROMAN = {lvl.name: lvl.roman for lvl in ResponseLevel if lvl}


class _Words:
    """The downloads' words in one language, from the labels everyone uses."""

    def __init__(self, report: dict[str, Any], lang: str, catalog: Catalog | None) -> None:
        from protocol.catalog import default_catalog

        self.lang = lang
        self.labels = Labels(catalog or default_catalog())
        self.plan_names: dict[str, dict[str, str]] = report.get("plan_names", {})

    def col(self, key: str, **vars: Any) -> str:
        return self.labels.text(f"report.csv.{key}", self.lang, key, **vars)

    def estate(self, part: dict[str, Any]) -> str:
        if part["estate"] == "total":
            return self.labels.text("report.total", self.lang)
        return str(part["name"] or part["estate"])

    def plan(self, pid: str) -> str:
        names = self.plan_names.get(pid)
        if not names:
            return pid
        return names["zh"] if self.lang == "zh-CN" else names["en"]

    def rule(self, quality: dict[str, Any], rule: str) -> str:
        """A rule as people read it: the summary its alarms carried, in this language."""
        names = quality.get("rule_names", {}).get(rule)
        return rule if not names else names[0] if self.lang == "zh-CN" else names[1]

    def level(self, name: str) -> str:
        return self.labels.level(ROMAN.get(name, name), self.lang)


def _flat(part: dict[str, Any], words: _Words) -> list[Any]:
    row: list[Any] = []
    for key in COLUMNS:
        if key == "activations_total":
            row.append(sum(sum(v.values()) for v in part["activations"].values()))
        elif key == "chattering_count":
            row.append(len(part["alarm_quality"]["chattering"]))
        elif key == "stale_count":
            row.append(len(part["alarm_quality"]["stale"]))
        elif key == "drills_held":
            row.append(sum(d["held"] for d in part["drills"]))
        elif key == "drills_required":
            row.append(sum(d["required"] for d in part["drills"]))
        elif key == "name":
            row.append(words.estate(part))
        elif "." in key:
            a, b = key.split(".")
            row.append(part[a][b])
        else:
            row.append(part[key])
    return ["" if v is None else v for v in row]


def to_csv(report: dict[str, Any], lang: str = "zh-CN", catalog: Catalog | None = None) -> str:
    """One row per estate and the total, headed in one language (zh-CN by default)."""
    words = _Words(report, lang, catalog)
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow([words.col(key) for key in COLUMNS])
    for part in [*report["estates"], report["total"]]:
        w.writerow(_flat(part, words))
    return "\ufeff" + out.getvalue()  # BOM: Excel opens UTF-8 Chinese correctly


def _cells(values: list[Any]) -> list[Any]:
    # A worksheet cannot hold control characters: drop them rather than fail the download.
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    return [ILLEGAL_CHARACTERS_RE.sub("", v) if isinstance(v, str) else v for v in values]


def to_xlsx(report: dict[str, Any], lang: str = "zh-CN", catalog: Catalog | None = None) -> bytes:
    """The summary, then alarms by system and severity, plan activations by level, drills:
    in one language, estates by name, plans by name, levels as people say them."""
    from openpyxl import Workbook  # here: ~6 MB resident the service needs only for this
    from openpyxl.styles import Font

    words = _Words(report, lang, catalog)
    lb = words.labels
    wb = Workbook()
    ws = wb.active
    ws.title = words.col("sheet.summary")
    ws.append([words.col("heading", year=report["year"])])
    ws["A1"].font = Font(bold=True, size=14)
    ws.append([words.col(key) for key in COLUMNS])
    for cell in ws[2]:
        cell.font = Font(bold=True)
    parts = [*report["estates"], report["total"]]
    for part in parts:
        ws.append(_cells(_flat(part, words)))
    al = wb.create_sheet(words.col("sheet.alarms"))
    al.append([words.col("name"), words.col("family"), *(lb.severity(s, lang) for s in SEVERITIES)])
    for part in parts:
        for fam, sev in sorted(part["alarms"].items()):
            al.append(
                _cells(
                    [words.estate(part), lb.family(fam, lang), *(sev.get(s, 0) for s in SEVERITIES)]
                )
            )
    pl = wb.create_sheet(words.col("sheet.plans"))
    pl.append(
        [
            words.col("name"),
            words.col("plan"),
            lb.text("report.level", lang),
            words.col("activations"),
        ]
    )
    order = {lvl.name: -int(lvl) for lvl in ResponseLevel}
    for part in parts:
        for plan, levels in sorted(part["activations"].items()):
            for level, n in sorted(levels.items(), key=lambda x: order.get(x[0], 0)):
                pl.append(_cells([words.estate(part), words.plan(plan), words.level(level), n]))
    dr = wb.create_sheet(words.col("sheet.drills"))
    dr.append(
        [
            words.col("name"),
            words.col("plan"),
            words.col("drills_held"),
            words.col("drills_required"),
            words.col("drills_short"),
        ]
    )
    for part in parts:
        for d in part["drills"]:
            dr.append(
                _cells(
                    [
                        words.estate(part),
                        words.plan(d["plan"]),
                        d["held"],
                        d["required"],
                        d["short"],
                    ]
                )
            )
    aq = wb.create_sheet(words.col("sheet.quality"))
    aq.append([words.col("quality.heading")])
    aq["A1"].font = Font(bold=True)
    aq.append([words.col("quality.clocks")])  # which clock each figure counts on
    aq.append(
        [
            words.col("name"),
            *(words.col(f"quality.{c}") for c in ("what", "rule", "subject", "alarms", "detail")),
        ]
    )
    for part in report["estates"]:
        q = part["alarm_quality"]
        name = words.estate(part)
        for x in q["top"]:
            aq.append(
                _cells(
                    [
                        name,
                        words.col("quality.top"),
                        words.rule(q, x["rule"]),
                        x["subject"],
                        x["alarms"],
                        f"{100 * x['share']:.1f}%",
                    ]
                )
            )
        for x in q["chattering"]:
            row = [
                name,
                words.col("quality.chattering"),
                words.rule(q, x["rule"]),
                x["subject"],
                x["alarms"],
            ]
            aq.append(_cells([*row, words.col("quality.in_60s", n=x["in_60s"])]))
        for x in q["stale"]:
            detail = words.col("quality.hours", h=x["active_h"])
            if x["open"]:
                detail += " " + words.col("quality.open")
            aq.append(
                _cells(
                    [
                        name,
                        words.col("quality.stale"),
                        words.rule(q, x["rule"]),
                        x["subject"],
                        1,
                        detail,
                    ]
                )
            )
        peak = words.col("quality.peak", n=q["peak_10min"])
        aq.append(_cells([name, words.col("quality.floods"), "", "", q["flood_windows"], peak]))
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()
