"""No role reaches beyond its scope, on every route of the OpenAPI document.

The routes are enumerated from the app's own OpenAPI document, so a new route is checked the
day it is added: it must declare its access level (``x-access``), and it is called as every
kind of user against an estate they do not belong to.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from alerts.engine import AlertEngine
from alerts.remote import CommandDesk
from api.app import create_app
from api.users import Role, UserStore
from ingest.state import StateStore
from ingest.telemetry import TelemetryWriter
from protocol.catalog import default_catalog
from supervision.inspections import InspectionBook
from tests.support import api_context

ADMIN = "bootstrap-admin-token"
LEVELS = {"public", "user", "estate:read", "estate:operate", "authority", "admin"}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    state = StateStore.open(f"sqlite:///{tmp_path / 's.db'}")
    TelemetryWriter(tmp_path / "t.db").close()
    users = UserStore(state.engine)
    for e in ("a", "b"):
        state.add_estate(e, f"Estate {e}")
        state.add_gateway(e, "gw-01")
        state.add_devices([(e, f"{e}-dev", "fire_hydrant", "gw-01", 1)])
    users.create_user("auth", Role.AUTHORITY, "password-1", [])
    users.create_user("op-a", Role.OPERATOR, "password-1", ["a"])
    users.create_user("op-b", Role.OPERATOR, "password-1", ["b"])
    users.create_user("view-a", Role.VIEWER, "password-1", ["a"])
    ctx = api_context(
        state,
        tmp_path,
        ADMIN,
        users=users,
        inspections=InspectionBook(state.engine),
        alerts=AlertEngine(state.engine, default_catalog(), clock=lambda: time.time_ns() // 10**6),
        commands=CommandDesk(state, lambda _topic, _payload, _retain: None),
    )
    with TestClient(create_app(ctx)) as client:
        tokens = {"admin": ADMIN}
        for name in ("auth", "op-a", "op-b", "view-a"):
            r = client.post("/api/v1/login", json={"username": name, "password": "password-1"})
            assert r.status_code == 200, r.text
            tokens[name] = r.json()["token"]
        client.cookies.clear()  # each call below says who it is by its header only
        yield client, tokens
    state.close()


def operations(client: TestClient) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for path, item in client.app.openapi()["paths"].items():  # type: ignore[attr-defined]
        for method, op in item.items():
            out.append((method.upper(), path, op))
    return out


def fill(path: str) -> str:
    """Path parameters of estate a's objects."""
    values = {"estate": "a", "dev": "a-dev"}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "1"), path)


def call(client: TestClient, method: str, path: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.request(
        method, fill(path), headers=headers, json={} if method in ("POST", "PUT", "PATCH") else None
    ).status_code


def test_every_route_declares_its_access_level(
    world: tuple[TestClient, dict[str, str]],
) -> None:
    client, _ = world
    undeclared = [f"{m} {p}" for m, p, op in operations(client) if op.get("x-access") not in LEVELS]
    assert undeclared == []


def test_no_role_reaches_beyond_its_scope(world: tuple[TestClient, dict[str, str]]) -> None:
    client, tok = world
    checked = 0
    for method, path, op in operations(client):
        level = op["x-access"]
        if level == "public":
            continue
        where = f"{method} {path} ({level})"
        assert call(client, method, path, None) == 401, where
        assert call(client, method, path, "not-a-token") == 401, where
        if level == "admin":
            for who in ("auth", "op-a", "op-b", "view-a"):
                assert call(client, method, path, tok[who]) == 403, (where, who)
        elif level == "authority":
            for who in ("op-a", "op-b", "view-a"):
                assert call(client, method, path, tok[who]) == 403, (where, who)
        elif level == "estate:read":
            # an operator of estate b learns nothing of estate a, not even that it exists
            assert call(client, method, path, tok["op-b"]) == 404, where
            if path.endswith("/stream"):
                checked += 1
                continue  # an allowed caller's stream never ends: test_live.py opens it
            for who in ("admin", "auth", "op-a", "view-a"):
                assert call(client, method, path, tok[who]) not in (401, 403, 404), (where, who)
        elif level == "estate:operate":
            assert call(client, method, path, tok["op-b"]) == 404, where
            for who in ("auth", "view-a"):
                assert call(client, method, path, tok[who]) == 403, (where, who)
        checked += 1
    assert checked >= 8


def test_lists_show_only_the_callers_estates(world: tuple[TestClient, dict[str, str]]) -> None:
    client, tok = world

    def estates(who: str) -> list[str]:
        r = client.get("/api/v1/estates", headers={"Authorization": f"Bearer {tok[who]}"})
        return [e["id"] for e in r.json()["items"]]

    assert estates("op-b") == ["b"]
    assert estates("view-a") == ["a"]
    assert estates("auth") == ["a", "b"]
    assert estates("admin") == ["a", "b"]


def test_login_cookie_logout_and_bad_password(world: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = world
    assert (
        client.post("/api/v1/login", json={"username": "op-a", "password": "nope"}).status_code
        == 401
    )
    r = client.post("/api/v1/login", json={"username": "op-a", "password": "password-1"})
    assert r.json()["user"] == {
        "username": "op-a",
        "display_name": "",
        "role": "operator",
        "estates": ["a"],
    }
    assert client.get("/api/v1/me").json()["username"] == "op-a"  # by the cookie
    token = r.json()["token"]
    assert (
        client.post("/api/v1/logout", headers={"Authorization": f"Bearer {token}"}).status_code
        == 200
    )
    client.cookies.clear()
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_admin_creates_users_bound_to_existing_estates(
    world: tuple[TestClient, dict[str, str]],
) -> None:
    client, tok = world
    h = {"Authorization": f"Bearer {tok['admin']}"}

    def operator(name: str, estates: list[str]) -> httpx.Response:
        body = {"username": name, "role": "operator", "estates": estates, "password": "long-enough"}
        return client.post("/api/v1/users", headers=h, json=body)

    r = operator("duty-b", ["b"])
    assert r.status_code == 201 and r.json()["estates"] == ["b"]
    assert operator("duty-x", ["nowhere"]).status_code == 404
    r = operator("duty-y", [])
    assert r.status_code == 422 and "estate" in r.json()["error"]["message"]
