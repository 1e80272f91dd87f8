"""What the dashboard reads in one call: catalog labels, the estate summary, the overview."""

from __future__ import annotations

from alerts.rules.spec import Severity
from api.schemas.alerts import WeatherLevel
from api.schemas.common import Names, Out, Page
from api.schemas.estates import Estate, GatewayHealth


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
