"""CONTRACT.md "Bounds": every integer, nesting depth and short text a gateway sends is bounded
in the decoder, so no store can overflow on it (issue 12: a `seq` of 2^63 overflowed SQLite's
INTEGER, 2^64 passed msgspec, event data nested 300 deep broke orjson at commit time)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from protocol.catalog import (
    BUNDLED_CATALOG,
    MAX_SAFE_INT,
    CatalogError,
    default_catalog,
    load_catalog,
)
from protocol.messages import (
    MAX_DATA_BYTES,
    MAX_DATA_DEPTH,
    MessageRejected,
    Reason,
    _decode_whole,
    decode_events,
    decode_status,
    decode_telemetry,
)

CAT = default_catalog()
NOW = 1764316800123
TS = 1764316800000
GW = "gw-01"
HYDRANT = {"dev": "h-1", "kind": "fire_hydrant", "ts": TS, "m": {"pressure_mpa": 0.3}}


def tel(**envelope: Any) -> bytes:
    doc: dict[str, Any] = {"v": 1, "gw": GW, "seq": 7, "sent": NOW, "readings": [HYDRANT]}
    doc.update(envelope)
    return orjson.dumps(doc)


def nested(depth: int) -> bytes:
    """JSON of an object nested ``depth`` deep (the outermost counts 1), written by hand:
    orjson itself refuses to encode more than 254 levels."""
    return b'{"a":' * (depth - 1) + b'{"leaf":1}' + b"}" * (depth - 1)


def evt(data: Any, **envelope: Any) -> bytes:
    """An event batch whose first event carries ``data`` (JSON bytes or a value)."""
    raw = data if isinstance(data, bytes) else orjson.dumps(data)
    event = {"dev": "lift-1", "kind": "elevator", "ts": TS, "type": "elevator.trapped"}
    doc: dict[str, Any] = {"v": 1, "gw": GW, "seq": 8, "sent": NOW}
    doc.update(envelope)
    doc["events"] = [dict(event, data="DATA"), dict(event, data={"floor": 3})]
    return orjson.dumps(doc).replace(b'"DATA"', raw, 1)


@pytest.mark.parametrize("seq", [0, -1, MAX_SAFE_INT + 1, 2**63 - 1, 2**63, 2**64, 2**64 + 1])
def test_seq_outside_one_to_2_53_is_rejected_by_both_paths(seq: int) -> None:
    # orjson refuses integers beyond 64 bits itself (invalid JSON): write them by hand
    payload = tel(seq=0).replace(b'"seq":0', b'"seq":%d' % seq)
    assert _decode_whole(payload, GW, NOW, CAT) is None  # msgspec declines, not passes it
    with pytest.raises(MessageRejected) as exc:
        decode_telemetry(payload, GW, NOW, CAT)
    assert exc.value.reason in (Reason.BAD_ENVELOPE, Reason.INVALID_JSON)
    if seq <= 2**64 - 1:
        assert exc.value.reason is Reason.BAD_ENVELOPE and "'seq'" in exc.value.detail


@pytest.mark.parametrize("seq", [1, MAX_SAFE_INT])
def test_seq_bounds_are_inclusive(seq: int) -> None:
    payload = tel(seq=seq)
    fast = _decode_whole(payload, GW, NOW, CAT)
    assert fast is not None and fast.seq == seq
    assert decode_telemetry(payload, GW, NOW, CAT).seq == seq


@pytest.mark.parametrize("sent", [-1, MAX_SAFE_INT + 1, 2**63])
def test_sent_outside_bounds_rejected(sent: int) -> None:
    with pytest.raises(MessageRejected, match="'sent'"):
        decode_telemetry(tel(sent=sent), GW, NOW, CAT)


def test_reading_ts_beyond_2_53_is_a_bad_item() -> None:
    readings = [dict(HYDRANT, ts=2**63), HYDRANT]
    batch = decode_telemetry(tel(readings=readings), GW, 2**62, CAT)
    assert [r.index for r in batch.rejects] == [0]
    assert batch.rejects[0].reason is Reason.BAD_ITEM
    assert len(batch.readings) == 1


@pytest.mark.parametrize("key", ["buffered", "buffered_readings", "dropped"])
@pytest.mark.parametrize("count", [-1, MAX_SAFE_INT + 1, 2**63, 2**64 - 1, 1.5, True, "3"])
def test_status_counts_bounded(key: str, count: Any) -> None:
    doc = {"v": 1, "gw": GW, "state": "online", "ts": TS, key: count}
    with pytest.raises(MessageRejected) as exc:
        decode_status(orjson.dumps(doc), GW, NOW)
    assert exc.value.reason is Reason.BAD_ENVELOPE and key in exc.value.detail


def test_status_counts_at_the_bound_accepted() -> None:
    doc = {"v": 1, "gw": GW, "state": "online", "ts": TS, "buffered": MAX_SAFE_INT}
    doc |= {"buffered_readings": 0, "dropped": MAX_SAFE_INT}
    st = decode_status(orjson.dumps(doc), GW, NOW)
    assert st.buffered == MAX_SAFE_INT and st.extra["dropped"] == MAX_SAFE_INT


@pytest.mark.parametrize("fw", ["1.0\n", "1.0\x00", "\x1b[31m", "a\x85"])
def test_status_fw_without_control_characters(fw: str) -> None:
    doc = {"v": 1, "gw": GW, "state": "online", "ts": TS, "fw": fw}
    with pytest.raises(MessageRejected, match="control"):
        decode_status(orjson.dumps(doc), GW, NOW)


def test_event_data_at_the_depth_limit_accepted() -> None:
    batch = decode_events(evt(nested(MAX_DATA_DEPTH)), GW, NOW, CAT)
    assert not batch.rejects and len(batch.events) == 2
    orjson.dumps(batch.events[0].data)  # a store can encode it again


@pytest.mark.parametrize("depth", [MAX_DATA_DEPTH + 1, 300, 1000])
def test_event_data_too_deep_rejects_that_event_alone(depth: int) -> None:
    batch = decode_events(evt(nested(depth)), GW, NOW, CAT)
    assert [(r.index, r.reason) for r in batch.rejects] == [(0, Reason.BAD_ITEM)]
    assert f"over {MAX_DATA_DEPTH}" in batch.rejects[0].detail
    assert [e.data for e in batch.events] == [{"floor": 3}]


def test_event_data_arrays_count_as_nesting() -> None:
    data: Any = [1]
    for _ in range(MAX_DATA_DEPTH):
        data = [data]
    batch = decode_events(evt({"x": data}), GW, NOW, CAT)
    assert [r.index for r in batch.rejects] == [0]


def test_event_data_over_64_kib_rejected_alone() -> None:
    batch = decode_events(evt({"blob": "x" * MAX_DATA_BYTES}), GW, NOW, CAT)
    assert [(r.index, r.reason) for r in batch.rejects] == [(0, Reason.TOO_LARGE)]
    assert len(batch.events) == 1


def test_event_seq_bounded() -> None:
    with pytest.raises(MessageRejected, match="'seq'"):
        decode_events(evt({}, seq=2**63), GW, NOW, CAT)


def test_catalog_integer_metric_bounds_within_2_53(tmp_path: Any) -> None:
    text = BUNDLED_CATALOG.read_text(encoding="utf-8")
    # the elevator's floor is an integer metric: widen its max beyond 2^53 - 1
    old = 'floor = { type = "integer", min = -10, max = 200,'
    assert old in text
    broken = text.replace(old, old.replace("200", str(2**60)))
    path = tmp_path / "catalog.toml"
    path.write_text(broken, encoding="utf-8")
    with pytest.raises(CatalogError, match="2\\^53"):
        load_catalog(path)


def test_a_value_nested_too_deep_to_show_is_still_explained() -> None:
    """orjson parses 1,024 levels, repr() stops near 1,000: a detail must not raise."""
    deep = b"[" * 1000 + b"]" * 1000
    reading = b'{"dev":"d","kind":"fire_hydrant","ts":1,"m":{"pressure_mpa":' + deep + b"}}"
    payload = b'{"v":1,"gw":"gw-01","seq":1,"sent":1,"readings":[' + reading + b"]}"
    batch = decode_telemetry(payload, GW, NOW, CAT)
    assert batch.rejects[0].reason is Reason.BAD_VALUE_TYPE
    assert "expected a number" in batch.rejects[0].detail
    status = b'{"v":1,"gw":"gw-01","state":"online","ts":1,"fw":' + deep + b"}"
    with pytest.raises(MessageRejected, match="nested too deep to show"):
        decode_status(status, GW, NOW)
    envelope = b'{"v":1,"gw":"gw-01","seq":' + deep + b',"sent":1,"readings":[]}'
    with pytest.raises(MessageRejected, match="nested too deep to show"):
        decode_telemetry(envelope, GW, NOW, CAT)
