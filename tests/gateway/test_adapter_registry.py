"""Adapters come from the config file's ``[[adapters]]`` tables through the registry: the
shipped sample config builds, an unknown type names the known ones, and a mistake in one
adapter stops the ones already built (a listener frees its port)."""

from __future__ import annotations

import shutil
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from estatewatch.broker import free_port
from estatewatch.estate_cli import build_gateway
from gateway.config import ConfigError, load_gateway_config
from gateway.fire_receiver import FireReceiver
from gateway.modbus import ModbusAdapter
from gateway.registry import known_types

EXAMPLES = Path(__file__).parents[2] / "gateway" / "examples"


def sample(tmp_path: Path) -> Path:
    for name in ("plant-and-fire.toml", "fire-mapping.toml"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    (tmp_path / "gw-01.password").write_text("secret\n")
    return tmp_path / "plant-and-fire.toml"


def on_loopback(adapter: dict[str, Any]) -> dict[str, Any]:
    """The sample's addresses are an estate's LAN: tests only ever talk to this machine."""
    if adapter["type"] == "modbus":
        return adapter | {"host": "127.0.0.1", "port": free_port(), "timeout_s": 0.1}
    if adapter["type"] == "gbt26875":
        return adapter | {"listen": "127.0.0.1:0"}
    return adapter


def test_the_sample_config_builds_both_kinds_of_adapter(tmp_path: Path) -> None:
    cfg = load_gateway_config(sample(tmp_path))
    assert cfg.endpoint.password == "secret"
    assert [a["type"] for a in cfg.adapters] == ["modbus", "modbus", "gbt26875"]
    cfg = replace(cfg, adapters=tuple(on_loopback(a) for a in cfg.adapters))
    gateway, sims = build_gateway(cfg)
    try:
        assert sims == []
        kinds = [type(a) for a in gateway.adapters]
        assert kinds == [ModbusAdapter, ModbusAdapter, FireReceiver]
        plant, rs485, fire = gateway.adapters
        assert isinstance(plant, ModbusAdapter) and isinstance(rs485, ModbusAdapter)
        assert [d.dev for d in plant.devices] == ["hs-1", "wp-1"]
        assert plant.devices[1].interval_ms == 30_000
        assert rs485.link.transport == "rtu-over-tcp"
        assert [d.regmap.model for d in rs485.devices] == [
            "power-meter-3p",
            "gas-detector",
            "water-tank-level",
        ]
        assert isinstance(fire, FireReceiver)
        assert fire.mapping.system(1, 1) is not None
        health = gateway.adapter_health()
        assert set(health) == {"modbus:plant-room", "modbus:rs485-1", "gbt26875:fire-control-room"}
    finally:
        for adapter in gateway.adapters:
            adapter.close()


def test_an_unknown_adapter_type_names_the_known_ones(tmp_path: Path) -> None:
    cfg = load_gateway_config(sample(tmp_path))
    cfg = replace(cfg, adapters=({"type": "bacnet"},))
    with pytest.raises(ValueError, match="unknown adapter type 'bacnet'") as err:
        build_gateway(cfg)
    assert "gbt26875, modbus, simulator" in str(err.value)
    assert known_types() == ["gbt26875", "modbus", "simulator"]
    with pytest.raises(ConfigError, match="no \\[\\[adapters\\]\\]"):
        build_gateway(replace(cfg, adapters=()))


def test_a_mistake_in_one_adapter_stops_those_already_built(tmp_path: Path) -> None:
    cfg = load_gateway_config(sample(tmp_path))
    port = free_port()
    fire = {"type": "gbt26875", "listen": f"127.0.0.1:{port}", "mapping": "fire-mapping.toml"}
    broken = {"type": "modbus", "host": "127.0.0.1", "devices": [{"dev": "x-1", "map": "nope"}]}
    with pytest.raises(ValueError, match=r"#2: .*not a bundled map"):
        build_gateway(replace(cfg, adapters=(fire, broken)))
    with socket.create_server(("127.0.0.1", port)):  # the listener let go of its port
        pass
