from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from api import schemas
from api.deps import Ctx, guard

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=schemas.Health, **guard("public"))
def healthz(ctx: Ctx, response: Response) -> dict[str, Any]:
    """Liveness and the state of the parts: broker connection, ingest queue, databases, the
    time-series store.
    503 with ``"status": "degraded"`` while a part is down."""
    body: dict[str, Any] = {"status": "ok"}
    body.update(ctx.health())
    # the ingest writer retrying a failing store or stuck in a batch, or the broker down
    writer = body.get("writer")
    writer_stuck = isinstance(writer, dict) and writer.get("ok") is False
    # the time-series store charts are read from (VictoriaMetrics) does not answer
    timeseries_down = body.get("timeseries", {}).get("state") == "down"
    if writer_stuck or _broker_down(body) or timeseries_down:
        body["status"] = "degraded"
        response.status_code = 503
    return body


def _broker_down(body: dict[str, Any]) -> bool:
    # the broker (its process, when the service runs it, and the connection) is down
    broker = body.get("broker")
    return isinstance(broker, dict) and broker.get("state") == "down"


class PrometheusText(Response):
    media_type = CONTENT_TYPE_LATEST


@router.get("/metrics", response_class=PrometheusText, **guard("admin"))
def metrics(ctx: Ctx) -> PrometheusText:
    """Prometheus text format: messages and readings per second, rejects by reason, queue
    depth, commit latency, lost messages and last-seen per gateway."""
    return PrometheusText(ctx.metrics())
