"""What the API answers: one pydantic model per JSON shape, so OpenAPI describes every response.

The models describe, field by field, what the stores and the engine return today; a route names
its model with ``response_model=`` and may keep returning a dict. ``Out`` forbids fields it does
not list, so a field added to a store's answer but not here fails the tests (a 500 naming it)
instead of silently vanishing from the answer. Where a payload is open by nature (an alarm's
triggering reading or event, a timeline entry's detail, the health parts each role reports) the
field is ``dict[str, Any]`` and says so.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from alerts.alarms.model import AlarmState
from alerts.rules.spec import Severity
from api.users import Role

# A metric's value as the wire contract carries it (protocol.messages.Value).
Value = bool | int | float | str
# Open by nature: what the reading, event or person's action that caused a change carried.
Detail = dict[str, Any]


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Names(Out):
    zh: str
    en: str


Item = TypeVar("Item")


class Page(Out, Generic[Item]):
    items: list[Item]
    total: int


class Ok(Out):
    ok: bool


class Nothing(Out):
    """``{}``: the request changed nothing (e.g. a plan already at that level from that
    source)."""


# --- estates, gateways, devices --------------------------------------------------------------
class Estate(Out):
    id: str
    name: str
    region: str
    created_ms: int
    zone: str
    heating_season: str
    rescue_arrival_min: int | None


class MqttCredentials(Out):
    """Shown once, when issued or rotated: the gateway connects and publishes with these."""

    username: str
    password: str
    host: str
    port: int
    topic_prefix: str


class Gateway(Out):
    estate: str
    id: str
    name: str
    created_ms: int
    state: str = Field(description="online, offline or unknown, as the gateway last said")
    state_ms: int | None
    fw: str | None
    buffered: int | None
    dropped: int | None
    access: Literal["enabled", "disabled", "deleted"]
    access_ms: int | None


class GatewayIssued(Gateway):
    mqtt: MqttCredentials | None = Field(description="null: the service does not run the broker")


class GatewayRevoked(Gateway):
    mqtt_revoked: bool


class GatewayHealth(Gateway):
    max_seq: int | None
    lost_messages: int
    duplicates: int


class Device(Out):
    id: str
    kind: str
    family: str | None
    gateway: str
    metrics: dict[str, Value]
    last_seen_ms: int | None
    online: bool


class DevicePage(Page[Device]):
    next_cursor: str | None


class Point(Out):
    ts: int
    min: float
    max: float
    mean: float
    count: int
    last: float
    value: float | None = Field(default=None, description="raw readings only: the reading")


class Telemetry(Out):
    estate: str
    device: str
    metric: str
    unit: str | None
    from_ms: int = Field(alias="from")
    to_ms: int = Field(alias="to")
    resolution: str
    step_ms: int
    points: list[Point]


class DeadLetter(Out):
    id: int
    received_ms: int
    topic: str
    estate: str | None
    gateway: str | None
    reason: str
    detail: str
    item_index: int | None
    payload: str = Field(description="the message's first bytes, as UTF-8 (bad bytes replaced)")
    payload_size: int | None
    payload_sha256: str | None


class DeadLetterPage(Out):
    items: list[DeadLetter]
    counts: dict[str, int]
    limit: int
    offset: int


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


# --- users -----------------------------------------------------------------------------------
class User(Out):
    username: str
    display_name: str
    role: Role
    estates: list[str]


class UserAccount(User):
    disabled: bool
    created_ms: int


class LoggedIn(Out):
    token: str
    user: User


class UserDeleted(Ok):
    username: str


class UserPassword(Out):
    """Shown in this answer only."""

    username: str
    password: str


# --- the dashboard's own reads ---------------------------------------------------------------
class FamilyLabel(Out):
    id: str
    zh: str
    en: str


class MetricLabel(Out):
    type: str
    unit: str | None
    values: list[str]
    zh: str
    en: str


class KindLabel(Out):
    family: str
    zh: str
    en: str
    interval_s: int
    metrics: dict[str, MetricLabel]


class EventLabel(Out):
    family: str
    zh: str
    en: str


class BitLabel(Out):
    name: str
    zh: str
    en: str


class CatalogLabels(Out):
    version: int
    families: list[FamilyLabel]
    kinds: dict[str, KindLabel]
    event_types: dict[str, EventLabel]
    status_word_bits: dict[str, BitLabel]
    component_status_word_bits: dict[str, BitLabel]


class FamilyCount(Out):
    family: str
    zh: str
    en: str
    total: int
    online: int
    offline: int
    in_alarm: int


class DeviceCount(Out):
    total: int
    online: int
    in_alarm: int


class SummaryGateway(GatewayHealth):
    in_alarm: int


class ActivePlan(Out):
    id: str
    estate: str
    plan: str
    plan_name: Names
    level: str
    started_ms: int
    tasks_open: int
    tasks_overdue: int


class EstateSummary(Out):
    """Alarm, weather and plan parts are null without the alerts engine on this process."""

    estate: Estate
    now_ms: int
    alerts_available: bool
    families: list[FamilyCount]
    devices: DeviceCount
    gateways: list[SummaryGateway]
    last_data_ms: int | None
    alarms: dict[Severity, int] | None
    weather: list[WeatherLevel] | None
    plans: list[ActivePlan] | None


class OverviewRow(Out):
    estate: str
    name: str
    region: str
    devices: int
    online: int
    online_pct: float | None
    last_data_ms: int | None
    alarms: dict[Severity, int] | None
    unacknowledged: int | None
    plans: list[ActivePlan] | None
    rescue_breached_open: int | None
    rescue_breached_year: int | None


class Overview(Page[OverviewRow]):
    alerts_available: bool


# --- supervision -----------------------------------------------------------------------------
class Draw(Out):
    id: int
    drawn_ms: int
    drawn_by: str
    seed: int
    share: float
    exclude_months: int
    region: str
    candidates: list[str]
    chosen: list[str]
    note: str
    verified: bool = Field(description="the same seed over the same candidates chose the same")


class Flood(Out):
    start_ms: int
    alarms: int


class Chattering(Out):
    rule: str
    subject: str
    in_60s: int
    alarms: int


class Stale(Out):
    id: str
    rule: str
    subject: str
    raised_ms: int
    active_h: float
    open: bool


class Frequent(Out):
    rule: str
    subject: str
    alarms: int
    share: float


class AlarmQuality(Out):
    start_ms: int
    end_ms: int
    alarms: int
    hours: float
    per_hour: float
    windows: int
    flood_windows: int
    flood_share: float
    peak_10min: int
    floods: list[Flood]
    alarms_outside_emergencies: int
    per_10min_outside_emergencies: float
    chattering: list[Chattering]
    stale: list[Stale]
    top: list[Frequent]
    acked: int
    ack_p50_s: float | None
    ack_p90_s: float | None


class QualityDay(Out):
    day_ms: int
    alarms: int
    flood_windows: int


class EstateQualityRow(Out):
    estate: str
    name: str
    alarms: int
    per_hour: float
    per_10min_outside_emergencies: float
    flood_windows: int
    peak_10min: int
    ack_p50_s: float | None
    chattering: int
    stale: int
    top: list[Frequent]


class QualityMonth(Out):
    month: str
    start_ms: int
    end_ms: int


class EstateQuality(QualityMonth):
    estate: str
    name: str
    quality: AlarmQuality
    days: list[QualityDay]


class QualityTable(QualityMonth):
    items: list[EstateQualityRow]


class ReportRescues(Out):
    count: int
    released: int
    mean_min: float | None
    max_min: float | None
    arrived: int
    mean_arrival_min: float | None
    max_arrival_min: float | None
    within_deadline: int
    breached: int
    deadline_min: int


class ReportQualityBase(Out):
    per_hour: float | None
    per_10min_outside_emergencies: float | None
    flood_windows: int
    flood_share_pct: float | None
    peak_10min: int
    ack_p50_min: float | None
    ack_p90_min: float | None


class ReportQuality(ReportQualityBase):
    chattering: list[Chattering]
    stale: list[Stale]
    top: list[Frequent]
    rule_names: dict[str, list[str]] = Field(description="rule → its summary [zh, en]")


class EstateChattering(Chattering):
    estate: str


class EstateStale(Stale):
    estate: str


class EstateFrequent(Frequent):
    estate: str


class TotalQuality(ReportQualityBase):
    """The estates' means; the lists joined over them, each entry naming its estate."""

    chattering: list[EstateChattering]
    stale: list[EstateStale]
    top: list[EstateFrequent]


class ReportPartBase(Out):
    estate: str
    name: str
    region: str
    devices: int
    alarms_total: int
    alarms: dict[str, dict[str, int]] = Field(description="family → severity → alarms")
    mean_ack_min: float | None
    mean_resolve_min: float | None
    rescues: ReportRescues
    fire_availability_pct: float | None
    device_uptime_pct: float | None
    activations: dict[str, dict[str, int]] = Field(description="plan → level (III) → times")
    drills: list[DrillCount]


class ReportPart(ReportPartBase):
    alarm_quality: ReportQuality


class ReportTotal(ReportPartBase):
    alarm_quality: TotalQuality


class YearlyReport(Out):
    """Per estate and in total (``estate`` is ``"total"``)."""

    year: int
    generated_ms: int
    estates: list[ReportPart]
    total: ReportTotal
    plan_names: dict[str, Names]


# --- health ----------------------------------------------------------------------------------
class Health(BaseModel):
    """Open: each part (broker, ingest, writer, alerts, ...) reports what its role runs."""

    model_config = ConfigDict(extra="allow")
    status: Literal["ok", "degraded"]
