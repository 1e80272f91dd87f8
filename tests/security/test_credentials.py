"""Adversary tests: the lifecycle of credentials, against the real service and the Mosquitto it
manages.

A gateway disabled, rotated or deleted by an admin must lose its broker account and its current
connection at once (Mosquitto keeps a connected client through a password change unless told
otherwise), and what it publishes after must not be stored; a user disabled, rotated or deleted
must lose its tokens and its live streams at once.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion

from estatewatch.service import Service
from ingest.state import AlreadyExists, NotFound, StateStore
from protocol.clock import now_ms
from tests.security.auth_helpers import (
    admin,
    as_user,
    login,
    make_user,
    open_stream,
    wait_until,
)
from tests.support import connect_result

pytestmark = pytest.mark.integration

ESTATE = "sec-cred"
GOOD = "Lantern-harbour-71"


class GatewayLink:
    """A gateway's MQTT connection, recording its connects and disconnects."""

    def __init__(self, creds: dict[str, Any], password: str | None = None) -> None:
        self.creds = creds
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.refused: list[str] = []
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"gw-{ESTATE}-{creds['username']}"
        )
        self.client.username_pw_set(creds["username"], password or creds["password"])
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.disconnected.set()
        self.client.connect(creds["host"], creds["port"])
        self.client.loop_start()

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            self.refused.append(str(rc))
        else:
            self.connected.set()

    def send(self, seq: int, temp: float) -> None:
        gw = self.creds["username"].split(".", 1)[1]
        payload = {
            "v": 1,
            "gw": gw,
            "seq": seq,
            "sent": now_ms(),
            "readings": [
                {"dev": "ws-01", "kind": "weather_station", "ts": now_ms(), "m": {"temp_c": temp}}
            ],
        }
        self.client.publish(f"{self.creds['topic_prefix']}telemetry", orjson.dumps(payload), 1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def temp_of(service: Service, gw_estate: str = ESTATE) -> float | None:
    with admin(service) as api:
        items = api.get(f"/api/v1/estates/{gw_estate}/devices").json()["items"]
    found = [d["metrics"].get("temp_c") for d in items if d["id"] == "ws-01"]
    return found[0] if found else None


def register(service: Service, gw: str) -> dict[str, Any]:
    with admin(service) as api:
        if api.get(f"/api/v1/estates/{ESTATE}").status_code == 404:
            assert (
                api.post("/api/v1/estates", json={"id": ESTATE, "name": "安全"}).status_code == 201
            )
        r = api.post(f"/api/v1/estates/{ESTATE}/gateways", json={"id": gw})
    assert r.status_code == 201, r.text
    creds = r.json()["mqtt"]
    assert creds and creds["password"], "the managed Mosquitto gives every gateway an account"
    return dict(creds)


def stored(service: Service, temp: float, timeout_s: float = 10) -> bool:
    return wait_until(lambda: temp_of(service) == temp, timeout_s)


# --- gateways ------------------------------------------------------------------------------


def test_a_disabled_gateway_is_cut_off_and_its_publishes_are_not_stored(service: Service) -> None:
    creds = register(service, "gw-dis")
    link = GatewayLink(creds)
    try:
        assert link.connected.wait(5)
        link.send(1, -1.0)
        assert stored(service, -1.0)

        with admin(service) as api:
            r = api.post(f"/api/v1/estates/{ESTATE}/gateways/gw-dis/disable")
        assert r.status_code == 200, r.text
        assert r.json()["access"] == "disabled" and r.json()["mqtt_revoked"] is True
        # its open connection is cut at once, and it cannot come back
        assert link.disconnected.wait(5), "the disabled gateway is still connected"
        assert connect_result(creds, creds["password"]) == "Not authorized"
        link.send(2, -2.0)  # paho keeps it and tries again: refused each time
        time.sleep(2)
        assert temp_of(service) == -1.0

        # even a message on its topic by another way in (here the service's own account) is
        # not stored: ingest no longer takes the gateway
        spoof = mqtt.Client(CallbackAPIVersion.VERSION2)
        ep = service.endpoint
        assert ep is not None
        spoof.username_pw_set(ep.username, ep.password)
        spoof.connect(ep.host, ep.port)
        spoof.loop_start()
        body = {
            "v": 1,
            "gw": "gw-dis",
            "seq": 3,
            "sent": now_ms(),
            "readings": [
                {"dev": "ws-01", "kind": "weather_station", "ts": now_ms(), "m": {"temp_c": -3.0}}
            ],
        }
        spoof.publish(f"{creds['topic_prefix']}telemetry", orjson.dumps(body), 1).wait_for_publish(
            5
        )
        spoof.disconnect()
        spoof.loop_stop()
        with admin(service) as api:
            assert wait_until(
                lambda: api.get(f"/api/v1/deadletters?estate={ESTATE}").json()["items"], 10
            )
        assert temp_of(service) == -1.0
    finally:
        link.close()

    # enabled again, with new credentials shown once
    with admin(service) as api:
        r = api.post(f"/api/v1/estates/{ESTATE}/gateways/gw-dis/enable")
    assert r.status_code == 200 and r.json()["access"] == "enabled"
    fresh = r.json()["mqtt"]
    assert fresh["password"] != creds["password"]
    link = GatewayLink(fresh)
    try:
        assert link.connected.wait(5)
        link.send(4, -4.0)
        assert stored(service, -4.0)
    finally:
        link.close()


def test_rotating_a_gateway_cuts_the_old_password_and_shows_the_new_one_once(
    service: Service,
) -> None:
    creds = register(service, "gw-rot")
    old = GatewayLink(creds)
    try:
        assert old.connected.wait(5)
        with admin(service) as api:
            r = api.post(f"/api/v1/estates/{ESTATE}/gateways/gw-rot/rotate")
            assert r.status_code == 200, r.text
            fresh = r.json()["mqtt"]
            # shown in that answer only: never in the gateway list
            listed = api.get(f"/api/v1/estates/{ESTATE}/gateways").text
        assert fresh["password"] != creds["password"] and fresh["password"] not in listed
        assert creds["password"] not in listed
        assert old.disconnected.wait(5), "a connection made with the old password lives on"
        assert connect_result(creds, creds["password"]) == "Not authorized"
    finally:
        old.close()
    new = GatewayLink(fresh)
    try:
        assert new.connected.wait(5)
        new.send(1, 7.5)
        assert stored(service, 7.5)
    finally:
        new.close()


def test_a_deleted_gateway_loses_its_account_and_keeps_its_history(service: Service) -> None:
    creds = register(service, "gw-del")
    link = GatewayLink(creds)
    try:
        assert link.connected.wait(5)
        link.send(1, 3.25)
        assert stored(service, 3.25)
        with admin(service) as api:
            r = api.delete(f"/api/v1/estates/{ESTATE}/gateways/gw-del")
            assert r.status_code == 200 and r.json()["access"] == "deleted"
            assert link.disconnected.wait(5)
            assert connect_result(creds, creds["password"]) == "Not authorized"
            ids = [g["id"] for g in api.get(f"/api/v1/estates/{ESTATE}/gateways").json()["items"]]
            assert "gw-del" not in ids
            # its data stays: the device, its latest reading and its chart
            assert temp_of(service) == 3.25
            chart = api.get(
                f"/api/v1/estates/{ESTATE}/devices/ws-01/telemetry", params={"metric": "temp_c"}
            )
            assert chart.status_code == 200 and chart.json()["points"]
            # its id stays taken (its seq book and history name it), and it stays deleted
            r = api.post(f"/api/v1/estates/{ESTATE}/gateways", json={"id": "gw-del"})
            assert r.status_code == 409
            assert api.post(f"/api/v1/estates/{ESTATE}/gateways/gw-del/enable").status_code == 404
            assert api.post(f"/api/v1/estates/{ESTATE}/gateways/gw-del/rotate").status_code == 409
    finally:
        link.close()


def test_only_an_admin_manages_credentials(service: Service) -> None:
    register(service, "gw-acl")
    make_user(service, "duty-acl", "operator", [ESTATE], GOOD)
    make_user(service, "boss-acl", "authority", [], GOOD)
    for name in ("duty-acl", "boss-acl"):
        with as_user(service, login(service, name, GOOD)) as c:
            for path in ("disable", "enable", "rotate"):
                r = c.post(f"/api/v1/estates/{ESTATE}/gateways/gw-acl/{path}")
                assert r.status_code == 403, (name, path)
            assert c.delete(f"/api/v1/estates/{ESTATE}/gateways/gw-acl").status_code == 403
            for path in ("disable", "enable", "rotate"):
                assert c.post(f"/api/v1/users/duty-acl/{path}").status_code == 403
            assert c.delete("/api/v1/users/boss-acl").status_code == 403


# --- users ---------------------------------------------------------------------------------


def test_a_disabled_user_loses_its_tokens_and_live_streams_at_once(service: Service) -> None:
    register(service, "gw-u1")
    make_user(service, "duty-dis", "operator", [ESTATE], GOOD)
    token = login(service, "duty-dis", GOOD)
    with open_stream(service, token, f"/api/v1/estates/{ESTATE}/stream") as stream:
        with admin(service) as api:
            r = api.post("/api/v1/users/duty-dis/disable")
            assert r.status_code == 200 and r.json()["disabled"] is True
        assert stream.ended.wait(5), "the disabled user's stream goes on"
    with as_user(service, token) as c:
        assert c.get("/api/v1/me").status_code == 401
    r = httpx.post(f"{service.url}/api/v1/login", json={"username": "duty-dis", "password": GOOD})
    assert r.status_code == 401
    with admin(service) as api:
        assert api.post("/api/v1/users/duty-dis/enable").status_code == 200
    assert login(service, "duty-dis", GOOD)


def test_rotating_a_users_password_revokes_its_tokens_and_streams(service: Service) -> None:
    make_user(service, "rot-user", "authority", [], GOOD)
    token = login(service, "rot-user", GOOD)
    with open_stream(service, token) as stream:
        with admin(service) as api:
            r = api.post("/api/v1/users/rot-user/rotate")
        assert r.status_code == 200
        fresh = r.json()["password"]
        assert len(fresh) >= 10 and fresh != GOOD
        assert stream.ended.wait(5)
    with as_user(service, token) as c:
        assert c.get("/api/v1/me").status_code == 401
    r = httpx.post(f"{service.url}/api/v1/login", json={"username": "rot-user", "password": GOOD})
    assert r.status_code == 401
    assert login(service, "rot-user", fresh)
    # shown once: the user list never carries a password or its hash
    with admin(service) as api:
        listed = api.get("/api/v1/users").text
    assert fresh not in listed and "scrypt" not in listed


def test_a_deleted_user_is_gone_with_its_tokens_and_streams(service: Service) -> None:
    make_user(service, "gone-user", "authority", [], GOOD)
    token = login(service, "gone-user", GOOD)
    with open_stream(service, token) as stream:
        with admin(service) as api:
            assert api.delete("/api/v1/users/gone-user").status_code == 200
            names = [u["username"] for u in api.get("/api/v1/users").json()["items"]]
            assert "gone-user" not in names
            assert api.delete("/api/v1/users/gone-user").status_code == 404
        assert stream.ended.wait(5)
    with as_user(service, token) as c:
        assert c.get("/api/v1/me").status_code == 401
    r = httpx.post(f"{service.url}/api/v1/login", json={"username": "gone-user", "password": GOOD})
    assert r.status_code == 401


def test_an_admin_cannot_lock_itself_out(service: Service) -> None:
    make_user(service, "second-admin", "admin", [], GOOD)
    with as_user(service, login(service, "second-admin", GOOD)) as c:
        for r in (
            c.post("/api/v1/users/second-admin/disable"),
            c.delete("/api/v1/users/second-admin"),
        ):
            assert r.status_code == 409, r.text
        assert c.get("/api/v1/me").status_code == 200


def test_gateway_access_is_kept_on_both_databases(database_url: str) -> None:
    """Disabled and deleted gateways on SQLite and PostgreSQL, and a database made before the
    access table existed gets it when opened."""
    state = StateStore.open(database_url)
    try:
        state.add_estate("e", "E")
        for gw in ("g1", "g2", "g3"):
            state.add_gateway("e", gw)
        state.set_gateway_access("e", "g1", "disabled")
        state.set_gateway_access("e", "g2", "deleted")
        assert state.registered_gateways() == {("e", "g3")}
        assert state.get_gateway("e", "g1")["access"] == "disabled"
        assert [g["id"] for g in state.list_gateways("e")] == ["g1", "g3"]
        assert len(state.list_gateways("e", include_deleted=True)) == 3
        with pytest.raises(NotFound):
            state.set_gateway_access("e", "g2", "enabled")  # deleted is for good
        with pytest.raises(AlreadyExists):
            state.add_gateway("e", "g2")  # and its id stays taken
        state.set_gateway_access("e", "g1", "enabled")
        assert state.registered_gateways() == {("e", "g1"), ("e", "g3")}
        with state.engine.begin() as conn:  # as a database from before this table
            conn.execute(sa.text("DROP TABLE gateway_access"))
            conn.execute(sa.text("UPDATE schema_version SET version = 4 WHERE version = 5"))
    finally:
        state.close()
    state = StateStore.open(database_url)
    try:
        assert state.registered_gateways() == {("e", "g1"), ("e", "g2"), ("e", "g3")}
        state.set_gateway_access("e", "g3", "disabled")
        assert state.registered_gateways() == {("e", "g1"), ("e", "g2")}
    finally:
        state.close()
