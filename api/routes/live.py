"""Server-Sent Events: what changes, as it changes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from api.deps import Ctx, CurrentUser, guard
from api.errors import ApiError

router = APIRouter(prefix="/api/v1", tags=["live"])

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _stream(ctx: Ctx, request: Request, estates: frozenset[str] | None) -> StreamingResponse:
    if ctx.live is None:
        raise ApiError(503, "unavailable", "the live stream is not running on this process")
    sub = ctx.live.subscribe(estates)
    return StreamingResponse(
        ctx.live.stream(sub, request.is_disconnected),
        media_type="text/event-stream",
        headers=HEADERS,
    )


@router.get("/estates/{estate}/stream", **guard("estate:read"))
async def estate_stream(estate: str, ctx: Ctx, request: Request) -> StreamingResponse:
    """Device readings, events, gateway states, alarms and plan changes of one estate
    (events ``device``, ``event``, ``gateway``, ``alarm``, ``plan``; ``resync`` when the
    client fell behind and should reload)."""
    return _stream(ctx, request, frozenset([estate]))


@router.get("/stream", **guard("user"))
async def all_stream(ctx: Ctx, request: Request, p: CurrentUser) -> StreamingResponse:
    """The same for every estate the caller may read (the authority overview)."""
    return _stream(ctx, request, None if p.sees_all_estates else p.estates)
