"""Simulated Modbus slaves on pymodbus's own server: the demo's plant room and the tests' bench.

:class:`PlantModbusServer` serves any number of slave ids over TCP (Modbus TCP framing, or RTU
framing over TCP as a serial server presents an RS-485 line) from a thread of its own. Each
slave's registers live in a :class:`SlaveRegisters` that Python code writes at any time; a slave
can be told to stay silent (it answers later than any client waits) or to answer a range with a
Modbus exception code. :class:`ModbusPlant` puts a simulated estate's plant readings into the
registers through the same register maps the gateway reads them with.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from gateway.adapter import Collected
from gateway.registermap import REGISTER_FUNCTIONS, EventBit, Point, RegisterMap, encode_registers
from protocol.messages import Command, Event, Reading
from simulators.adapter import SimulatorAdapter
from simulators.transmission_device import FireRoom

# Function codes per table (pymodbus hands the action the request's code).
_FUNCTION_OF = {
    1: "coil",
    5: "coil",
    15: "coil",
    2: "discrete",
    3: "holding",
    6: "holding",
    16: "holding",
    22: "holding",
    23: "holding",
    4: "input",
}
GAS_ALARM_CLEARS_LEL = 10.0  # a simulated detector's alarm resets below this concentration
REGISTERS = 2048  # addresses 0 … 2047 of each register table
BIT_WORDS = 128  # 2,048 coils and discrete inputs


@dataclass
class SlaveRegisters:
    """One slave's four tables, written by Python, read over Modbus."""

    unit: int
    tables: dict[str, dict[int, int]] = field(
        default_factory=lambda: {f: {} for f in ("holding", "input", "coil", "discrete")}
    )
    silent: bool = False  # answers after silence_s: a dead slave to any sane timeout
    silence_s: float = 5.0
    # (function, first address, last address) -> exception code answered for reads touching it
    faults: dict[tuple[str, int, int], int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def write(self, function: str, address: int, values: Iterable[int]) -> None:
        with self.lock:
            table = self.tables[function]
            for i, v in enumerate(values):
                table[address + i] = int(v)

    def write_point(self, point: Point, value: float) -> None:
        """Store a catalog value as the map's registers hold it (the inverse of the map)."""
        if point.function not in REGISTER_FUNCTIONS:
            self.write(point.function, point.address, [1 if value else 0])
            return
        if point.type == "bool":
            self.set_bit(point.function, point.address, point.bit or 0, bool(value))
            return
        raw = (value - point.offset) / point.scale
        if point.type != "float32":
            raw = round(raw)
        words = encode_registers(raw, point.type, point.byte_order, point.word_order)
        self.write(point.function, point.address, words)

    def set_bit(self, function: str, address: int, bit: int, on: bool) -> None:
        with self.lock:
            table = self.tables[function]
            word = table.get(address, 0)
            table[address] = word | (1 << bit) if on else word & ~(1 << bit)

    def set_event(self, item: EventBit, on: bool) -> None:
        if item.function in REGISTER_FUNCTIONS:
            self.set_bit(item.function, item.address, item.bit or 0, on)
        else:
            self.write(item.function, item.address, [1 if on else 0])

    def fault(self, function: str, first: int, last: int, code: int = 2) -> None:
        """Answer reads of ``first … last`` in ``function`` with exception ``code``."""
        self.faults[(function, first, last)] = code

    # -- what the server calls (in its event loop) ------------------------------------------

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if self.silent:
            await asyncio.sleep(self.silence_s)
        function = _FUNCTION_OF.get(function_code)
        if function is None:
            return ExcCodes.ILLEGAL_FUNCTION
        for (f, first, last), code in self.faults.items():
            if f == function and address <= last and first <= address + count - 1:
                return ExcCodes(code)
        with self.lock:
            table = dict(self.tables[function])
        if function in REGISTER_FUNCTIONS:
            for a, v in table.items():
                if 0 <= a - start_address < len(registers):
                    registers[a - start_address] = v & 0xFFFF
        else:  # bit tables keep 16 bits a register
            words = [0] * len(registers)
            for a, v in table.items():
                if v and 0 <= a // 16 - start_address < len(words):
                    words[a // 16 - start_address] |= 1 << (a % 16)
            registers[:] = words
        return None


class PlantModbusServer:
    """pymodbus's server for a set of slaves, in a thread with its own event loop: on a TCP
    port (``tcp``, ``rtu-over-tcp``), or on a serial line (``rtu``, ``serial`` = the device)."""

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        framing: str = "tcp",
        serial: str | None = None,
        baudrate: int = 9600,
    ) -> None:
        if framing not in ("tcp", "rtu-over-tcp", "rtu"):
            raise ValueError("framing must be tcp, rtu-over-tcp or rtu")
        if (framing == "rtu") != (serial is not None):
            raise ValueError("framing rtu, and only it, needs serial= (the line's device)")
        self.host, self.port, self.framing = host, port, framing
        self.serial, self.baudrate = serial, baudrate
        self.slaves: dict[int, SlaveRegisters] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def slave(self, unit: int) -> SlaveRegisters:
        if self._thread is not None:
            raise RuntimeError("add slaves before start()")
        return self.slaves.setdefault(unit, SlaveRegisters(unit))

    def start(self, timeout_s: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._serve, name="modbus-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._error is not None:
            raise RuntimeError(
                f"modbus server on {self.host}:{self.port} did not start: {self._error}"
            )

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def _devices(self) -> list[SimDevice]:
        out = []
        for unit, regs in sorted(self.slaves.items()):
            bits = [SimData(0, count=BIT_WORDS, values=0, datatype=DataType.BITS)]
            words = [SimData(0, count=REGISTERS, values=0, datatype=DataType.REGISTERS)]
            out.append(
                SimDevice(
                    unit,
                    simdata=(list(bits), list(bits), list(words), list(words)),
                    action=regs.action,
                )
            )
        return out

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop

        async def main() -> None:
            self._stop = asyncio.Event()
            server: ModbusTcpServer | ModbusSerialServer
            if self.serial is not None:
                server = ModbusSerialServer(
                    self._devices(), port=self.serial, baudrate=self.baudrate
                )
            else:
                framer = FramerType.RTU if self.framing == "rtu-over-tcp" else FramerType.SOCKET
                server = ModbusTcpServer(
                    self._devices(), framer=framer, address=(self.host, self.port)
                )
            await server.serve_forever(background=True)
            self._ready.set()
            await self._stop.wait()
            await server.shutdown()  # type: ignore[no-untyped-call]

        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # reported to start()'s caller
            self._error = exc
            self._ready.set()
        finally:
            # a silent slave's answer may still be sleeping: cancel it rather than leak it
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()


class ModbusPlant:
    """A simulated estate's plant behind Modbus: each device's readings become its slave's
    registers, so the gateway reads them back through the map as it would a real controller."""

    def __init__(self, server: PlantModbusServer, devices: dict[str, tuple[int, RegisterMap]]):
        self.server = server
        self.devices = devices  # dev -> (unit, map)
        for unit, _ in devices.values():
            server.slave(unit)

    def owns(self, dev: str) -> bool:
        return dev in self.devices

    def put(self, reading: Reading) -> None:
        unit, regmap = self.devices[reading.dev]
        regs = self.server.slaves[unit]
        for point in regmap.points:
            value = reading.metrics.get(point.metric)
            if isinstance(value, (int, float)):
                regs.write_point(point, float(value))
        lel = reading.metrics.get("lel_pct")
        if isinstance(lel, (int, float)) and lel < GAS_ALARM_CLEARS_LEL:
            for item in regmap.events:  # the detector's alarm relay drops out again
                regs.set_event(item, False)

    def put_event(self, event: Event) -> None:
        """A status event of the simulation sets the map's bit for it (the level, if told)."""
        unit, regmap = self.devices[event.dev]
        for item in regmap.events:
            level = item.data.get("level")
            if item.type == event.type and (level is None or level == event.data.get("level")):
                self.server.slaves[unit].set_event(item, True)


class FieldBridge:
    """A simulated estate of which some devices speak real field protocols: the plant's
    readings go into Modbus registers (:class:`ModbusPlant`) and the fire panel's states and
    alarms into GB/T 26875.3 frames (``FireRoom``), instead of straight to the gateway; the
    gateway's own Modbus adapter and receiver read them back. Everything else passes through.
    """

    def __init__(
        self, inner: SimulatorAdapter, plant: ModbusPlant | None, fire: FireRoom | None
    ) -> None:
        self.inner = inner
        self.plant = plant
        self.fire = fire
        self.name = inner.name

    def poll(self) -> Collected:
        got = self.inner.poll()
        readings, events = [], []
        for r in got.readings:
            if self.plant is not None and self.plant.owns(r.dev):
                self.plant.put(r)
            elif self.fire is not None and self.fire.owns(r.dev) and r.kind == "fire_panel":
                self.fire.put_reading(r)
            else:
                readings.append(r)
        for e in got.events:
            if self.plant is not None and self.plant.owns(e.dev):
                self.plant.put_event(e)
            elif self.fire is not None and self.fire.owns(e.dev):
                self.fire.put_event(e)
            else:
                events.append(e)
        return Collected(readings, events)

    def owns(self, dev: str) -> bool:
        return self.inner.owns(dev)

    def execute(self, command: Command) -> str | None:
        return self.inner.execute(command)

    def network_down(self) -> bool:
        return self.inner.network_down()

    def close(self) -> None:
        self.inner.close()
