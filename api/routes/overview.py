"""What the dashboard pages read that no other resource gives in one call, and their assets.

- ``GET /api/v1/catalog``: the device catalog's labels (families, kinds, metrics, event types),
  so the page names things in zh-CN and English from the one catalog the wire contract uses.
- ``GET /api/v1/estates/{estate}/summary``: the estate overview: devices per family online /
  offline / in alarm, gateways with their buffers and message health, the weather level per
  hazard, open alarms by severity and active plans.
- ``GET /api/v1/overview``: the authority's table, one row per estate the caller may read.
- ``GET /static/{name}``: the page's scripts and styles, from this package, never a CDN.

Alarm and plan figures come from the alerts' store (through the engine where this process
runs one; an API node reads the tables the owners write), weather levels from the estate's
owner, which holds them in memory. A process with neither answers them ``null`` with
``alerts_available`` false, so the page says so instead of showing zeros that look like good
news; weather the owner does not give in time is ``null``.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse

from alerts.alarms import AlarmState
from alerts.queries import StoredQueries
from alerts.rules.spec import Severity
from api import schemas
from api.context import ApiContext
from api.deps import Ctx, CurrentUser, guard, owner_act, reads_of
from api.errors import ApiError
from api.routes.estates import device_views, gateway_states
from protocol.catalog import Catalog
from protocol.clock import SHANGHAI, now_ms

router = APIRouter(tags=["dashboard"])

STATIC = Path(__file__).resolve().parent.parent / "static"
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Alarms a person still has to deal with; pending ones have not held long enough to count.
# Cleared ones (returned to normal, unacknowledged) count until acknowledged, but their
# device is no longer in alarm.
IN_ALARM = (AlarmState.FIRING, AlarmState.ACKNOWLEDGED)
UNHANDLED = (*IN_ALARM, AlarmState.CLEARED)
UNACKNOWLEDGED = (AlarmState.FIRING, AlarmState.CLEARED)
MANY = 100_000


# messages.json: language → key → text; the others are the page's files as they are
_ASSET_CONTENT = {
    media.split(";")[0]: {
        "schema": {
            "type": "object",
            "additionalProperties": {"type": "object", "additionalProperties": {"type": "string"}},
        }
        if media == "application/json"
        else {"type": "string"}
    }
    for media in MEDIA_TYPES.values()
}


@router.get(
    "/static/{name:path}",
    include_in_schema=True,
    response_class=FileResponse,
    responses={200: {"content": _ASSET_CONTENT}},
    **guard("public"),
)
def static_asset(name: str) -> FileResponse:
    """A file of the page (scripts, styles). Only files inside ``api/static`` are served."""
    try:
        path = (STATIC / name).resolve()
        found = path.is_relative_to(STATIC) and path.is_file()
    except (OSError, ValueError):  # a name no file can have (a NUL byte, too long)
        found = False
    media = MEDIA_TYPES.get(path.suffix) if found else None
    if media is None:
        raise ApiError(404, "not_found", f"no asset {name!r}")
    # no-cache: the browser revalidates, so a new release is picked up without a hard reload
    return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache"})


def catalog_labels(catalog: Catalog) -> dict[str, Any]:
    return {
        "version": catalog.version,
        "families": [{"id": f, "zh": zh, "en": en} for f, (zh, en) in catalog.families.items()],
        "kinds": {
            k.name: {
                "family": k.family,
                "zh": k.label_zh,
                "en": k.label_en,
                "interval_s": k.interval_s,
                "metrics": {
                    m.name: {
                        "type": m.type.value,
                        "unit": m.unit,
                        "values": list(m.values),
                        "zh": m.label_zh,
                        "en": m.label_en,
                    }
                    for m in k.metrics.values()
                },
            }
            for k in catalog.kinds.values()
        },
        "event_types": {
            e.type: {"family": e.family, "zh": e.label_zh, "en": e.label_en}
            for e in catalog.event_types.values()
        },
        "status_word_bits": {
            str(b.bit): {"name": b.name, "zh": b.label_zh, "en": b.label_en}
            for b in catalog.status_word_bits.values()
        },
        "component_status_word_bits": {
            str(b.bit): {"name": b.name, "zh": b.label_zh, "en": b.label_en}
            for b in catalog.component_status_word_bits.values()
        },
    }


@router.get("/api/v1/catalog", response_model=schemas.CatalogLabels, **guard("user"))
def catalog(ctx: Ctx) -> dict[str, Any]:
    """Labels of device families, kinds, metrics (with units) and event types, zh-CN and en."""
    return catalog_labels(ctx.catalog)


def _devices(ctx: ApiContext, estate: str, now: int) -> list[dict[str, Any]]:
    offline, live = gateway_states(ctx.state.list_gateways(estate), now)
    return device_views(
        ctx.catalog,
        ctx.state.list_devices(estate),
        ctx.telemetry.latest(estate),
        offline,
        now,
        live,
    )


def _reads(ctx: ApiContext) -> StoredQueries | None:
    try:
        return reads_of(ctx)
    except ApiError:
        return None


def _weather(ctx: ApiContext, estate: str) -> list[dict[str, Any]] | None:
    """The estate's weather levels, from its owner (None: not running, or no answer)."""
    try:
        levels: list[dict[str, Any]] = owner_act(
            ctx, estate, "weather_levels", {"estate": estate}, "system"
        )
    except ApiError:
        return None
    return levels


def _open_alarms(
    engine: StoredQueries, estate: str | None, visible: frozenset[str] | None = None
) -> list[dict[str, Any]]:
    return engine.list_alarms(estate, UNHANDLED, None, MANY, 0, visible)


def _active_plans(
    engine: StoredQueries, estate: str | None, visible: frozenset[str] | None = None
) -> list[dict[str, Any]]:
    now = engine.now()  # the engine's time decides what is overdue, as it does for escalation
    return [
        {
            "id": a["id"],
            "estate": a["estate"],
            "plan": a["plan"],
            "plan_name": a["plan_name"],
            "level": a["level"],
            "started_ms": a["started_ms"],
            "tasks_open": sum(1 for t in a["tasks"] if t["done_ms"] is None),
            "tasks_overdue": sum(
                1 for t in a["tasks"] if t["done_ms"] is None and t["due_ms"] < now
            ),
        }
        for a in engine.list_activations(estate, True, MANY, visible)
    ]


def _by_severity(alarms: list[dict[str, Any]]) -> dict[str, int]:
    counts = Counter(a["severity"] for a in alarms)
    return {s.value: counts.get(s.value, 0) for s in Severity}


def estate_summary(
    catalog: Catalog,
    devices: list[dict[str, Any]],
    gateways: list[dict[str, Any]],
    alarms: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    """Devices per family (every family of the catalog, even one the estate lacks, so the
    wall shows the same tiles in the same places) and gateways with their health. Pure."""
    active = [a for a in alarms or () if a["state"] in IN_ALARM]
    alarmed = {a["device"] for a in active if a.get("device")}
    families: dict[str, dict[str, Any]] = {
        f: {"family": f, "zh": zh, "en": en, "total": 0, "online": 0, "offline": 0, "in_alarm": 0}
        for f, (zh, en) in catalog.families.items()
    }
    for d in devices:
        fam = families.get(d["family"] or "")
        if fam is None:
            continue
        fam["total"] += 1
        fam["online" if d["online"] else "offline"] += 1
        fam["in_alarm"] += d["id"] in alarmed
    gw_alarms = Counter(a["subject"] for a in active if a.get("kind") == "gateway")
    return {
        "families": list(families.values()),
        "devices": {
            "total": len(devices),
            "online": sum(d["online"] for d in devices),
            "in_alarm": len(alarmed & {d["id"] for d in devices}),
        },
        "gateways": [{**g, "in_alarm": gw_alarms.get(g["id"], 0)} for g in gateways],
        "last_data_ms": max((d["last_seen_ms"] or 0 for d in devices), default=0) or None,
    }


@router.get(
    "/api/v1/estates/{estate}/summary", response_model=schemas.EstateSummary, **guard("estate:read")
)
def summary(estate: str, ctx: Ctx) -> dict[str, Any]:
    """The estate overview in one call: devices per family online / offline / in alarm,
    gateways with buffers and lost messages, weather level per hazard, open alarms by
    severity, active plans. Alarm, weather and plan parts are null without the alerts engine."""
    info = ctx.state.get_estate(estate)
    now = now_ms()
    health = ctx.telemetry.gateway_health(estate)
    gateways = [
        {**g, **health.get(g["id"], {"max_seq": None, "lost_messages": 0, "duplicates": 0})}
        for g in ctx.state.list_gateways(estate)
    ]
    engine = _reads(ctx)
    alarms = _open_alarms(engine, estate) if engine else None
    body = estate_summary(ctx.catalog, _devices(ctx, estate, now), gateways, alarms)
    return {
        "estate": info,
        "now_ms": now,
        "alerts_available": engine is not None,
        **body,
        "alarms": _by_severity(alarms) if alarms is not None else None,
        "weather": _weather(ctx, estate) if engine else None,
        "plans": _active_plans(engine, estate) if engine else None,
    }


def _year_start_ms(now: int) -> int:
    year = datetime.fromtimestamp(now / 1000, SHANGHAI).year
    return int(datetime(year, 1, 1, tzinfo=SHANGHAI).timestamp() * 1000)


@router.get("/api/v1/overview", response_model=schemas.Overview, **guard("user"))
def overview(ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    """Every estate the caller may read, one row each: open alarms by severity, active plans
    and their levels, rescue deadlines breached (open now, and this year), devices online,
    last data."""
    now = now_ms()
    engine = _reads(ctx)
    visible = None if p.sees_all_estates else p.estates
    estates = [e for e in ctx.state.list_estates() if p.can_read(e["id"])]
    alarms = _open_alarms(engine, None, visible) if engine else []
    plans = _active_plans(engine, None, visible) if engine else []
    rescues = engine.rescues(None, visible) if engine else []
    year_start = _year_start_ms(engine.now() if engine else now)
    items = []
    for e in estates:
        devices = _devices(ctx, e["id"], now)
        mine = [a for a in alarms if a["estate"] == e["id"]]
        online = sum(d["online"] for d in devices)
        row: dict[str, Any] = {
            "estate": e["id"],
            "name": e["name"],
            "region": e["region"],
            "devices": len(devices),
            "online": online,
            "online_pct": round(100 * online / len(devices), 1) if devices else None,
            "last_data_ms": max((d["last_seen_ms"] or 0 for d in devices), default=0) or None,
            "alarms": None,
            "unacknowledged": None,
            "plans": None,
            "rescue_breached_open": None,
            "rescue_breached_year": None,
        }
        if engine:
            row.update(
                alarms=_by_severity(mine),
                unacknowledged=sum(a["state"] in UNACKNOWLEDGED for a in mine),
                plans=[pl for pl in plans if pl["estate"] == e["id"]],
                rescue_breached_open=sum(
                    bool(a.get("deadline_breached")) and a["state"] in IN_ALARM for a in mine
                ),
                rescue_breached_year=sum(
                    bool(r["breached"]) and r["trapped_ms"] >= year_start
                    for r in rescues
                    if r["estate"] == e["id"]
                ),
            )
        items.append(row)
    return {"items": items, "total": len(items), "alerts_available": engine is not None}
