"""Adversary tests of the HTTP edge: what a client with a login (or none) must not manage.

The body limit is tested over a real socket against a real uvicorn server: a declared 200 MB
body is refused before a byte of it is read, and a chunked body (no length given) is cut at
the limit rather than read whole.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from api.app import create_app
from api.users import UserStore
from estatewatch.broker import choose_port
from ingest.state import StateStore
from ingest.telemetry import TelemetryWriter
from tests.alerts.conftest import HOUR
from tests.api.test_alerts_api import World, world  # noqa: F401  (the fixture)
from tests.support import api_context

TOKEN = "bounds-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_BODY_BYTES = 1 << 20  # the limit the README promises


@dataclass
class Server:
    port: int
    state: StateStore
    client: TestClient


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    state = StateStore.open(f"sqlite:///{tmp_path / 's.db'}")
    TelemetryWriter(tmp_path / "t.db")
    ctx = api_context(state, tmp_path, TOKEN, users=UserStore(state.engine))
    app = create_app(ctx)
    port = choose_port(0)
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    with TestClient(app) as client:
        yield Server(port, state, client)
    uv.should_exit = True
    thread.join(10)
    state.close()


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response read off the socket (status, headers, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
    want = int(headers.get("content-length", "0"))
    while len(body) < want:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def test_a_declared_200_mb_login_body_is_refused_before_it_is_read(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 209715200\r\n\r\n" + b'{"username": "' + b"a" * 65536
        )
        started = time.monotonic()
        status, headers, body = _response(sock)  # the server does not wait for 200 MB
    assert time.monotonic() - started < 3
    assert status == 413
    assert json.loads(body)["error"]["code"] == "payload_too_large"
    assert headers.get("connection") == "close"


def test_a_chunked_body_is_cut_at_the_limit_not_read_whole(server: Server) -> None:
    piece = b"a" * 65536
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + b"10\r\n" + b'{"username": "aa' + b"\r\n"
        )
        sent = 0
        try:
            while sent < 4 * MAX_BODY_BYTES:  # 4 MiB: past the limit, then the end
                sock.sendall(chunk)
                sent += len(piece)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed while we were still sending
        status, _, body = _response(sock)
    assert status == 413
    assert json.loads(body)["error"] == {
        "code": "payload_too_large",
        "message": f"the request body is larger than {MAX_BODY_BYTES} bytes",
    }


def test_a_body_within_the_limit_is_still_taken(server: Server) -> None:
    body = {"id": "e1", "name": "新华小区", "region": "x" * 50}
    r = server.client.post("/api/v1/estates", json=body, headers=AUTH)
    assert r.status_code == 201
    big = {"username": "a" * (MAX_BODY_BYTES + 1), "password": "x"}
    r = server.client.post("/api/v1/login", json=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_the_page_and_the_api_carry_csp_and_frame_headers(server: Server) -> None:
    for path, headers in (("/", {}), ("/api/v1/estates", AUTH), ("/api/v1/estates", {})):
        r = server.client.get(path, headers=headers)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp, path
        assert "unsafe-inline" not in csp
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
    # the page has no inline script the policy would block
    page = server.client.get("/").text
    assert "<script>" not in page and " on" not in page.split("<body>")[1].split(">")[0]


def test_the_api_docs_page_still_loads_under_its_own_policy(server: Server) -> None:
    r = server.client.get("/docs")
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    # every origin the docs page loads from today is allowed by its policy
    origins = set(re.findall(r"(https://[^/\"']+)/", r.text))
    assert all(o in csp for o in origins), (origins, csp)
    assert "script-src 'self' 'unsafe-inline'" in csp  # swagger starts from an inline script


def test_devices_come_a_page_at_a_time(server: Server) -> None:
    state = server.state
    state.add_estate("big", "大小区")
    state.add_gateway("big", "gw-01")
    state.add_devices(
        [("big", f"h-{i:05d}", "fire_hydrant", "gw-01", 1) for i in range(1200)]
        + [("big", f"lift-{i:03d}", "elevator", "gw-01", 1) for i in range(30)]
    )
    first = server.client.get("/api/v1/estates/big/devices", headers=AUTH).json()
    assert len(first["items"]) == 500 and first["total"] == 1230
    seen = [d["id"] for d in first["items"]]
    cursor = first["next_cursor"]
    while cursor:
        page = server.client.get(
            "/api/v1/estates/big/devices", params={"cursor": cursor}, headers=AUTH
        ).json()
        seen += [d["id"] for d in page["items"]]
        cursor = page["next_cursor"]
    assert len(seen) == 1230 and seen == sorted(set(seen))
    r = server.client.get("/api/v1/estates/big/devices", params={"limit": 5000}, headers=AUTH)
    assert r.status_code == 422 and "limit" in r.json()["error"]["message"]
    lifts = server.client.get(
        "/api/v1/estates/big/devices", params={"kind": "elevator", "limit": 20}, headers=AUTH
    ).json()
    assert (len(lifts["items"]), lifts["total"], lifts["next_cursor"]) == (20, 30, "lift-019")
    one = server.client.get(
        "/api/v1/estates/big/devices", params={"device": "h-00007"}, headers=AUTH
    ).json()
    assert [d["id"] for d in one["items"]] == ["h-00007"] and one["next_cursor"] is None


def test_an_operator_sees_only_the_warnings_of_its_estates(world: World) -> None:  # noqa: F811
    expires = world.clock.now + 6 * HOUR
    for body in (
        {"hazard": "snowstorm", "level": "orange", "estates": ["e1"], "expires_ms": expires},
        {"hazard": "strong_wind", "level": "blue", "region": "呼和浩特", "expires_ms": expires},
        {"hazard": "cold_wave", "level": "yellow", "estates": ["e2"], "expires_ms": expires},
    ):
        assert world.post("auth", "/api/v1/warnings", body).status_code == 201
    seen = {
        who: sorted(w["hazard"] for w in world.get(who, "/api/v1/warnings").json()["items"])
        for who in ("op1", "op2", "view1", "auth", "admin")
    }
    assert seen["op1"] == seen["view1"] == ["snowstorm", "strong_wind"]  # e1, and its region
    assert seen["op2"] == ["cold_wave"]
    assert seen["auth"] == seen["admin"] == ["cold_wave", "snowstorm", "strong_wind"]


def test_a_warning_for_an_unknown_estate_is_refused(world: World) -> None:  # noqa: F811
    body = {
        "hazard": "snowstorm",
        "level": "red",
        "estates": ["e1", "atlantis"],
        "expires_ms": world.clock.now + HOUR,
    }
    r = world.post("auth", "/api/v1/warnings", body)
    assert r.status_code == 404 and "atlantis" in r.json()["error"]["message"]
    assert world.engine.list_warnings() == []


def test_a_drill_held_far_in_the_future_is_refused(world: World) -> None:  # noqa: F811
    body = {"estate": "e1", "plan": "elevator_entrapment", "participants": ["王工"]}
    for held in (2**53 - 1, world.clock.now + 8 * 24 * HOUR):
        r = world.post("op1", "/api/v1/drills", {**body, "held_ms": held})
        assert r.status_code == 422 and "held_ms" in r.json()["error"]["message"]
    r = world.post("op1", "/api/v1/drills", {**body, "held_ms": world.clock.now - HOUR})
    assert r.status_code == 201
