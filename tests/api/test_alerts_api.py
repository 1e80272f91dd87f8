"""The alarms, silences, warnings, plans and drills routes over a real engine and SQLite, as
each kind of user: who may see and change what, and who is recorded as having done it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from alerts.engine import AlertEngine
from api import errors
from api.routes import alarms, drills, plans, silences, warnings
from api.users import Role, UserStore
from ingest.state import StateStore
from protocol.catalog import default_catalog
from tests.alerts.conftest import HOUR, MINUTE, RecordingNotifier, SimClock, Site

ADMIN = "alerts-admin-token"


@dataclass
class Ctx:
    alerts: AlertEngine | None
    admin_token: str
    users: UserStore


@dataclass
class World:
    client: TestClient
    engine: AlertEngine
    clock: SimClock
    site: Site
    tokens: dict[str, str]

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def get(self, who: str, path: str, **params: Any) -> Any:
        return self.client.get(path, params=params, headers=self.h(who))

    def post(self, who: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.client.post(path, json=body or {}, headers=self.h(who))


def app_for(ctx: Ctx) -> FastAPI:
    app = FastAPI()
    errors.install(app)
    for module in (alarms, silences, warnings, plans, drills):
        app.include_router(module.router)
    app.state.ctx = ctx
    return app


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    state = StateStore.open(f"sqlite:///{tmp_path / 's.db'}")
    state.add_estate("e1", "新华小区", "内蒙古呼和浩特市")
    state.add_estate("e2", "海拉尔小区", "呼伦贝尔市")
    users = UserStore(state.engine)
    users.create_user("op1", Role.OPERATOR, "password-1", ["e1"])
    users.create_user("op2", Role.OPERATOR, "password-1", ["e2"])
    users.create_user("view1", Role.VIEWER, "password-1", ["e1"])
    users.create_user("auth", Role.AUTHORITY, "password-1", [])
    tokens = {"admin": ADMIN}
    for name in ("op1", "op2", "view1", "auth"):
        found = users.login(name, "password-1")
        assert found is not None
        tokens[name] = found[1]
    clock = SimClock()
    engine = AlertEngine(
        state.engine,
        default_catalog(),
        clock,
        receivers={"control_room": [RecordingNotifier("cr")]},
    )
    with TestClient(app_for(Ctx(engine, ADMIN, users))) as client:
        yield World(client, engine, clock, Site(engine, clock), tokens)
    engine.stop()
    state.close()


def test_alarms_listed_acknowledged_assigned_noted_resolved_with_who(world: World) -> None:
    world.site.reading("p1", "fire_pump", fault=True)
    world.site.reading("h1", "fire_hydrant", pressure_mpa=0.01)  # pending for 5 min
    r = world.get("op1", "/api/v1/alarms", estate="e1", state="firing,acknowledged")
    assert r.status_code == 200
    (alarm,) = r.json()["items"]
    assert (alarm["rule"], alarm["severity"]) == ("fire-pump-fault", "major")
    assert world.get("op1", "/api/v1/alarms", state="pending").json()["total"] == 1
    assert world.get("op1", "/api/v1/alarms", severity="critical").json()["total"] == 0

    path = f"/api/v1/alarms/{alarm['id']}"
    r = world.post("op1", f"{path}/ack", {"note": "电工已派"})
    assert (r.status_code, r.json()["state"], r.json()["acked_by"]) == (200, "acknowledged", "op1")
    r = world.post("op1", f"{path}/ack")
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    assert world.post("op1", f"{path}/assign", {"assignee": "张工"}).json()["assignee"] == "张工"
    assert world.post("op1", f"{path}/notes", {"text": "接触器烧坏"}).status_code == 201
    r = world.post("admin", f"{path}/resolve", {"note": "已更换"})
    assert (r.json()["state"], r.json()["resolved_by"]) == ("resolved", "admin")
    timeline = world.get("view1", path).json()["timeline"]
    assert [(e["action"], e["by"]) for e in timeline] == [
        ("firing", "rules"),
        ("notified", "rules"),
        ("acknowledged", "op1"),
        ("assigned", "op1"),
        ("note", "op1"),
        ("resolved", "admin"),
    ]


def test_errors_say_what_was_wrong(world: World) -> None:
    r = world.get("op1", "/api/v1/alarms", state="burning")
    assert r.status_code == 422 and "unknown state burning" in r.json()["error"]["message"]
    r = world.post("op1", "/api/v1/alarms/al-nothing/ack")
    assert r.status_code == 404 and "al-nothing" in r.json()["error"]["message"]
    assert world.client.get("/api/v1/alarms").status_code == 401


def test_each_user_sees_and_changes_only_their_estates(world: World) -> None:
    world.site.reading("p1", "fire_pump", fault=True)
    (alarm,) = world.engine.list_alarms()
    path = f"/api/v1/alarms/{alarm['id']}"
    assert world.get("op2", "/api/v1/alarms").json()["total"] == 0
    assert world.get("op2", "/api/v1/alarms", estate="e1").status_code == 404
    assert world.get("op2", path).status_code == 404
    assert world.post("op2", f"{path}/ack").status_code == 404
    assert world.get("view1", path).status_code == 200
    assert world.post("view1", f"{path}/ack").status_code == 403
    assert world.get("auth", "/api/v1/alarms").json()["total"] == 1
    assert world.post("auth", f"{path}/ack").status_code == 403


def test_silences_scoped_to_an_estate(world: World) -> None:
    body = {
        "estate": "e1",
        "matchers": [{"name": "device", "value": "lift-.*", "op": "=~"}],
        "duration_min": 120,
        "comment": "电梯年检",
    }
    r = world.post("op1", "/api/v1/silences", body)
    assert r.status_code == 201, r.text
    silence = r.json()
    assert silence["created_by"] == "op1" and silence["estate"] == "e1"
    assert silence["ends_ms"] - silence["starts_ms"] == 2 * HOUR
    assert world.post("op2", "/api/v1/silences", body).status_code == 404
    assert world.post("op1", "/api/v1/silences", {**body, "estate": None}).status_code == 403
    r = world.post("op1", "/api/v1/silences", {**body, "duration_min": None})
    assert r.status_code == 422 and "ends_ms or duration_min" in r.json()["error"]["message"]
    bad = {**body, "matchers": [{"name": "device", "value": "lift-(", "op": "=~"}]}
    assert world.post("op1", "/api/v1/silences", bad).status_code == 422
    assert world.get("op2", "/api/v1/silences").json()["total"] == 0
    assert world.get("op1", "/api/v1/silences", active=True).json()["total"] == 1
    assert (
        world.client.delete(f"/api/v1/silences/{silence['id']}", headers=world.h("op2")).status_code
        == 404
    )
    r = world.client.delete(f"/api/v1/silences/{silence['id']}", headers=world.h("op1"))
    assert r.status_code == 200 and r.json()["active"] is False


def test_an_official_warning_for_a_region_activates_its_estates_plans(world: World) -> None:
    world.site.reading("ws-01", "weather_station", wind_speed_ms=2.0)
    body = {
        "hazard": "snowstorm",
        "level": "orange",
        "region": "呼和浩特",
        "expires_ms": world.clock.now + 6 * HOUR,
        "source": "呼和浩特市气象台",
    }
    assert world.post("op1", "/api/v1/warnings", body).status_code == 403
    r = world.post("auth", "/api/v1/warnings", body)
    assert r.status_code == 201, r.text
    assert r.json()["estates_covered"] == ["e1"] and r.json()["created_by"] == "auth"
    acts = world.get("op1", "/api/v1/plans/activations", estate="e1", active=True).json()
    assert [(a["plan"], a["level"]) for a in acts["items"]] == [("snowstorm", "Ⅱ")]
    weather = world.get("view1", "/api/v1/estates/e1/weather").json()["hazards"]
    snow = next(h for h in weather if h["hazard"] == "snowstorm")
    assert (snow["observed"], snow["official"], snow["level"]) == ("none", "orange", "orange")
    assert world.get("op2", "/api/v1/plans/activations").json()["total"] == 0
    wid = world.get("auth", "/api/v1/warnings", active=True).json()["items"][0]["id"]
    assert world.client.delete(f"/api/v1/warnings/{wid}", headers=world.h("op1")).status_code == 403
    r = world.client.delete(f"/api/v1/warnings/{wid}", headers=world.h("auth"))
    assert r.status_code == 200 and r.json()["active"] is False
    assert (
        world.get("op1", "/api/v1/plans/activations", estate="e1", active=True).json()["total"] == 0
    )
    assert (
        world.client.delete(f"/api/v1/warnings/{wid}", headers=world.h("auth")).status_code == 409
    )
    r = world.post("auth", "/api/v1/warnings", {**body, "region": ""})
    assert r.status_code == 422
    r = world.post("auth", "/api/v1/warnings", {**body, "expires_ms": 1})
    assert r.status_code == 422 and "expire after" in r.json()["error"]["message"]


def test_checklist_tasks_manual_activation_and_stand_down(world: World) -> None:
    assert world.get("view1", "/api/v1/plans").json()["total"] == 12
    r = world.post(
        "op1", "/api/v1/estates/e1/plans/activations",
        {"plan": "fire", "level": "II", "reason": "3 号楼确认起火"},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    act = r.json()
    assert (
        world.post(
            "op2",
            "/api/v1/estates/e1/plans/activations",
            {"plan": "fire", "level": "II", "reason": "x"},
        ).status_code
        == 404
    )
    done = f"/api/v1/plans/activations/{act['id']}/tasks/call-119/done"
    assert world.post("view1", done).status_code == 403
    world.clock.advance(MINUTE)
    r = world.post("op1", done, {"note": "已报警"})
    task = next(t for t in r.json()["tasks"] if t["id"] == "call-119")
    assert (task["done_by"], task["late"]) == ("op1", False)
    assert world.post("op1", done).status_code == 409
    missing = f"/api/v1/plans/activations/{act['id']}/tasks/dance/done"
    assert world.post("op1", missing).status_code == 404
    r = world.post("op1", f"/api/v1/plans/activations/{act['id']}/stand-down", {"reason": "扑灭"})
    assert r.json()["summary"]["tasks_on_time"] == ["call-119"]
    assert world.post("op1", done.replace("call-119", "verify")).status_code == 409
    detail = world.get("auth", f"/api/v1/plans/activations/{act['id']}").json()
    assert [e["action"] for e in detail["timeline"]] == ["activated", "task_done", "stood_down"]
    new = "/api/v1/estates/e1/plans/activations"
    assert (
        world.post("op1", new, {"plan": "picnic", "level": "I", "reason": "x"}).status_code == 404
    )
    assert world.post("op1", new, {"plan": "fire", "level": "V", "reason": "x"}).status_code == 422


def test_drills_recorded_and_counted(world: World) -> None:
    body = {
        "estate": "e1",
        "plan": "fire",
        "held_ms": world.clock.now,
        "participants": ["全体"],
        "findings": "疏散用时 6 分钟",
    }
    r = world.post("op1", "/api/v1/drills", body)
    assert r.status_code == 201 and r.json()["recorded_by"] == "op1"
    assert world.post("op2", "/api/v1/drills", body).status_code == 404
    assert world.post("op1", "/api/v1/drills", {**body, "plan": "picnic"}).status_code == 404
    report = world.get("op1", "/api/v1/drills", estate="e1", year=2026).json()
    fire = next(y for y in report["yearly"] if y["plan"] == "fire")
    assert (fire["held"], fire["required"], fire["short"]) == (1, 2, 1)
    assert world.get("op2", "/api/v1/drills").json()["total"] == 0


def test_without_an_engine_the_routes_say_so(tmp_path: Path) -> None:
    state = StateStore.open(f"sqlite:///{tmp_path / 's.db'}")
    with TestClient(app_for(Ctx(None, ADMIN, UserStore(state.engine)))) as client:
        r = client.get("/api/v1/alarms", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
    state.close()


def test_fire_confirmed_by_a_person_and_a_technicians_arrival_over_the_api(world: World) -> None:
    """(issue 11) Operators confirm a fire (the plan goes to Ⅲ) and record a lift technician's
    arrival; a viewer may do neither."""
    world.site.event("smoke-1", "smoke_detector", "fire.alarm", zone="b3", point="smoke-1")
    (fire,) = world.get("op1", "/api/v1/alarms", estate="e1").json()["items"]
    assert world.post("view1", f"/api/v1/alarms/{fire['id']}/confirm").status_code == 403
    r = world.post("op1", f"/api/v1/alarms/{fire['id']}/confirm", {"note": "确有烟火"})
    assert r.status_code == 200
    acts = world.get("op1", "/api/v1/plans/activations", estate="e1").json()["items"]
    assert [(a["plan"], a["level"]) for a in acts if a["active"]] == [("fire", "Ⅲ")]

    world.site.event("lift-1", "elevator", "elevator.trapped", floor=7, people=True)
    (trapped,) = [
        a
        for a in world.get("op1", "/api/v1/alarms", estate="e1").json()["items"]
        if a["rule"] == "elevator-trapped"
    ]
    world.clock.advance(20 * MINUTE)
    r = world.post("op1", f"/api/v1/alarms/{trapped['id']}/arrived", {"note": "维保到场"})
    assert r.status_code == 200
    again = world.post("op1", f"/api/v1/alarms/{trapped['id']}/arrived")
    assert again.status_code == 409 and "recorded already" in again.json()["error"]["message"]
    assert world.post("op1", f"/api/v1/alarms/{fire['id']}/arrived").status_code == 409
    (rescue,) = world.get("op1", "/api/v1/rescues", estate="e1").json()["items"]
    assert (rescue["arrived_by"], rescue["breached"]) == ("op1", False)
