"""Estates, their gateways and devices."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from alerts.zones import load_zones, parse_season
from api import schemas
from api.deps import Ctx, CurrentUser, guard
from api.errors import ApiError
from api.schemas.common import Out
from protocol.catalog import Catalog, ValueType
from protocol.messages import Value

router = APIRouter(prefix="/api/v1", tags=["estates"])

ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
PRINTABLE_OR_EMPTY = r"^[^\x00-\x1f\x7f]*$"
# /devices answers a page at a time (an estate may have 200,000 devices)
DEVICE_PAGE = 500
DEVICE_PAGE_MAX = 1000
# A device is online while it reports within a few of its reporting intervals.
ONLINE_INTERVALS = 3


class EstateIn(BaseModel):
    id: str = Field(pattern=ID_PATTERN, examples=["hohhot-xinhua"])
    # printable text only: names end up in reports, spreadsheets and MQTT payloads
    name: str = Field(min_length=1, max_length=200, pattern=PRINTABLE, examples=["新华小区"])
    region: str = Field(
        default="", max_length=100, pattern=PRINTABLE_OR_EMPTY, examples=["呼和浩特市"]
    )
    # issue 11: the estate's climate zone, own heating season, lift rescue arrival minutes
    zone: str = Field(default="", pattern=r"^[a-z][a-z0-9_]{0,31}$|^$", examples=["hohhot"])
    heating_season: str = Field(default="", pattern=r"^(\d\d-\d\d/\d\d-\d\d)?$")
    rescue_arrival_min: int | None = Field(default=None, ge=1, le=240)


ZONE_PATTERN = r"^[a-z][a-z0-9_]{0,31}$|^$"
SEASON_PATTERN = r"^(\d\d-\d\d/\d\d-\d\d)?$"


class EstateSettingsIn(BaseModel):
    """The estate's own domain settings (issue 11); leave out what stays as it is."""

    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=PRINTABLE)
    region: str | None = Field(default=None, max_length=100, pattern=PRINTABLE_OR_EMPTY)
    zone: str | None = Field(
        default=None,
        pattern=ZONE_PATTERN,
        description="climate zone (alerts/zones.yaml: hohhot, baotou, xilingol, hulunbuir): "
        "low-temperature thresholds and the heating season; empty: none",
        examples=["hohhot"],
    )
    heating_season: str | None = Field(
        default=None,
        pattern=SEASON_PATTERN,
        description="MM-DD/MM-DD, the estate's own heating season; empty: its zone's",
        examples=["10-15/04-15"],
    )
    rescue_arrival_min: int | None = Field(
        default=None,
        ge=1,
        le=240,
        description="minutes for the lift technician to arrive (30 in a city with districts, "
        "60 elsewhere); leave out to keep, 0 is refused",
    )


class GatewayIn(BaseModel):
    id: str = Field(pattern=ID_PATTERN, examples=["gw-01"])
    name: str = Field(default="", max_length=200, pattern=PRINTABLE_OR_EMPTY)


@router.post("/estates", status_code=201, response_model=schemas.Estate, **guard("admin"))
def create_estate(body: EstateIn, ctx: Ctx) -> dict[str, Any]:
    _check_settings(body.zone, body.heating_season)
    return ctx.state.add_estate(
        body.id, body.name, body.region, body.zone, body.heating_season, body.rescue_arrival_min
    )


def _check_settings(zone: str | None, heating_season: str | None) -> None:
    if zone and zone not in load_zones():
        known = ", ".join(sorted(load_zones()))
        raise ApiError(422, "invalid_request", f"unknown zone {zone!r} (known: {known})")
    if heating_season:
        try:
            parse_season(heating_season)
        except ValueError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None


@router.patch("/estates/{estate}", response_model=schemas.Estate, **guard("admin"))
def update_estate(estate: str, body: EstateSettingsIn, ctx: Ctx) -> dict[str, Any]:
    """Change the estate's settings: name, region, climate zone, heating season, lift rescue
    arrival minutes. The alert engine picks them up within 5 minutes."""
    _check_settings(body.zone, body.heating_season)
    # null clears rescue_arrival_min (back to the rule's deadline); the others cannot be null
    changes = {
        k: v
        for k, v in body.model_dump(exclude_unset=True).items()
        if v is not None or k == "rescue_arrival_min"
    }
    return ctx.state.update_estate(estate, **changes)


@router.get("/estates", response_model=schemas.Page[schemas.Estate], **guard("user"))
def list_estates(ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    """The estates the caller may see: all of them for admins and authorities."""
    items = [e for e in ctx.state.list_estates() if p.can_read(e["id"])]
    return {"items": items, "total": len(items)}


@router.get("/estates/{estate}", response_model=schemas.Estate, **guard("estate:read"))
def get_estate(estate: str, ctx: Ctx) -> dict[str, Any]:
    return ctx.state.get_estate(estate)


@router.post(
    "/estates/{estate}/gateways",
    status_code=201,
    response_model=schemas.GatewayIssued,
    **guard("admin"),
)
def create_gateway(estate: str, body: GatewayIn, ctx: Ctx) -> dict[str, Any]:
    """Register a gateway. When the service runs the broker itself, the answer carries the
    gateway's MQTT credentials, allowed to publish only under its own topics."""
    gw = ctx.state.add_gateway(estate, body.id, body.name)
    ctx.on_gateway_registered(estate, body.id)
    creds = ctx.issue_credentials(estate, body.id) if ctx.issue_credentials else None
    return {**gw, "mqtt": creds}


@router.get(
    "/estates/{estate}/gateways",
    response_model=schemas.Page[schemas.GatewayHealth],
    **guard("estate:read"),
)
def list_gateways(estate: str, ctx: Ctx) -> dict[str, Any]:
    """Gateways with their last status and their message health: the highest ``seq`` stored,
    messages missing from the sequence (lost unless the gateway replays them), duplicates."""
    ctx.state.get_estate(estate)
    health = ctx.telemetry.gateway_health(estate)
    items = [
        {**g, **health.get(g["id"], {"max_seq": None, "lost_messages": 0, "duplicates": 0})}
        for g in ctx.state.list_gateways(estate)
    ]
    return {"items": items, "total": len(items)}


def _typed(catalog: Catalog, kind: str, metric: str, value: Value) -> Value:
    """Stored values are numbers or text; give booleans and integers back their type."""
    k = catalog.kinds.get(kind)
    m = k.metrics.get(metric) if k else None
    if m is None or isinstance(value, str):
        return value
    if m.type is ValueType.BOOLEAN:
        return bool(value)
    if m.type is ValueType.INTEGER:
        return int(value)
    return value


# A gateway sends its status every 30 s by default: one within this long means it is alive.
LIVE_STATUS_MS = 5 * 60_000


def gateway_states(gateways: list[dict[str, Any]], now_ms: int) -> tuple[set[str], set[str]]:
    """(offline gateways, gateways alive now by their own recent status)."""
    offline = {g["id"] for g in gateways if g["state"] == "offline"}
    live = {
        g["id"]
        for g in gateways
        if g["state"] == "online"
        and g.get("state_ms") is not None
        and now_ms - g["state_ms"] <= LIVE_STATUS_MS
    }
    return offline, live


def device_views(
    catalog: Catalog,
    devices: list[dict[str, Any]],
    latest: dict[str, dict[str, tuple[int, Value]]],
    offline_gateways: set[str],
    now_ms: int,
    live_gateways: set[str] | frozenset[str] = frozenset(),
) -> list[dict[str, Any]]:
    """``live_gateways``: gateways whose own status came within the last few minutes. Their
    devices are judged against the gateway's newest reading rather than the wall clock, so a
    gateway replaying a backlog (data hours old, arriving now) does not show every device as
    offline; a device its gateway stopped hearing still falls behind and shows offline."""
    frontier: dict[str, int] = {}
    for d in devices:
        for ts, _ in latest.get(d["id"], {}).values():
            gw = d["gateway"]
            if ts > frontier.get(gw, -1):
                frontier[gw] = ts
    out = []
    for d in devices:
        metrics = latest.get(d["id"], {})
        last_seen = max((ts for ts, _ in metrics.values()), default=None)
        kind = catalog.kinds.get(d["kind"])
        interval_ms = (kind.interval_s if kind else 60) * 1000
        ref = now_ms
        if d["gateway"] in live_gateways:
            ref = min(now_ms, frontier.get(d["gateway"], now_ms))
        online = (
            last_seen is not None
            and d["gateway"] not in offline_gateways
            and ref - last_seen <= ONLINE_INTERVALS * interval_ms
        )
        out.append(
            {
                "id": d["id"],
                "kind": d["kind"],
                "family": kind.family if kind else None,
                "gateway": d["gateway"],
                "metrics": {
                    m: _typed(catalog, d["kind"], m, v) for m, (_, v) in sorted(metrics.items())
                },
                "last_seen_ms": last_seen,
                "online": online,
            }
        )
    return out


@router.get("/estates/{estate}/devices", response_model=schemas.DevicePage, **guard("estate:read"))
def list_devices(
    estate: str,
    ctx: Ctx,
    kind: str | None = Query(None, max_length=64),
    family: str | None = Query(None, max_length=64),
    device: str | None = Query(None, max_length=63, description="only this device"),
    limit: int = Query(DEVICE_PAGE, ge=1, le=DEVICE_PAGE_MAX),
    cursor: str | None = Query(
        None, max_length=63, description="the ``next_cursor`` of the page before"
    ),
) -> dict[str, Any]:
    """The estate's devices in id order, a page at a time, with their kind, latest metrics,
    last-seen time and online flag; ``total`` counts every match, ``next_cursor`` (null on the
    last page) fetches the next page."""
    ctx.state.get_estate(estate)
    kinds: set[str] | None = None
    if kind:
        kinds = {kind}
    if family:
        of_family = {k for k, v in ctx.catalog.kinds.items() if v.family == family}
        kinds = of_family if kinds is None else kinds & of_family
    rows, total = ctx.state.device_page(estate, kinds, cursor, limit + 1, device)
    more = len(rows) > limit
    rows = rows[:limit]
    now = time.time_ns() // 1_000_000
    offline, live = gateway_states(ctx.state.list_gateways(estate), now)
    items = device_views(
        ctx.catalog,
        rows,
        ctx.telemetry.latest(estate, [d["id"] for d in rows]),
        offline,
        now,
        live,
    )
    return {"items": items, "total": total, "next_cursor": rows[-1]["id"] if more else None}


RECENT_EVENTS_MAX = 200


class DeviceEvent(Out):
    ts: int = Field(description="when the device saw it (data time, ms)")
    gateway: str
    dev: str
    kind: str
    type: str = Field(examples=["elevator.trapped"])
    data: dict[str, Any]


class DeviceEvents(Out):
    items: list[DeviceEvent]
    total: int


@router.get("/estates/{estate}/events", response_model=DeviceEvents, **guard("estate:read"))
def list_events(
    estate: str, ctx: Ctx, limit: int = Query(20, ge=1, le=RECENT_EVENTS_MAX)
) -> dict[str, Any]:
    """The estate's latest device events (a trapped passenger, a fire alarm), newest stored
    first: what the dashboard shows before the live stream brings more."""
    ctx.state.get_estate(estate)
    items = ctx.telemetry.recent_events(estate, limit)
    return {"items": items, "total": len(items)}
