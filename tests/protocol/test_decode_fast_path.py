"""The fast telemetry path (msgspec, whole valid messages) against the reference loop that
checks each reading on its own: over random messages built from the catalog, valid and
broken in every way the contract names, the fast path either declines (None) or returns
exactly what the loop returns, and it takes every message the loop would take whole."""

from __future__ import annotations

import math
import os
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.catalog import Metric, ValueType, default_catalog
from protocol.messages import (
    MAX_FUTURE_MS,
    MessageRejected,
    TelemetryBatch,
    _decode_each,
    _decode_whole,
    decode_telemetry,
)

CAT = default_catalog()
NOW = 1764316800123
GW = "gw-01"
KINDS = sorted(k for k, kind in CAT.kinds.items() if kind.metrics)


def _valid_value(m: Metric) -> st.SearchStrategy[Any]:
    if m.type is ValueType.BOOLEAN:
        return st.booleans()
    if m.type is ValueType.ENUM:
        return st.sampled_from(m.values)
    lo = -1e9 if m.min is None else m.min
    hi = 1e9 if m.max is None else m.max
    if m.type is ValueType.INTEGER:
        return st.integers(math.ceil(lo), math.floor(hi))
    return st.one_of(
        st.floats(lo, hi, allow_nan=False),
        st.integers(math.ceil(lo), math.floor(hi)),
        st.sampled_from([lo, hi]),  # bounds are inclusive
    )


# Ways to spoil a reading: each is one problem the reference loop names.
_BAD_VALUES = st.sampled_from(
    [None, "x" * 70, "nope", True, 1e12, -1e12, 7.5, [], {}, 2**64 - 1, -(2**63), 3.0]
)


@st.composite
def reading(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(KINDS))
    metrics = CAT.kinds[kind].metrics
    names = draw(st.lists(st.sampled_from(sorted(metrics)), min_size=1, unique=True))
    m = {n: draw(_valid_value(metrics[n])) for n in names}
    r: dict[str, Any] = {
        "dev": draw(st.sampled_from(["b1-smoke-01", "lift.2:a", "x", "ebc_b1-s12"])),
        "kind": kind,
        "ts": draw(st.integers(0, NOW + MAX_FUTURE_MS)),
        "m": m,
    }
    spoil = draw(st.integers(0, 14))  # mostly left valid
    if spoil == 1:
        r["m"][draw(st.sampled_from(names))] = draw(_BAD_VALUES)
    elif spoil == 2:
        r["m"]["no_such_metric"] = 1
    elif spoil == 3:
        r["kind"] = draw(st.sampled_from(["no.such", 5, None]))
    elif spoil == 4:
        r["dev"] = draw(st.sampled_from(["", "-lead", "a" * 65, "sp ace", "nl\n", 7]))
    elif spoil == 5:
        r["ts"] = draw(
            st.sampled_from([-1, NOW + MAX_FUTURE_MS + 1, 1.5, "0", True, 2**53, 2**64 - 1])
        )
    elif spoil == 6:
        r["m"] = draw(st.sampled_from([{}, [], None, "m"]))
    elif spoil == 7:
        del r[draw(st.sampled_from(["dev", "kind", "ts", "m"]))]
    elif spoil == 8:
        r["extra"] = {"ignored": True}  # unknown item fields are fine
    return r


@st.composite
def message(draw: st.DrawFn) -> bytes:
    doc: dict[str, Any] = {
        "v": 1,
        "gw": GW,
        "seq": draw(st.integers(1, 2**40)),
        "sent": NOW,
        "readings": draw(st.lists(reading(), min_size=1, max_size=6)),
    }
    spoil = draw(st.integers(0, 12))
    if spoil == 1:
        doc["v"] = draw(st.sampled_from([2, 1.0, True, "1", None]))
    elif spoil == 2:
        doc["gw"] = draw(st.sampled_from(["gw-02", 1, None]))
    elif spoil == 3:
        doc[draw(st.sampled_from(["seq", "sent"]))] = draw(st.sampled_from([-1, 1.5, "1"]))
    elif spoil == 6:  # CONTRACT.md "Bounds": seq 1..2^53-1, sent 0..2^53-1
        doc[draw(st.sampled_from(["seq", "sent"]))] = draw(
            st.sampled_from([0, 2**53 - 1, 2**53, 2**63 - 1, 2**63, 2**64 - 1])
        )
    elif spoil == 4:
        doc["readings"] = draw(st.sampled_from([[], {}, None, [1, "x"]]))
    elif spoil == 5:
        doc["later"] = [1, 2]  # unknown top-level fields are fine
    return orjson.dumps(doc)


def _reference(payload: bytes) -> TelemetryBatch | MessageRejected:
    try:
        return _decode_each(payload, GW, NOW, CAT)
    except MessageRejected as exc:
        return exc


def _same(a: TelemetryBatch, b: TelemetryBatch) -> bool:
    # orjson keeps int and float apart, so 3 and 3.0 do not pass as equal here
    return (a.gw, a.seq, a.sent, a.rejects) == (b.gw, b.seq, b.sent, b.rejects) and (
        orjson.dumps([(r.dev, r.kind, r.ts, r.metrics) for r in a.readings])
        == orjson.dumps([(r.dev, r.kind, r.ts, r.metrics) for r in b.readings])
    )


# derandomized: the same examples every run, so CI is repeatable. 750 reach every way of
# spoiling a message and a reading dozens of times; EW_FAST_PATH_EXAMPLES=3000 (the former
# depth, about 4 times as long) for a deeper run.
@settings(
    max_examples=int(os.environ.get("EW_FAST_PATH_EXAMPLES", "750")),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(message())
def test_the_fast_path_returns_what_the_reference_returns_or_declines(payload: bytes) -> None:
    ref = _reference(payload)
    fast = _decode_whole(payload, GW, NOW, CAT)
    if fast is not None:
        assert isinstance(ref, TelemetryBatch) and not ref.rejects
        assert _same(fast, ref)
    whole = isinstance(ref, TelemetryBatch) and not ref.rejects
    needs_loop = whole and any(
        # integral floats of integer metrics are normalised by the loop alone (the payload as
        # sent: the loop's readings hold the normalised ints)
        type(v) is float and CAT.kinds[r["kind"]].metrics[k].type is ValueType.INTEGER
        for r in orjson.loads(payload)["readings"]
        for k, v in r["m"].items()
    )
    if whole and not needs_loop:
        assert fast is not None, "a message the loop takes whole went the slow way"
    # and the public entry point gives the reference's answer either way
    if isinstance(ref, MessageRejected):
        with pytest.raises(MessageRejected) as info:
            decode_telemetry(payload, GW, NOW, CAT)
        assert (info.value.reason, info.value.detail) == (ref.reason, ref.detail)
    else:
        assert _same(decode_telemetry(payload, GW, NOW, CAT), ref)


def test_duplicate_keys_read_alike_or_go_the_slow_way() -> None:
    # msgspec and orjson might keep different copies of a repeated key: the fast path checks
    # that both read the same kind, and the loop decides otherwise
    payload = (
        b'{"v":1,"gw":"gw-01","seq":1,"sent":1,"readings":[{"dev":"d1","kind":"fire_hydrant",'
        b'"kind":"elevator","ts":1,"m":{"pressure_mpa":0.3}}]}'
    )
    fast = _decode_whole(payload, GW, NOW, CAT)
    ref = _reference(payload)
    assert fast is None or (isinstance(ref, TelemetryBatch) and _same(fast, ref))


def test_a_device_id_with_a_trailing_newline_is_not_taken_whole() -> None:
    doc = {
        "v": 1,
        "gw": GW,
        "seq": 1,
        "sent": NOW,
        "readings": [
            {"dev": "b3-hydrant-07\n", "kind": "fire_hydrant", "ts": 1, "m": {"pressure_mpa": 0.3}}
        ],
    }
    payload = orjson.dumps(doc)
    assert _decode_whole(payload, GW, NOW, CAT) is None
    assert decode_telemetry(payload, GW, NOW, CAT).rejects[0].reason.value == "bad_item"
