"""Device catalog: the kinds, metrics and event types gateways may send (contract v1).

The catalog is data (``catalog_v1.toml``); this module loads and validates it and precompiles
per-kind metric checks for the hot decode path in :mod:`protocol.messages`.
"""

from __future__ import annotations

import functools
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Union

import msgspec

__all__ = [
    "BUNDLED_CATALOG",
    "MAX_SAFE_INT",
    "Catalog",
    "CatalogError",
    "EventType",
    "Kind",
    "Metric",
    "StatusBit",
    "ValueType",
    "default_catalog",
    "load_catalog",
]

BUNDLED_CATALOG = Path(__file__).with_name("catalog_v1.toml")

# Same limit as messages.MAX_TEXT_LEN: an enum value must fit what the decoder accepts.
_MAX_ENUM_LEN = 64

# The largest integer the contract allows anywhere (seq, times, counts, integer metrics): a
# JSON-safe integer, which SQLite's INTEGER, PostgreSQL's BIGINT and JavaScript hold exactly.
MAX_SAFE_INT = 2**53 - 1

_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")
_EVENT_TYPE_RE = re.compile(r"([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)")


class ValueType(StrEnum):
    NUMBER = "number"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    ENUM = "enum"


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    type: ValueType
    unit: str | None
    min: float | None
    max: float | None
    values: tuple[str, ...]
    label_zh: str
    label_en: str


@dataclass(frozen=True, slots=True)
class EventType:
    type: str
    family: str
    label_zh: str
    label_en: str
    fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    family: str
    label_zh: str
    label_en: str
    interval_s: int
    metrics: Mapping[str, Metric]
    events: frozenset[str]
    # Which GB/T 26875.3 table its status_word follows: "system" (§8.2.1.1) or "component"
    # (§8.2.1.2, a detector's: bit 8 power fault, 9-15 reserved).
    status_word: str = "system"


@dataclass(frozen=True, slots=True)
class StatusBit:
    """One bit of a GB/T 26875.3 status word (``status_word`` metrics and event data)."""

    bit: int
    name: str
    label_zh: str
    label_en: str


# Check codes, compared with `is`/`==` in the decode loop (cheaper than enum lookups).
CHECK_NUMBER = 0
CHECK_INTEGER = 1
CHECK_BOOLEAN = 2
CHECK_ENUM = 3

_CHECK_CODES = {
    ValueType.NUMBER: CHECK_NUMBER,
    ValueType.INTEGER: CHECK_INTEGER,
    ValueType.BOOLEAN: CHECK_BOOLEAN,
    ValueType.ENUM: CHECK_ENUM,
}


class MetricCheck(NamedTuple):
    """Precompiled check of one metric; internal to the protocol package."""

    code: int
    lo: float
    hi: float
    values: frozenset[str]
    metric: Metric


class KindCheck(NamedTuple):
    """Precompiled checks of one kind; internal to the protocol package."""

    metrics: dict[str, MetricCheck]
    events: frozenset[str]


def _compile(kinds: Mapping[str, Kind]) -> dict[str, KindCheck]:
    out: dict[str, KindCheck] = {}
    for name, kind in kinds.items():
        checks = {
            m.name: MetricCheck(
                code=_CHECK_CODES[m.type],
                lo=-math.inf if m.min is None else m.min,
                hi=math.inf if m.max is None else m.max,
                values=frozenset(m.values),
                metric=m,
            )
            for m in kind.metrics.values()
        }
        out[name] = KindCheck(metrics=checks, events=kind.events)
    return out


# Same bounds as messages._is_uint and messages._is_seq (CONTRACT.md "Bounds").
_UInt = Annotated[int, msgspec.Meta(ge=0, le=MAX_SAFE_INT)]
_Seq = Annotated[int, msgspec.Meta(ge=1, le=MAX_SAFE_INT)]


def _typed_value(m: Metric) -> Any:
    """The msgspec type that accepts exactly the values the decode loop accepts as they are
    (an integral float for an integer metric is not: the loop normalises it, so it goes there)."""
    if m.type is ValueType.BOOLEAN:
        return bool
    if m.type is ValueType.ENUM:
        return Literal[tuple(m.values)]
    if m.type is ValueType.INTEGER:
        lo = None if m.min is None else math.ceil(m.min)
        hi = None if m.max is None else math.floor(m.max)
        return Annotated[int, msgspec.Meta(ge=lo, le=hi)]
    return Annotated[float, msgspec.Meta(ge=m.min, le=m.max)]


class TypedTelemetry:
    """The msgspec decoder of _compile_typed; pickles as its kinds (a catalog goes to worker
    processes) and is built again there."""

    def __init__(self, kinds: Mapping[str, Kind]) -> None:
        self._kinds = kinds
        self.decode = _compile_typed(kinds).decode

    def __reduce__(self) -> tuple[type[TypedTelemetry], tuple[Mapping[str, Kind]]]:
        return (TypedTelemetry, (self._kinds,))


def _compile_typed(kinds: Mapping[str, Kind]) -> msgspec.json.Decoder[Any]:
    """A msgspec decoder of a whole telemetry message that succeeds only on a message the
    decode loop would take whole: every reading of a known kind, every metric known and in
    range. It checks in C what the loop checks in Python (about 0.3 µs a reading against 4);
    ``dev`` patterns, the item limit, the future limit and empty ``m`` are left to the
    caller (messages.py owns those limits). Field names
    are positional (``f0``…) renamed to the metric names, so a metric may be any name."""
    readings = []
    for i, (name, kind) in enumerate(kinds.items()):
        fields = [
            (f"f{j}", Union[_typed_value(m), msgspec.UnsetType], msgspec.UNSET)  # noqa: UP007
            for j, m in enumerate(kind.metrics.values())
        ]
        rename = {f"f{j}": m for j, m in enumerate(kind.metrics)}
        metrics = msgspec.defstruct(
            f"Metrics{i}", fields, rename=rename, forbid_unknown_fields=True
        )
        readings.append(
            msgspec.defstruct(
                f"Reading{i}",
                [("dev", str), ("ts", _UInt), ("m", metrics)],
                tag_field="kind",
                tag=name,
            )
        )
    envelope = msgspec.defstruct(
        "TelemetryEnvelope",
        [
            ("v", Literal[1]),
            ("gw", str),
            ("seq", _Seq),
            ("sent", _UInt),
            (
                "readings",
                Annotated[
                    list[Union[tuple(readings)]],  # type: ignore[misc]  # noqa: UP007
                    msgspec.Meta(min_length=1),
                ],
            ),
        ],
    )
    return msgspec.json.Decoder(envelope)


@dataclass(frozen=True, slots=True)
class Catalog:
    version: int
    kinds: Mapping[str, Kind]
    event_types: Mapping[str, EventType]
    families: Mapping[str, tuple[str, str]]  # family -> (label_zh, label_en)
    status_word_bits: Mapping[int, StatusBit] = field(default_factory=dict)
    component_status_word_bits: Mapping[int, StatusBit] = field(default_factory=dict)
    # Built once per catalog so decoding never re-derives per-reading checks.
    _checks: Mapping[str, KindCheck] = field(init=False, repr=False, compare=False)
    # Whole valid telemetry messages decoded in C; see _compile_typed.
    _typed_telemetry: TypedTelemetry = field(init=False, repr=False, compare=False)

    def status_bits_of(self, kind: str) -> Mapping[int, StatusBit]:
        """The status-word table a kind's ``status_word`` follows."""
        k = self.kinds.get(kind)
        if k is not None and k.status_word == "component":
            return self.component_status_word_bits
        return self.status_word_bits

    def __post_init__(self) -> None:
        object.__setattr__(self, "_checks", _compile(self.kinds))
        object.__setattr__(self, "_typed_telemetry", TypedTelemetry(self.kinds))


class CatalogError(ValueError):
    """A broken catalog file; the message names the file and what is wrong."""


# ---------------------------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------------------------

_TOP_KEYS = frozenset(
    {
        "version",
        "units",
        "families",
        "status_word_bits",
        "component_status_word_bits",
        "event_types",
        "kinds",
    }
)
_FAMILY_KEYS = frozenset({"zh", "en"})
_BIT_KEYS = frozenset({"name", "zh", "en"})
_EVENT_KEYS = frozenset({"family", "zh", "en", "fields"})
_KIND_KEYS = frozenset({"family", "zh", "en", "interval_s", "events", "metrics", "status_word"})
_METRIC_KEYS = frozenset({"type", "unit", "min", "max", "values", "zh", "en"})


class _Loader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, what: str) -> CatalogError:
        return CatalogError(f"catalog {self.source}: {where}: {what}")

    def table(
        self, value: Any, where: str, allowed: frozenset[str] | None = None
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"must be a table, got {type(value).__name__}")
        if allowed is not None:
            # Strict keys catch typos such as "mx = 4" that would silently drop a bound.
            unknown = sorted(set(value) - allowed)
            if unknown:
                raise self.fail(where, f"unknown key(s) {', '.join(unknown)}")
        return value

    def text(self, tbl: dict[str, Any], key: str, where: str) -> str:
        value = tbl.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, f"'{key}' must be a non-empty string")
        return value

    def str_list(self, tbl: dict[str, Any], key: str, where: str) -> list[str]:
        value = tbl.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(where, f"'{key}' must be a list of non-empty strings")
        if len(set(value)) != len(value):
            raise self.fail(where, f"'{key}' has duplicates")
        return value

    def load(self, doc: dict[str, Any]) -> Catalog:
        self.table(doc, "top level", _TOP_KEYS)
        version = doc.get("version")
        if type(version) is not int or version < 1:
            raise self.fail("version", "must be a positive integer")
        units = self.units(doc.get("units", {}))
        families = self.families(doc.get("families"))
        bits = self.status_bits(doc.get("status_word_bits", {}))
        component_bits = self.status_bits(
            doc.get("component_status_word_bits", {}), "component_status_word_bits"
        )
        event_types = self.event_types(doc.get("event_types", {}), families)
        kinds_tbl = self.table(doc.get("kinds"), "kinds")
        if not kinds_tbl:
            raise self.fail("kinds", "no kinds defined")
        kinds = {
            name: self.kind(name, spec, families, event_types, units)
            for name, spec in kinds_tbl.items()
        }
        return Catalog(
            version=version,
            kinds=kinds,
            event_types=event_types,
            families=families,
            status_word_bits=bits,
            component_status_word_bits=component_bits,
        )

    def units(self, value: Any) -> dict[str, str]:
        tbl = self.table(value, "units")
        for unit, suffix in tbl.items():
            if not isinstance(suffix, str) or not re.fullmatch(r"_[a-z][a-z0-9_]*", suffix):
                raise self.fail(f"units.{unit!r}", "suffix must look like '_abc'")
        return dict(tbl)

    def families(self, value: Any) -> dict[str, tuple[str, str]]:
        tbl = self.table(value, "families")
        if not tbl:
            raise self.fail("families", "no families defined")
        out: dict[str, tuple[str, str]] = {}
        for name, spec in tbl.items():
            where = f"families.{name}"
            if not _NAME_RE.fullmatch(name):
                raise self.fail(where, "family name must be snake_case")
            spec = self.table(spec, where, _FAMILY_KEYS)
            out[name] = (self.text(spec, "zh", where), self.text(spec, "en", where))
        return out

    def status_bits(self, value: Any, table: str = "status_word_bits") -> dict[int, StatusBit]:
        tbl = self.table(value, table)
        out: dict[int, StatusBit] = {}
        for key, spec in tbl.items():
            where = f"{table}.{key}"
            if not key.isdigit() or not 0 <= int(key) <= 15:
                raise self.fail(where, "bit number must be 0..15")
            spec = self.table(spec, where, _BIT_KEYS)
            bit = int(key)
            out[bit] = StatusBit(
                bit=bit,
                name=self.text(spec, "name", where),
                label_zh=self.text(spec, "zh", where),
                label_en=self.text(spec, "en", where),
            )
        return out

    def event_types(
        self, value: Any, families: Mapping[str, tuple[str, str]]
    ) -> dict[str, EventType]:
        tbl = self.table(value, "event_types")
        out: dict[str, EventType] = {}
        for type_name, spec in tbl.items():
            where = f"event_types.{type_name!r}"
            match = _EVENT_TYPE_RE.fullmatch(type_name)
            if match is None:
                raise self.fail(where, "event type must be '{family}.{event}' in snake_case")
            spec = self.table(spec, where, _EVENT_KEYS)
            family = self.text(spec, "family", where)
            if family not in families:
                raise self.fail(where, f"unknown family {family!r}")
            if match.group(1) != family:
                raise self.fail(where, f"type prefix {match.group(1)!r} != family {family!r}")
            out[type_name] = EventType(
                type=type_name,
                family=family,
                label_zh=self.text(spec, "zh", where),
                label_en=self.text(spec, "en", where),
                fields=tuple(self.str_list(spec, "fields", where)),
            )
        return out

    def kind(
        self,
        name: str,
        value: Any,
        families: Mapping[str, tuple[str, str]],
        event_types: Mapping[str, EventType],
        units: Mapping[str, str],
    ) -> Kind:
        where = f"kinds.{name}"
        if not _NAME_RE.fullmatch(name):
            raise self.fail(where, "kind name must be snake_case")
        spec = self.table(value, where, _KIND_KEYS)
        family = self.text(spec, "family", where)
        if family not in families:
            raise self.fail(where, f"unknown family {family!r}")
        interval = spec.get("interval_s")
        if type(interval) is not int or interval <= 0:
            raise self.fail(where, "'interval_s' must be a positive integer")
        events = self.str_list(spec, "events", where)
        for ev in events:
            if ev not in event_types:
                raise self.fail(where, f"names undefined event type {ev!r}")
        metrics_tbl = self.table(spec.get("metrics"), f"{where}.metrics")
        if not metrics_tbl:
            raise self.fail(where, "defines no metrics")
        metrics = {
            m: self.metric(m, mspec, f"{where}.metrics.{m}", units)
            for m, mspec in metrics_tbl.items()
        }
        status_word = spec.get("status_word", "system")
        if status_word not in ("system", "component"):
            raise self.fail(where, "'status_word' must be 'system' or 'component'")
        return Kind(
            name=name,
            family=family,
            label_zh=self.text(spec, "zh", where),
            label_en=self.text(spec, "en", where),
            interval_s=interval,
            metrics=metrics,
            events=frozenset(events),
            status_word=status_word,
        )

    def metric(self, name: str, value: Any, where: str, units: Mapping[str, str]) -> Metric:
        if not _NAME_RE.fullmatch(name):
            raise self.fail(where, "metric name must be snake_case")
        spec = self.table(value, where, _METRIC_KEYS)
        raw_type: Any = spec.get("type")
        try:
            vtype = ValueType(raw_type)
        except ValueError:
            known = ", ".join(t.value for t in ValueType)
            raise self.fail(where, f"unknown type {raw_type!r} (known: {known})") from None
        unit: Any = spec.get("unit")
        lo: Any = spec.get("min")
        hi: Any = spec.get("max")
        values: list[str] = []
        numeric = vtype in (ValueType.NUMBER, ValueType.INTEGER)
        if numeric:
            for key, bound in (("min", lo), ("max", hi)):
                ok = (
                    type(bound) is int
                    if vtype is ValueType.INTEGER
                    else type(bound) in (int, float) and math.isfinite(bound)
                )
                if not ok:
                    raise self.fail(where, f"'{key}' must be a finite {vtype.value}")
                if vtype is ValueType.INTEGER and abs(bound) > MAX_SAFE_INT:
                    raise self.fail(where, f"'{key}' is beyond ±{MAX_SAFE_INT} (2^53 - 1)")
            if lo > hi:
                raise self.fail(where, f"min {lo} > max {hi}")
            if unit is not None:
                if not isinstance(unit, str) or unit not in units:
                    raise self.fail(where, f"unknown unit {unit!r} (not in [units])")
                suffix = units[unit]
                # The whole name may be the bare suffix: "lel_pct" for "_lel_pct".
                if not (name.endswith(suffix) or name == suffix[1:]):
                    raise self.fail(where, f"unit {unit} requires the name to end in {suffix!r}")
        else:
            for key in ("unit", "min", "max"):
                if key in spec:
                    raise self.fail(where, f"a {vtype.value} metric takes no '{key}'")
        if vtype is ValueType.ENUM:
            values = self.str_list(spec, "values", where)
            if not values:
                raise self.fail(where, "enum without 'values'")
            too_long = [v for v in values if len(v) > _MAX_ENUM_LEN]
            if too_long:
                raise self.fail(where, f"enum values longer than {_MAX_ENUM_LEN}: {too_long}")
        elif "values" in spec:
            raise self.fail(where, f"a {vtype.value} metric takes no 'values'")
        return Metric(
            name=name,
            type=vtype,
            unit=unit if numeric else None,
            min=lo if numeric else None,
            max=hi if numeric else None,
            values=tuple(values),
            label_zh=self.text(spec, "zh", where),
            label_en=self.text(spec, "en", where),
        )


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Load and validate a catalog file; ``None`` loads the bundled ``catalog_v1.toml``.

    Raises CatalogError (naming the file) if it is unreadable, not TOML or inconsistent.
    """
    file = BUNDLED_CATALOG if path is None else Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise CatalogError(f"catalog {file}: cannot read: {exc.strerror or exc}") from exc
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"catalog {file}: not valid TOML: {exc}") from exc
    return _Loader(str(file)).load(doc)


@functools.cache
def default_catalog() -> Catalog:
    """The bundled catalog, loaded once."""
    return load_catalog()
