"""Chart data for one metric of one device."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Query

from api import schemas
from api.deps import Ctx, guard
from api.errors import ApiError
from ingest.model import ChartQuery
from ingest.victoria import TimeseriesUnavailable
from protocol.catalog import ValueType

router = APIRouter(prefix="/api/v1", tags=["telemetry"])

HOUR_MS = 3_600_000
MAX_MS = 2**53  # beyond any date a chart can mean, and within SQLite's integers


@router.get(
    "/estates/{estate}/devices/{dev}/telemetry",
    response_model=schemas.Telemetry,
    response_model_exclude_unset=True,
    **guard("estate:read"),
)
def device_telemetry(
    estate: str,
    dev: str,
    ctx: Ctx,
    metric: str,
    from_ms: int | None = Query(
        None, alias="from", ge=0, le=MAX_MS, description="epoch ms; default: to - 1 h"
    ),
    to_ms: int | None = Query(
        None, alias="to", ge=0, le=MAX_MS, description="epoch ms; default: now"
    ),
    max_points: int = Query(500, ge=1, le=10_000),
) -> dict[str, Any]:
    """Points of one numeric metric: raw readings for a recent short range, else 1-minute or
    1-hour rollups (min, max, mean, count, last), never more than ``max_points``."""
    device = ctx.state.get_device(estate, dev)
    kind = ctx.catalog.kinds.get(device["kind"])
    m = kind.metrics.get(metric) if kind else None
    if kind is None or m is None:
        known = ", ".join(sorted(kind.metrics)) if kind else ""
        raise ApiError(
            422,
            "unknown_metric",
            f"{device['kind']} has no metric {metric!r}; its metrics: {known}",
        )
    if m.type is ValueType.ENUM:
        raise ApiError(
            422,
            "not_numeric",
            f"{metric} is a state ({', '.join(m.values)}), "
            "not a number: read it from the device's latest values",
        )
    now = time.time_ns() // 1_000_000
    to_ms = now if to_ms is None else to_ms
    from_ms = to_ms - HOUR_MS if from_ms is None else from_ms
    if from_ms >= to_ms:
        raise ApiError(422, "invalid_range", "'from' must be before 'to' (epoch milliseconds)")
    try:
        query = ChartQuery(estate, dev, metric, from_ms, to_ms, max_points, kind.interval_s * 1000)
        body = ctx.telemetry.telemetry(query, now)
    except TimeseriesUnavailable as exc:  # never an empty chart: that would say "no readings"
        raise ApiError(503, "timeseries_unavailable", str(exc)) from exc
    return {
        "estate": estate,
        "device": dev,
        "metric": metric,
        "unit": m.unit,
        "from": from_ms,
        "to": to_ms,
        **body,
    }
