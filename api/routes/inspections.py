"""Random inspection draws for the housing authority."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from api import schemas
from api.deps import Ctx, CurrentUser, guard
from api.errors import ApiError
from supervision.inspections import InspectionBook

router = APIRouter(prefix="/api/v1/inspections", tags=["supervision"])


class DrawIn(BaseModel):
    share: float = Field(
        gt=0, le=1, description="share of eligible estates, e.g. 0.1", examples=[0.1]
    )
    exclude_months: int = Field(
        default=12, ge=0, le=120, description="leave out estates drawn in these last months"
    )
    region: str = Field(
        default="", max_length=100, description="only estates of this region; empty: all"
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        lt=2**62,
        description="to repeat a draw; empty: a new random seed, recorded",
    )
    note: str = Field(default="", max_length=500)


def _book(ctx: Ctx) -> InspectionBook:
    if ctx.inspections is None:
        raise ApiError(503, "unavailable", "inspection draws are not set up on this process")
    return ctx.inspections


@router.post("/draws", status_code=201, response_model=schemas.Draw, **guard("authority"))
def make_draw(body: DrawIn, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    """Draw estates to inspect: reproducible from the recorded seed, kept with who drew."""
    estates = [
        e["id"] for e in ctx.state.list_estates() if not body.region or e["region"] == body.region
    ]
    if not estates:
        raise ApiError(
            422,
            "no_estates",
            f"no estate in region {body.region!r}"
            if body.region
            else "no estate is registered yet",
        )
    try:
        return _book(ctx).make_draw(
            estates,
            body.share,
            body.exclude_months,
            p.username,
            seed=body.seed,
            region=body.region,
            note=body.note,
        )
    except ValueError as exc:
        raise ApiError(422, "nothing_to_draw", str(exc)) from None


@router.get("/draws", response_model=schemas.Page[schemas.Draw], **guard("authority"))
def list_draws(ctx: Ctx) -> dict[str, Any]:
    items = _book(ctx).list()
    return {"items": items, "total": len(items)}


@router.get("/draws/{draw_id}", response_model=schemas.Draw, **guard("authority"))
def get_draw(draw_id: Annotated[int, Path(ge=1, le=2**62)], ctx: Ctx) -> dict[str, Any]:
    try:
        return _book(ctx).get(draw_id)
    except LookupError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
