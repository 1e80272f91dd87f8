"""Adapter kinds by the ``type`` of a config's ``[[adapters]]`` table.

Each kind registers a factory; the gateway process builds its adapters from its config file
through :func:`build_adapter`. The Modbus and GB/T 26875.3 kinds register here; a composition
root adds its own (the simulator: ``estatewatch/estate_cli.py``) with :func:`register`, since
the gateway package must not import what sits above it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.adapter import DeviceAdapter
from protocol.catalog import Catalog

# (the adapter's table, where it is for messages, the catalog, the config file's folder)
AdapterFactory = Callable[[dict[str, Any], str, Catalog, Path], DeviceAdapter]

_FACTORIES: dict[str, AdapterFactory] = {}


class UnknownAdapterType(ValueError):
    pass


def register(type_name: str, factory: AdapterFactory) -> None:
    _FACTORIES[type_name] = factory


def known_types() -> list[str]:
    return sorted(_FACTORIES)


def build_adapter(cfg: dict[str, Any], where: str, catalog: Catalog, base: Path) -> DeviceAdapter:
    factory = _FACTORIES.get(str(cfg.get("type")))
    if factory is None:
        raise UnknownAdapterType(
            f"{where}: unknown adapter type {cfg.get('type')!r} (known: {', '.join(known_types())})"
        )
    return factory(cfg, where, catalog, base)


def _modbus(cfg: dict[str, Any], where: str, catalog: Catalog, base: Path) -> DeviceAdapter:
    from gateway.modbus import modbus_adapter  # pymodbus is loaded only by gateways that poll

    return modbus_adapter(cfg, where, catalog, base)


def _gbt26875(cfg: dict[str, Any], where: str, catalog: Catalog, base: Path) -> DeviceAdapter:
    from gateway.fire_receiver import fire_receiver

    return fire_receiver(cfg, where, catalog, base)


register("modbus", _modbus)
register("gbt26875", _gbt26875)
