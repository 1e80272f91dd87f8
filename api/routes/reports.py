"""The yearly statistical report, as JSON for the page and as CSV and XLSX downloads."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from alerts.plans.model import load_plans
from alerts.store import AlertStore
from api.deps import Ctx, guard
from supervision.report import SHANGHAI, ReportInputs, to_csv, to_xlsx, yearly_report

router = APIRouter(prefix="/api/v1/reports", tags=["supervision"])

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@router.get("/yearly", **guard("authority"), response_model=None)
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
    if ctx.alerts is not None:
        plans = ctx.alerts.plans
    else:  # an API-only process: the alert tables may not have been made by a shard yet
        AlertStore(ctx.state.engine).migrate(time.time_ns() // 1_000_000)
        plans = load_plans()
    inputs = ReportInputs(ctx.state, ctx.catalog, plans, ctx.telemetry.hours_with_data)
    report = yearly_report(inputs, year, now_ms=time.time_ns() // 1_000_000)
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
