"""Estates, gateways, devices, readings, dead letters; users."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from api.schemas.common import Ok, Out, Page, Value
from api.users import Role


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
