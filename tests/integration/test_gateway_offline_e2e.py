"""A gateway's offline time is when it dropped (its Last Will), not its last connect (issue
13), as the running service shows it: the product's gateway (``GatewayPublisher``) logs in to
the service's Mosquitto, stays a few seconds, then loses its link without a clean disconnect;
``GET /api/v1/estates/{e}/gateways`` has it offline since the drop. (The ingest-level case is
tests/clock/test_one_clock.py.)"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from estatewatch.service import Service
from gateway.publisher import GatewayPublisher, now_ms
from protocol.endpoint import MqttEndpoint
from tests.support import waiter

pytestmark = pytest.mark.integration

TOKEN = "test-admin-token-0123456789"
wait_for = waiter(20)


def test_the_gateway_is_offline_since_it_dropped(service: Service, tmp_path: Path) -> None:
    api = httpx.Client(
        base_url=service.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert api.post("/api/v1/estates", json={"id": "e1", "name": "东苑小区"}).status_code == 201
    creds = api.post("/api/v1/estates/e1/gateways", json={"id": "gw-01"}).json()["mqtt"]
    ep = MqttEndpoint(creds["host"], creds["port"], creds["username"], creds["password"])
    gw = GatewayPublisher("e1", "gw-01", ep, tmp_path / "gw")

    def gateway(state: str) -> dict[str, Any] | None:
        (g,) = api.get("/api/v1/estates/e1/gateways").json()["items"]
        return g if g["state"] == state else None

    try:
        connected_ms = now_ms()
        assert gw.start(10), "the gateway could not log in"
        wait_for(lambda: gateway("online"), 10, "the gateway online")
        time.sleep(2.0)
        dropped_ms = now_ms()
        gw.hold_down(True)  # its uplink gone: the broker sends its Last Will
        off = wait_for(lambda: gateway("offline"), 20, "the gateway offline")
        assert off["state_ms"] >= dropped_ms - 100, (off, connected_ms, dropped_ms)
        assert off["state_ms"] <= now_ms()
    finally:
        gw.hold_down(False)
        gw.stop()
