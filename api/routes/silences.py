"""Silences: mute matching alarms for a time window (maintenance, drills)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from alerts.silences import MAX_VALUE_LEN
from api import schemas
from api.deps import (
    Ctx,
    CurrentUser,
    Ms,
    engine_errors,
    guard,
    owner_act,
    reads_of,
    require_operate,
    visible_estates,
)
from api.errors import ApiError
from api.owners import NO_ESTATE
from api.users import Role

router = APIRouter(prefix="/api/v1", tags=["alarms"])


class MatcherIn(BaseModel):
    name: Literal["rule", "device", "subject", "kind", "gateway", "severity"]
    value: str = Field(min_length=1, max_length=MAX_VALUE_LEN, examples=["lift-b2-1"])
    op: Literal["=", "!=", "=~", "!~"] = "="


class SilenceIn(BaseModel):
    estate: str | None = Field(
        default=None,
        max_length=63,
        description="the estate it is limited to; only an admin may silence every estate",
    )
    matchers: list[MatcherIn] = Field(min_length=1, max_length=20)
    starts_ms: Ms | None = None
    ends_ms: Ms | None = None
    duration_min: int | None = Field(default=None, ge=1, le=60 * 24 * 90)
    comment: str = Field(min_length=1, max_length=500, examples=["2 号电梯年检"])


@router.get(
    "/silences",
    response_model=schemas.Page[schemas.Silence],
    response_model_exclude_unset=True,
    **guard("user"),
)
def list_silences(ctx: Ctx, p: CurrentUser, active: bool | None = Query(None)) -> dict[str, Any]:
    items = reads_of(ctx).list_silences(active, visible_estates(p))
    return {"items": items, "total": len(items)}


@router.post(
    "/silences",
    status_code=201,
    response_model=schemas.Silence,
    response_model_exclude_unset=True,
    **guard("user"),
)
def create_silence(body: SilenceIn, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    """Mute the alarms of one estate that match every matcher, from ``starts_ms`` (default
    now) until ``ends_ms`` or for ``duration_min``."""
    reads = reads_of(ctx)
    if body.estate is None:
        if p.role is not Role.ADMIN:
            raise ApiError(403, "forbidden", "give the estate: only an admin silences them all")
    else:
        require_operate(p, body.estate)
    now = reads.now()
    starts = body.starts_ms if body.starts_ms is not None else now
    if body.ends_ms is not None:
        ends = body.ends_ms
    elif body.duration_min is not None:
        ends = starts + body.duration_min * 60_000
    else:
        raise ApiError(422, "invalid_request", "give ends_ms or duration_min")
    matchers = [m.model_dump() for m in body.matchers]
    if body.estate is not None:
        matchers.append({"name": "estate", "value": body.estate, "op": "="})
    args = {"matchers": matchers, "ends": ends, "comment": body.comment, "starts": starts}
    done: dict[str, Any] = owner_act(ctx, body.estate or NO_ESTATE, "add_silence", args, p.username)
    return done


@router.delete(
    "/silences/{silence_id}",
    response_model=schemas.Silence,
    response_model_exclude_unset=True,
    **guard("user"),
)
def expire_silence(silence_id: str, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    """End a silence now."""
    with engine_errors():
        found = reads_of(ctx).get_silence(silence_id)
    if found["estate"] is None:
        if p.role is not Role.ADMIN:
            raise ApiError(403, "forbidden", "only an admin ends a silence of every estate")
    else:
        require_operate(p, found["estate"])
    estate = found["estate"] or NO_ESTATE
    done: dict[str, Any] = owner_act(
        ctx, estate, "expire_silence", {"silence": silence_id}, p.username
    )
    return done
