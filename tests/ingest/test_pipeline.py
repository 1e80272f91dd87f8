"""The pure core of ingest: one message judged, with no broker and no database."""

from __future__ import annotations

import orjson

from ingest.pipeline import judge
from protocol.catalog import default_catalog

CAT = default_catalog()
NOW = 1_764_316_800_000


class Registry:
    def __init__(self, gateways: set[tuple[str, str]]) -> None:
        self.gateways = gateways

    def has_estate(self, estate: str) -> bool:
        return any(e == estate for e, _ in self.gateways)

    def has_gateway(self, estate: str, gw: str) -> bool:
        return (estate, gw) in self.gateways


REG = Registry({("e1", "gw-01")})


def batch(readings: list[object], gw: str = "gw-01", seq: int = 5) -> bytes:
    return orjson.dumps({"v": 1, "gw": gw, "seq": seq, "sent": NOW, "readings": readings})


def test_valid_readings_flow_on_as_one_batch_and_bad_ones_are_dead_lettered() -> None:
    payload = batch(
        [
            {"dev": "h-1", "kind": "fire_hydrant", "ts": NOW, "m": {"pressure_mpa": 0.3}},
            {"dev": "h-2", "kind": "fire_hydrant", "ts": NOW, "m": {"pressure_mpa": 50}},
            {"dev": "h-3", "kind": "fire_hydrant", "ts": NOW, "m": {"pressure_mpa": 0.2}},
        ]
    )
    d = judge("estates/e1/gw/gw-01/telemetry", payload, NOW, REG, CAT)
    assert d.estate == "e1" and d.gateway == "gw-01" and d.seq == 5
    assert d.batch is not None
    assert [r.dev for r in d.batch.readings] == ["h-1", "h-3"]
    assert len(d.dead_letters) == 1
    letter = d.dead_letters[0]
    assert (letter.reason, letter.item_index, letter.estate) == ("out_of_range", 1, "e1")
    assert orjson.loads(letter.payload)["dev"] == "h-2"


def test_unregistered_estate_and_gateway() -> None:
    p = batch([{"dev": "h-1", "kind": "fire_hydrant", "ts": NOW, "m": {"pressure_mpa": 0.3}}])
    d = judge("estates/zz/gw/gw-01/telemetry", p, NOW, REG, CAT)
    assert d.batch is None and d.dead_letters[0].reason == "unknown_estate"
    d = judge("estates/e1/gw/gw-09/telemetry", batch([], gw="gw-09"), NOW, REG, CAT)
    assert d.batch is None and d.dead_letters[0].reason == "unknown_gateway"
    assert d.dead_letters[0].payload == batch([], gw="gw-09")


def test_bad_topic_and_whole_message_rejects_keep_the_payload() -> None:
    d = judge("something/else", b"x", NOW, REG, CAT)
    assert d.dead_letters[0].reason == "bad_topic" and d.dead_letters[0].payload == b"x"
    d = judge("estates/e1/gw/gw-01/telemetry", b"{oops", NOW, REG, CAT)
    assert d.dead_letters[0].reason == "invalid_json" and d.dead_letters[0].payload == b"{oops"
    assert d.dead_letters[0].item_index is None


def test_events_and_status() -> None:
    ev = orjson.dumps(
        {
            "v": 1,
            "gw": "gw-01",
            "seq": 9,
            "sent": NOW,
            "events": [
                {
                    "dev": "lift-1",
                    "kind": "elevator",
                    "ts": NOW,
                    "type": "elevator.trapped",
                    "data": {"floor": 7},
                }
            ],
        }
    )
    d = judge("estates/e1/gw/gw-01/events", ev, NOW, REG, CAT)
    assert d.batch is not None and d.batch.events[0].type == "elevator.trapped"
    assert d.dead_letters == []
    st = orjson.dumps({"v": 1, "gw": "gw-01", "state": "offline", "ts": NOW})
    d = judge("estates/e1/gw/gw-01/status", st, NOW, REG, CAT)
    assert d.status is not None and d.status.state == "offline"


def test_an_event_too_deep_to_encode_again_keeps_the_message_as_its_body() -> None:
    """orjson encodes at most 254 levels: an item nested deeper than that is dead-lettered
    with the message's own bytes, not a repr (which recursed past Python's limit)."""
    deep = b'{"a":' * 999 + b"{}" + b"}" * 999
    event = {"dev": "lift-1", "kind": "elevator", "ts": 1000, "type": "elevator.trapped"}
    doc = {"v": 1, "gw": "gw-01", "seq": 3, "sent": 1000, "events": [dict(event, data="D")]}
    payload = orjson.dumps(doc).replace(b'"D"', deep)
    d = judge("estates/e1/gw/gw-01/events", payload, 2000, REG, CAT)
    assert [(x.reason, x.item_index) for x in d.dead_letters] == [("bad_item", 0)]
    assert d.dead_letters[0].payload == payload
    assert d.batch is not None and not d.batch.events
