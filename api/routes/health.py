from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import Ctx

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(ctx: Ctx) -> dict[str, Any]:
    """Liveness and the state of the parts: broker connection, ingest queue, databases."""
    body: dict[str, Any] = {"status": "ok"}
    body.update(ctx.health())
    return body
