from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import Ctx, guard

router = APIRouter(tags=["health"])


@router.get("/healthz", **guard("public"))
def healthz(ctx: Ctx) -> dict[str, Any]:
    """Liveness and the state of the parts: broker connection, ingest queue, databases."""
    body: dict[str, Any] = {"status": "ok"}
    body.update(ctx.health())
    # the ingest writer: retrying a failing store, or stuck in a batch (issue 12)
    writer = body.get("writer")
    if isinstance(writer, dict) and writer.get("ok") is False:
        body["status"] = "degraded"
    return body


@router.get("/metrics", **guard("admin"))
def metrics(ctx: Ctx) -> Response:
    """Prometheus text format: messages and readings per second, rejects by reason, queue
    depth, commit latency, lost messages and last-seen per gateway."""
    return Response(ctx.metrics(), media_type=CONTENT_TYPE_LATEST)
