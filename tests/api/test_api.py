"""The API over real SQLite stores (no broker needed): auth, error bodies, devices view."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.routes.estates import device_views
from ingest.state import StateStore
from ingest.telemetry import EstateBatch, TelemetryWriter
from protocol.catalog import default_catalog
from protocol.messages import Reading
from tests.support import api_context

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _credentials(estate: str, gw: str) -> dict[str, Any]:
    # the shape estatewatch's broker issues (GatewayCredentials), with a made-up password
    return {
        "username": f"{estate}.{gw}",
        "password": "pw",
        "host": "127.0.0.1",
        "port": 1883,
        "topic_prefix": f"estatewatch/v1/{estate}/{gw}/",
    }


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, StateStore, TelemetryWriter]]:
    state = StateStore.open(f"sqlite:///{tmp_path / 's.db'}")
    writer = TelemetryWriter(tmp_path / "t.db")
    issued: list[tuple[str, str]] = []
    ctx = api_context(
        state,
        tmp_path,
        TOKEN,
        issue_credentials=lambda e, g: issued.append((e, g)) or _credentials(e, g),
    )
    with TestClient(create_app(ctx)) as c:
        yield c, state, writer
    state.close()


@pytest.fixture
def api(client: tuple[TestClient, StateStore, TelemetryWriter]) -> TestClient:
    """The client alone, for tests that need neither the state nor the writer."""
    return client[0]


def test_every_api_call_needs_the_token(api: TestClient) -> None:
    r = api.get("/api/v1/estates")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    assert api.get("/api/v1/estates", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert api.get("/healthz").status_code == 200


def test_estate_gateway_registration_and_errors(api: TestClient) -> None:
    r = api.post("/api/v1/estates", json={"id": "hohhot-a", "name": "新华小区"}, headers=AUTH)
    assert r.status_code == 201 and r.json()["name"] == "新华小区"
    r = api.post("/api/v1/estates", json={"id": "hohhot-a", "name": "x"}, headers=AUTH)
    assert r.status_code == 409 and r.json()["error"]["code"] == "already_exists"
    r = api.post("/api/v1/estates", json={"id": "Bad Id", "name": "x"}, headers=AUTH)
    assert r.status_code == 422 and "id" in r.json()["error"]["message"]
    r = api.post("/api/v1/estates/hohhot-a/gateways", json={"id": "gw-01"}, headers=AUTH)
    assert r.status_code == 201 and r.json()["mqtt"] == _credentials("hohhot-a", "gw-01")
    r = api.post("/api/v1/estates/nowhere/gateways", json={"id": "gw-01"}, headers=AUTH)
    assert r.status_code == 404 and "nowhere" in r.json()["error"]["message"]
    assert api.get("/api/v1/estates/nowhere/devices", headers=AUTH).status_code == 404


def test_devices_show_latest_typed_values(
    client: tuple[TestClient, StateStore, TelemetryWriter],
) -> None:
    c, state, writer = client
    state.add_estate("e1", "E1")
    state.add_gateway("e1", "gw-01")
    state.add_devices([("e1", "lift-1", "elevator", "gw-01", 1)])
    import time

    now = time.time_ns() // 1_000_000
    writer.write(
        [
            EstateBatch(
                "e1",
                "gw-01",
                readings=[
                    Reading(
                        "lift-1", "elevator", now, {"floor": 4, "running": True, "mode": "normal"}
                    )
                ],
            )
        ]
    )
    items = c.get("/api/v1/estates/e1/devices", headers=AUTH).json()["items"]
    assert items == [
        {
            "id": "lift-1",
            "kind": "elevator",
            "family": "elevator",
            "gateway": "gw-01",
            "metrics": {"floor": 4, "mode": "normal", "running": True},
            "last_seen_ms": now,
            "online": True,
        }
    ]


def test_online_flag_follows_reporting_interval_and_gateway_state() -> None:
    cat = default_catalog()
    interval_ms = cat.kinds["fire_hydrant"].interval_s * 1000
    devs = [{"id": "h", "kind": "fire_hydrant", "gateway": "g"}]
    latest = {"h": {"pressure_mpa": (1_000_000, 0.3)}}
    assert device_views(cat, devs, latest, set(), 1_000_000 + interval_ms)[0]["online"]
    assert not device_views(cat, devs, latest, set(), 1_000_000 + 4 * interval_ms)[0]["online"]
    assert not device_views(cat, devs, latest, {"g"}, 1_000_000)[0]["online"]
    assert not device_views(cat, devs, {}, set(), 1_000_000)[0]["online"]


def test_dashboard_page_is_served_zh_cn_first(api: TestClient) -> None:
    r = api.get("/")
    assert r.status_code == 200
    assert '<html lang="zh-CN">' in r.text and "智慧小区" in r.text
    assert "http" not in r.text.split("<script>")[0].replace("http-equiv", "")  # no CDN assets


def test_estate_settings_zone_heating_season_rescue_deadline(api: TestClient) -> None:
    """(issue 11) Each estate names its climate zone; its heating season and lift rescue
    arrival minutes can be its own."""
    body = {"id": "hailar-b", "name": "北苑", "region": "呼伦贝尔市", "zone": "hulunbuir"}
    r = api.post("/api/v1/estates", json=body, headers=AUTH)
    assert r.status_code == 201 and r.json()["zone"] == "hulunbuir"
    r = api.patch(
        "/api/v1/estates/hailar-b",
        json={"heating_season": "09-10/05-20", "rescue_arrival_min": 60},
        headers=AUTH,
    )
    assert r.status_code == 200
    got = api.get("/api/v1/estates/hailar-b", headers=AUTH).json()
    assert (got["zone"], got["heating_season"], got["rescue_arrival_min"]) == (
        "hulunbuir",
        "09-10/05-20",
        60,
    )
    bad = api.patch("/api/v1/estates/hailar-b", json={"zone": "henan"}, headers=AUTH)
    assert bad.status_code == 422 and "unknown zone 'henan'" in bad.json()["error"]["message"]
    bad = api.patch(
        "/api/v1/estates/hailar-b", json={"heating_season": "13-01/04-01"}, headers=AUTH
    )
    assert bad.status_code == 422
    assert (
        api.patch("/api/v1/estates/nope", json={"zone": "hohhot"}, headers=AUTH).status_code == 404
    )
