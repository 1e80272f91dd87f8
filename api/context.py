"""What the API is given by the composition root: stores, catalog, and a few callables."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from alerts.engine import AlertEngine
from api.live import LiveHub
from api.users import UserStore
from ingest.shards import ShardedTelemetryReader
from ingest.state import StateStore
from ingest.telemetry import TelemetryReader
from protocol.catalog import Catalog
from supervision.inspections import InspectionBook

# (estate, gateway) -> MQTT credentials for the gateway, or None when the broker checks none.
IssueCredentials = Callable[[str, str], dict[str, Any] | None]


@dataclass
class ApiContext:
    state: StateStore
    telemetry: TelemetryReader | ShardedTelemetryReader
    catalog: Catalog
    admin_token: str
    issue_credentials: IssueCredentials | None = None
    users: UserStore | None = None
    live: LiveHub | None = None
    inspections: InspectionBook | None = None
    alerts: AlertEngine | None = None
    health: Callable[[], dict[str, Any]] = field(default=lambda: {})
    on_gateway_registered: Callable[[str, str], None] = field(default=lambda e, g: None)
    # Prometheus text exposition of the process's metrics
    metrics: Callable[[], bytes] = field(default=lambda: b"")
