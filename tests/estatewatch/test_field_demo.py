"""``estatewatch demo --field-protocols``: the first estate's plant is read over Modbus from a
local pymodbus server and its fire panel reports in GB/T 26875.3 through a simulated
transmission device, into the running service."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from estatewatch.demo import simulated_gateway
from estatewatch.field_demo import PLANT_MAPS
from estatewatch.service import Service
from gateway.fire_receiver import FireReceiver
from gateway.modbus import ModbusAdapter
from protocol.messages import Event
from simulators.modbus_plant import FieldBridge
from tests.support import waiter

pytestmark = pytest.mark.integration


wait_for = waiter(timeout=40.0, every=0.25)


def test_the_first_estate_runs_through_modbus_and_gbt26875(service: Service) -> None:
    gateway, sim = simulated_gateway(service, "small", 2026, field_protocols=True)
    poller = next(a for a in gateway.adapters if isinstance(a, ModbusAdapter))
    receiver = next(a for a in gateway.adapters if isinstance(a, FireReceiver))
    spec = sim.estate.spec
    plant = {d.id: d.kind for d in spec.devices if d.kind in PLANT_MAPS}
    panel = next(d.id for d in spec.devices if d.kind == "fire_panel")
    assert set(plant.values()) == set(PLANT_MAPS)  # every shipped map has a device here
    assert {d.dev for d in poller.devices} == set(plant)
    api = httpx.Client(
        base_url=service.url, headers={"Authorization": "Bearer test-admin-token-0123456789"}
    )
    gateway.start()
    try:

        def devices() -> dict[str, Any] | None:
            items = api.get(f"/api/v1/estates/{spec.estate}/devices").json()["items"]
            got = {d["id"]: d for d in items}
            ready = all(got.get(dev, {}).get("metrics") for dev in [*plant, panel])
            return got if ready else None

        got = wait_for(devices, what="the plant's and the panel's readings in the service")
        for dev, kind in plant.items():
            assert set(got[dev]["metrics"]) == set(service.catalog.kinds[kind].metrics), dev
        assert got[panel]["metrics"]["status_word"] & 1 == 1  # bit 0: normal operation
        assert {s["state"] for s in poller.health()["devices"].values()} == {"ok"}
        health = receiver.health()
        assert health["confirmed"] >= 1 and sum(health["bad_frames"].values()) == 0
        assert api.get("/api/v1/deadletters").json()["items"] == []

        # The simulation's fire alarm goes out as a status word over the 26875.3 link.
        bridge = next(a for a in gateway.adapters if isinstance(a, FieldBridge))
        assert bridge.fire is not None
        bridge.fire.put_event(
            Event(panel, "fire_panel", sim.sim_now_ms(), "fire.alarm", {"zone": "b2"})
        )

        def fire_alarm() -> dict[str, Any] | None:
            items = api.get("/api/v1/alarms", params={"estate": spec.estate}).json()["items"]
            return next((a for a in items if a["rule"] == "fire-alarm"), None)

        alarm = wait_for(fire_alarm, what="the fire alarm sent in GB/T 26875.3")
        assert alarm["subject"] == panel
    finally:
        gateway.stop()
