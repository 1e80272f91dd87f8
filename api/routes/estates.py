"""Estates, their gateways and devices."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import Ctx, CurrentUser, guard
from protocol.catalog import Catalog, ValueType
from protocol.messages import Value

router = APIRouter(prefix="/api/v1", tags=["estates"])

ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
PRINTABLE_OR_EMPTY = r"^[^\x00-\x1f\x7f]*$"
# A device is online while it reports within a few of its reporting intervals.
ONLINE_INTERVALS = 3


class EstateIn(BaseModel):
    id: str = Field(pattern=ID_PATTERN, examples=["hohhot-xinhua"])
    # printable text only: names end up in reports, spreadsheets and MQTT payloads
    name: str = Field(min_length=1, max_length=200, pattern=PRINTABLE, examples=["新华小区"])
    region: str = Field(
        default="", max_length=100, pattern=PRINTABLE_OR_EMPTY, examples=["呼和浩特市"]
    )


class GatewayIn(BaseModel):
    id: str = Field(pattern=ID_PATTERN, examples=["gw-01"])
    name: str = Field(default="", max_length=200, pattern=PRINTABLE_OR_EMPTY)


@router.post("/estates", status_code=201, **guard("admin"))
def create_estate(body: EstateIn, ctx: Ctx) -> dict[str, Any]:
    return ctx.state.add_estate(body.id, body.name, body.region)


@router.get("/estates", **guard("user"))
def list_estates(ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    """The estates the caller may see: all of them for admins and authorities."""
    items = [e for e in ctx.state.list_estates() if p.can_read(e["id"])]
    return {"items": items, "total": len(items)}


@router.get("/estates/{estate}", **guard("estate:read"))
def get_estate(estate: str, ctx: Ctx) -> dict[str, Any]:
    return ctx.state.get_estate(estate)


@router.post("/estates/{estate}/gateways", status_code=201, **guard("admin"))
def create_gateway(estate: str, body: GatewayIn, ctx: Ctx) -> dict[str, Any]:
    """Register a gateway. When the service runs the broker itself, the answer carries the
    gateway's MQTT credentials, allowed to publish only under its own topics."""
    gw = ctx.state.add_gateway(estate, body.id, body.name)
    ctx.on_gateway_registered(estate, body.id)
    creds = ctx.issue_credentials(estate, body.id) if ctx.issue_credentials else None
    return {**gw, "mqtt": creds}


@router.get("/estates/{estate}/gateways", **guard("estate:read"))
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


@router.get("/estates/{estate}/devices", **guard("estate:read"))
def list_devices(
    estate: str, ctx: Ctx, kind: str | None = None, family: str | None = None
) -> dict[str, Any]:
    """Every device of the estate with its kind, latest metrics, last-seen time and online flag."""
    ctx.state.get_estate(estate)
    now = time.time_ns() // 1_000_000
    offline, live = gateway_states(ctx.state.list_gateways(estate), now)
    items = device_views(
        ctx.catalog,
        ctx.state.list_devices(estate),
        ctx.telemetry.latest(estate),
        offline,
        now,
        live,
    )
    if kind:
        items = [d for d in items if d["kind"] == kind]
    if family:
        items = [d for d in items if d["family"] == family]
    return {"items": items, "total": len(items)}
