"""Emergency plans and their activations: checklists, tasks done, stand-downs."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api import schemas
from api.deps import (
    Ctx,
    CurrentUser,
    check_estate_filter,
    engine_errors,
    guard,
    owner_act,
    reads_of,
    require_operate,
    require_read,
    visible_estates,
)
from api.users import Principal

router = APIRouter(prefix="/api/v1", tags=["plans"])


class TaskDoneIn(BaseModel):
    note: str | None = Field(default=None, max_length=2000)


class ActivateIn(BaseModel):
    plan: str = Field(min_length=1, max_length=64, examples=["fire"])
    level: Literal["IV", "III", "II", "I", "Ⅳ", "Ⅲ", "Ⅱ", "Ⅰ"]
    reason: str = Field(min_length=1, max_length=500, examples=["3 号楼确认起火"])


class StandDownIn(BaseModel):
    reason: str = Field(min_length=1, max_length=500)


@router.get("/plans", response_model=schemas.Page[schemas.Plan], **guard("user"))
def list_plans(ctx: Ctx) -> dict[str, Any]:
    """Every plan: levels Ⅳ–Ⅰ, what activates each, and its checklist."""
    items = reads_of(ctx).list_plans()
    return {"items": items, "total": len(items)}


@router.get("/plans/activations", response_model=schemas.Page[schemas.Activation], **guard("user"))
def list_activations(
    ctx: Ctx,
    p: CurrentUser,
    estate: str | None = Query(None, max_length=63),
    active: bool | None = Query(None),
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    check_estate_filter(p, estate)
    items = reads_of(ctx).list_activations(estate, active, limit, visible_estates(p))
    return {"items": items, "total": len(items)}


def _activation(ctx: Ctx, p: Principal, activation_id: str, operate: bool) -> dict[str, Any]:
    with engine_errors():
        act = reads_of(ctx).get_activation(activation_id)
    (require_operate if operate else require_read)(p, act["estate"])
    return act


@router.get(
    "/plans/activations/{activation_id}",
    response_model=schemas.ActivationWithTimeline,
    **guard("user"),
)
def get_activation(activation_id: str, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    """One activation with its tasks, sources, timeline and (once stood down) summary."""
    return _activation(ctx, p, activation_id, operate=False)


@router.post(
    "/plans/activations/{activation_id}/tasks/{task}/done",
    response_model=schemas.Activation,
    **guard("user"),
)
def task_done(
    activation_id: str, task: str, body: TaskDoneIn, ctx: Ctx, p: CurrentUser
) -> dict[str, Any]:
    """Tick a checklist task, recorded with who and when (late if after its due time)."""
    act = _activation(ctx, p, activation_id, operate=True)
    args = {"activation": activation_id, "task": task, "note": body.note}
    done: dict[str, Any] = owner_act(ctx, act["estate"], "complete_task", args, p.username)
    return done


@router.post(
    "/estates/{estate}/plans/activations",
    status_code=201,
    response_model=schemas.Activation | schemas.Nothing,
    **guard("estate:operate"),
)
def activate(estate: str, body: ActivateIn, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    """A person activates a plan (or sets its level); it stays until a person stands it down.
    ``{}`` when the plan is at that level by a person already (nothing changed)."""
    args = {"estate": estate, "plan": body.plan, "level": body.level, "reason": body.reason}
    done: dict[str, Any] = owner_act(ctx, estate, "activate_plan", args, p.username)
    return done


@router.post(
    "/plans/activations/{activation_id}/stand-down",
    response_model=schemas.Activation,
    **guard("user"),
)
def stand_down(activation_id: str, body: StandDownIn, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    act = _activation(ctx, p, activation_id, operate=True)
    args = {"activation": activation_id, "reason": body.reason}
    done: dict[str, Any] = owner_act(ctx, act["estate"], "stand_down", args, p.username)
    return done
