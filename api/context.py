"""What the API is given by the composition root: stores, catalog, and a few callables."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from alerts.engine import AlertEngine
from alerts.queries import StoredQueries
from alerts.remote import CommandDesk
from api.live import LiveHub
from api.owners import OwnerRouter
from api.throttle import LoginThrottle
from api.users import UserStore
from ingest.net_telemetry import NetworkTelemetryReader
from ingest.shards import ShardedTelemetryReader
from ingest.state import StateStore
from ingest.telemetry import TelemetryReader
from ingest.victoria import RemoteChartsReader
from protocol.catalog import Catalog
from supervision.inspections import InspectionBook

# (estate, gateway) -> MQTT credentials for the gateway, or None when the broker checks none.
IssueCredentials = Callable[[str, str], dict[str, Any] | None]
# (estate, gateway) -> the broker account is gone and its connection cut (False: no account)
RevokeCredentials = Callable[[str, str], bool]


@dataclass
class ApiContext:
    state: StateStore
    telemetry: (
        TelemetryReader | ShardedTelemetryReader | RemoteChartsReader | NetworkTelemetryReader
    )
    catalog: Catalog
    admin_token: str
    issue_credentials: IssueCredentials | None = None
    # new credentials for a gateway (the old ones stop working at once); None: broker not ours
    rotate_credentials: IssueCredentials | None = None
    revoke_credentials: RevokeCredentials | None = None
    users: UserStore | None = None
    live: LiveHub | None = None
    inspections: InspectionBook | None = None
    alerts: AlertEngine | None = None
    commands: CommandDesk | None = None  # remote commands to devices (socket cut-off)
    # Scaled out: the alerts' reads from the store where this process runs no engine, and
    # people's actions sent to the estate's owner (None: this process applies them itself).
    alert_reads: StoredQueries | None = None
    owners: OwnerRouter | None = None
    health: Callable[[], dict[str, Any]] = field(default=lambda: {})
    on_gateway_registered: Callable[[str, str], None] = field(default=lambda e, g: None)
    # a gateway was disabled, enabled or deleted: ingest reloads who may publish
    on_gateway_changed: Callable[[str, str], None] = field(default=lambda e, g: None)
    login_throttle: LoginThrottle = field(default_factory=LoginThrottle)
    # Prometheus text exposition of the process's metrics
    metrics: Callable[[], bytes] = field(default=lambda: b"")
