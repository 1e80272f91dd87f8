"""The Modbus adapter against pymodbus's own server (Modbus TCP, and RTU framed over TCP as a
serial server carries an RS-485 line), with every shipped register map: values, scaling, word
and byte orders, status bits as events, a slave that stops answering, a range that answers an
exception code."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from estatewatch.broker import free_port
from gateway.adapter import Collected
from gateway.modbus import ModbusAdapter, ModbusConfigError, modbus_adapter
from gateway.registermap import (
    RegisterMap,
    RegisterMapError,
    bundled_maps,
    decode_registers,
    encode_registers,
    load_register_map,
    plan_reads,
)
from protocol.catalog import default_catalog
from simulators.modbus_plant import PlantModbusServer
from tests.support import poll_until

CAT = default_catalog()

# The registers each shipped map's slave holds, written as a device would (hand-computed, not
# through the map), and what the gateway must read from them.
PLANT: dict[str, tuple[int, dict[str, dict[int, int]], dict[str, Any]]] = {
    "heating-substation": (
        1,
        # 65.3 °C, −5.0 °C, 0.450, 0.300 MPa, 70.3 °C apart
        {"holding": {0: 653, 1: 0xFFCE, 2: 450, 3: 300, 4: 703}},
        {
            "supply_temp_c": 65.3,
            "return_temp_c": -5.0,
            "supply_pressure_mpa": 0.45,
            "return_pressure_mpa": 0.3,
            "supply_return_diff_c": 70.3,
        },
    ),
    "water-pump": (
        2,
        {"input": {0: 0x1EB8, 1: 0x3F05}},  # float32 0.52 (0x3F051EB8), low word first (CDAB)
        {"pressure_mpa": 0.52},
    ),
    "power-meter-3p": (
        3,
        {
            "input": {
                0: 0x4366,
                1: 0x8000,
                6: 0x4144,
                7: 0x0000,
                12: 0x4602,
                13: 0x7800,
                100: 0x00BC,
                101: 0x614E,
            }
        },  # 230.5 V, 12.25 A, 8350 W, 12345678 × 0.01 kWh
        {"voltage_v": 230.5, "current_a": 12.25, "power_kw": 8.35, "energy_kwh": 123456.78},
    ),
    "gas-detector": (
        4,
        {"input": {0: 234, 1: 0b110}},  # 23.4 %LEL, high alarm bit, valve open
        {"lel_pct": 23.4, "valve_open": True},
    ),
    "water-tank-level": (
        5,
        {"holding": {0: 875}},  # 87.5 %
        {"level_pct": 87.5},
    ),
}


def test_every_shipped_map_is_tested_here() -> None:
    assert sorted(PLANT) == bundled_maps()


@pytest.mark.parametrize(
    ("words", "type_", "byte_order", "word_order", "value"),
    [
        ([0x42F6, 0xE979], "float32", "big", "big", 123.456),  # ABCD
        ([0xE979, 0x42F6], "float32", "big", "little", 123.456),  # CDAB
        ([0xF642, 0x79E9], "float32", "little", "big", 123.456),  # BADC
        ([0x79E9, 0xF642], "float32", "little", "little", 123.456),  # DCBA
        ([0xFFFF, 0xFFFE], "int32", "big", "big", -2),
        ([0x5678, 0x1234], "uint32", "big", "little", 0x12345678),
        ([0x3412], "uint16", "little", "big", 0x1234),
        ([0x8000], "int16", "big", "big", -32768),
        ([0x8000], "uint16", "big", "big", 32768),
    ],
)
def test_decoding_types_and_orders(
    words: list[int], type_: str, byte_order: str, word_order: str, value: float
) -> None:
    assert decode_registers(words, type_, byte_order, word_order) == pytest.approx(value, 1e-6)
    assert encode_registers(value, type_, byte_order, word_order) == words


def test_neighbouring_registers_are_read_together_within_protocol_limits() -> None:
    meter = load_register_map("power-meter-3p", CAT)
    blocks = plan_reads(meter)
    # 0…13 in one read; the energy register 88 addresses further on is a read of its own.
    assert [(b.function, b.address, b.count) for b in blocks] == [
        ("input", 0, 14),
        ("input", 100, 2),
    ]
    gas = load_register_map("gas-detector", CAT)
    assert [(b.address, b.count) for b in plan_reads(gas)] == [(0, 2)]  # value + status word
    wide = RegisterMap(
        "wide",
        "heating_station",
        tuple(
            meter.points[0].__class__("supply_temp_c", "holding", a, "int16")
            for a in range(0, 300, 2)
        ),
    )
    assert all(b.count <= 125 for b in plan_reads(wide))
    assert sum(1 for _ in plan_reads(wide)) == 3


@pytest.fixture(params=["tcp", "rtu-over-tcp"])
def plant(request: pytest.FixtureRequest) -> Iterator[PlantModbusServer]:
    server = PlantModbusServer(free_port(), framing=request.param)
    for unit, tables, _ in PLANT.values():
        slave = server.slave(unit)
        for function, regs in tables.items():
            for address, value in regs.items():
                slave.write(function, address, [value])
    server.slave(9)  # a slave that will stop answering
    server.start()
    yield server
    server.stop()


def adapter_for(server: PlantModbusServer, **extra: Any) -> ModbusAdapter:
    devices = [
        {"dev": f"d-{unit}", "map": name, "unit": unit} for name, (unit, _, _) in PLANT.items()
    ]
    cfg = {
        "type": "modbus",
        "name": "bench",
        "transport": server.framing,
        "host": "127.0.0.1",
        "port": server.port,
        "timeout_s": 0.3,
        "retries": 0,
        "devices": devices,
    } | extra
    return modbus_adapter(cfg, "test", CAT)


def collect_until(
    adapter: ModbusAdapter, check: Callable[[Collected], bool], timeout: float = 10.0
) -> Collected:
    got, done = poll_until(adapter, check, timeout, 0.05)
    if done:
        return got
    raise AssertionError(f"timed out; got {got}")


def test_every_map_reads_its_values_scaled_in_the_right_orders(plant: PlantModbusServer) -> None:
    adapter = adapter_for(plant)
    try:
        got = collect_until(adapter, lambda g: {r.dev for r in g.readings} >= {"d-1", "d-5"})
        by_dev = {r.dev: r for r in got.readings}
        for name, (unit, _, expected) in PLANT.items():
            reading = by_dev[f"d-{unit}"]
            assert reading.kind == load_register_map(name, CAT).kind
            assert reading.metrics == pytest.approx(expected, rel=1e-6), name
        # the gas detector's high-alarm bit raised the catalog event, with the value read
        assert [(e.dev, e.type, e.data) for e in got.events] == [
            ("d-4", "gas.leak", {"level": 2, "lel_pct": 23.4})
        ]
        health = adapter.health()
        assert health["type"] == "modbus" and health["state"] == "up"
        assert {d["state"] for d in health["devices"].values()} == {"ok"}
    finally:
        adapter.close()


def test_status_bits_raise_an_event_when_they_turn_on_not_while_they_stay_on(
    plant: PlantModbusServer,
) -> None:
    gas = plant.slaves[4]
    adapter = adapter_for(
        plant, devices=[{"dev": "gas-1", "map": "gas-detector", "unit": 4, "interval_s": 0.1}]
    )
    try:
        collect_until(adapter, lambda g: len(g.readings) >= 5 and len(g.events) == 1)
        gas.write("input", 1, [0])  # alarm clears
        collect_until(adapter, lambda g: len(g.readings) >= 3)
        gas.write("input", 0, [612])
        gas.write("input", 1, [0b11])  # both alarm levels
        got = collect_until(adapter, lambda g: len(g.events) >= 2)
        assert sorted((e.type, e.data["level"], e.data["lel_pct"]) for e in got.events) == [
            ("gas.leak", 1, 61.2),
            ("gas.leak", 2, 61.2),
        ]
    finally:
        adapter.close()


def test_a_slave_that_stops_answering_is_reported_and_its_readings_stop(
    plant: PlantModbusServer,
) -> None:
    dead = plant.slaves[9]
    dead.write("holding", 0, [500, 400, 300, 200])
    devices = [
        {"dev": "hs-1", "map": "heating-substation", "unit": 1, "interval_s": 0.2},
        {"dev": "hs-9", "map": "heating-substation", "unit": 9, "interval_s": 0.2},
    ]
    adapter = adapter_for(plant, devices=devices)
    try:
        collect_until(adapter, lambda g: {r.dev for r in g.readings} == {"hs-1", "hs-9"})
        dead.silent = True
        dead.silence_s = 2.0
        deadline = time.monotonic() + 10
        while adapter.health()["devices"]["hs-9"]["state"] != "timeout":
            assert time.monotonic() < deadline, adapter.health()
            time.sleep(0.05)
        adapter.poll()  # what was read before the slave went quiet
        got = collect_until(adapter, lambda g: sum(r.dev == "hs-1" for r in g.readings) >= 3)
        assert {r.dev for r in got.readings} == {"hs-1"}  # the live slave goes on
        health = adapter.health()["devices"]
        assert health["hs-9"]["state"] == "timeout"
        assert "no response" in health["hs-9"]["detail"]
        assert health["hs-1"]["state"] == "ok"

        dead.silent = False  # it comes back
        collect_until(adapter, lambda g: any(r.dev == "hs-9" for r in g.readings))
        assert adapter.health()["devices"]["hs-9"]["state"] == "ok"
    finally:
        adapter.close()


def test_a_range_answering_an_exception_code_is_reported_and_only_its_points_stop(
    plant: PlantModbusServer,
) -> None:
    plant.slaves[3].fault("input", 100, 101, code=2)  # the energy register: illegal address
    adapter = adapter_for(plant, devices=[{"dev": "pm-1", "map": "power-meter-3p", "unit": 3}])
    try:
        got = collect_until(adapter, lambda g: len(g.readings) >= 1)
        assert got.readings[0].metrics == pytest.approx(
            {"voltage_v": 230.5, "current_a": 12.25, "power_kw": 8.35}
        )
        state = adapter.health()["devices"]["pm-1"]
        assert state["state"] == "exception"
        assert "input 100+2: exception 2 (illegal data address)" in state["detail"]
    finally:
        adapter.close()


def test_an_unreachable_line_is_reported(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    cfg = {
        "type": "modbus",
        "host": "127.0.0.1",
        "port": port,
        "timeout_s": 0.2,
        "retries": 0,
        "devices": [{"dev": "hs-1", "map": "heating-substation", "unit": 1}],
    }
    adapter = modbus_adapter(cfg, "test", CAT)
    try:
        deadline = time.monotonic() + 10
        while adapter.health()["devices"]["hs-1"]["state"] != "timeout":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert adapter.health()["state"] == "down"
        assert "cannot connect" in adapter.health()["devices"]["hs-1"]["detail"]
        assert adapter.poll().readings == []
    finally:
        adapter.close()


def test_a_user_adds_a_map_as_a_file_without_code(plant: PlantModbusServer, tmp_path: Path) -> None:
    (tmp_path / "my-boiler.toml").write_text(
        'model = "my-boiler"\nkind = "heating_station"\nword_order = "little"\n'
        "[[points]]\n"
        'metric = "supply_temp_c"\nfunction = "input"\naddress = 50\ntype = "float32"\n'
        "offset = -40\n"
    )
    plant.slaves[1].write("input", 50, encode_registers(105.5, "float32", "big", "little"))
    cfg = {
        "type": "modbus",
        "transport": plant.framing,
        "host": "127.0.0.1",
        "port": plant.port,
        "timeout_s": 0.5,
        "devices": [{"dev": "boiler-1", "map": "my-boiler.toml", "unit": 1}],
    }
    adapter = modbus_adapter(cfg, "test", CAT, tmp_path)
    try:
        got = collect_until(adapter, lambda g: len(g.readings) >= 1)
        assert got.readings[0].metrics == {"supply_temp_c": pytest.approx(65.5)}
    finally:
        adapter.close()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ('kind = "boiler"\n', "'boiler' is not a catalog kind"),
        (
            'kind = "heating_station"\n[[points]]\nmetric = "temp_c"\naddress = 0\n',
            "metric 'temp_c' is not one of heating_station's",
        ),
        (
            'kind = "heating_station"\n[[points]]\nmetric = "supply_temp_c"\naddress = 0\n'
            'type = "int24"\n',
            "type must be one of",
        ),
        (
            'kind = "heating_station"\n[[events]]\ntype = "fire.alarm"\naddress = 0\nbit = 1\n',
            "event type 'fire.alarm' is not one of heating_station's",
        ),
        (
            'kind = "gas_detector"\n[[events]]\ntype = "gas.leak"\naddress = 0\n',
            "needs bit = 0 … 15",
        ),
    ],
)
def test_a_map_with_a_mistake_is_named_with_what_to_fix(
    tmp_path: Path, doc: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(doc)
    with pytest.raises(RegisterMapError, match=message.replace("(", r"\(")) as err:
        load_register_map(str(path), CAT)
    assert str(path) in str(err.value)


def test_adapter_config_mistakes_are_named() -> None:
    base = {"type": "modbus", "host": "127.0.0.1", "devices": [{"dev": "x-1", "map": "nope"}]}
    with pytest.raises(ModbusConfigError, match="not a bundled map"):
        modbus_adapter(base, "gw.toml: [[adapters]] #1", CAT)
    with pytest.raises(ModbusConfigError, match="unknown key"):
        modbus_adapter(base | {"baud": 9600}, "w", CAT)
    with pytest.raises(ModbusConfigError, match="needs serial"):
        modbus_adapter(base | {"transport": "rtu"}, "w", CAT)


@pytest.fixture
def serial_line(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two ends of a null-modem cable: a pty pair joined by socat."""
    socat = shutil.which("socat")
    if socat is None:
        pytest.fail("socat is not installed: .ci/run installs it (apt-get install socat)")
    a, b = tmp_path / "ttyA", tmp_path / "ttyB"
    proc = subprocess.Popen(
        [socat, f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not (a.exists() and b.exists()):
        assert time.monotonic() < deadline, "socat made no pty pair"
        time.sleep(0.05)
    yield str(a), str(b)
    proc.terminate()
    proc.wait(10)


def test_rtu_on_a_serial_line(serial_line: tuple[str, str]) -> None:
    slave_end, gateway_end = serial_line
    server = PlantModbusServer(framing="rtu", serial=slave_end, baudrate=19200)
    unit, tables, expected = PLANT["heating-substation"]
    for function, regs in tables.items():
        for address, value in regs.items():
            server.slave(unit).write(function, address, [value])
    dead = server.slave(7)
    dead.silent, dead.silence_s = True, 60.0  # never answers while the test runs
    server.start()
    cfg = {
        "type": "modbus",
        "transport": "rtu",
        "serial": gateway_end,
        "baudrate": 19200,
        "parity": "N",
        "timeout_s": 0.3,
        "retries": 0,
        "devices": [
            {"dev": "hs-1", "map": "heating-substation", "unit": unit, "interval_s": 0.5},
            {"dev": "hs-7", "map": "heating-substation", "unit": 7, "interval_s": 0.5},
        ],
    }
    adapter = modbus_adapter(cfg, "test", CAT)
    try:
        got = collect_until(adapter, lambda g: len(g.readings) >= 2)
        assert {r.dev for r in got.readings} == {"hs-1"}
        assert got.readings[0].metrics == pytest.approx(expected)
        health = adapter.health()
        assert health["link"] == f"rtu {gateway_end} 19200 8N1"
        assert health["devices"]["hs-7"]["state"] == "timeout"
        assert health["devices"]["hs-1"]["state"] == "ok"
    finally:
        adapter.close()
        server.stop()
