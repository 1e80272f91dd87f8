"""Alarms: list, acknowledge, resolve, assign, annotate; rescues of trapped passengers.

Reads come from the alerts' store (through the engine where this process runs one); actions
are applied by the owner of the alarm's estate (``deps.owner_act``: here, or over the broker
from any API node). Who made a change is the caller (``p.username``), never a field of the
body.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from alerts.alarms import AlarmState
from alerts.rules.spec import Severity
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
from api.errors import ApiError
from api.users import Principal

router = APIRouter(prefix="/api/v1", tags=["alarms"])

STATES = tuple(s.value for s in AlarmState)
SEVERITIES = tuple(s.value for s in Severity)


def _split(value: str | None, allowed: tuple[str, ...], what: str) -> list[str] | None:
    if not value:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad:
        raise ApiError(
            422, "invalid_request", f"unknown {what} {', '.join(bad)} (known: {', '.join(allowed)})"
        )
    return items


class ActionIn(BaseModel):
    note: str | None = Field(default=None, max_length=2000)


class AssignIn(BaseModel):
    assignee: str = Field(min_length=1, max_length=100, examples=["张工"])


class NoteIn(BaseModel):
    text: str = Field(min_length=1, max_length=2000)


@router.get("/alarms", response_model=schemas.Page[schemas.Alarm], **guard("user"))
def list_alarms(
    ctx: Ctx,
    p: CurrentUser,
    estate: str | None = Query(None, max_length=63),
    state: str | None = Query(None, description="comma-separated: pending,firing,..."),
    severity: str | None = Query(None, description="comma-separated: critical,major,..."),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=1_000_000),
) -> dict[str, Any]:
    """Alarms of the estates the caller may read, newest first."""
    check_estate_filter(p, estate)
    items = reads_of(ctx).list_alarms(
        estate,
        _split(state, STATES, "state"),
        _split(severity, SEVERITIES, "severity"),
        limit,
        offset,
        visible_estates(p),
    )
    return {"items": items, "total": len(items)}


def _alarm_for(ctx: Ctx, p: Principal, alarm_id: str, operate: bool) -> dict[str, Any]:
    with engine_errors():
        alarm = reads_of(ctx).get_alarm(alarm_id)
    (require_operate if operate else require_read)(p, alarm["estate"])
    return alarm


@router.get("/alarms/{alarm_id}", response_model=schemas.AlarmWithTimeline, **guard("user"))
def get_alarm(alarm_id: str, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    """One alarm with its timeline: every change, when, and who made it."""
    return _alarm_for(ctx, p, alarm_id, operate=False)


def _act(ctx: Ctx, p: Principal, alarm_id: str, action: str, **args: Any) -> dict[str, Any]:
    """Applied by the owner of the alarm's estate (here, or over the broker), as ``p``."""
    alarm = _alarm_for(ctx, p, alarm_id, operate=True)
    done: dict[str, Any] = owner_act(
        ctx, alarm["estate"], action, {"alarm": alarm_id, **args}, p.username
    )
    return done


@router.post("/alarms/{alarm_id}/ack", response_model=schemas.Alarm, **guard("user"))
def acknowledge(alarm_id: str, body: ActionIn, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    """Take the alarm on: stops the escalation steps that wait for an acknowledgement."""
    return _act(ctx, p, alarm_id, "acknowledge", note=body.note)


@router.post("/alarms/{alarm_id}/resolve", response_model=schemas.Alarm, **guard("user"))
def resolve(alarm_id: str, body: ActionIn, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    """Close the alarm. If its condition still holds, the rules raise a new one."""
    return _act(ctx, p, alarm_id, "resolve", note=body.note)


@router.post("/alarms/{alarm_id}/confirm", response_model=schemas.Alarm, **guard("user"))
def confirm(alarm_id: str, body: ActionIn, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    """Confirm a fire alarm on site (GB 25201 §5.3): the fire plan goes to Ⅲ (call 119,
    linkage to automatic, evacuate). 409 for an alarm no plan raises on confirmation."""
    return _act(ctx, p, alarm_id, "confirm", note=body.note)


@router.post("/alarms/{alarm_id}/arrived", response_model=schemas.Alarm, **guard("user"))
def technician_arrived(alarm_id: str, body: ActionIn, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    """The lift technician reached a trapped car: the rescue deadline is about this arrival
    (TSG T5002-2017); the release, which ends the alarm, is recorded beside it."""
    return _act(ctx, p, alarm_id, "technician_arrived", note=body.note)


@router.post("/alarms/{alarm_id}/assign", response_model=schemas.Alarm, **guard("user"))
def assign(alarm_id: str, body: AssignIn, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    return _act(ctx, p, alarm_id, "assign", assignee=body.assignee)


@router.post(
    "/alarms/{alarm_id}/notes", status_code=201, response_model=schemas.Alarm, **guard("user")
)
def add_note(alarm_id: str, body: NoteIn, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    return _act(ctx, p, alarm_id, "add_note", text=body.text)


@router.get("/rescues", response_model=schemas.Page[schemas.Rescue], **guard("user"))
def list_rescues(
    ctx: Ctx, p: CurrentUser, estate: str | None = Query(None, max_length=63)
) -> dict[str, Any]:
    """Trapped-passenger rescues: trapped → technician arrived (the deadline is about the
    arrival) → released."""
    check_estate_filter(p, estate)
    items = reads_of(ctx).rescues(estate, visible_estates(p))
    return {"items": items, "total": len(items)}
