"""A gateway's lifecycle (admin): disable, enable, rotate its credentials, delete.

Each change takes effect at once: the broker account the service manages is removed or given a
new password, which also cuts the gateway's current MQTT connection (see
``estatewatch.broker``), and ingest stops taking the gateway's messages (its registry leaves
out disabled and deleted gateways, which also covers a broker the service does not run).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api import schemas
from api.deps import Ctx, guard
from api.errors import ApiError

router = APIRouter(prefix="/api/v1", tags=["estates"])


def _revoke(ctx: Ctx, estate: str, gw: str) -> bool:
    return ctx.revoke_credentials(estate, gw) if ctx.revoke_credentials else False


@router.post(
    "/estates/{estate}/gateways/{gw}/disable",
    response_model=schemas.GatewayRevoked,
    **guard("admin"),
)
def disable_gateway(estate: str, gw: str, ctx: Ctx) -> dict[str, Any]:
    """Its broker account goes and its connection is cut; its messages are no longer taken.
    Its data stays."""
    row = ctx.state.set_gateway_access(estate, gw, "disabled")
    ctx.on_gateway_changed(estate, gw)
    return {**row, "mqtt_revoked": _revoke(ctx, estate, gw)}


@router.post(
    "/estates/{estate}/gateways/{gw}/enable", response_model=schemas.GatewayIssued, **guard("admin")
)
def enable_gateway(estate: str, gw: str, ctx: Ctx) -> dict[str, Any]:
    """Taken again, with new credentials (shown in this answer only)."""
    row = ctx.state.set_gateway_access(estate, gw, "enabled")
    ctx.on_gateway_changed(estate, gw)
    creds = ctx.rotate_credentials(estate, gw) if ctx.rotate_credentials else None
    return {**row, "mqtt": creds}


@router.post(
    "/estates/{estate}/gateways/{gw}/rotate", response_model=schemas.GatewayIssued, **guard("admin")
)
def rotate_gateway(estate: str, gw: str, ctx: Ctx) -> dict[str, Any]:
    """New MQTT credentials, shown in this answer only; the old password stops working and
    a connection made with it is cut."""
    row = ctx.state.get_gateway(estate, gw)
    if row["access"] != "enabled":
        raise ApiError(409, "gateway_disabled", f"gateway {gw!r} is {row['access']}: enable it")
    if ctx.rotate_credentials is None:
        raise ApiError(
            409,
            "not_managed",
            "the service does not run this broker: change the gateway's password on the "
            "broker given by ESTATEWATCH_MQTT_URL",
        )
    return {**row, "mqtt": ctx.rotate_credentials(estate, gw)}


@router.delete(
    "/estates/{estate}/gateways/{gw}", response_model=schemas.GatewayRevoked, **guard("admin")
)
def delete_gateway(estate: str, gw: str, ctx: Ctx) -> dict[str, Any]:
    """Its broker account goes and its connection is cut; its readings, events and devices
    stay as history, and its id stays taken. Cannot be undone."""
    row = ctx.state.set_gateway_access(estate, gw, "deleted")
    ctx.on_gateway_changed(estate, gw)
    return {**row, "mqtt_revoked": _revoke(ctx, estate, gw)}
