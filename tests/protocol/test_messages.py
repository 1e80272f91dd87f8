from typing import Any

import orjson
import pytest

from protocol.catalog import default_catalog
from protocol.messages import (
    CONTRACT_VERSION,
    MAX_FUTURE_MS,
    MAX_ITEMS,
    MAX_PAYLOAD_BYTES,
    MAX_TEXT_LEN,
    Command,
    CommandAck,
    Event,
    MessageRejected,
    Reading,
    Reason,
    Reject,
    Status,
    decode_command,
    decode_command_ack,
    decode_events,
    decode_status,
    decode_telemetry,
    encode_command,
    encode_command_ack,
    encode_events,
    encode_status,
    encode_telemetry,
    is_valid_dev,
)

CAT = default_catalog()
NOW = 1764316800123
TS = 1764316800000
GW = "gw-01"


def hydrant(pressure: Any = 0.31, dev: str = "b3-hydrant-07", ts: int = TS) -> dict[str, Any]:
    return {"dev": dev, "kind": "fire_hydrant", "ts": ts, "m": {"pressure_mpa": pressure}}


def lift(**metrics: Any) -> dict[str, Any]:
    m = {"floor": 7, "direction": "up", "door": "closed", "running": True, "people": False}
    m.update(metrics)
    return {"dev": "lift-b2-1", "kind": "elevator", "ts": TS, "m": m}


def charger(**metrics: Any) -> dict[str, Any]:
    m = {"power_w": 180.5, "current_a": 0.8, "temp_c": 31.0, "state": "charging"}
    m.update(metrics)
    return {"dev": "ebc-b1-s12", "kind": "ebike_charger", "ts": TS, "m": m}


def tel_doc(readings: list[Any], /, **envelope: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"v": 1, "gw": GW, "seq": 18211, "sent": NOW, "readings": readings}
    doc.update(envelope)
    return doc


def tel(readings: list[Any], /, **envelope: Any) -> bytes:
    return orjson.dumps(tel_doc(readings, **envelope))


def evt(events: list[Any], /, **envelope: Any) -> bytes:
    doc: dict[str, Any] = {"v": 1, "gw": GW, "seq": 18212, "sent": NOW, "events": events}
    doc.update(envelope)
    return orjson.dumps(doc)


def trapped(**fields: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "dev": "lift-b2-1",
        "kind": "elevator",
        "ts": TS,
        "type": "elevator.trapped",
        "data": {"floor": 7, "people": True},
    }
    e.update(fields)
    return e


def decode_one(reading: Any) -> Reject:
    """Decode a batch of one bad reading and return its only reject."""
    batch = decode_telemetry(tel([reading]), GW, NOW, CAT)
    assert batch.readings == []
    assert len(batch.rejects) == 1
    reject = batch.rejects[0]
    assert reject.index == 0
    assert reject.item == reading
    return reject


def decode_one_event(event: Any) -> Reject:
    batch = decode_events(evt([event]), GW, NOW, CAT)
    assert batch.events == []
    assert len(batch.rejects) == 1
    assert batch.rejects[0].index == 0
    assert batch.rejects[0].item == event
    return batch.rejects[0]


def assert_bad_item(reject: Reject, what: str, where: str) -> None:
    assert reject.reason is Reason.BAD_ITEM
    assert what in reject.detail
    assert reject.detail.startswith(where)


def rejected(call: Any, *args: Any) -> MessageRejected:
    with pytest.raises(MessageRejected) as info:
        call(*args)
    return info.value


# ---------------------------------------------------------------------------------------------
# Constants and the reason codes
# ---------------------------------------------------------------------------------------------


def test_constants() -> None:
    assert MAX_PAYLOAD_BYTES == 1_048_576
    assert MAX_ITEMS == 5000
    assert MAX_FUTURE_MS == 86_400_000
    assert MAX_TEXT_LEN == 64
    assert CONTRACT_VERSION == 1


def test_reason_codes_are_stable() -> None:
    assert {r.name: r.value for r in Reason} == {
        "TOO_LARGE": "too_large",
        "INVALID_JSON": "invalid_json",
        "NOT_AN_OBJECT": "not_an_object",
        "UNKNOWN_VERSION": "unknown_version",
        "GW_MISMATCH": "gw_mismatch",
        "BAD_ENVELOPE": "bad_envelope",
        "BAD_ITEM": "bad_item",
        "UNKNOWN_KIND": "unknown_kind",
        "UNKNOWN_METRIC": "unknown_metric",
        "UNKNOWN_EVENT_TYPE": "unknown_event_type",
        "BAD_VALUE_TYPE": "bad_value_type",
        "OUT_OF_RANGE": "out_of_range",
        "FUTURE_TIMESTAMP": "future_timestamp",
        "BAD_TOPIC": "bad_topic",
        "UNKNOWN_ESTATE": "unknown_estate",
        "UNKNOWN_GATEWAY": "unknown_gateway",
    }


def test_message_rejected() -> None:
    exc = MessageRejected(Reason.GW_MISMATCH, "gw differs")
    assert isinstance(exc, Exception)
    assert exc.reason is Reason.GW_MISMATCH
    assert exc.detail == "gw differs"
    assert str(exc) == "gw_mismatch: gw differs"


# ---------------------------------------------------------------------------------------------
# The contract's own examples
# ---------------------------------------------------------------------------------------------

CONTRACT_TELEMETRY = b"""{
  "v": 1,
  "gw": "gw-01",
  "seq": 18211,
  "sent": 1764316800123,
  "readings": [
    {"dev": "b3-hydrant-07", "kind": "fire_hydrant", "ts": 1764316800000,
     "m": {"pressure_mpa": 0.31}},
    {"dev": "ws-01", "kind": "weather_station", "ts": 1764316800000,
     "m": {"wind_speed_ms": 9.1, "wind_gust_ms": 14.6, "temp_c": -21.4, "snow_mm": 0.4,
           "visibility_m": 8000}}
  ]
}"""

CONTRACT_EVENTS = b"""{
  "v": 1, "gw": "gw-01", "seq": 18212, "sent": 1764316801002,
  "events": [
    {"dev": "lift-b2-1", "kind": "elevator", "ts": 1764316800950, "type": "elevator.trapped",
     "data": {"floor": 7, "people": true}},
    {"dev": "fap-1", "kind": "fire_panel", "ts": 1764316800990, "type": "fire.alarm",
     "data": {"zone": "b3-f12", "point": "smoke-1203", "status_word": 2}}
  ]
}"""


def test_contract_telemetry_example() -> None:
    batch = decode_telemetry(CONTRACT_TELEMETRY, "gw-01", NOW, CAT)
    assert (batch.gw, batch.seq, batch.sent) == ("gw-01", 18211, 1764316800123)
    assert batch.rejects == []
    assert batch.readings == [
        Reading("b3-hydrant-07", "fire_hydrant", TS, {"pressure_mpa": 0.31}),
        Reading(
            "ws-01",
            "weather_station",
            TS,
            {
                "wind_speed_ms": 9.1,
                "wind_gust_ms": 14.6,
                "temp_c": -21.4,
                "snow_mm": 0.4,
                "visibility_m": 8000,
            },
        ),
    ]


def test_contract_events_example() -> None:
    batch = decode_events(CONTRACT_EVENTS, "gw-01", NOW, CAT)
    assert (batch.gw, batch.seq, batch.sent) == ("gw-01", 18212, 1764316801002)
    assert batch.rejects == []
    assert batch.events == [
        Event(
            "lift-b2-1", "elevator", 1764316800950, "elevator.trapped", {"floor": 7, "people": True}
        ),
        Event(
            "fap-1",
            "fire_panel",
            1764316800990,
            "fire.alarm",
            {"zone": "b3-f12", "point": "smoke-1203", "status_word": 2},
        ),
    ]


def test_contract_status_example() -> None:
    payload = (
        b'{"v": 1, "gw": "gw-01", "state": "online", "ts": 1764316800000,'
        b' "fw": "1.4.2", "buffered": 0}'
    )
    assert decode_status(payload, "gw-01", NOW) == Status("gw-01", "online", TS, "1.4.2", 0, {})


def test_contract_command_example() -> None:
    payload = (
        b'{"v": 1, "id": "c-7f3a", "ts": 1764316900000, "dev": "ebc-b1-s12",'
        b' "action": "socket.power_off", "reason": "over_temperature"}'
    )
    assert decode_command(payload) == Command(
        "c-7f3a", 1764316900000, "ebc-b1-s12", "socket.power_off", {"reason": "over_temperature"}
    )


def test_contract_ack_examples() -> None:
    ok = decode_command_ack(b'{"v":1,"id":"c-7f3a","ok":true,"ts":1764316900500}')
    assert ok == CommandAck("c-7f3a", True, 1764316900500, None)
    bad = decode_command_ack(b'{"v":1,"id":"c-7f3a","ok":false,"ts":1,"error":"no such socket"}')
    assert bad == CommandAck("c-7f3a", False, 1, "no such socket")


# ---------------------------------------------------------------------------------------------
# Whole-message rejection (CONTRACT.md "What the service does with bad input")
# ---------------------------------------------------------------------------------------------


def test_over_one_mib_rejected() -> None:
    pad = MAX_PAYLOAD_BYTES - len(tel([hydrant()])) + 1
    payload = tel([hydrant()])[:-1] + b" " * pad + b"}"
    assert len(payload) == MAX_PAYLOAD_BYTES + 1
    assert rejected(decode_telemetry, payload, GW, NOW, CAT).reason is Reason.TOO_LARGE


def test_exactly_one_mib_accepted() -> None:
    payload = tel([hydrant()])
    payload = payload[:-1] + b" " * (MAX_PAYLOAD_BYTES - len(payload)) + b"}"
    assert len(payload) == MAX_PAYLOAD_BYTES
    assert len(decode_telemetry(payload, GW, NOW, CAT).readings) == 1


def test_size_is_checked_before_parsing() -> None:
    # Garbage over the limit is TOO_LARGE, not INVALID_JSON: the parser never ran.
    payload = b"\xff" * (MAX_PAYLOAD_BYTES + 1)
    for call, args in [
        (decode_telemetry, (payload, GW, NOW, CAT)),
        (decode_events, (payload, GW, NOW, CAT)),
        (decode_status, (payload, GW, NOW)),
        (decode_command, (payload,)),
        (decode_command_ack, (payload,)),
    ]:
        exc = rejected(call, *args)
        assert exc.reason is Reason.TOO_LARGE
        assert str(MAX_PAYLOAD_BYTES) in exc.detail


@pytest.mark.parametrize(
    "payload", [b"", b"{", b"{'v': 1}", b"\xff\xfe", b'{"v": 1,}', b"NaN", b"[1, 2"]
)
def test_not_json_rejected(payload: bytes) -> None:
    assert rejected(decode_telemetry, payload, GW, NOW, CAT).reason is Reason.INVALID_JSON
    assert rejected(decode_events, payload, GW, NOW, CAT).reason is Reason.INVALID_JSON
    assert rejected(decode_status, payload, GW, NOW).reason is Reason.INVALID_JSON


@pytest.mark.parametrize("payload", [b"[]", b"1", b'"text"', b"null", b"true", b"[{}]"])
def test_not_an_object_rejected(payload: bytes) -> None:
    exc = rejected(decode_telemetry, payload, GW, NOW, CAT)
    assert exc.reason is Reason.NOT_AN_OBJECT


@pytest.mark.parametrize("v", [2, 0, "1", True, 1.0, None, [1]])
def test_unknown_version_rejected(v: Any) -> None:
    exc = rejected(decode_telemetry, tel([hydrant()], v=v), GW, NOW, CAT)
    assert exc.reason is Reason.UNKNOWN_VERSION
    exc = rejected(decode_events, evt([trapped()], v=v), GW, NOW, CAT)
    assert exc.reason is Reason.UNKNOWN_VERSION


def test_missing_version_rejected() -> None:
    doc = tel_doc([hydrant()])
    del doc["v"]
    exc = rejected(decode_telemetry, orjson.dumps(doc), GW, NOW, CAT)
    assert exc.reason is Reason.UNKNOWN_VERSION
    assert "missing" in exc.detail


def test_gw_mismatch_rejected() -> None:
    exc = rejected(decode_telemetry, tel([hydrant()], gw="gw-02"), GW, NOW, CAT)
    assert exc.reason is Reason.GW_MISMATCH
    assert "'gw-02'" in exc.detail and "'gw-01'" in exc.detail
    exc = rejected(decode_events, evt([trapped()], gw="gw-02"), GW, NOW, CAT)
    assert exc.reason is Reason.GW_MISMATCH


@pytest.mark.parametrize(
    "envelope",
    [
        {"gw": 1},
        {"gw": None},
        {"seq": -1},
        {"seq": "1"},
        {"seq": True},
        {"seq": 1.5},
        {"seq": None},
        {"sent": "2025-11-28T00:00:00Z"},
        {"sent": False},
        {"sent": 1.5},
        {"readings": {}},
        {"readings": "x"},
        {"readings": None},
        {"readings": []},
    ],
)
def test_bad_envelope_rejected(envelope: dict[str, Any]) -> None:
    exc = rejected(decode_telemetry, tel([hydrant()], **envelope), GW, NOW, CAT)
    assert exc.reason is Reason.BAD_ENVELOPE
    assert next(iter(envelope)) in exc.detail


@pytest.mark.parametrize("key", ["gw", "seq", "sent", "readings"])
def test_missing_envelope_field_rejected(key: str) -> None:
    doc = tel_doc([hydrant()])
    del doc[key]
    exc = rejected(decode_telemetry, orjson.dumps(doc), GW, NOW, CAT)
    assert exc.reason is Reason.BAD_ENVELOPE
    assert key in exc.detail


def test_events_envelope_needs_events_list() -> None:
    exc = rejected(decode_events, evt([]), GW, NOW, CAT)
    assert exc.reason is Reason.BAD_ENVELOPE
    assert "'events' is empty" in exc.detail
    # a telemetry payload on the events topic has no "events"
    exc = rejected(decode_events, tel([hydrant()]), GW, NOW, CAT)
    assert exc.reason is Reason.BAD_ENVELOPE


def test_item_count_limit() -> None:
    ok = decode_telemetry(tel([hydrant()] * MAX_ITEMS), GW, NOW, CAT)
    assert len(ok.readings) == MAX_ITEMS
    exc = rejected(decode_telemetry, tel([hydrant()] * (MAX_ITEMS + 1)), GW, NOW, CAT)
    assert exc.reason is Reason.BAD_ENVELOPE
    assert "5001" in exc.detail
    exc = rejected(decode_events, evt([trapped()] * (MAX_ITEMS + 1)), GW, NOW, CAT)
    assert exc.reason is Reason.BAD_ENVELOPE


def test_unknown_top_level_fields_are_ignored() -> None:
    # the contract grows by optional fields; v1 decoders must not choke on them
    batch = decode_telemetry(tel([hydrant()], fw="1.5.0", qos_hint=1), GW, NOW, CAT)
    assert len(batch.readings) == 1


# ---------------------------------------------------------------------------------------------
# Per-reading rejection
# ---------------------------------------------------------------------------------------------


def test_unknown_kind() -> None:
    reading = {"dev": "x-1", "kind": "toaster", "ts": TS, "m": {"temp_c": 200}}
    reject = decode_one(reading)
    assert reject.reason is Reason.UNKNOWN_KIND
    assert "'toaster'" in reject.detail


def test_unknown_metric() -> None:
    reading = {"dev": "b3-hydrant-07", "kind": "fire_hydrant", "ts": TS, "m": {"pressure_kpa": 310}}
    reject = decode_one(reading)
    assert reject.reason is Reason.UNKNOWN_METRIC
    assert "'pressure_kpa'" in reject.detail
    assert "pressure_mpa" in reject.detail  # tells what is defined


def test_unknown_metric_beside_valid_one() -> None:
    reject = decode_one(lift(floor=3, load_kg=700))
    assert reject.reason is Reason.UNKNOWN_METRIC
    assert "load_kg" in reject.detail


@pytest.mark.parametrize(
    ("reading", "metric"),
    [
        (hydrant(True), "pressure_mpa"),  # bool is not a number
        (hydrant(False), "pressure_mpa"),
        (hydrant("0.31"), "pressure_mpa"),
        (hydrant(None), "pressure_mpa"),
        (hydrant([0.31]), "pressure_mpa"),
        (hydrant({"value": 0.31}), "pressure_mpa"),
        (lift(floor=2.5), "floor"),  # non-integral float for an integer
        (lift(floor=True), "floor"),
        (lift(floor="7"), "floor"),
        (lift(running=1), "running"),  # 1 is not a boolean
        (lift(running="true"), "running"),
        (lift(direction=1), "direction"),  # enum needs a string
        (lift(direction=None), "direction"),
        (charger(state="x" * (MAX_TEXT_LEN + 1)), "state"),  # over MAX_TEXT_LEN
    ],
)
def test_wrong_value_type(reading: dict[str, Any], metric: str) -> None:
    reject = decode_one(reading)
    assert reject.reason is Reason.BAD_VALUE_TYPE
    assert metric in reject.detail
    assert f"reading 0 (dev '{reading['dev']}')" in reject.detail


def test_out_of_range_detail() -> None:
    reject = decode_one(hydrant(9.5))
    assert reject.reason is Reason.OUT_OF_RANGE
    assert reject.detail == "reading 0 (dev 'b3-hydrant-07'): pressure_mpa=9.5 outside 0..4 MPa"


@pytest.mark.parametrize(
    ("reading", "metric"),
    [
        (hydrant(-0.01), "pressure_mpa"),
        (hydrant(4.0001), "pressure_mpa"),
        (hydrant(1e30), "pressure_mpa"),
        (lift(floor=201), "floor"),
        (lift(floor=-11), "floor"),
        (lift(floor=201.0), "floor"),
        (lift(direction="sideways"), "direction"),  # enum string not in values
        (charger(state="Charging"), "state"),
        (charger(temp_c=-61), "temp_c"),
        ({"dev": "fap-1", "kind": "fire_panel", "ts": TS, "m": {"status_word": 65536}}, "status"),
        (
            {"dev": "ws-01", "kind": "weather_station", "ts": TS, "m": {"wind_gust_ms": 81}},
            "wind_gust_ms",
        ),
        (
            {"dev": "ws-01", "kind": "weather_station", "ts": TS, "m": {"temp_c": 61}},
            "temp_c",
        ),
    ],
)
def test_out_of_range(reading: dict[str, Any], metric: str) -> None:
    reject = decode_one(reading)
    assert reject.reason is Reason.OUT_OF_RANGE
    assert metric in reject.detail


def test_huge_integer_literal_is_out_of_range_not_invalid_json() -> None:
    # orjson turns integers beyond 64 bits into floats; the reading alone is rejected
    payload = tel([hydrant(0.5)]).replace(b"0.5", b"1" + b"0" * 30)
    batch = decode_telemetry(payload, GW, NOW, CAT)
    assert [r.reason for r in batch.rejects] == [Reason.OUT_OF_RANGE]


def test_enum_out_of_range_lists_allowed_values() -> None:
    reject = decode_one(lift(direction="sideways"))
    assert reject.detail == (
        "reading 0 (dev 'lift-b2-1'): direction='sideways' is not one of stopped, up, down"
    )


def test_range_bounds_are_inclusive() -> None:
    readings = [hydrant(0), hydrant(4), hydrant(0.0), lift(floor=-10), lift(floor=200)]
    batch = decode_telemetry(tel(readings), GW, NOW, CAT)
    assert batch.rejects == []
    assert len(batch.readings) == 5


def test_number_metric_accepts_int() -> None:
    batch = decode_telemetry(tel([hydrant(1)]), GW, NOW, CAT)
    assert batch.readings[0].metrics == {"pressure_mpa": 1}


def test_integer_metric_accepts_integral_float_as_int() -> None:
    batch = decode_telemetry(tel([lift(floor=7.0)]), GW, NOW, CAT)
    assert batch.rejects == []
    floor = batch.readings[0].metrics["floor"]
    assert floor == 7
    assert type(floor) is int


def test_all_value_types_accepted() -> None:
    reading = lift(floor=-2, mode="fire", door="opening", speed_ms=1.75, machine_room_temp_c=-41.5)
    batch = decode_telemetry(tel([reading]), GW, NOW, CAT)
    assert batch.rejects == []
    assert batch.readings[0] == Reading("lift-b2-1", "elevator", TS, reading["m"])


def test_future_timestamp() -> None:
    reject = decode_one(hydrant(ts=NOW + MAX_FUTURE_MS + 1))
    assert reject.reason is Reason.FUTURE_TIMESTAMP
    assert "ahead" in reject.detail


def test_timestamp_limits() -> None:
    # exactly one day ahead is allowed; old readings (store-and-forward replays) are fine
    old = NOW - 30 * MAX_FUTURE_MS
    batch = decode_telemetry(tel([hydrant(ts=NOW + MAX_FUTURE_MS), hydrant(ts=old)]), GW, NOW, CAT)
    assert batch.rejects == []
    assert [r.ts for r in batch.readings] == [NOW + MAX_FUTURE_MS, old]


@pytest.mark.parametrize(
    ("reading", "what"),
    [
        ([1, 2], "not an object"),
        ("reading", "not an object"),
        (None, "not an object"),
        ({"kind": "fire_hydrant", "ts": TS, "m": {"pressure_mpa": 0.3}}, "'dev' is missing"),
        ({**hydrant(), "dev": 7}, "'dev' is a integer"),
        ({**hydrant(), "dev": ""}, "not a device id"),
        ({**hydrant(), "dev": "x" * 65}, "not a device id"),
        ({**hydrant(), "dev": "b3 hydrant"}, "not a device id"),
        ({**hydrant(), "dev": "-b3"}, "not a device id"),
        ({**hydrant(), "dev": "b3/h7"}, "not a device id"),
        ({"dev": "d", "ts": TS, "m": {"pressure_mpa": 0.3}}, "'kind' is missing"),
        ({**hydrant(), "kind": ["fire_hydrant"]}, "'kind' is a array"),
        ({"dev": "d", "kind": "fire_hydrant", "m": {"pressure_mpa": 0.3}}, "'ts' is missing"),
        ({**hydrant(), "ts": "1764316800000"}, "'ts'"),
        ({**hydrant(), "ts": True}, "'ts'"),
        ({**hydrant(), "ts": 1764316800000.0}, "'ts'"),
        ({**hydrant(), "ts": -1}, "'ts'"),
        ({"dev": "d", "kind": "fire_hydrant", "ts": TS}, "'m' is missing"),
        ({**hydrant(), "m": [0.3]}, "'m' is a array"),
        ({**hydrant(), "m": {}}, "'m' is empty"),
    ],
)
def test_bad_item(reading: Any, what: str) -> None:
    assert_bad_item(decode_one(reading), what, "reading 0")


def test_dev_ids_accepted() -> None:
    devs = ["b3-hydrant-07", "fap-1", "B3_HYD.07", "plc1:40001", "x" * 64, "0"]
    batch = decode_telemetry(tel([hydrant(dev=d) for d in devs]), GW, NOW, CAT)
    assert batch.rejects == []
    assert [r.dev for r in batch.readings] == devs
    assert is_valid_dev("fap-1")
    assert not is_valid_dev(7)
    assert not is_valid_dev("")


def test_one_bad_metric_rejects_the_whole_reading() -> None:
    reading = {
        "dev": "ws-01",
        "kind": "weather_station",
        "ts": TS,
        "m": {"wind_speed_ms": 9.1, "temp_c": -21.4, "visibility_m": -5},
    }
    reject = decode_one(reading)
    assert reject.reason is Reason.OUT_OF_RANGE
    assert "visibility_m=-5" in reject.detail
    assert reject.item is not None and reject.item["m"]["temp_c"] == -21.4


def test_mixed_batch_keeps_valid_readings_and_indexes() -> None:
    readings: list[Any] = [
        hydrant(0.31, dev="h-0"),  # 0 ok
        hydrant(9.5, dev="h-1"),  # 1 out of range
        "garbage",  # 2 bad item
        lift(floor=3),  # 3 ok
        {"dev": "x", "kind": "toaster", "ts": TS, "m": {"a": 1}},  # 4 unknown kind
        hydrant(0.2, dev="h-5", ts=NOW + 2 * MAX_FUTURE_MS),  # 5 future
        charger(state="boom"),  # 6 enum out of range
        charger(),  # 7 ok
        hydrant(True, dev="h-8"),  # 8 bad value type
        {"dev": "h-9", "kind": "fire_hydrant", "ts": TS, "m": {"pressure": 1}},  # 9 unknown metric
    ]
    batch = decode_telemetry(tel(readings), GW, NOW, CAT)
    assert [(r.dev, r.kind) for r in batch.readings] == [
        ("h-0", "fire_hydrant"),
        ("lift-b2-1", "elevator"),
        ("ebc-b1-s12", "ebike_charger"),
    ]
    assert [(r.index, r.reason) for r in batch.rejects] == [
        (1, Reason.OUT_OF_RANGE),
        (2, Reason.BAD_ITEM),
        (4, Reason.UNKNOWN_KIND),
        (5, Reason.FUTURE_TIMESTAMP),
        (6, Reason.OUT_OF_RANGE),
        (8, Reason.BAD_VALUE_TYPE),
        (9, Reason.UNKNOWN_METRIC),
    ]
    for reject in batch.rejects:
        assert reject.item == readings[reject.index or 0]
        assert reject.detail.startswith(f"reading {reject.index}")
    assert batch.rejects[0].detail.startswith("reading 1 (dev 'h-1'): ")


def test_all_bad_readings_still_return_a_batch() -> None:
    batch = decode_telemetry(tel([hydrant(9.0), hydrant(-1)]), GW, NOW, CAT)
    assert batch.readings == []
    assert [r.index for r in batch.rejects] == [0, 1]
    assert (batch.gw, batch.seq) == (GW, 18211)


def test_unknown_item_fields_are_ignored() -> None:
    reading = {**hydrant(), "q": "good", "unit_hint": "MPa"}
    batch = decode_telemetry(tel([reading]), GW, NOW, CAT)
    assert batch.readings == [Reading("b3-hydrant-07", "fire_hydrant", TS, {"pressure_mpa": 0.31})]


def test_detail_truncates_huge_values() -> None:
    reject = decode_one(hydrant("x" * 10_000))
    assert reject.reason is Reason.BAD_VALUE_TYPE
    assert len(reject.detail) < 200


# ---------------------------------------------------------------------------------------------
# Per-event rejection
# ---------------------------------------------------------------------------------------------


def test_unknown_event_type() -> None:
    reject = decode_one_event(trapped(type="elevator.exploded"))
    assert reject.reason is Reason.UNKNOWN_EVENT_TYPE
    assert "unknown event type 'elevator.exploded'" in reject.detail


def test_event_type_the_kind_may_not_emit() -> None:
    event = {"dev": "fap-1", "kind": "fire_panel", "ts": TS, "type": "elevator.trapped"}
    reject = decode_one_event(event)
    assert reject.reason is Reason.UNKNOWN_EVENT_TYPE
    assert "kind 'fire_panel' may not emit event type 'elevator.trapped'" in reject.detail


def test_cross_family_events_allowed_where_catalog_says() -> None:
    events = [
        trapped(type="ebike.in_elevator", data={"floor": 1}),
        {"dev": "cam-1", "kind": "ebike_camera", "ts": TS, "type": "ebike.corridor_charging"},
        {"dev": "fl-1", "kind": "fire_lane_monitor", "ts": TS, "type": "fire_lane.blocked"},
        {"dev": "gd-1", "kind": "gas_detector", "ts": TS, "type": "gas.leak"},
    ]
    batch = decode_events(evt(events), GW, NOW, CAT)
    assert batch.rejects == []
    assert [e.type for e in batch.events] == [
        "ebike.in_elevator",
        "ebike.corridor_charging",
        "fire_lane.blocked",
        "gas.leak",
    ]


def test_event_data_optional_and_free_form() -> None:
    no_data = {"dev": "lift-b2-1", "kind": "elevator", "ts": TS, "type": "elevator.power_off"}
    null_data = {**no_data, "data": None}
    extra = trapped(data={"floor": 7, "vendor_code": "E31", "nested": {"a": [1, 2]}})
    batch = decode_events(evt([no_data, null_data, extra]), GW, NOW, CAT)
    assert batch.rejects == []
    assert [e.data for e in batch.events] == [
        {},
        {},
        {"floor": 7, "vendor_code": "E31", "nested": {"a": [1, 2]}},
    ]


@pytest.mark.parametrize(
    ("event", "what"),
    [
        ("x", "not an object"),
        (trapped(data=[1]), "'data' is a array"),
        (trapped(data="floor 7"), "'data' is a string"),
        (trapped(type=None), "'type' is a null"),
        ({"dev": "d", "kind": "elevator", "ts": TS}, "'type' is missing"),
        (trapped(dev=""), "not a device id"),
        (trapped(kind=1), "'kind'"),
        (trapped(ts=True), "'ts'"),
    ],
)
def test_bad_event_item(event: Any, what: str) -> None:
    assert_bad_item(decode_one_event(event), what, "event 0")


def test_event_unknown_kind_and_future() -> None:
    assert decode_one_event(trapped(kind="lift")).reason is Reason.UNKNOWN_KIND
    reject = decode_one_event(trapped(ts=NOW + MAX_FUTURE_MS + 1))
    assert reject.reason is Reason.FUTURE_TIMESTAMP


def test_mixed_event_batch() -> None:
    events: list[Any] = [
        trapped(),
        trapped(type="elevator.nope"),
        7,
        {
            "dev": "fap-1",
            "kind": "fire_panel",
            "ts": TS,
            "type": "fire.alarm",
            "data": {"zone": "z"},
        },
    ]
    batch = decode_events(evt(events), GW, NOW, CAT)
    assert [e.type for e in batch.events] == ["elevator.trapped", "fire.alarm"]
    assert [(r.index, r.reason) for r in batch.rejects] == [
        (1, Reason.UNKNOWN_EVENT_TYPE),
        (2, Reason.BAD_ITEM),
    ]
    assert batch.rejects[1].item == 7


# ---------------------------------------------------------------------------------------------
# Status, commands, acks
# ---------------------------------------------------------------------------------------------


def test_status_last_will_and_extra_fields() -> None:
    st = decode_status(b'{"v":1,"gw":"gw-01","state":"offline","ts":1}', GW, NOW)
    assert st == Status(GW, "offline", 1, None, None, {})
    st = decode_status(
        b'{"v":1,"gw":"gw-01","state":"online","ts":1,"uptime_s":30,"ip":"10.0.0.2"}', GW, NOW
    )
    assert st.extra == {"uptime_s": 30, "ip": "10.0.0.2"}


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"v": 2}, Reason.UNKNOWN_VERSION),
        ({"gw": "gw-99"}, Reason.GW_MISMATCH),
        ({"gw": None}, Reason.BAD_ENVELOPE),
        ({"state": "sleeping"}, Reason.BAD_ENVELOPE),
        ({"state": None}, Reason.BAD_ENVELOPE),
        ({"ts": "now"}, Reason.BAD_ENVELOPE),
        ({"ts": NOW + MAX_FUTURE_MS + 1}, Reason.FUTURE_TIMESTAMP),
        ({"fw": 142}, Reason.BAD_ENVELOPE),
        ({"fw": "x" * 65}, Reason.BAD_ENVELOPE),
        ({"buffered": -1}, Reason.BAD_ENVELOPE),
        ({"buffered": True}, Reason.BAD_ENVELOPE),
    ],
)
def test_bad_status(fields: dict[str, Any], reason: Reason) -> None:
    doc = {"v": 1, "gw": GW, "state": "online", "ts": TS, **fields}
    assert rejected(decode_status, orjson.dumps(doc), GW, NOW).reason is reason


@pytest.mark.parametrize(
    "fields",
    [
        {"id": ""},
        {"id": 5},
        {"id": None},
        {"ts": "x"},
        {"dev": "has space"},
        {"dev": None},
        {"action": ""},
        {"action": "x" * 65},
    ],
)
def test_bad_command(fields: dict[str, Any]) -> None:
    doc = {"v": 1, "id": "c-1", "ts": TS, "dev": "ebc-1", "action": "socket.power_off", **fields}
    exc = rejected(decode_command, orjson.dumps(doc))
    assert exc.reason is Reason.BAD_ENVELOPE
    assert next(iter(fields)) in exc.detail


def test_command_version_checked() -> None:
    doc = {"v": 3, "id": "c-1", "ts": TS, "dev": "ebc-1", "action": "socket.power_off"}
    assert rejected(decode_command, orjson.dumps(doc)).reason is Reason.UNKNOWN_VERSION
    assert rejected(decode_command, b"[]").reason is Reason.NOT_AN_OBJECT


@pytest.mark.parametrize(
    "fields", [{"ok": "yes"}, {"ok": 1}, {"ok": None}, {"id": 7}, {"ts": None}, {"error": 500}]
)
def test_bad_command_ack(fields: dict[str, Any]) -> None:
    doc = {"v": 1, "id": "c-1", "ok": False, "ts": TS, **fields}
    exc = rejected(decode_command_ack, orjson.dumps(doc))
    assert exc.reason is Reason.BAD_ENVELOPE
    assert next(iter(fields)) in exc.detail


def test_command_ack_version_checked() -> None:
    exc = rejected(decode_command_ack, b'{"v":"1","id":"c","ok":true,"ts":1}')
    assert exc.reason is Reason.UNKNOWN_VERSION
    assert rejected(decode_command_ack, b"{").reason is Reason.INVALID_JSON


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------


def test_telemetry_round_trip() -> None:
    readings = [
        Reading("b3-hydrant-07", "fire_hydrant", TS, {"pressure_mpa": 0.31}),
        Reading(
            "lift-b2-1", "elevator", TS + 1, {"floor": -2, "mode": "inspection", "people": True}
        ),
        Reading("fap-1", "fire_panel", TS + 2, {"status_word": 0b10}),
    ]
    payload = encode_telemetry(GW, 42, NOW, readings)
    assert orjson.loads(payload)["v"] == 1
    batch = decode_telemetry(payload, GW, NOW, CAT)
    assert (batch.gw, batch.seq, batch.sent) == (GW, 42, NOW)
    assert batch.readings == readings
    assert batch.rejects == []


def test_events_round_trip() -> None:
    events = [
        Event("lift-b2-1", "elevator", TS, "elevator.trapped", {"floor": 7, "people": True}),
        Event("ebc-b1-s12", "ebike_charger", TS, "ebike.over_temperature", {"temp_c": 75.5}),
        Event("fl-1", "fire_lane_monitor", TS, "fire_lane.blocked", {}),
    ]
    payload = encode_events(GW, 43, NOW, (e for e in events))  # any iterable
    batch = decode_events(payload, GW, NOW, CAT)
    assert (batch.gw, batch.seq, batch.sent) == (GW, 43, NOW)
    assert batch.events == events
    assert batch.rejects == []


def test_status_round_trip() -> None:
    payload = encode_status(GW, "online", TS, fw="1.4.2", buffered=3, uptime_s=12)
    assert decode_status(payload, GW, NOW) == Status(GW, "online", TS, "1.4.2", 3, {"uptime_s": 12})
    last_will = encode_status(GW, "offline", TS)
    assert orjson.loads(last_will) == {"v": 1, "gw": GW, "state": "offline", "ts": TS}
    assert decode_status(last_will, GW, NOW) == Status(GW, "offline", TS, None, None, {})


def test_command_round_trip() -> None:
    cmd = Command("c-7f3a", TS, "ebc-b1-s12", "socket.power_off", {"reason": "over_temperature"})
    payload = encode_command(cmd)
    assert orjson.loads(payload) == {
        "v": 1,
        "id": "c-7f3a",
        "ts": TS,
        "dev": "ebc-b1-s12",
        "action": "socket.power_off",
        "reason": "over_temperature",
    }
    assert decode_command(payload) == cmd


def test_command_ack_round_trip() -> None:
    for ack in (CommandAck("c-1", True, TS, None), CommandAck("c-2", False, TS, "socket busy")):
        assert decode_command_ack(encode_command_ack(ack)) == ack
    assert "error" not in orjson.loads(encode_command_ack(CommandAck("c-1", True, TS, None)))


# ---------------------------------------------------------------------------------------------
# Encoder guards
# ---------------------------------------------------------------------------------------------


def test_encoders_refuse_what_decoders_reject() -> None:
    r = Reading("h-1", "fire_hydrant", TS, {"pressure_mpa": 0.3})
    with pytest.raises(ValueError, match="at least one"):
        encode_telemetry(GW, 1, NOW, [])
    with pytest.raises(ValueError, match="5000"):
        encode_telemetry(GW, 1, NOW, [r] * (MAX_ITEMS + 1))
    with pytest.raises(ValueError, match="at least one"):
        encode_events(GW, 1, NOW, [])
    big = Event("d", "elevator", TS, "elevator.trapped", {"blob": "x" * MAX_PAYLOAD_BYTES})
    with pytest.raises(ValueError, match="bytes"):
        encode_events(GW, 1, NOW, [big])


def test_encoders_refuse_envelope_key_clashes() -> None:
    with pytest.raises(ValueError):
        encode_status(GW, "online", TS, v=2)
    with pytest.raises(ValueError, match="dev"):
        encode_command(Command("c-1", TS, "d-1", "socket.power_off", {"dev": "d-2"}))


def test_decoded_dicts_are_used_without_copying(monkeypatch: pytest.MonkeyPatch) -> None:
    # Hot path: Reading.metrics / Event.data / Reject.item are the parsed objects themselves.
    doc = tel_doc([hydrant(), hydrant(9.9)])
    monkeypatch.setattr(orjson, "loads", lambda _payload: doc)
    batch = decode_telemetry(b"{}", GW, NOW, CAT)
    assert batch.readings[0].metrics is doc["readings"][0]["m"]
    assert batch.rejects[0].item is doc["readings"][1]
    event = trapped()
    edoc = {"v": 1, "gw": GW, "seq": 1, "sent": NOW, "events": [event]}
    monkeypatch.setattr(orjson, "loads", lambda _payload: edoc)
    assert decode_events(b"{}", GW, NOW, CAT).events[0].data is event["data"]
