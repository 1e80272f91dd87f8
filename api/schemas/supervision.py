"""The housing authority's reads: inspection draws, alarm quality, the yearly report."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from api.schemas.alerts import DrillCount
from api.schemas.common import Names, Out

CLOCKS_DOC = (
    "figure → the clock it counts on: wall (when an alarm reached the control room: the "
    "operator's load) or data (when it was measured: the condition)"
)


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
    reached: int = Field(description="alarms that reached the control room in the period")
    late: int = Field(description="of those, reached 10 min or more after they began")
    closed_unacked: int = Field(
        description="closed by the equipment or a timer before any person acknowledged it"
    )
    clocks: dict[str, Literal["data", "wall"]] = Field(description=CLOCKS_DOC)


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
    clocks: dict[str, Literal["data", "wall"]] = Field(description=CLOCKS_DOC)


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
    device_uptime_pending: bool = Field(
        description="devices reported but no hour of theirs is in the rollups yet: not measured"
    )
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
