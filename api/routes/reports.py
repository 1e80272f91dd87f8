"""The yearly statistical report, as JSON for the page and as CSV and XLSX downloads."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from alerts.plans.model import load_plans
from api import schemas
from api.deps import Ctx, guard
from api.errors import ApiError
from ingest.victoria import TimeseriesUnavailable
from protocol.clock import SHANGHAI
from supervision.report import (
    ReportInputs,
    estate_alarm_quality,
    month_bounds,
    to_csv,
    to_xlsx,
    yearly_report,
)

router = APIRouter(prefix="/api/v1/reports", tags=["supervision"])
quality_router = APIRouter(prefix="/api/v1", tags=["supervision"])

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@router.get(
    "/yearly",
    response_model=schemas.YearlyReport,
    responses={200: {"content": {"text/csv": {}, XLSX: {}}}},
    **guard("authority"),
)
def yearly(
    ctx: Ctx,
    year: int | None = Query(None, ge=2000, le=2100, description="default: this year"),
    format: Literal["json", "csv", "xlsx"] = "json",
    lang: Literal["zh-CN", "en"] = Query("zh-CN", description="language of CSV and XLSX"),
) -> dict[str, Any] | Response:
    """Per estate and in total: alarms by family and severity, mean time to acknowledge and
    resolve, rescue times against the 30-minute deadline, fire-equipment availability, device
    uptime, plan activations by hazard and level, drills held against required."""
    year = year or datetime.now(SHANGHAI).year
    # an API-only process has no engine: the plans from their files (the alert tables were
    # made when the app was, see api.app)
    plans = ctx.alerts.plans if ctx.alerts is not None else load_plans()
    inputs = ReportInputs(ctx.state, ctx.catalog, plans, ctx.telemetry.hours_with_data)
    try:
        report = yearly_report(inputs, year, now_ms=time.time_ns() // 1_000_000)
    except TimeseriesUnavailable as exc:  # uptime hours are read from the store
        raise ApiError(503, "timeseries_unavailable", str(exc)) from exc
    name = f"estatewatch-report-{year}"
    if format == "csv":
        return Response(
            to_csv(report, lang, ctx.catalog),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    if format == "xlsx":
        return Response(
            to_xlsx(report, lang, ctx.catalog),
            media_type=XLSX,
            headers={"Content-Disposition": f'attachment; filename="{name}.xlsx"'},
        )
    return report


@quality_router.get(
    "/alarm-quality",
    response_model=schemas.EstateQuality | schemas.QualityTable,
    **guard("authority"),
)
def alarm_quality(
    ctx: Ctx,
    estate: str | None = Query(None, max_length=63, description="default: every estate"),
    month: str | None = Query(
        None, pattern=r"^20\d{2}-(0[1-9]|1[0-2])$", description="YYYY-MM; default: this month"
    ),
) -> dict[str, Any]:
    """The alarm-management figures of ISA-18.2 / EEMUA 191 for one month (Asia/Shanghai):
    alarms per hour and per 10 minutes outside declared emergencies (plan activations),
    10-minute windows in flood (> 10 new alarms), chattering alarms (3+ in 60 s), standing
    alarms (active > 24 h), the ten most frequent alarms with their share, time to
    acknowledge. With ``estate``: that estate's figures and its alarms per day; without: one
    line per estate."""
    now = time.time_ns() // 1_000_000
    if month:
        year, mon = (int(x) for x in month.split("-"))
    else:
        today = datetime.now(SHANGHAI)
        year, mon = today.year, today.month
    lo, hi = month_bounds(year, mon)
    if lo >= now:
        raise ApiError(422, "invalid_request", f"month {year:04d}-{mon:02d} has not begun")
    estates = ctx.state.list_estates()
    head = {"month": f"{year:04d}-{mon:02d}", "start_ms": lo, "end_ms": min(hi, now)}
    if estate is not None:
        found = next((e for e in estates if e["id"] == estate), None)
        if found is None:
            raise ApiError(404, "not_found", f"estate {estate!r} not found")
        q, days = estate_alarm_quality(ctx.state.engine, estate, lo, hi, now)
        return {
            **head,
            "estate": estate,
            "name": found["name"],
            "quality": q.as_dict(),
            "days": days,
        }
    items = []
    for e in estates:
        q, _ = estate_alarm_quality(ctx.state.engine, e["id"], lo, hi, now)
        d = q.as_dict()
        items.append(
            {
                "estate": e["id"],
                "name": e["name"],
                **{k: d[k] for k in ("alarms", "per_hour", "per_10min_outside_emergencies")},
                **{k: d[k] for k in ("flood_windows", "peak_10min", "ack_p50_s")},
                "chattering": len(q.chattering),
                "stale": len(q.stale),
                "top": q.top[:1],
            }
        )
    return {**head, "items": items}
