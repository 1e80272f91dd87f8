"""The Modbus adapter: poll slaves on one line (Modbus TCP, RTU on a serial port, or RTU framed
over TCP through a serial server) by their register maps, with pymodbus.

One adapter owns one connection and the slaves behind it. Its own thread polls each slave at its
kind's catalog interval (or the device's ``interval_s``), reading neighbouring registers in one
request (``registermap.plan_reads``); :meth:`ModbusAdapter.poll` only hands over what is queued,
so the gateway's poll thread never waits on a slow line. A slave that does not answer is marked
``timeout`` in :meth:`ModbusAdapter.health` (the gateway status carries it) and produces no
readings, so the service's no-data rule sees it too; a block that answers with a Modbus
exception code is marked ``exception`` with the code, and only its points stop.

```toml
[[adapters]]
type = "modbus"
name = "plant-room"
transport = "tcp"                  # tcp | rtu-over-tcp | rtu (serial)
host = "192.168.10.20"
port = 502
# serial = "/dev/ttyUSB0"          # rtu: the port and its settings
# baudrate = 9600, parity = "N", bytesize = 8, stopbits = 1
timeout_s = 1.0
retries = 1

[[adapters.devices]]
dev = "hs-1"                       # the device id the service sees
map = "heating-substation"         # a bundled map (gateway/maps/) or a map file
unit = 1                           # the slave id
# interval_s = 60                  # default: the kind's catalog interval
```
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymodbus import FramerType
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusException

from gateway.adapter import Inbox, InboxThread, check_keys
from gateway.registermap import (
    REGISTER_FUNCTIONS,
    Block,
    RegisterMap,
    RegisterMapError,
    bit_is_set,
    load_register_map,
    plan_reads,
    point_value,
)
from protocol.catalog import Catalog
from protocol.clock import now_ms
from protocol.messages import Command, Event, Reading, Value
from protocol.topics import is_valid_id

log = logging.getLogger(__name__)
# pymodbus logs every unanswered request with a frame dump; the adapter reports slave states
# itself (status and one log line per change), so only pymodbus's own failures get through.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

TRANSPORTS = ("tcp", "rtu-over-tcp", "rtu")
ADAPTER_KEYS = {
    "type",
    "name",
    "transport",
    "host",
    "port",
    "serial",
    "baudrate",
    "parity",
    "bytesize",
    "stopbits",
    "timeout_s",
    "retries",
    "devices",
}
DEVICE_KEYS = {"dev", "map", "unit", "interval_s"}
# Bounded hand-over to the gateway: at the slowest poll rhythm this is hours of readings.
MAX_QUEUED_READINGS = 10_000
MAX_QUEUED_EVENTS = 1_000
# Modbus exception codes, for the status (Modbus Application Protocol v1.1b3, §7).
EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "slave device failure",
    5: "acknowledge",
    6: "slave device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}


class ModbusConfigError(ValueError):
    """A ``type = "modbus"`` adapter table that cannot be used."""


@dataclass
class SlaveDevice:
    dev: str
    unit: int
    regmap: RegisterMap
    interval_ms: int
    blocks: list[Block]
    next_ms: int = 0
    state: str = "starting"  # starting | ok | timeout | exception | error
    detail: str = ""
    since_ms: int = 0
    bits_on: set[int] = field(default_factory=set)  # indexes of regmap.events currently set
    polls: int = 0
    failures: int = 0


@dataclass(frozen=True)
class LinkSettings:
    transport: str
    host: str = "127.0.0.1"
    port: int = 502
    serial: str | None = None
    baudrate: int = 9600
    parity: str = "N"
    bytesize: int = 8
    stopbits: int = 1
    timeout_s: float = 1.0
    retries: int = 1

    def describe(self) -> str:
        if self.transport == "rtu":
            return f"rtu {self.serial} {self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"
        return f"{self.transport} {self.host}:{self.port}"

    def client(self) -> ModbusTcpClient | ModbusSerialClient:
        if self.transport == "rtu":
            assert self.serial is not None
            return ModbusSerialClient(
                self.serial,
                framer=FramerType.RTU,
                baudrate=self.baudrate,
                bytesize=self.bytesize,
                parity=self.parity,
                stopbits=self.stopbits,
                timeout=self.timeout_s,
                retries=self.retries,
            )
        framer = FramerType.RTU if self.transport == "rtu-over-tcp" else FramerType.SOCKET
        return ModbusTcpClient(
            self.host, port=self.port, framer=framer, timeout=self.timeout_s, retries=self.retries
        )


class ModbusAdapter(InboxThread):
    """Slaves behind one Modbus connection, as a :class:`gateway.adapter.DeviceAdapter`."""

    def __init__(
        self,
        name: str,
        link: LinkSettings,
        devices: list[SlaveDevice],
        catalog: Catalog,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        if not devices:
            raise ModbusConfigError(f"modbus adapter {name}: no devices")
        self.name = f"modbus:{name}"
        self.link = link
        self.devices = devices
        self.catalog = catalog
        self.clock = clock
        self.inbox = Inbox(MAX_QUEUED_READINGS, MAX_QUEUED_EVENTS)
        self.link_state = "connecting"
        self._client = link.client()
        self._start_thread(f"modbus-{name}")

    # -- DeviceAdapter ----------------------------------------------------------------------

    def owns(self, dev: str) -> bool:
        return any(d.dev == dev for d in self.devices)

    def execute(self, command: Command) -> str | None:
        # Writing registers of plant controllers from the cloud is deliberately not offered.
        return f"modbus devices take no commands ({command.action!r})"

    def close(self) -> None:
        self._stop_thread(5 + self.link.timeout_s * (self.link.retries + 1))
        self._client.close()  # type: ignore[no-untyped-call]

    def health(self) -> dict[str, Any]:
        """What the gateway status reports: the link and each slave's state."""
        return {
            "type": "modbus",
            "link": self.link.describe(),
            "state": self.link_state,
            "devices": {
                d.dev: {"unit": d.unit, "state": d.state, "since": d.since_ms}
                | ({"detail": d.detail} if d.detail else {})
                for d in self.devices
            },
            "dropped_readings": self.inbox.dropped_readings,
        }

    # -- the polling thread -----------------------------------------------------------------

    def _run(self) -> None:
        while not self._halt.is_set():
            now = self.clock()
            for device in self.devices:
                if self._halt.is_set():
                    return
                if device.next_ms <= now:
                    device.next_ms = now + device.interval_ms
                    try:
                        self.poll_device(device)
                    except Exception as exc:  # a decoding bug must not stop the other slaves
                        log.exception("modbus %s: polling %s failed", self.name, device.dev)
                        self._set_state(device, "error", str(exc)[:200])
            wait_ms = min(d.next_ms for d in self.devices) - self.clock()
            self._halt.wait(min(max(wait_ms, 10), 500) / 1000)

    def _read(self, block: Block, unit: int) -> Any:
        c = self._client
        if block.function == "holding":
            return c.read_holding_registers(block.address, count=block.count, device_id=unit)
        if block.function == "input":
            return c.read_input_registers(block.address, count=block.count, device_id=unit)
        if block.function == "coil":
            return c.read_coils(block.address, count=block.count, device_id=unit)
        return c.read_discrete_inputs(block.address, count=block.count, device_id=unit)

    def poll_device(self, device: SlaveDevice) -> None:
        """Read every block of one slave; queue its reading and any events."""
        device.polls += 1
        regs: dict[str, dict[int, int]] = {}
        failed: list[str] = []
        for block in device.blocks:
            try:
                rr = self._read(block, device.unit)
            except ModbusException as exc:
                # No answer (or a garbled one): the slave is unreachable. Drop the connection so
                # a late answer cannot be taken for the next request's.
                self._client.close()  # type: ignore[no-untyped-call]
                device.failures += 1
                reachable = self._client.connect()
                self.link_state = "up" if reachable else "down"
                what = "no response" if reachable else f"cannot connect to {self.link.describe()}"
                self._set_state(device, "timeout", f"{what}: {str(exc)[:160]}")
                return
            self.link_state = "up"
            if rr.isError():
                code = int(getattr(rr, "exception_code", 0))
                failed.append(
                    f"{block.function} {block.address}+{block.count}: exception {code} "
                    f"({EXCEPTION_NAMES.get(code, 'unknown')})"
                )
                continue
            values = rr.registers if block.function in REGISTER_FUNCTIONS else rr.bits
            table = regs.setdefault(block.function, {})
            for i in range(block.count):
                table[block.address + i] = int(values[i])
        ts = self.clock()
        kind = self.catalog.kinds[device.regmap.kind]
        metrics: dict[str, Value] = {}
        for point in device.regmap.points:
            value = point_value(point, regs, kind.metrics[point.metric].type)
            if value is not None:
                metrics[point.metric] = value
        events = self._edges(device, regs, metrics, ts)
        if failed:
            device.failures += 1
            self._set_state(device, "exception", "; ".join(failed)[:300])
        else:
            self._set_state(device, "ok", "")
        readings = [Reading(device.dev, kind.name, ts, metrics)] if metrics else []
        self.inbox.put(readings, events)

    def _edges(
        self,
        device: SlaveDevice,
        regs: dict[str, dict[int, int]],
        metrics: dict[str, Value],
        ts: int,
    ) -> list[Event]:
        """Events for status bits that turned on since the last poll (on at start counts)."""
        out = []
        for i, item in enumerate(device.regmap.events):
            on = bit_is_set(item, regs)
            if on is None:  # not read this time: keep what we knew
                continue
            if on and i not in device.bits_on:
                data = dict(item.data)
                data |= {m: metrics[m] for m in item.data_metrics if m in metrics}
                out.append(Event(device.dev, device.regmap.kind, ts, item.type, data))
                device.bits_on.add(i)
            elif not on:
                device.bits_on.discard(i)
        return out

    def _set_state(self, device: SlaveDevice, state: str, detail: str) -> None:
        if state != device.state:
            device.since_ms = self.clock()
            level = logging.INFO if state == "ok" else logging.WARNING
            log.log(
                level,
                "modbus %s: %s (unit %d) is %s %s",
                self.name,
                device.dev,
                device.unit,
                state,
                detail,
            )
        device.state, device.detail = state, detail


# -- building from a gateway config table --------------------------------------------------------


def _num(tbl: dict[str, Any], key: str, where: str, default: float, lo: float, hi: float) -> float:
    value = tbl.get(key, default)
    if type(value) not in (int, float) or not lo <= value <= hi:
        raise ModbusConfigError(
            f"{where}: {key} must be a number from {lo:g} to {hi:g}, got {value!r}"
        )
    return float(value)


def modbus_adapter(
    cfg: dict[str, Any],
    where: str,
    catalog: Catalog,
    base: Path | None = None,
    clock: Callable[[], int] = now_ms,
) -> ModbusAdapter:
    """Build the adapter a ``[[adapters]] type = "modbus"`` table describes."""
    check_keys(cfg, ADAPTER_KEYS, where, ModbusConfigError)
    transport = cfg.get("transport", "tcp")
    if transport not in TRANSPORTS:
        raise ModbusConfigError(f"{where}: transport must be one of {', '.join(TRANSPORTS)}")
    if transport == "rtu" and not isinstance(cfg.get("serial"), str):
        raise ModbusConfigError(f'{where}: transport "rtu" needs serial = "/dev/ttyUSB0"')
    if transport != "rtu" and not isinstance(cfg.get("host"), str):
        raise ModbusConfigError(f'{where}: transport "{transport}" needs host = "…"')
    parity = cfg.get("parity", "N")
    if parity not in ("N", "E", "O"):
        raise ModbusConfigError(f'{where}: parity must be "N", "E" or "O"')
    link = LinkSettings(
        transport=transport,
        host=str(cfg.get("host", "127.0.0.1")),
        port=int(_num(cfg, "port", where, 502, 1, 65535)),
        serial=cfg.get("serial"),
        baudrate=int(_num(cfg, "baudrate", where, 9600, 300, 921600)),
        parity=parity,
        bytesize=int(_num(cfg, "bytesize", where, 8, 7, 8)),
        stopbits=int(_num(cfg, "stopbits", where, 1, 1, 2)),
        timeout_s=_num(cfg, "timeout_s", where, 1.0, 0.05, 60),
        retries=int(_num(cfg, "retries", where, 1, 0, 10)),
    )
    entries = cfg.get("devices", [])
    if not isinstance(entries, list) or not entries:
        raise ModbusConfigError(f"{where}: needs [[adapters.devices]] (dev, map, unit)")
    devices = []
    seen: set[str] = set()
    for i, d in enumerate(entries):
        w = f"{where}: [[adapters.devices]] #{i + 1}"
        if not isinstance(d, dict):
            raise ModbusConfigError(f"{w}: must be a table")
        extra = sorted(set(d) - DEVICE_KEYS)
        if extra:
            raise ModbusConfigError(f"{w}: unknown key(s) {', '.join(extra)}")
        dev = d.get("dev")
        if not isinstance(dev, str) or not is_valid_id(dev) or dev in seen:
            raise ModbusConfigError(f"{w}: dev must be a unique id like hs-1, got {dev!r}")
        seen.add(dev)
        if not isinstance(d.get("map"), str):
            raise ModbusConfigError(f'{w}: needs map = "heating-substation" (or a file)')
        try:
            regmap = load_register_map(d["map"], catalog, base)
        except RegisterMapError as exc:
            raise ModbusConfigError(f"{w}: {exc}") from None
        interval = _num(d, "interval_s", w, catalog.kinds[regmap.kind].interval_s, 0.1, 86400)
        devices.append(
            SlaveDevice(
                dev=dev,
                unit=int(_num(d, "unit", w, 1, 0, 247)),
                regmap=regmap,
                interval_ms=int(interval * 1000),
                blocks=plan_reads(regmap),
            )
        )
    name = str(cfg.get("name", link.describe().replace(" ", "-")))
    return ModbusAdapter(name, link, devices, catalog, clock)
