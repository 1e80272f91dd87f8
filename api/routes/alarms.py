"""Alarms: list, acknowledge, resolve, assign, annotate; rescues of trapped passengers.

The alert engine reaches the routes as ``ctx.alerts``. Who made a change is the caller
(``p.username``), never a field of the body. Also home of what the other alerting routers share.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from alerts.alarms import InvalidTransition
from api.deps import Ctx, CurrentUser, guard, require_operate, require_read
from api.errors import ApiError
from api.users import Principal

if TYPE_CHECKING:
    from alerts.engine import AlertEngine

router = APIRouter(prefix="/api/v1", tags=["alarms"])

STATES = ("pending", "firing", "acknowledged", "resolved")
SEVERITIES = ("critical", "major", "minor", "warning")
# Epoch milliseconds accepted from callers (JS-safe integers; far beyond any real date).
Ms = Annotated[int, Field(ge=0, lt=2**53, examples=[1768003200000])]


def engine_of(ctx: Ctx) -> AlertEngine:
    engine: AlertEngine | None = getattr(ctx, "alerts", None)
    if engine is None:
        raise ApiError(503, "unavailable", "alarms and plans are not running on this process")
    return engine


@contextmanager
def engine_errors() -> Iterator[None]:
    """The engine's refusals as API errors: a change the state forbids is a conflict, a value
    it cannot use is an invalid request (what was wrong is in the message)."""
    try:
        yield
    except InvalidTransition as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    except (ValueError, KeyError) as exc:
        raise ApiError(422, "invalid_request", str(exc).strip("'\"")) from None


def visible_estates(p: Principal) -> frozenset[str] | None:
    """None: every estate (admins, authorities)."""
    return None if p.sees_all_estates else p.estates


def check_estate_filter(p: Principal, estate: str | None) -> None:
    if estate is not None and not p.can_read(estate):
        raise ApiError(404, "not_found", f"estate {estate!r} not found")


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


@router.get("/alarms", **guard("user"))
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
    items = engine_of(ctx).list_alarms(
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
        alarm = engine_of(ctx).get_alarm(alarm_id)
    (require_operate if operate else require_read)(p, alarm["estate"])
    return alarm


@router.get("/alarms/{alarm_id}", **guard("user"))
def get_alarm(alarm_id: str, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    """One alarm with its timeline: every change, when, and who made it."""
    return _alarm_for(ctx, p, alarm_id, operate=False)


def _act(
    ctx: Ctx, p: Principal, alarm_id: str, fn: Callable[[AlertEngine], dict[str, Any]]
) -> dict[str, Any]:
    _alarm_for(ctx, p, alarm_id, operate=True)
    with engine_errors():
        return fn(engine_of(ctx))


@router.post("/alarms/{alarm_id}/ack", **guard("user"))
def acknowledge(alarm_id: str, body: ActionIn, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    """Take the alarm on: stops the escalation steps that wait for an acknowledgement."""
    return _act(ctx, p, alarm_id, lambda e: e.acknowledge(alarm_id, p.username, body.note))


@router.post("/alarms/{alarm_id}/resolve", **guard("user"))
def resolve(alarm_id: str, body: ActionIn, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    """Close the alarm. If its condition still holds, the rules raise a new one."""
    return _act(ctx, p, alarm_id, lambda e: e.resolve(alarm_id, p.username, body.note))


@router.post("/alarms/{alarm_id}/confirm", **guard("user"))
def confirm(alarm_id: str, body: ActionIn, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    """Confirm a fire alarm on site (GB 25201 §5.3): the fire plan goes to Ⅲ (call 119,
    linkage to automatic, evacuate). 409 for an alarm no plan raises on confirmation."""
    return _act(ctx, p, alarm_id, lambda e: e.confirm(alarm_id, p.username, body.note))


@router.post("/alarms/{alarm_id}/arrived", **guard("user"))
def technician_arrived(alarm_id: str, body: ActionIn, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    """The lift technician reached a trapped car: the rescue deadline is about this arrival
    (TSG T5002-2017); the release, which ends the alarm, is recorded beside it."""
    return _act(ctx, p, alarm_id, lambda e: e.technician_arrived(alarm_id, p.username, body.note))


@router.post("/alarms/{alarm_id}/assign", **guard("user"))
def assign(alarm_id: str, body: AssignIn, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    return _act(ctx, p, alarm_id, lambda e: e.assign(alarm_id, body.assignee, p.username))


@router.post("/alarms/{alarm_id}/notes", status_code=201, **guard("user"))
def add_note(alarm_id: str, body: NoteIn, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    return _act(ctx, p, alarm_id, lambda e: e.add_note(alarm_id, body.text, p.username))


@router.get("/rescues", **guard("user"))
def list_rescues(
    ctx: Ctx, p: CurrentUser, estate: str | None = Query(None, max_length=63)
) -> dict[str, Any]:
    """Trapped-passenger rescues: trapped → technician arrived (the deadline is about the
    arrival) → released."""
    check_estate_filter(p, estate)
    items = engine_of(ctx).rescues(estate, visible_estates(p))
    return {"items": items, "total": len(items)}
