"""Drills (应急演练): recorded with participants and findings, counted per year."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from alerts.alarms.model import new_id
from alerts.drills import Drill, DrillStatus
from api import schemas
from api.deps import (
    Ctx,
    CurrentUser,
    Ms,
    check_estate_filter,
    guard,
    owner_act,
    reads_of,
    require_operate,
    visible_estates,
)
from api.errors import ApiError

router = APIRouter(prefix="/api/v1", tags=["plans"])


class DrillIn(BaseModel):
    estate: str = Field(min_length=1, max_length=63)
    plan: str = Field(min_length=1, max_length=64, examples=["elevator_entrapment"])
    held_ms: Ms
    status: Literal["held", "missed"] = "held"
    drill_id: str | None = Field(
        default=None, max_length=32, description="the scheduled drill this records, if any"
    )
    participants: list[str] = Field(default_factory=list, max_length=500)
    findings: str = Field(default="", max_length=5000)
    outcome: str = Field(default="", max_length=2000)


@router.get(
    "/drills", response_model=schemas.DrillPage, response_model_exclude_unset=True, **guard("user")
)
def list_drills(
    ctx: Ctx,
    p: CurrentUser,
    estate: str | None = Query(None, max_length=63),
    plan: str | None = Query(None, max_length=64),
    year: int | None = Query(None, ge=2000, le=2999),
) -> dict[str, Any]:
    """Drills, newest first; with ``estate`` and ``year`` also ``yearly``: per plan, drills
    held against the number required."""
    check_estate_filter(p, estate)
    return reads_of(ctx).list_drills(estate, plan, year, visible_estates(p))


# A drill is recorded after it is held; a little ahead is allowed for clocks and time zones.
HELD_AHEAD_MAX_MS = 7 * 86_400_000


@router.post("/drills", status_code=201, response_model=schemas.Drill, **guard("user"))
def record_drill(body: DrillIn, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    require_operate(p, body.estate)
    if body.held_ms > reads_of(ctx).now() + HELD_AHEAD_MAX_MS:
        raise ApiError(
            422, "invalid_request", "held_ms: a drill is recorded when held, at most 7 days ahead"
        )
    args = {
        "estate": body.estate, "plan": body.plan, "held": body.held_ms,
        "participants": [x[:100] for x in body.participants], "findings": body.findings,
        "outcome": body.outcome, "drill_id": body.drill_id, "status": body.status,
    }  # fmt: skip
    done: dict[str, Any] = owner_act(ctx, body.estate, "record_drill", args, p.username)
    return done


class DrillPlanIn(BaseModel):
    estate: str = Field(min_length=1, max_length=63)
    plan: str = Field(min_length=1, max_length=64, examples=["elevator_entrapment"])
    scheduled_ms: Ms


# A drill is planned for the coming year at most, and not in the past (beyond clock skew).
PLANNED_AHEAD_MAX_MS = 366 * 86_400_000
PLANNED_BEHIND_MAX_MS = 86_400_000


@router.post("/drills/planned", status_code=201, response_model=schemas.Drill, **guard("user"))
def plan_drill(body: DrillPlanIn, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    """Plan a drill by hand (besides the plan's own schedule); record it once held with
    ``POST /drills`` and its ``drill_id``."""
    require_operate(p, body.estate)
    reads = reads_of(ctx)  # a planned drill is a row: no engine state to change
    now = reads.now()
    if not now - PLANNED_BEHIND_MAX_MS <= body.scheduled_ms <= now + PLANNED_AHEAD_MAX_MS:
        raise ApiError(
            422, "invalid_request", "scheduled_ms: a drill is planned from today to a year ahead"
        )
    if body.plan not in reads.rec.plans:
        raise ApiError(404, "not_found", f"plan {body.plan!r} not found")
    drill = Drill(
        new_id("dr"), body.estate, body.plan, DrillStatus.SCHEDULED, now, body.scheduled_ms
    )
    reads.rec.store.save_drill(drill)
    return drill.as_dict()
