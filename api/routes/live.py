"""Server-Sent Events: what changes, as it changes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from api.deps import BOOTSTRAP_ADMIN, COOKIE, Ctx, CurrentUser, bearer_token, guard
from api.errors import ApiError
from api.live import LiveFull
from api.users import Principal, token_hash

router = APIRouter(prefix="/api/v1", tags=["live"])

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class EventStream(StreamingResponse):
    """Server-Sent Events (named so that OpenAPI says ``text/event-stream``)."""

    media_type = "text/event-stream"


def _stream(
    ctx: Ctx, request: Request, p: Principal, estates: frozenset[str] | None
) -> EventStream:
    if ctx.live is None:
        raise ApiError(503, "unavailable", "the live stream is not running on this process")
    token = bearer_token(request) or request.cookies.get(COOKIE)  # as deps.principal reads it
    users = ctx.users
    # the bootstrap admin's token is the setting itself: nothing to revoke
    bootstrap = p is BOOTSTRAP_ADMIN
    try:
        sub = ctx.live.subscribe(
            estates, p.username, None if bootstrap or not token else token_hash(token)
        )
    except LiveFull as exc:
        raise ApiError(exc.status, "too_many_streams", exc.message, {"Retry-After": "10"}) from None
    still_valid = (
        (lambda: users.token_valid(token))
        if users is not None and token and not bootstrap
        else None
    )
    return EventStream(
        ctx.live.stream(sub, request.is_disconnected, still_valid=still_valid), headers=HEADERS
    )


@router.get("/estates/{estate}/stream", response_class=EventStream, **guard("estate:read"))
async def estate_stream(estate: str, ctx: Ctx, request: Request, p: CurrentUser) -> EventStream:
    """Device readings, events, gateway states, alarms and plan changes of one estate
    (events ``device``, ``event``, ``gateway``, ``alarm``, ``plan``; ``resync`` when the
    client fell behind and should reload). At most 8 open streams per user and 200 in all
    (429 / 503 beyond); a client that does not read is dropped."""
    return _stream(ctx, request, p, frozenset([estate]))


@router.get("/stream", response_class=EventStream, **guard("user"))
async def all_stream(ctx: Ctx, request: Request, p: CurrentUser) -> EventStream:
    """The same for every estate the caller may read (the authority overview)."""
    return _stream(ctx, request, p, None if p.sees_all_estates else p.estates)
