"""Alarms, rescues, silences; weather; plans, activations, drills."""

from __future__ import annotations

from pydantic import Field

from alerts.alarms.model import AlarmState
from alerts.commands import CommandState
from alerts.rules.spec import Severity
from api.schemas.common import Detail, Names, Out, Page


# --- alarms ----------------------------------------------------------------------------------
class Alarm(Out):
    id: str
    rule: str
    estate: str
    subject: str
    device: str | None
    kind: str
    gateway: str | None
    severity: Severity
    state: AlarmState
    summary: Names
    started_ms: int
    fired_ms: int | None
    acked_ms: int | None
    acked_by: str | None
    resolved_ms: int | None
    resolved_by: str | None
    assignee: str | None
    tags: list[str]
    detail: Detail
    last_ms: int
    count: int
    flapping: bool
    silenced_by: str | None
    deadline_ms: int | None
    deadline_breached: bool
    updated_ms: int
    raised_ms: int | None
    closed_ms: int | None
    late: bool
    to_ack_ms: int | None
    to_resolve_ms: int | None


class TimelineEntry(Out):
    ts: int
    action: str
    by: str
    detail: Detail


class AlarmWithTimeline(Alarm):
    timeline: list[TimelineEntry]


class Rescue(Out):
    alarm_id: str
    estate: str
    device: str
    trapped_ms: int
    deadline_ms: int
    released_ms: int | None
    released_by: str | None
    duration_ms: int | None
    breached: bool
    arrived_ms: int | None
    arrived_by: str | None


class Matcher(Out):
    name: str
    op: str
    value: str
    disabled: str | None = Field(default=None, description="why it matches nothing, if it cannot")


class Silence(Out):
    id: str
    estate: str | None
    matchers: list[Matcher]
    starts_ms: int
    ends_ms: int
    created_by: str
    comment: str
    created_ms: int
    active: bool


# --- weather ---------------------------------------------------------------------------------
class WeatherWarning(Out):
    id: str
    hazard: str
    level: str
    issued_ms: int
    expires_ms: int
    estates: list[str]
    region: str
    text: str
    source: str
    created_by: str
    created_ms: int
    cancelled_ms: int | None
    active: bool
    estates_covered: list[str] | None = Field(default=None, description="when posted")


class WeatherLevel(Out):
    hazard: str
    level: str
    observed: str
    official: str
    station: str | None
    warning: str | None
    evidence: list[Detail]


class EstateWeather(Out):
    estate: str
    hazards: list[WeatherLevel]


# --- plans and drills ------------------------------------------------------------------------
class PlanTask(Out):
    id: str
    text: str
    role: str
    due_ms: int


class PlanLevel(Out):
    weather: str | None
    rules: list[str]
    together: list[list[list[str]]]
    confirm: bool
    person: bool
    tasks: list[PlanTask]


class DrillSchedule(Out):
    cron: str | None
    per_year: int


class Plan(Out):
    id: str
    name: Names
    hazards: list[str]
    levels: dict[str, PlanLevel]
    drill: DrillSchedule


class ActivationSource(Out):
    key: str
    level: str
    detail: Detail


class ActivationTask(Out):
    id: str
    level: str
    text: str
    text_en: str
    role: str
    added_ms: int
    due_ms: int
    done_ms: int | None
    done_by: str | None
    note: str | None
    overdue_ms: int | None
    late: bool


class Activation(Out):
    id: str
    estate: str
    plan: str
    plan_name: Names
    level: str
    level_name: str
    active: bool
    started_ms: int
    updated_ms: int
    ended_ms: int | None
    ended_by: str | None
    below_since_ms: int | None
    hold_ms: int
    max_level: str
    levels_reached: list[str]
    sources: list[ActivationSource]
    tasks: list[ActivationTask]
    summary: Detail | None


class ActivationEntry(Out):
    ts: int
    action: str
    by: str
    level: str
    detail: Detail


class ActivationWithTimeline(Activation):
    timeline: list[ActivationEntry]


class Drill(Out):
    id: str
    estate: str
    plan: str
    status: str
    created_ms: int
    scheduled_ms: int | None
    held_ms: int | None
    participants: list[str]
    findings: str
    outcome: str
    recorded_by: str | None


class DrillCount(Out):
    plan: str
    plan_name: str
    held: int
    required: int
    short: int


class DrillPage(Page[Drill]):
    yearly: list[DrillCount] | None = Field(
        default=None, description="with estate and year: per plan, drills held against required"
    )


# --- remote commands -------------------------------------------------------------------------
class Command(Out):
    """A command to a device and its state; times are wall clock (ms)."""

    id: str
    estate: str
    gateway: str
    dev: str
    action: str = Field(examples=["socket.power_off"])
    reason: str
    by: str
    alarm_id: str | None
    rule: str | None
    state: CommandState
    error: str | None
    sent_ms: int
    deadline_ms: int
    answered_ms: int | None


class CommandPage(Page[Command]):
    pass
