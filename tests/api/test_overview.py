"""The dashboard's own reads over real SQLite stores and a real alert engine: the estate
summary (families online / offline / in alarm, gateways, weather, plans), the authority
overview (only the caller's estates; alarms, plans, rescue deadlines breached), the catalog's
labels, and the page's assets."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from alerts.engine import AlertEngine
from api.app import create_app
from api.context import ApiContext
from api.users import Role, UserStore
from ingest.state import StateStore
from ingest.telemetry import EstateBatch, TelemetryWriter
from protocol.catalog import default_catalog
from protocol.messages import Reading
from tests.alerts.conftest import MINUTE, SimClock, Site
from tests.support import api_context

ADMIN = "overview-admin-token"


@dataclass
class World:
    client: TestClient
    ctx: ApiContext
    engine: AlertEngine
    clock: SimClock
    e1: Site
    tokens: dict[str, str]

    def get(self, who: str, path: str) -> Any:
        r = self.client.get(path, headers={"Authorization": f"Bearer {self.tokens[who]}"})
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    state = StateStore.open(f"sqlite:///{tmp_path / 's.db'}")
    writer = TelemetryWriter(tmp_path / "t.db")
    state.add_estate("e1", "新华小区", "呼和浩特市")
    state.add_estate("e2", "北苑小区", "呼伦贝尔市")
    for e in ("e1", "e2"):
        state.add_gateway(e, "gw-01")
    now = time.time_ns() // 1_000_000
    devices = [
        ("e1", "fap-1", "fire_panel", {"status_word": 0}, now),
        ("e1", "pump-1", "fire_pump", {"running": False, "auto": True, "fault": False}, now),
        ("e1", "lift-1", "elevator", {"floor": 1}, now - 3_600_000),  # silent for an hour
        ("e2", "ws-1", "weather_station", {"temp_c": -30.0}, now),
    ]
    state.add_devices([(e, d, k, "gw-01", ts) for e, d, k, _, ts in devices])
    writer.write([EstateBatch(e, "gw-01", [Reading(d, k, ts, m)]) for e, d, k, m, ts in devices])
    users = UserStore(state.engine)
    users.create_user("op1", Role.OPERATOR, "password-1", ["e1"])
    users.create_user("auth", Role.AUTHORITY, "password-1", [])
    tokens = {"admin": ADMIN}
    for name in ("op1", "auth"):
        found = users.login(name, "password-1")
        assert found is not None
        tokens[name] = found[1]
    clock = SimClock(now)
    engine = AlertEngine(state.engine, default_catalog(), clock)
    ctx = api_context(state, tmp_path, ADMIN, users=users, alerts=engine)
    with TestClient(create_app(ctx)) as client:
        yield World(client, ctx, engine, clock, Site(engine, clock, "e1"), tokens)
    engine.stop()
    writer.close()
    state.close()


def family(summary: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [f for f in summary["families"] if f["family"] == name]
    return found


def test_summary_counts_devices_per_family_online_offline_and_in_alarm(world: World) -> None:
    world.e1.reading("pump-1", "fire_pump", running=False, auto=True, fault=True)
    s = world.get("op1", "/api/v1/estates/e1/summary")
    assert s["alerts_available"] is True
    assert [f["family"] for f in s["families"]] == list(default_catalog().families)
    fire = family(s, "fire")
    assert (fire["zh"], fire["total"], fire["online"], fire["offline"], fire["in_alarm"]) == (
        "消防",
        2,
        2,
        0,
        1,
    )
    lifts = family(s, "elevator")
    assert (lifts["total"], lifts["online"], lifts["offline"], lifts["in_alarm"]) == (1, 0, 1, 0)
    assert family(s, "gas")["total"] == 0  # every family has its tile, even an empty one
    assert s["devices"] == {"total": 3, "online": 2, "in_alarm": 1}
    assert s["alarms"] == {"critical": 0, "major": 1, "minor": 0, "warning": 0}
    (gw,) = s["gateways"]
    assert (gw["id"], gw["lost_messages"], gw["duplicates"], gw["in_alarm"]) == ("gw-01", 0, 0, 0)
    assert {w["hazard"] for w in s["weather"]} >= {"snowstorm", "cold_wave", "strong_wind"}
    assert s["plans"] == []


def test_summary_names_an_activated_plan_and_its_overdue_tasks(world: World) -> None:
    world.e1.event("fap-1", "fire_panel", "fire.alarm", zone="b3", point="smoke-1", status_word=3)
    (plan,) = world.get("op1", "/api/v1/estates/e1/summary")["plans"]
    # (issue 11, GB 25201 §5.3) one unconfirmed fire alarm is Ⅳ: verify within 3 minutes
    assert (plan["plan"], plan["level"], plan["tasks_overdue"]) == ("fire", "Ⅳ", 0)
    world.clock.advance(6 * MINUTE)
    (plan,) = world.get("op1", "/api/v1/estates/e1/summary")["plans"]
    assert plan["tasks_overdue"] == 1 and plan["tasks_open"] == 2


def test_summary_without_an_engine_says_so_rather_than_showing_zeros(world: World) -> None:
    world.ctx.alerts = None
    s = world.get("op1", "/api/v1/estates/e1/summary")
    assert s["alerts_available"] is False
    assert (s["alarms"], s["weather"], s["plans"]) == (None, None, None)
    assert s["devices"]["total"] == 3
    row = world.get("auth", "/api/v1/overview")["items"][0]
    assert (row["alarms"], row["plans"], row["rescue_breached_open"]) == (None, None, None)


def test_overview_shows_only_the_callers_estates_with_alarms_plans_and_rescues(
    world: World,
) -> None:
    world.e1.event("fap-1", "fire_panel", "fire.alarm", zone="b3", point="smoke-1", status_word=3)
    world.e1.event("lift-1", "elevator", "elevator.trapped", floor=7, people=True)
    world.clock.advance(31 * MINUTE)
    world.engine.tick()  # the 30-minute rescue deadline passes
    assert [r["estate"] for r in world.get("op1", "/api/v1/overview")["items"]] == ["e1"]
    body = world.get("auth", "/api/v1/overview")
    assert body["alerts_available"] is True
    e1, e2 = body["items"]
    assert (e1["estate"], e1["name"], e1["region"]) == ("e1", "新华小区", "呼和浩特市")
    firing = world.engine.list_alarms("e1", ["firing"], limit=1000)
    assert e1["alarms"]["critical"] == 2  # the fire alarm and the entrapment
    assert e1["unacknowledged"] == len(firing) >= 2  # with no-data alarms of silent devices
    assert {(p["plan"], p["level"]) for p in e1["plans"]} >= {("fire", "Ⅳ")}  # issue 11
    assert (e1["rescue_breached_open"], e1["rescue_breached_year"]) == (1, 1)
    assert (e1["devices"], e1["online"], e1["online_pct"]) == (3, 2, 66.7)
    assert e1["last_data_ms"] is not None
    assert (e2["devices"], e2["online_pct"], e2["alarms"]["critical"], e2["plans"]) == (
        1,
        100.0,
        0,
        [],
    )


def test_catalog_labels_for_the_page(world: World) -> None:
    cat = world.get("op1", "/api/v1/catalog")
    assert cat["families"][0] == {"id": "fire", "zh": "消防", "en": "Fire protection"}
    hydrant = cat["kinds"]["fire_hydrant"]
    assert hydrant["family"] == "fire" and hydrant["metrics"]["pressure_mpa"]["unit"] == "MPa"
    assert cat["kinds"]["ebike_charger"]["metrics"]["state"]["values"] == [
        "idle",
        "charging",
        "full",
        "fault",
    ]
    assert cat["event_types"]["elevator.trapped"]["zh"] == "困人"


def test_page_assets_are_served_and_nothing_outside_the_static_folder(world: World) -> None:
    c = world.client
    r = c.get("/static/app.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert r.headers["cache-control"] == "no-cache"
    assert c.get("/static/views/alarms.js").status_code == 200
    assert c.get("/static/app.css").headers["content-type"].startswith("text/css")
    assert c.get("/static/messages.json").json()["zh-CN"]["app.title"] == "智慧小区监测"
    for bad in ("nope.js", "../app.py", "..%2Fapp.py", "%2e%2e/routes/overview.py", "a%00.js"):
        r = c.get(f"/static/{bad}")
        assert r.status_code == 404, bad
        assert r.json()["error"]["code"] == "not_found"


def test_a_fire_alarm_reset_before_anyone_acknowledged_it_counts_until_acknowledged(
    world: World,
) -> None:
    """ISA-18.2 "return to normal, unacknowledged": listed and counted as unacknowledged for
    the authority until a person acknowledges it; its device is no longer in alarm."""
    world.e1.event("smoke-1", "smoke_detector", "fire.alarm", zone="b3", point="smoke-1")
    world.clock.advance(MINUTE)
    world.e1.event("smoke-1", "smoke_detector", "fire.reset", point="smoke-1", by="panel_reset")
    (alarm,) = world.get("op1", "/api/v1/alarms?estate=e1&state=cleared")["items"]
    assert (alarm["rule"], alarm["acked_by"]) == ("fire-alarm-detector", None)

    def e1() -> dict[str, Any]:
        return next(
            r for r in world.get("auth", "/api/v1/overview")["items"] if r["estate"] == "e1"
        )

    firing = len(world.engine.list_alarms("e1", ["firing"], limit=1000))
    before = e1()
    assert before["unacknowledged"] == firing + 1 and before["alarms"]["critical"] == 1
    assert world.get("op1", "/api/v1/estates/e1/summary")["devices"]["in_alarm"] == 0
    r = world.client.post(
        f"/api/v1/alarms/{alarm['id']}/ack",
        json={},
        headers={"Authorization": f"Bearer {world.tokens['op1']}"},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["acked_by"]) == ("resolved", "op1")
    assert world.get("op1", "/api/v1/alarms?estate=e1&state=cleared")["items"] == []
    after = e1()
    assert (after["unacknowledged"], after["alarms"]["critical"]) == (firing, 0)
