"""The demo's estate behind real field protocols (``estatewatch demo --field-protocols``).

The simulated estate's plant devices that have a shipped register map become slaves of a
pymodbus server on a free loopback port, read by the gateway's own Modbus adapter; its fire
panel and smoke detectors report through a simulated GB/T 26875.3 transmission device to the
gateway's own receiver on another free port. Both use the simulation's clock, so their readings
and events carry the same times as the rest of the estate's.
"""

from __future__ import annotations

from estatewatch.broker import free_port
from gateway.adapter import DeviceAdapter
from gateway.fire_receiver import FireReceiver
from gateway.modbus import modbus_adapter
from gateway.registermap import load_register_map
from protocol.catalog import Catalog
from simulators.adapter import SimulatorAdapter
from simulators.modbus_plant import FieldBridge, ModbusPlant, PlantModbusServer
from simulators.transmission_device import FireRoom, TransmissionDevice, fire_room_mapping

# catalog kind -> the bundled register map its simulated controller is read through
PLANT_MAPS = {
    "heating_station": "heating-substation",
    "power_meter": "power-meter-3p",
    "water_tank": "water-tank-level",
    "gas_detector": "gas-detector",
    "water_pressure": "water-pump",
}


class _Bridge(FieldBridge):
    """Stops the simulated field side with the gateway."""

    def __init__(self, inner: SimulatorAdapter, plant: ModbusPlant, room: FireRoom) -> None:
        super().__init__(inner, plant, room)
        self.room = room

    def close(self) -> None:
        super().close()
        self.room.stop()
        if self.plant is not None:
            self.plant.server.stop()


def field_adapters(sim: SimulatorAdapter, catalog: Catalog) -> list[DeviceAdapter]:
    devices = sim.estate.spec.devices
    server = PlantModbusServer(free_port())
    plant_devices = {}
    for unit, (dev, kind) in enumerate(
        ((d.id, d.kind) for d in devices if d.kind in PLANT_MAPS), start=1
    ):
        plant_devices[dev] = (unit, load_register_map(PLANT_MAPS[kind], catalog))
    plant = ModbusPlant(server, plant_devices)
    server.start()
    poller = modbus_adapter(
        {
            "type": "modbus",
            "name": "demo-plant",
            "host": "127.0.0.1",
            "port": server.port,
            "timeout_s": 1.0,
            "devices": [
                {"dev": dev, "map": regmap.model, "unit": unit}
                for dev, (unit, regmap) in plant_devices.items()
            ],
        },
        "demo plant",
        catalog,
        clock=sim.sim_now_ms,
    )
    mapping, where = fire_room_mapping(
        [(d.id, d.kind) for d in devices if d.kind in ("fire_panel", "smoke_detector")]
    )
    receiver = FireReceiver(
        "demo-fire-room", "127.0.0.1", 0, mapping, catalog, clock=sim.sim_now_ms
    )
    room = FireRoom(TransmissionDevice("127.0.0.1", receiver.port), where)
    room.start()
    return [_Bridge(sim, plant, room), poller, receiver]
