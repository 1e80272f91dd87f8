"""The FastAPI application: REST under /api/v1, health, and the control-room page."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from swagger_ui_bundle import swagger_ui_path

from alerts.store import AlertStore
from api import bounds, errors
from api.context import ApiContext
from api.deps import guard
from api.errors import ApiError
from api.routes import (
    alarms,
    commands,
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
DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
}


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(
        title="estatewatch",
        summary="智慧小区物联网监测 · smart-estate IoT monitoring",
        version="0.1.0",
        docs_url=None,  # served below from local assets: a control room may have no internet
        redoc_url=None,
    )
    app.state.ctx = ctx
    if ctx.alerts is None:
        # An API-only process reports from the alert tables a shard may not have made yet:
        # they are made (or brought up to date) here, once, never inside a request (the
        # service has made them already, retrying while another process was at it).
        AlertStore(ctx.state.engine).migrate(time.time_ns() // 1_000_000)
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
    for alerting in (alarms, silences, plans, warnings, drills, commands):
        app.include_router(alerting.router)

    @app.get("/docs", include_in_schema=False, **guard("public"))
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="estatewatch API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/static/icon.svg",
            oauth2_redirect_url=None,
        )

    @app.get("/docs/assets/{name}", include_in_schema=False, **guard("public"))
    def docs_asset(name: str) -> FileResponse:
        """Swagger UI's own files, from the swagger-ui-bundle package (no CDN)."""
        media = DOCS_ASSETS.get(name)
        if media is None:
            raise ApiError(404, "not_found", f"no asset {name!r}")
        return FileResponse(Path(swagger_ui_path) / name, media_type=media)

    @app.get("/", response_class=HTMLResponse, **guard("public"))
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    return app
