"""Payloads of MQTT wire contract v1: decode + validate (service side), encode (gateway side).

Decoding follows CONTRACT.md "What the service does with bad input": a whole-message problem
raises :class:`MessageRejected`; a bad reading or event inside a batch becomes a :class:`Reject`
and the valid items of the same message are still returned.

Decisions callers should know:

* Item indexes in rejects and details are 0-based positions in ``readings`` / ``events``.
* Unknown top-level and item fields are ignored (the contract grows by optional fields).
* ``integer`` metrics accept integral floats (``7.0``, as JS/Lua encoders send) and the value
  is normalised to ``int`` in the returned reading; ``7.5`` is BAD_VALUE_TYPE.
* ``number`` metrics accept ints and floats, never booleans.
* An ``enum`` value that is a string but not one of the catalog's values is OUT_OF_RANGE;
  a non-string, or a string longer than MAX_TEXT_LEN, is BAD_VALUE_TYPE.
* ``dev`` is 1-64 characters of ``[A-Za-z0-9._:-]`` starting with a letter or digit (vendor
  device ids are looser than estate/gateway ids); ``ts`` and ``sent`` are ints
  0..MAX_SAFE_INT, ``seq`` 1..MAX_SAFE_INT (CONTRACT.md "Bounds": every integer fits SQLite's
  INTEGER and a JavaScript number, so no store can overflow on it); so are a status's counts.
* Event ``data`` missing or ``null`` becomes ``{}``; any other non-object is BAD_ITEM, and so
  is one nested deeper than MAX_DATA_DEPTH; one over MAX_DATA_BYTES encoded is TOO_LARGE.
* Short texts (``fw``, ids of commands) have no control characters.
* Timestamps are only checked against the future limit; old ones are fine (store-and-forward).
* Encoders raise ValueError for what the decoder would reject as a whole message
  (no items, more than MAX_ITEMS, over MAX_PAYLOAD_BYTES) and for fields that clash with
  envelope keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeGuard

import msgspec
import orjson

from protocol.catalog import (
    CHECK_BOOLEAN,
    CHECK_ENUM,
    CHECK_INTEGER,
    CHECK_NUMBER,
    MAX_SAFE_INT,
    Catalog,
    KindCheck,
    MetricCheck,
)

__all__ = [
    "CONTRACT_VERSION",
    "MAX_DATA_BYTES",
    "MAX_DATA_DEPTH",
    "MAX_FUTURE_MS",
    "MAX_ITEMS",
    "MAX_PAYLOAD_BYTES",
    "MAX_SAFE_INT",
    "MAX_TEXT_LEN",
    "STATUS_STATES",
    "Command",
    "CommandAck",
    "Event",
    "EventBatch",
    "MessageRejected",
    "Reading",
    "Reason",
    "Reject",
    "Status",
    "TelemetryBatch",
    "Value",
    "decode_command",
    "decode_command_ack",
    "decode_events",
    "decode_status",
    "decode_telemetry",
    "encode_command",
    "encode_command_ack",
    "encode_events",
    "encode_status",
    "encode_telemetry",
    "is_valid_dev",
]

MAX_PAYLOAD_BYTES = 1_048_576
MAX_ITEMS = 5000
MAX_FUTURE_MS = 86_400_000
MAX_TEXT_LEN = 64
# Event data (CONTRACT.md "Bounds"): a store encodes it again, and encoders have recursion
# limits (orjson's is 254), so a deeper object would fail its commit, not its decoding.
MAX_DATA_DEPTH = 16
MAX_DATA_BYTES = 65_536
CONTRACT_VERSION = 1
STATUS_STATES = ("online", "offline")

_DEV_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_dev_match = _DEV_RE.fullmatch
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class Reason(StrEnum):
    """Dead-letter reason codes; the strings are stable (stored and counted)."""

    TOO_LARGE = "too_large"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_VERSION = "unknown_version"
    GW_MISMATCH = "gw_mismatch"
    BAD_ENVELOPE = "bad_envelope"
    BAD_ITEM = "bad_item"
    UNKNOWN_KIND = "unknown_kind"
    UNKNOWN_METRIC = "unknown_metric"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    BAD_VALUE_TYPE = "bad_value_type"
    OUT_OF_RANGE = "out_of_range"
    FUTURE_TIMESTAMP = "future_timestamp"
    BAD_TOPIC = "bad_topic"
    UNKNOWN_ESTATE = "unknown_estate"
    UNKNOWN_GATEWAY = "unknown_gateway"


Value = float | int | bool | str


class Reading(msgspec.Struct, frozen=True, gc=False):
    """One device's values at one time. A msgspec struct, not a dataclass: the decoder makes
    one a reading (100,000 a second), and a frozen dataclass's ``__init__`` (Python, a call of
    ``object.__setattr__`` a field) was a fifth of its time. ``gc=False``: it holds nothing
    that could refer back to it (its ``metrics`` dict is tracked on its own), so the cyclic
    collector neither counts nor walks it."""

    dev: str
    kind: str
    ts: int
    metrics: dict[str, Value]


@dataclass(frozen=True, slots=True)
class Event:
    dev: str
    kind: str
    ts: int
    type: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reject:
    reason: Reason
    detail: str
    index: int | None  # 0-based position in the batch; None = whole message
    item: Any  # the raw decoded reading/event; None for a whole message


@dataclass(frozen=True, slots=True)
class TelemetryBatch:
    gw: str
    seq: int
    sent: int
    readings: list[Reading]
    rejects: list[Reject]


@dataclass(frozen=True, slots=True)
class EventBatch:
    gw: str
    seq: int
    sent: int
    events: list[Event]
    rejects: list[Reject]


@dataclass(frozen=True, slots=True)
class Status:
    gw: str
    state: str
    ts: int
    fw: str | None
    buffered: int | None
    extra: dict[str, Any]  # any other (optional, additive) fields


@dataclass(frozen=True, slots=True)
class Command:
    id: str
    ts: int
    dev: str
    action: str
    params: dict[str, Any]  # the remaining fields, e.g. reason


@dataclass(frozen=True, slots=True)
class CommandAck:
    id: str
    ok: bool
    ts: int
    error: str | None


class MessageRejected(Exception):
    """A whole message that must not be stored; goes to the dead-letter store."""

    reason: Reason
    detail: str

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}"


def is_valid_dev(value: object) -> TypeGuard[str]:
    """True if ``value`` is an acceptable device id (see module docstring)."""
    return type(value) is str and _dev_match(value) is not None


# ---------------------------------------------------------------------------------------------
# Detail helpers (error path only)
# ---------------------------------------------------------------------------------------------

_JSON_TYPE_NAMES: dict[type, str] = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
    type(None): "null",
}


def _jtype(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _show(value: object, limit: int = 60) -> str:
    try:
        text = repr(value)
    except RecursionError:  # orjson parses 1,024 levels, repr stops near 1,000
        return f"({_jtype(value)} nested too deep to show)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _num(x: float) -> str:
    # "0..4", not "0.0..4.0"
    return str(int(x)) if float(x).is_integer() else repr(x)


def _is_uint(value: object) -> TypeGuard[int]:
    return type(value) is int and 0 <= value <= MAX_SAFE_INT


def _is_seq(value: object) -> TypeGuard[int]:
    return type(value) is int and 1 <= value <= MAX_SAFE_INT


def _depth_over(value: object, limit: int) -> int | None:
    """The nesting depth of a JSON value (an object or array is 1 deeper than its parent; a
    top-level object is 1) if over ``limit``, else None. Iterative, and stops at the first
    branch found too deep, so a hostile value costs no recursion."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        children: Iterable[object] = (
            v.values() if isinstance(v, dict) else v if isinstance(v, list) else ()
        )
        for child in children:
            if type(child) is dict or type(child) is list:
                if depth + 1 > limit:
                    return depth + 1
                stack.append((child, depth + 1))
    return None


def _data_problem(data: dict[str, Any]) -> tuple[Reason, str] | None:
    """Why event data is outside its bounds, or None."""
    if not data:
        return None
    depth = _depth_over(data, MAX_DATA_DEPTH)
    if depth is not None:
        return Reason.BAD_ITEM, f"'data' is nested {depth}+ deep, over {MAX_DATA_DEPTH}"
    size = len(orjson.dumps(data))
    if size > MAX_DATA_BYTES:
        return Reason.TOO_LARGE, f"'data' is {size} bytes encoded, over {MAX_DATA_BYTES}"
    return None


# ---------------------------------------------------------------------------------------------
# Whole-message checks
# ---------------------------------------------------------------------------------------------


def _load(payload: bytes) -> dict[str, Any]:
    size = len(payload)
    if size > MAX_PAYLOAD_BYTES:  # before parsing: never spend CPU on an oversized message
        raise MessageRejected(
            Reason.TOO_LARGE, f"payload is {size} bytes, over the {MAX_PAYLOAD_BYTES} byte limit"
        )
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise MessageRejected(Reason.INVALID_JSON, f"not valid UTF-8 JSON: {exc}") from None
    if type(doc) is not dict:
        raise MessageRejected(
            Reason.NOT_AN_OBJECT, f"payload is a JSON {_jtype(doc)}, not an object"
        )
    return doc


def _check_version(doc: dict[str, Any]) -> None:
    v = doc.get("v")
    if type(v) is not int or v != CONTRACT_VERSION:  # type() check: true/1.0 are not 1
        shown = "missing" if "v" not in doc else f"{_show(v)} ({_jtype(v)})"
        raise MessageRejected(
            Reason.UNKNOWN_VERSION, f"'v' is {shown}; this service speaks v{CONTRACT_VERSION}"
        )


def _check_gw(doc: dict[str, Any], topic_gw: str) -> str:
    gw = doc.get("gw")
    if type(gw) is not str:
        shown = "missing" if "gw" not in doc else f"a {_jtype(gw)}"
        raise MessageRejected(Reason.BAD_ENVELOPE, f"'gw' is {shown}, expected a string")
    if gw != topic_gw:
        raise MessageRejected(
            Reason.GW_MISMATCH, f"'gw' is {_show(gw)} but the topic's gateway is {topic_gw!r}"
        )
    return gw


def _envelope(doc: dict[str, Any], topic_gw: str, list_key: str) -> tuple[str, int, int, list[Any]]:
    _check_version(doc)
    gw = _check_gw(doc, topic_gw)
    seq = doc.get("seq")
    if not _is_seq(seq):
        raise MessageRejected(
            Reason.BAD_ENVELOPE, f"'seq' is {_show(seq)}, expected an integer 1..{MAX_SAFE_INT}"
        )
    sent = doc.get("sent")
    if not _is_uint(sent):
        raise MessageRejected(
            Reason.BAD_ENVELOPE,
            f"'sent' is {_show(sent)}, expected epoch milliseconds 0..{MAX_SAFE_INT}",
        )
    items = doc.get(list_key)
    if type(items) is not list:
        shown = "missing" if list_key not in doc else f"a {_jtype(items)}"
        raise MessageRejected(Reason.BAD_ENVELOPE, f"'{list_key}' is {shown}, expected an array")
    if not items:
        raise MessageRejected(Reason.BAD_ENVELOPE, f"'{list_key}' is empty")
    if len(items) > MAX_ITEMS:
        raise MessageRejected(
            Reason.BAD_ENVELOPE, f"'{list_key}' has {len(items)} items, over the {MAX_ITEMS} limit"
        )
    return gw, seq, sent, items


# ---------------------------------------------------------------------------------------------
# Per-item problems (error path: the hot loop only decides ok / not ok, these explain why)
# ---------------------------------------------------------------------------------------------


def _where(noun: str, index: int, item: Any) -> str:
    dev = item.get("dev") if type(item) is dict else None
    return f"{noun} {index} (dev {dev!r})" if is_valid_dev(dev) else f"{noun} {index}"


def _shape_problem(item: Any, extra_key: str | None) -> str:
    """Why an item fails the structural checks (BAD_ITEM)."""
    if type(item) is not dict:
        return f"is a {_jtype(item)}, not an object"
    dev = item.get("dev")
    if "dev" not in item:
        return "'dev' is missing"
    if type(dev) is not str:
        return f"'dev' is a {_jtype(dev)}, expected a string"
    if not is_valid_dev(dev):
        return f"'dev' {_show(dev)} is not a device id (1-64 of A-Z a-z 0-9 . _ : -)"
    kind = item.get("kind")
    if type(kind) is not str:
        shown = "missing" if "kind" not in item else f"a {_jtype(kind)}"
        return f"'kind' is {shown}, expected a string"
    ts = item.get("ts")
    if not _is_uint(ts):
        shown = "missing" if "ts" not in item else _show(ts)
        return f"'ts' is {shown}, expected epoch milliseconds (integer 0..{MAX_SAFE_INT})"
    if extra_key == "m":
        m = item.get("m")
        if type(m) is not dict:
            shown = "missing" if "m" not in item else f"a {_jtype(m)}"
            return f"'m' is {shown}, expected an object"
        if not m:
            return "'m' is empty"
    elif extra_key == "type":
        etype = item.get("type")
        if type(etype) is not str:
            shown = "missing" if "type" not in item else f"a {_jtype(etype)}"
            return f"'type' is {shown}, expected a string"
        data = item.get("data")
        if data is not None and type(data) is not dict:
            return f"'data' is a {_jtype(data)}, expected an object"
    return "malformed"  # unreachable when called after a failed fast check


def _future_detail(where: str, ts: int, now_ms: int, limit_ms: int = MAX_FUTURE_MS) -> str:
    return f"{where}: ts {ts} is {ts - now_ms} ms ahead of the service clock (limit {limit_ms} ms)"


def _metric_problem(
    where: str, kind: str, kc: KindCheck, name: str, value: Any
) -> tuple[Reason, str]:
    check: MetricCheck | None = kc.metrics.get(name)
    if check is None:
        defined = ", ".join(kc.metrics)
        return (
            Reason.UNKNOWN_METRIC,
            f"{where}: unknown metric {_show(name)} for kind {kind!r} (defined: {defined})",
        )
    metric = check.metric
    code = check.code
    shown = f"{name}={_show(value)}"
    if code in (CHECK_NUMBER, CHECK_INTEGER):
        want = "a number" if code == CHECK_NUMBER else "an integer"
        if type(value) not in (int, float):
            return Reason.BAD_VALUE_TYPE, f"{where}: {name} is a {_jtype(value)}, expected {want}"
        if code == CHECK_INTEGER and not float(value).is_integer():
            return Reason.BAD_VALUE_TYPE, f"{where}: {shown} is not an integer"
        unit = f" {metric.unit}" if metric.unit else ""
        return (
            Reason.OUT_OF_RANGE,
            f"{where}: {shown} outside {_num(check.lo)}..{_num(check.hi)}{unit}",
        )
    if code == CHECK_BOOLEAN:
        return Reason.BAD_VALUE_TYPE, f"{where}: {name} is a {_jtype(value)}, expected a boolean"
    # enum
    if type(value) is not str:
        return Reason.BAD_VALUE_TYPE, f"{where}: {name} is a {_jtype(value)}, expected a string"
    if len(value) > MAX_TEXT_LEN:
        return (
            Reason.BAD_VALUE_TYPE,
            f"{where}: {name} is a string of {len(value)} characters, over {MAX_TEXT_LEN}",
        )
    return (
        Reason.OUT_OF_RANGE,
        f"{where}: {shown} is not one of {', '.join(metric.values)}",
    )


# ---------------------------------------------------------------------------------------------
# Decoders
# ---------------------------------------------------------------------------------------------


# Device ids already found valid, so the fast path matches each id's pattern once, not per
# reading; cleared when it grows past the bound (ids are at most 64 characters).
_valid_devs: set[str] = set()
_MAX_VALID_DEVS = 200_000


class _WireReading(msgspec.Struct, gc=False):
    """A reading as the fast path reads it the second time: its fields as sent (``m`` as a
    plain dict, unknown keys ignored), checked against the typed pass (see _decode_whole)."""

    dev: Any
    kind: Any
    ts: Any
    m: Any


class _WireTelemetry(msgspec.Struct, gc=False):
    readings: list[_WireReading]


_decode_wire = msgspec.json.Decoder(_WireTelemetry).decode


def _decode_whole(
    payload: bytes,
    topic_gw: str,
    now_ms: int,
    catalog: Catalog,
    max_future_ms: int = MAX_FUTURE_MS,
) -> TelemetryBatch | None:
    """The fast path: the batch of a message the loop in decode_telemetry would take whole
    and unchanged, else None (that loop then finds what is wrong). msgspec checks types,
    kinds and ranges in C; what is left here is per reading: the device id (cached), the
    future limit, an empty ``m``, and that the two passes read the same kind. The second
    pass reads each reading's fields and ``m`` as sent (msgspec again, into structs: no dict
    a reading as orjson made, and the same reading of duplicate keys as the typed pass)."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return None
    try:
        typed = catalog._typed_telemetry.decode(payload)
        wire = _decode_wire(payload)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    if typed.gw != topic_gw or len(typed.readings) > MAX_ITEMS:
        return None
    max_ts = now_ms + max_future_ms
    valid_devs = _valid_devs
    readings: list[Reading] = []
    append = readings.append
    # Both passes saw the same text; zip and the kind guard against keys read differently.
    for t, r in zip(typed.readings, wire.readings, strict=True):
        dev = r.dev
        kind = r.kind
        ts = r.ts
        m = r.m
        if ts > max_ts or not m or kind != t.__struct_config__.tag or type(m) is not dict:
            return None
        if dev not in valid_devs:  # a str: msgspec checked that
            if _dev_match(dev) is None:
                return None
            if len(valid_devs) >= _MAX_VALID_DEVS:
                valid_devs.clear()
            valid_devs.add(dev)
        append(Reading(dev, kind, ts, m))
    return TelemetryBatch(
        gw=typed.gw, seq=typed.seq, sent=typed.sent, readings=readings, rejects=[]
    )


def decode_telemetry(
    payload: bytes,
    topic_gw: str,
    now_ms: int,
    catalog: Catalog,
    max_future_ms: int = MAX_FUTURE_MS,
) -> TelemetryBatch:
    """Decode a telemetry batch; raises MessageRejected for whole-message problems.
    ``max_future_ms``: how far ahead of ``now_ms`` a ``ts`` may be (the contract's day at
    most; a service may allow less)."""
    max_future_ms = min(max_future_ms, MAX_FUTURE_MS)
    whole = _decode_whole(payload, topic_gw, now_ms, catalog, max_future_ms)
    if whole is not None:
        return whole
    return _decode_each(payload, topic_gw, now_ms, catalog, max_future_ms)


def _decode_each(
    payload: bytes,
    topic_gw: str,
    now_ms: int,
    catalog: Catalog,
    max_future_ms: int = MAX_FUTURE_MS,
) -> TelemetryBatch:
    """The reference path: every reading checked on its own, each problem explained. Valid
    messages seldom get here (see _decode_whole); a test holds the two paths equal."""
    gw, seq, sent, items = _envelope(_load(payload), topic_gw, "readings")
    checks = catalog._checks
    max_ts = now_ms + max_future_ms
    readings: list[Reading] = []
    rejects: list[Reject] = []
    append = readings.append
    for i, r in enumerate(items):
        # Fast structural check; _shape_problem explains a failure.
        if not (
            type(r) is dict
            and type(dev := r.get("dev")) is str
            and _dev_match(dev) is not None
            and type(kind := r.get("kind")) is str
            and type(ts := r.get("ts")) is int
            and 0 <= ts <= MAX_SAFE_INT
            and type(m := r.get("m")) is dict
            and m
        ):
            detail = f"{_where('reading', i, r)}: {_shape_problem(r, 'm')}"
            rejects.append(Reject(Reason.BAD_ITEM, detail, i, r))
            continue
        kc = checks.get(kind)
        if kc is None:
            detail = f"reading {i} (dev {dev!r}): unknown kind {_show(kind)}"
            rejects.append(Reject(Reason.UNKNOWN_KIND, detail, i, r))
            continue
        if ts > max_ts:
            detail = _future_detail(f"reading {i} (dev {dev!r})", ts, now_ms, max_future_ms)
            rejects.append(Reject(Reason.FUTURE_TIMESTAMP, detail, i, r))
            continue
        mchecks = kc.metrics
        bad_name: str | None = None
        for name, val in m.items():
            c = mchecks.get(name)
            if c is not None:
                code, lo, hi, values, _ = c
                t = type(val)
                if code == CHECK_NUMBER:
                    if (t is float or t is int) and lo <= val <= hi:
                        continue
                elif code == CHECK_BOOLEAN:
                    if t is bool:
                        continue
                elif code == CHECK_INTEGER:
                    if t is int:
                        if lo <= val <= hi:
                            continue
                    elif t is float and val.is_integer() and lo <= val <= hi:
                        m[name] = int(val)  # same key: safe while iterating
                        continue
                elif code == CHECK_ENUM and t is str and val in values:
                    continue
            bad_name = name
            break
        if bad_name is not None:
            reason, detail = _metric_problem(
                f"reading {i} (dev {dev!r})", kind, kc, bad_name, m[bad_name]
            )
            rejects.append(Reject(reason, detail, i, r))
            continue
        append(Reading(dev, kind, ts, m))
    return TelemetryBatch(gw=gw, seq=seq, sent=sent, readings=readings, rejects=rejects)


def decode_events(
    payload: bytes,
    topic_gw: str,
    now_ms: int,
    catalog: Catalog,
    max_future_ms: int = MAX_FUTURE_MS,
) -> EventBatch:
    """Decode an event batch; raises MessageRejected for whole-message problems."""
    max_future_ms = min(max_future_ms, MAX_FUTURE_MS)
    gw, seq, sent, items = _envelope(_load(payload), topic_gw, "events")
    checks = catalog._checks
    event_types = catalog.event_types
    max_ts = now_ms + max_future_ms
    events: list[Event] = []
    rejects: list[Reject] = []
    for i, e in enumerate(items):
        if not (
            type(e) is dict
            and type(dev := e.get("dev")) is str
            and _dev_match(dev) is not None
            and type(kind := e.get("kind")) is str
            and type(ts := e.get("ts")) is int
            and 0 <= ts <= MAX_SAFE_INT
            and type(etype := e.get("type")) is str
            and ((data := e.get("data")) is None or type(data) is dict)
        ):
            detail = f"{_where('event', i, e)}: {_shape_problem(e, 'type')}"
            rejects.append(Reject(Reason.BAD_ITEM, detail, i, e))
            continue
        where = f"event {i} (dev {dev!r})"
        kc = checks.get(kind)
        if kc is None:
            rejects.append(
                Reject(Reason.UNKNOWN_KIND, f"{where}: unknown kind {_show(kind)}", i, e)
            )
            continue
        if ts > max_ts:
            detail = _future_detail(where, ts, now_ms, max_future_ms)
            rejects.append(Reject(Reason.FUTURE_TIMESTAMP, detail, i, e))
            continue
        if etype not in kc.events:
            if etype in event_types:
                detail = f"{where}: kind {kind!r} may not emit event type {etype!r}"
            else:
                detail = f"{where}: unknown event type {_show(etype)}"
            rejects.append(Reject(Reason.UNKNOWN_EVENT_TYPE, detail, i, e))
            continue
        if data and (problem := _data_problem(data)) is not None:
            rejects.append(Reject(problem[0], f"{where}: {problem[1]}", i, e))
            continue
        events.append(Event(dev, kind, ts, etype, {} if data is None else data))
    return EventBatch(gw=gw, seq=seq, sent=sent, events=events, rejects=rejects)


_STATUS_KEYS = frozenset({"v", "gw", "state", "ts", "fw", "buffered"})
# Optional counts of a status (CONTRACT.md "Status"), bounded like every integer.
_STATUS_COUNTS = ("buffered_readings", "dropped")


def _is_short_text(value: object) -> TypeGuard[str]:
    return type(value) is str and len(value) <= MAX_TEXT_LEN and not _CONTROL_RE.search(value)


def decode_status(
    payload: bytes, topic_gw: str, now_ms: int, max_future_ms: int = MAX_FUTURE_MS
) -> Status:
    """Decode a gateway status (also its Last Will); raises MessageRejected."""
    max_future_ms = min(max_future_ms, MAX_FUTURE_MS)
    doc = _load(payload)
    _check_version(doc)
    gw = _check_gw(doc, topic_gw)
    state = doc.get("state")
    if state not in STATUS_STATES:
        raise MessageRejected(
            Reason.BAD_ENVELOPE, f"'state' is {_show(state)}, expected 'online' or 'offline'"
        )
    ts = doc.get("ts")
    if not _is_uint(ts):
        raise MessageRejected(Reason.BAD_ENVELOPE, f"'ts' is {_show(ts)}, expected epoch ms")
    if ts > now_ms + max_future_ms:
        detail = _future_detail("status", ts, now_ms, max_future_ms)
        raise MessageRejected(Reason.FUTURE_TIMESTAMP, detail)
    fw = doc.get("fw")
    if fw is not None and not _is_short_text(fw):
        raise MessageRejected(
            Reason.BAD_ENVELOPE,
            f"'fw' is {_show(fw)}, expected a string of <= {MAX_TEXT_LEN} "
            "without control characters",
        )
    for key in ("buffered", *_STATUS_COUNTS):
        count = doc.get(key)
        if count is not None and not _is_uint(count):
            raise MessageRejected(
                Reason.BAD_ENVELOPE,
                f"'{key}' is {_show(count)}, expected a count 0..{MAX_SAFE_INT}",
            )
    buffered = doc.get("buffered")
    extra = {k: v for k, v in doc.items() if k not in _STATUS_KEYS}
    return Status(gw=gw, state=state, ts=ts, fw=fw, buffered=buffered, extra=extra)


def _short_text(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not value or not _is_short_text(value):
        raise MessageRejected(
            Reason.BAD_ENVELOPE,
            f"'{key}' is {_show(value)}, expected a non-empty string of <= {MAX_TEXT_LEN} "
            "without control characters",
        )
    return value


_COMMAND_KEYS = frozenset({"v", "id", "ts", "dev", "action"})


def decode_command(payload: bytes) -> Command:
    """Decode a command (gateway side); raises MessageRejected."""
    doc = _load(payload)
    _check_version(doc)
    cmd_id = _short_text(doc, "id")
    ts = doc.get("ts")
    if not _is_uint(ts):
        raise MessageRejected(Reason.BAD_ENVELOPE, f"'ts' is {_show(ts)}, expected epoch ms")
    dev = doc.get("dev")
    if not is_valid_dev(dev):
        raise MessageRejected(Reason.BAD_ENVELOPE, f"'dev' is {_show(dev)}, not a device id")
    action = _short_text(doc, "action")
    params = {k: v for k, v in doc.items() if k not in _COMMAND_KEYS}
    return Command(id=cmd_id, ts=ts, dev=dev, action=action, params=params)


def decode_command_ack(payload: bytes) -> CommandAck:
    """Decode a command result; raises MessageRejected. Unknown extra fields are ignored."""
    doc = _load(payload)
    _check_version(doc)
    cmd_id = _short_text(doc, "id")
    ok = doc.get("ok")
    if type(ok) is not bool:
        raise MessageRejected(Reason.BAD_ENVELOPE, f"'ok' is {_show(ok)}, expected a boolean")
    ts = doc.get("ts")
    if not _is_uint(ts):
        raise MessageRejected(Reason.BAD_ENVELOPE, f"'ts' is {_show(ts)}, expected epoch ms")
    error = doc.get("error")
    if error is not None and type(error) is not str:
        raise MessageRejected(Reason.BAD_ENVELOPE, f"'error' is a {_jtype(error)}, not a string")
    return CommandAck(id=cmd_id, ok=ok, ts=ts, error=error)


# ---------------------------------------------------------------------------------------------
# Encoders
# ---------------------------------------------------------------------------------------------


def _dump(doc: dict[str, Any]) -> bytes:
    out = orjson.dumps(doc)
    if len(out) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"encoded message is {len(out)} bytes, over {MAX_PAYLOAD_BYTES}")
    return out


def _check_count(items: list[dict[str, Any]], key: str) -> None:
    if not items:
        raise ValueError(f"a batch needs at least one item in '{key}'")
    if len(items) > MAX_ITEMS:
        raise ValueError(f"{len(items)} items in '{key}', over the {MAX_ITEMS} limit")


def encode_telemetry(gw: str, seq: int, sent: int, readings: Iterable[Reading]) -> bytes:
    items = [{"dev": r.dev, "kind": r.kind, "ts": r.ts, "m": r.metrics} for r in readings]
    _check_count(items, "readings")
    return _dump({"v": CONTRACT_VERSION, "gw": gw, "seq": seq, "sent": sent, "readings": items})


def encode_events(gw: str, seq: int, sent: int, events: Iterable[Event]) -> bytes:
    items = [
        {"dev": e.dev, "kind": e.kind, "ts": e.ts, "type": e.type, "data": e.data} for e in events
    ]
    _check_count(items, "events")
    return _dump({"v": CONTRACT_VERSION, "gw": gw, "seq": seq, "sent": sent, "events": items})


def encode_status(
    gw: str,
    state: str,
    ts: int,
    fw: str | None = None,
    buffered: int | None = None,
    **extra: Any,
) -> bytes:
    if "v" in extra:
        raise ValueError("'v' is set by the encoder")
    doc: dict[str, Any] = {"v": CONTRACT_VERSION, "gw": gw, "state": state, "ts": ts}
    if fw is not None:
        doc["fw"] = fw
    if buffered is not None:
        doc["buffered"] = buffered
    doc.update(extra)
    return _dump(doc)


def encode_command(cmd: Command) -> bytes:
    clash = sorted(_COMMAND_KEYS & cmd.params.keys())
    if clash:
        raise ValueError(f"command params clash with envelope keys: {', '.join(clash)}")
    doc: dict[str, Any] = {
        "v": CONTRACT_VERSION,
        "id": cmd.id,
        "ts": cmd.ts,
        "dev": cmd.dev,
        "action": cmd.action,
    }
    doc.update(cmd.params)
    return _dump(doc)


def encode_command_ack(ack: CommandAck) -> bytes:
    doc: dict[str, Any] = {"v": CONTRACT_VERSION, "id": ack.id, "ok": ack.ok, "ts": ack.ts}
    if ack.error is not None:
        doc["error"] = ack.error
    return _dump(doc)
