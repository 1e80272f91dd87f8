"""Typed answers: every JSON route's OpenAPI entry has a response schema a client can generate
from (not a bare ``{}`` or an object of unnamed fields), the models refuse a field they do not
list, and an API-only process makes the alert tables when the app is built, never inside a
request."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from alerts.engine import AlertEngine
from alerts.store import AlertStore
from api import schemas
from api.app import create_app
from ingest.state import StateStore
from ingest.telemetry import TelemetryWriter
from protocol.catalog import default_catalog
from protocol.messages import Event
from tests.support import api_context

TOKEN = "openapi-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _app(tmp_path: Path, with_alerts: bool) -> tuple[FastAPI, StateStore]:
    state = StateStore.open(f"sqlite:///{tmp_path / 's.db'}")
    TelemetryWriter(tmp_path / "t.db").close()
    ctx = api_context(
        state,
        tmp_path,
        TOKEN,
        alerts=AlertEngine(state.engine, default_catalog(), lambda: 0) if with_alerts else None,
    )
    return create_app(ctx), state


@pytest.fixture
def openapi(tmp_path: Path) -> Iterator[dict[str, Any]]:
    app, state = _app(tmp_path, with_alerts=True)
    yield app.openapi()
    state.close()


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = doc["components"]["schemas"][name]
    return schema


def untyped(doc: dict[str, Any], schema: dict[str, Any] | None) -> str | None:
    """Why a response schema tells a client nothing (None: it is typed)."""
    if not schema:
        return "no schema"
    schema = _resolve(doc, schema)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            whys = [untyped(doc, s) for s in schema[key]]
            return next((w for w in whys if w), None)
    kind = schema.get("type")
    if kind == "array":
        return untyped(doc, schema.get("items"))
    if kind == "object" or "properties" in schema or "additionalProperties" in schema:
        extra = schema.get("additionalProperties")
        # named fields, typed extra fields, or exactly none (``{}``, "nothing changed")
        if schema.get("properties") or (isinstance(extra, dict) and extra) or extra is False:
            return None
        return "an object with no named or typed fields"
    return None if kind else "no type"


def json_responses(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any] | None]]:
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status, answer in op.get("responses", {}).items():
                content = answer.get("content", {})
                if status in ("200", "201") and "application/json" in content:
                    yield (
                        f"{method.upper()} {path} {status}",
                        content["application/json"].get("schema"),
                    )


def test_every_json_route_has_a_typed_response_schema(openapi: dict[str, Any]) -> None:
    found = dict(json_responses(openapi))
    assert len(found) > 50  # every route of the API is walked, not a few
    bare = {route: why for route, schema in found.items() if (why := untyped(openapi, schema))}
    assert not bare, f"JSON routes without a typed response schema: {bare}"


def test_the_walk_finds_a_route_without_a_model(tmp_path: Path) -> None:
    app, state = _app(tmp_path, with_alerts=False)

    @app.get("/api/v1/untyped")
    def untyped_route() -> dict[str, Any]:
        return {}

    doc = app.openapi()
    state.close()
    found = dict(json_responses(doc))
    assert untyped(doc, found["GET /api/v1/untyped 200"]) == (
        "an object with no named or typed fields"
    )
    assert untyped(doc, found["GET /api/v1/alarms 200"]) is None


def test_a_field_the_model_does_not_list_fails_loudly() -> None:
    """A store's answer that grew a field the model lacks is refused (a 500 in the tests),
    not silently cut from what clients get."""
    row = {
        "id": "e1",
        "name": "新华小区",
        "region": "",
        "created_ms": 1,
        "zone": "",
        "heating_season": "",
        "rescue_arrival_min": None,
    }
    assert schemas.Estate.model_validate(row).model_dump() == row
    with pytest.raises(ValidationError, match="new_field"):
        schemas.Estate.model_validate({**row, "new_field": 1})


def test_an_api_only_process_makes_the_alert_tables_at_startup_not_in_a_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, state = _app(tmp_path, with_alerts=False)
    state.add_estate("e1", "新华小区")

    def no_migration_here(self: AlertStore, now_ms: int) -> int:
        raise AssertionError("a schema migration inside a request")

    monkeypatch.setattr(AlertStore, "migrate", no_migration_here)
    with TestClient(app) as client:
        r = client.get("/api/v1/alarm-quality", params={"month": "2025-01"}, headers=AUTH)
        assert r.status_code == 200, r.text
        assert [row["estate"] for row in r.json()["items"]] == ["e1"]
        r = client.get("/api/v1/reports/yearly", params={"year": 2025}, headers=AUTH)
        assert r.status_code == 200, r.text
        assert [part["estate"] for part in r.json()["estates"]] == ["e1"]
    state.close()


def shape(value: Any) -> Any:
    """The keys of an answer at every depth (values left out: they move with the clock)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return None


def test_the_report_models_keep_every_field_of_a_populated_report(tmp_path: Path) -> None:
    """A fire alarm chattering three times, one left open and acknowledged: the yearly report
    and the month's figures through the API have every field the report functions make."""
    from supervision.report import SHANGHAI, ReportInputs, estate_alarm_quality, yearly_report
    from tests.supervision.test_report import delivery

    state = StateStore.open(f"sqlite:///{tmp_path / 's.db'}")
    TelemetryWriter(tmp_path / "t.db").close()
    state.add_estate("east", "east 小区", "呼和浩特市")
    state.add_gateway("east", "gw-01")
    t0 = time.time_ns() // 1_000_000 - 2 * 3_600_000
    now = [t0]
    engine = AlertEngine(state.engine, default_catalog(), clock=lambda: now[0])
    for i in range(3):
        now[0] = t0 + i * 20_000
        ev = Event("fap-1", "fire_panel", now[0], "fire.alarm", {"zone": "b1", "point": "sd-1"})
        engine.on_committed([delivery("east", events=[ev], ts=now[0])])
        (alarm,) = [a for a in engine.list_alarms("east") if a["state"] == "firing"]
        now[0] += 1_000
        if i < 2:
            engine.resolve(alarm["id"], "duty")
        else:
            engine.acknowledge(alarm["id"], "duty")
    ctx = api_context(state, tmp_path, TOKEN, alerts=engine)
    start = datetime.fromtimestamp(t0 / 1000, SHANGHAI)
    with TestClient(create_app(ctx)) as client:
        r = client.get("/api/v1/reports/yearly", params={"year": start.year}, headers=AUTH)
        assert r.status_code == 200, r.text
        month = f"{start.year:04d}-{start.month:02d}"
        q = client.get(
            "/api/v1/alarm-quality", params={"estate": "east", "month": month}, headers=AUTH
        )
        assert q.status_code == 200, q.text
    inputs = ReportInputs(state, default_catalog(), engine.plans, ctx.telemetry.hours_with_data)
    direct = yearly_report(inputs, start.year)
    assert direct["total"]["alarm_quality"]["chattering"]  # the lists are not empty
    assert shape(r.json()) == shape(direct)
    quality, days = estate_alarm_quality(state.engine, "east", t0 - 1, t0 + 3_600_000, now[0])
    assert shape(q.json()["quality"]) == shape(quality.as_dict())
    assert shape(q.json()["days"][:1]) == shape(days[:1])
    engine.stop()
    state.close()


def test_a_plan_raised_again_to_the_same_level_answers_nothing_changed(tmp_path: Path) -> None:
    """The one answer that is ``{}``: the union of models keeps it as it was."""
    app, state = _app(tmp_path, with_alerts=True)
    state.add_estate("e1", "新华小区")
    body = {"plan": "fire", "level": "II", "reason": "3 号楼确认起火"}
    with TestClient(app) as client:
        first = client.post("/api/v1/estates/e1/plans/activations", json=body, headers=AUTH)
        assert first.status_code == 201 and first.json()["level"] == "Ⅱ", first.text
        again = client.post("/api/v1/estates/e1/plans/activations", json=body, headers=AUTH)
        assert (again.status_code, again.json()) == (201, {})
    state.close()
