"""Messages and readings that were not stored, with the reason."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from api import schemas
from api.deps import Ctx, guard

router = APIRouter(prefix="/api/v1", tags=["dead letters"])


@router.get("/deadletters", response_model=schemas.DeadLetterPage, **guard("admin"))
def list_dead_letters(
    ctx: Ctx,
    reason: str | None = None,
    estate: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=2**62),
) -> dict[str, Any]:
    rows = ctx.state.list_dead_letters(reason=reason, estate=estate, limit=limit, offset=offset)
    items = []
    for r in rows:
        payload: bytes = r.pop("payload")
        r["payload"] = payload.decode("utf-8", errors="replace")
        items.append(r)
    return {
        "items": items,
        "counts": ctx.state.count_dead_letters(),
        "limit": limit,
        "offset": offset,
    }
