"""Remote commands to a device (an e-bike charging socket's power): send one, follow it.

Sending is for an operator of the device's estate (or an admin); who sent it is the caller,
never a field of the body. The command's state then moves from ``sent`` to ``acknowledged``,
``failed`` (with the gateway's reason) or ``timed_out``; the live stream tells each change as
a ``command`` event, and a command tied to an alarm writes each state into its timeline.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from alerts.commands import MAX_REASON
from alerts.remote import CommandDesk
from api import schemas
from api.deps import Ctx, CurrentUser, guard, owner_act, require_read
from api.errors import ApiError

router = APIRouter(prefix="/api/v1", tags=["commands"])

EstateId = Annotated[str, Path(min_length=1, max_length=63)]
DeviceId = Annotated[str, Path(min_length=1, max_length=128)]


def desk_of(ctx: Ctx) -> CommandDesk:
    desk: CommandDesk | None = getattr(ctx, "commands", None)
    if desk is None:
        raise ApiError(
            503,
            "unavailable",
            "this process sends no remote commands: give it the broker "
            "(ESTATEWATCH_MQTT_URL), or send them to the process that runs ingest",
        )
    return desk


class CommandIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str = Field(
        min_length=1,
        max_length=40,
        description="socket.power_off or socket.power_on (e-bike charging sockets)",
        examples=["socket.power_off"],
    )
    reason: str = Field(
        default="",
        max_length=MAX_REASON,
        description="why, for the record and the gateway",
        examples=["插座温度 68℃，远程断电"],
    )
    alarm_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=32,
        description="the alarm this command answers: its timeline records every state",
    )

    @field_validator("reason", "action", "alarm_id")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("no control characters (line breaks, tabs …)")
        return value


@router.post(
    "/estates/{estate}/devices/{dev}/commands",
    status_code=201,
    response_model=schemas.Command,
    **guard("estate:operate"),
)
def send_command(
    estate: EstateId, dev: DeviceId, body: CommandIn, ctx: Ctx, p: CurrentUser
) -> dict[str, Any]:
    """Send a command to the device through its gateway (MQTT ``cmd``, QoS 1). Answers the
    command record at once, in state ``sent`` (``failed`` if the service's broker connection
    is down); follow it with ``GET /api/v1/commands/{id}`` or the live stream. 404: no such
    device (or alarm); 422: not an action for this device; 409: its gateway is disabled, or
    the same action for this alarm still waits for its answer; 429: 1,000 commands wait for
    their answers already. Sent by the owner of the estate (here, or over the broker), which
    keeps it until its answer or its time-out."""
    desk_of(ctx)  # 503 where commands are not taken at all
    args = {"estate": estate, "dev": dev, "action": body.action, "reason": body.reason,
            "alarm_id": body.alarm_id}  # fmt: skip
    done: dict[str, Any] = owner_act(ctx, estate, "send_command", args, p.username)
    return done


@router.get(
    "/estates/{estate}/devices/{dev}/commands",
    response_model=schemas.CommandPage,
    **guard("estate:read"),
)
def device_commands(
    estate: EstateId,
    dev: DeviceId,
    ctx: Ctx,
    limit: int = Query(20, ge=1, le=100),
) -> dict[str, Any]:
    """The device's recent commands, newest first (a device keeps its last 100)."""
    ctx.state.get_device(estate, dev)  # 404 for a device that does not exist
    items = desk_of(ctx).for_device(estate, dev, limit)
    return {"items": items, "total": len(items)}


@router.get("/commands/{command_id}", response_model=schemas.Command, **guard("user"))
def get_command(
    command_id: Annotated[str, Path(min_length=1, max_length=40)], ctx: Ctx, p: CurrentUser
) -> dict[str, Any]:
    """One command and its state."""
    cmd = desk_of(ctx).get(command_id)
    require_read(p, cmd["estate"])
    return cmd
