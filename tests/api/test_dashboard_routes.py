"""The small routes the dashboard needed (issue 13): an estate's latest device events, a drill
planned by hand, and a user's role and estates changed."""

from __future__ import annotations

import time

import httpx
import pytest

from estatewatch.service import Service
from tests.api.test_alerts_api import World, world
from tests.browser.test_dashboard import ADMIN, Gateway, estate_with_gateway, now_ms, user

__all__ = ["world"]  # a fixture, used by name


def test_a_drill_planned_by_hand_is_recorded_against_its_id(world: World) -> None:
    body = {"estate": "e1", "plan": "fire", "scheduled_ms": world.clock.now + 86_400_000}
    r = world.post("op1", "/api/v1/drills/planned", body)
    assert r.status_code == 201, r.text
    planned = r.json()
    assert (planned["status"], planned["scheduled_ms"]) == ("scheduled", body["scheduled_ms"])
    assert world.post("op2", "/api/v1/drills/planned", body).status_code == 404
    assert world.post("view1", "/api/v1/drills/planned", body).status_code == 403
    far = {**body, "scheduled_ms": world.clock.now + 400 * 86_400_000}
    r = world.post("op1", "/api/v1/drills/planned", far)
    assert r.status_code == 422 and "a year ahead" in r.json()["error"]["message"]
    r = world.post("op1", "/api/v1/drills/planned", {**body, "plan": "picnic"})
    assert r.status_code == 404
    held = {"estate": "e1", "plan": "fire", "held_ms": world.clock.now, "drill_id": planned["id"]}
    r = world.post("op1", "/api/v1/drills", {**held, "participants": ["全体"]})
    assert (r.status_code, r.json()["id"], r.json()["status"]) == (201, planned["id"], "held")


def call(service: Service, method: str, path: str, body: object = None) -> httpx.Response:
    return httpx.request(method, service.url + path, headers=ADMIN, json=body, timeout=10)


@pytest.mark.integration
def test_events_listed_and_a_users_estates_changed(service: Service) -> None:
    gw = Gateway(estate_with_gateway(service, "rt-1", "路由 一号"))
    estate_with_gateway(service, "rt-2", "路由 二号")
    event = {"dev": "lift-1", "kind": "elevator", "ts": now_ms(), "type": "elevator.trapped"}
    gw.send("events", [{**event, "data": {"floor": 7, "people": True}}])
    gw.close()
    deadline = time.monotonic() + 10
    items: list[dict[str, object]] = []
    while not items and time.monotonic() < deadline:
        items = call(service, "GET", "/api/v1/estates/rt-1/events").json()["items"]
        time.sleep(0.05)
    assert [(e["dev"], e["type"], e["data"]) for e in items] == [
        ("lift-1", "elevator.trapped", {"floor": 7, "people": True})
    ]
    assert call(service, "GET", "/api/v1/estates/rt-1/events?limit=201").status_code == 422
    assert call(service, "GET", "/api/v1/estates/nowhere/events").status_code == 404

    user(service, "duty-rt", "operator", ["rt-1"])
    r = call(service, "PATCH", "/api/v1/users/duty-rt", {"estates": ["rt-1", "rt-2"]})
    assert (r.status_code, r.json()["estates"], r.json()["role"]) == (
        200,
        ["rt-1", "rt-2"],
        "operator",
    )
    r = call(service, "PATCH", "/api/v1/users/duty-rt", {"estates": []})
    assert r.status_code == 422 and "at least one estate" in r.json()["error"]["message"]
    r = call(service, "PATCH", "/api/v1/users/duty-rt", {"estates": ["nowhere"]})
    assert r.status_code == 404
    r = call(service, "PATCH", "/api/v1/users/nobody", {"role": "viewer"})
    assert r.status_code == 404
    token = httpx.post(
        service.url + "/api/v1/login", json={"username": "duty-rt", "password": "browser-test-1"}
    ).json()["token"]
    me = httpx.get(service.url + "/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["estates"] == ["rt-1", "rt-2"]
    r = call(service, "PATCH", "/api/v1/users/duty-rt", {"role": "viewer", "estates": ["rt-2"]})
    assert r.status_code == 200
    # the same token, the new rights at once
    me = httpx.get(service.url + "/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert (me.json()["role"], me.json()["estates"]) == ("viewer", ["rt-2"])
