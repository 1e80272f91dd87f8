"""Modbus register maps: which registers of a device model fill which catalog metrics.

A map is a TOML data file, one per device model, so a user adds a model without code. Bundled
maps live in ``gateway/maps/``; a config names one by its file stem or gives a path.

```toml
model = "heating-substation"
kind = "heating_station"           # a catalog kind
byte_order = "big"                 # default for every point: "big" (AB) or "little" (BA)
word_order = "big"                 # 32-bit values: "big" = high word first, "little" = low first

[[points]]
metric = "supply_temp_c"           # a metric of the kind
function = "holding"               # holding | input | coil | discrete
address = 0                        # 0-based protocol address (register 40001 = holding 0)
type = "int16"                     # int16 uint16 int32 uint32 float32 bool
scale = 0.1                        # value = raw × scale + offset
offset = 0.0
# bit = 3                          # type = "bool" from one bit of a register

[[events]]                         # a status bit that turns on raises a catalog event
type = "gas.leak"
function = "holding"
address = 10
bit = 1
data = { level = "high" }          # fixed fields of the event's data
data_metrics = ["lel_pct"]         # the point values read with it go into data too
```
"""

from __future__ import annotations

import math
import struct
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.catalog import Catalog, ValueType

MAPS_DIR = Path(__file__).parent / "maps"

FUNCTIONS = ("holding", "input", "coil", "discrete")
REGISTER_FUNCTIONS = ("holding", "input")
# type -> (registers, struct format of the big-endian bytes)
TYPES: dict[str, tuple[int, str]] = {
    "int16": (1, ">h"),
    "uint16": (1, ">H"),
    "int32": (2, ">i"),
    "uint32": (2, ">I"),
    "float32": (2, ">f"),
    "bool": (1, ""),
}
ORDERS = ("big", "little")
# Modbus caps one read: 125 registers (FC 3/4), 2000 bits (FC 1/2).
MAX_REGISTERS_PER_READ = 125
MAX_BITS_PER_READ = 2000


class RegisterMapError(ValueError):
    """A register map that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Point:
    metric: str
    function: str
    address: int
    type: str
    scale: float = 1.0
    offset: float = 0.0
    byte_order: str = "big"
    word_order: str = "big"
    bit: int | None = None

    @property
    def width(self) -> int:
        """How many registers (or bits) the point spans."""
        if self.function in REGISTER_FUNCTIONS:
            return TYPES[self.type][0]
        return 1


@dataclass(frozen=True)
class EventBit:
    type: str
    function: str
    address: int
    bit: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    data_metrics: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        return 1


@dataclass(frozen=True)
class RegisterMap:
    model: str
    kind: str
    points: tuple[Point, ...]
    events: tuple[EventBit, ...] = ()
    source: str = "<code>"


@dataclass(frozen=True)
class Block:
    """One read request: ``count`` registers or bits from ``address``."""

    function: str
    address: int
    count: int

    def covers(self, address: int, width: int) -> bool:
        return self.address <= address and address + width <= self.address + self.count


def plan_reads(regmap: RegisterMap, max_gap: int = 8) -> list[Block]:
    """Batch neighbouring points into as few reads as the protocol's limits allow.

    A gap of up to ``max_gap`` unused registers is read along rather than split (one round
    trip on a 9,600-baud line costs more than a few extra registers)."""
    spans: dict[str, list[tuple[int, int]]] = {}
    items: list[Point | EventBit] = [*regmap.points, *regmap.events]
    for item in items:
        spans.setdefault(item.function, []).append((item.address, item.width))
    blocks: list[Block] = []
    for function in FUNCTIONS:
        limit = MAX_REGISTERS_PER_READ if function in REGISTER_FUNCTIONS else MAX_BITS_PER_READ
        start = end = -1
        for address, width in sorted(spans.get(function, [])):
            if start >= 0 and address <= end + max_gap and address + width - start <= limit:
                end = max(end, address + width)
                continue
            if start >= 0:
                blocks.append(Block(function, start, end - start))
            start, end = address, address + width
        if start >= 0:
            blocks.append(Block(function, start, end - start))
    return blocks


def decode_registers(words: list[int], type_: str, byte_order: str, word_order: str) -> float:
    """Registers (16-bit words as the device sent them) → the number they hold."""
    count, fmt = TYPES[type_]
    if len(words) != count:
        raise ValueError(f"{type_} needs {count} registers, got {len(words)}")
    ordered = list(words) if word_order == "big" else list(reversed(words))
    raw = b"".join(
        struct.pack(">H", w) if byte_order == "big" else struct.pack("<H", w) for w in ordered
    )
    value = struct.unpack(fmt, raw)[0]
    return float(value)


def encode_registers(value: float, type_: str, byte_order: str, word_order: str) -> list[int]:
    """The inverse of :func:`decode_registers` (simulated devices and tests write with it)."""
    fmt = TYPES[type_][1]
    raw = struct.pack(fmt, value if type_ == "float32" else int(value))
    big = byte_order == "big"
    words = [
        int.from_bytes(raw[i : i + 2], "big" if big else "little") for i in range(0, len(raw), 2)
    ]
    return words if word_order == "big" else list(reversed(words))


def point_value(
    point: Point, regs: dict[str, dict[int, int]], value_type: ValueType
) -> bool | int | float | None:
    """A point's catalog value from what was read; None when it is not a usable number."""
    table = regs.get(point.function, {})
    if point.function not in REGISTER_FUNCTIONS:
        bit = table.get(point.address)
        return None if bit is None else bool(bit)
    words = [table.get(point.address + i) for i in range(point.width)]
    if any(w is None for w in words):
        return None
    if point.type == "bool":
        return bool((words[0] or 0) >> (point.bit or 0) & 1)
    raw = decode_registers(
        [w for w in words if w is not None], point.type, point.byte_order, point.word_order
    )
    if not math.isfinite(raw):  # a float32 NaN marks "no value" on many meters
        return None
    if point.type == "float32":  # its ~7 significant digits, not the binary expansion's noise
        raw = float(f"{raw:.7g}")
    value = raw * point.scale + point.offset
    if value_type is ValueType.INTEGER:
        return round(value)
    if value_type is ValueType.BOOLEAN:
        return value != 0
    return round(value, 6)


def bit_is_set(item: EventBit, regs: dict[str, dict[int, int]]) -> bool | None:
    value = regs.get(item.function, {}).get(item.address)
    if value is None:
        return None
    if item.function in REGISTER_FUNCTIONS:
        return bool(value >> (item.bit or 0) & 1)
    return bool(value)


# -- loading ----------------------------------------------------------------------------------


def _fail(source: str, where: str, what: str) -> RegisterMapError:
    return RegisterMapError(f"register map {source}: {where}: {what}")


def _int(tbl: dict[str, Any], key: str, source: str, where: str, lo: int, hi: int) -> int:
    value = tbl.get(key)
    if type(value) is not int or not lo <= value <= hi:
        raise _fail(source, where, f"{key} must be an integer from {lo} to {hi}, got {value!r}")
    return value


def _choice(
    tbl: dict[str, Any], key: str, options: tuple[str, ...], default: str, source: str, where: str
) -> str:
    value = tbl.get(key, default)
    if value not in options:
        raise _fail(source, where, f"{key} must be one of {', '.join(options)}, got {value!r}")
    return str(value)


def parse_register_map(doc: dict[str, Any], source: str, catalog: Catalog) -> RegisterMap:
    unknown = sorted(
        set(doc) - {"model", "kind", "zh", "en", "byte_order", "word_order", "points", "events"}
    )
    if unknown:
        raise _fail(source, "top level", f"unknown key(s) {', '.join(unknown)}")
    kind_name = str(doc.get("kind"))
    if kind_name not in catalog.kinds:
        raise _fail(source, "kind", f"{kind_name!r} is not a catalog kind")
    kind = catalog.kinds[kind_name]
    byte_order = _choice(doc, "byte_order", ORDERS, "big", source, "top level")
    word_order = _choice(doc, "word_order", ORDERS, "big", source, "top level")
    points: list[Point] = []
    for i, p in enumerate(doc.get("points", [])):
        where = f"[[points]] #{i + 1}"
        extra = sorted(
            set(p)
            - {
                "metric",
                "function",
                "address",
                "type",
                "scale",
                "offset",
                "byte_order",
                "word_order",
                "bit",
            }
        )
        if extra:
            raise _fail(source, where, f"unknown key(s) {', '.join(extra)}")
        metric = p.get("metric")
        if metric not in kind.metrics:
            raise _fail(
                source,
                where,
                f"metric {metric!r} is not one of {kind_name}'s: {', '.join(sorted(kind.metrics))}",
            )
        function = _choice(p, "function", FUNCTIONS, "holding", source, where)
        type_ = _choice(
            p,
            "type",
            tuple(TYPES),
            "uint16" if function in REGISTER_FUNCTIONS else "bool",
            source,
            where,
        )
        if function not in REGISTER_FUNCTIONS and type_ != "bool":
            raise _fail(source, where, f"a {function} is one bit: type must be bool")
        bit = _int(p, "bit", source, where, 0, 15) if "bit" in p else None
        if type_ == "bool" and function in REGISTER_FUNCTIONS and bit is None:
            raise _fail(source, where, "a bool from a register needs bit = 0 … 15")
        for key in ("scale", "offset"):
            if key in p and (type(p[key]) not in (int, float) or not math.isfinite(p[key])):
                raise _fail(source, where, f"{key} must be a number, got {p[key]!r}")
        points.append(
            Point(
                metric=str(metric),
                function=function,
                address=_int(p, "address", source, where, 0, 65535),
                type=type_,
                scale=float(p.get("scale", 1.0)),
                offset=float(p.get("offset", 0.0)),
                byte_order=_choice(p, "byte_order", ORDERS, byte_order, source, where),
                word_order=_choice(p, "word_order", ORDERS, word_order, source, where),
                bit=bit,
            )
        )
    metrics = {p.metric for p in points}
    events: list[EventBit] = []
    for i, e in enumerate(doc.get("events", [])):
        where = f"[[events]] #{i + 1}"
        extra = sorted(set(e) - {"type", "function", "address", "bit", "data", "data_metrics"})
        if extra:
            raise _fail(source, where, f"unknown key(s) {', '.join(extra)}")
        if e.get("type") not in kind.events:
            raise _fail(
                source,
                where,
                f"event type {e.get('type')!r} is not one of {kind_name}'s: "
                f"{', '.join(sorted(kind.events)) or 'none'}",
            )
        function = _choice(e, "function", FUNCTIONS, "holding", source, where)
        bit = _int(e, "bit", source, where, 0, 15) if "bit" in e else None
        if function in REGISTER_FUNCTIONS and bit is None:
            raise _fail(source, where, "a status bit in a register needs bit = 0 … 15")
        data = e.get("data", {})
        if not isinstance(data, dict):
            raise _fail(source, where, "data must be a table")
        with_metrics = e.get("data_metrics", [])
        if not isinstance(with_metrics, list) or not set(with_metrics) <= metrics:
            raise _fail(source, where, f"data_metrics must name points of this map: {metrics}")
        events.append(
            EventBit(
                type=str(e["type"]),
                function=function,
                address=_int(e, "address", source, where, 0, 65535),
                bit=bit,
                data=dict(data),
                data_metrics=tuple(with_metrics),
            )
        )
    if not points and not events:
        raise _fail(source, "points", "a map needs at least one [[points]] or [[events]]")
    return RegisterMap(
        model=str(doc.get("model", Path(source).stem)),
        kind=str(kind_name),
        points=tuple(points),
        events=tuple(events),
        source=source,
    )


def bundled_maps() -> list[str]:
    return sorted(p.stem for p in MAPS_DIR.glob("*.toml"))


def load_register_map(name_or_path: str, catalog: Catalog, base: Path | None = None) -> RegisterMap:
    """A bundled map by name (``heating-substation``) or a map file (relative to ``base``)."""
    path = MAPS_DIR / f"{name_or_path}.toml"
    if not path.exists():
        path = (base or Path.cwd()) / name_or_path
    if not path.exists():
        raise RegisterMapError(
            f"register map {name_or_path!r}: no such file, and not a bundled map "
            f"({', '.join(bundled_maps())})"
        )
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RegisterMapError(f"register map {path}: cannot read it: {exc}") from None
    return parse_register_map(doc, str(path), catalog)
