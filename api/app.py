"""The FastAPI application: REST under /api/v1, health, and the control-room page."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

from api import bounds, errors
from api.context import ApiContext
from api.deps import guard
from api.routes import (
    alarms,
    deadletters,
    drills,
    estates,
    gateways,
    health,
    inspections,
    live,
    overview,
    plans,
    reports,
    silences,
    telemetry,
    users,
    warnings,
)

STATIC = Path(__file__).parent / "static"


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(
        title="estatewatch",
        summary="智慧小区物联网监测 · smart-estate IoT monitoring",
        version="0.1.0",
    )
    app.state.ctx = ctx
    errors.install(app)
    bounds.install(app)
    app.include_router(health.router)
    app.include_router(estates.router)
    app.include_router(gateways.router)
    app.include_router(deadletters.router)
    app.include_router(telemetry.router)
    app.include_router(users.router)
    app.include_router(live.router)
    app.include_router(inspections.router)
    app.include_router(overview.router)
    app.include_router(reports.router)
    app.include_router(reports.quality_router)
    for alerting in (alarms, silences, plans, warnings, drills):
        app.include_router(alerting.router)

    @app.get("/", **guard("public"))
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    return app
