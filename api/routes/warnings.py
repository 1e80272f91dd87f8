"""Official weather warnings (预警信号), and the weather level of an estate per hazard."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, model_validator

from api import schemas
from api.deps import (
    Ctx,
    CurrentUser,
    Ms,
    guard,
    owner_act,
    reads_of,
    visible_estates,
)
from api.owners import NO_ESTATE

router = APIRouter(prefix="/api/v1", tags=["weather"])

Hazard = Literal[
    "strong_wind", "snowstorm", "cold_wave", "sandstorm", "rainstorm", "road_icing",
    "low_temperature",
]  # fmt: skip


class WarningIn(BaseModel):
    hazard: Hazard
    level: Literal["blue", "yellow", "orange", "red"]
    estates: list[str] = Field(default_factory=list, max_length=1000)
    region: str = Field(default="", max_length=100, examples=["呼和浩特市"])
    issued_ms: Ms | None = None
    expires_ms: Ms
    text: str = Field(default="", max_length=2000)
    source: str = Field(default="", max_length=200, examples=["呼和浩特市气象台"])

    @model_validator(mode="after")
    def _covers_something(self) -> WarningIn:
        if not self.estates and not self.region:
            raise ValueError("give the estates or the region the warning covers")
        return self


@router.post(
    "/warnings",
    status_code=201,
    response_model=schemas.WeatherWarning,
    response_model_exclude_unset=True,
    **guard("authority"),
)
def post_warning(body: WarningIn, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    """An official warning; the plans of the estates it covers follow it at once (the estate's
    level is the higher of observed and official) and stand down when it expires."""
    issued = body.issued_ms if body.issued_ms is not None else reads_of(ctx).now()
    args = {
        "hazard": body.hazard, "level": body.level, "issued": issued,
        "expires": body.expires_ms, "estates": body.estates, "region": body.region,
        "text": body.text, "source": body.source,
    }  # fmt: skip
    # the owner of the first estate it names applies it; the others read it within a minute
    estate = body.estates[0] if body.estates else NO_ESTATE
    done: dict[str, Any] = owner_act(ctx, estate, "post_warning", args, p.username)
    return done


@router.delete(
    "/warnings/{warning_id}",
    response_model=schemas.WeatherWarning,
    response_model_exclude_unset=True,
    **guard("authority"),
)
def cancel_warning(warning_id: str, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    """Lift a warning before it expires; plans kept up by it alone stand down at once."""
    args = {"warning": warning_id}
    done: dict[str, Any] = owner_act(ctx, NO_ESTATE, "cancel_warning", args, p.username)
    return done


@router.get(
    "/warnings",
    response_model=schemas.Page[schemas.WeatherWarning],
    response_model_exclude_unset=True,
    **guard("user"),
)
def list_warnings(ctx: Ctx, p: CurrentUser, active: bool | None = Query(None)) -> dict[str, Any]:
    """The warnings that cover the user's estates (all of them for admins and authorities)."""
    items = reads_of(ctx).list_warnings(active, visible_estates(p))
    return {"items": items, "total": len(items)}


@router.get(
    "/estates/{estate}/weather", response_model=schemas.EstateWeather, **guard("estate:read")
)
def estate_weather(estate: str, ctx: Ctx) -> dict[str, Any]:
    """Per hazard: the level observed by the estate's stations (CMA criteria), the official
    one, and the estate's level (the higher), with the evidence."""
    hazards = owner_act(ctx, estate, "weather_levels", {"estate": estate}, "system")
    return {"estate": estate, "hazards": hazards}
