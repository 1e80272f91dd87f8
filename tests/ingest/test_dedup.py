"""Exactly once in the store: a (gateway, seq) is stored once, across restarts of the writer."""

from __future__ import annotations

from pathlib import Path

from ingest.telemetry import EstateBatch, TelemetryReader, TelemetryWriter
from protocol.messages import Reading


def batch(seq: int, ts: int, gw: str = "gw-01") -> EstateBatch:
    return EstateBatch(
        "e1",
        gw,
        seq=seq,
        readings=[
            Reading("h-1", "fire_hydrant", ts, {"pressure_mpa": 0.3}),
            Reading("h-2", "fire_hydrant", ts, {"pressure_mpa": 0.4}),
        ],
    )


def test_redelivered_messages_are_stored_once_even_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    w = TelemetryWriter(path)
    res = w.write([batch(1, 1000), batch(2, 2000), batch(2, 2000)])  # QoS 1 redelivery
    assert res.duplicates == {2} and res.readings == 4
    w.close()
    w = TelemetryWriter(path)  # the service restarted; the broker delivers 2 and 3 again
    res = w.write([batch(2, 2000), batch(3, 3000)])
    assert res.duplicates == {0} and res.readings == 2
    assert TelemetryReader(path).count_readings() == 6
    assert TelemetryReader(path).gateway_health("e1")["gw-01"] == {
        "max_seq": 3,
        "lost_messages": 0,
        "duplicates": 2,
    }


def test_gaps_are_lost_until_replayed_and_survive_restart(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    w = TelemetryWriter(path)
    w.write([batch(1, 1000), batch(4, 4000)])
    assert TelemetryReader(path).gateway_health("e1")["gw-01"]["lost_messages"] == 2
    w.close()
    w = TelemetryWriter(path)
    res = w.write([batch(3, 3000)])  # store-and-forward replays one of them
    assert res.duplicates == set()
    assert TelemetryReader(path).gateway_health("e1")["gw-01"]["lost_messages"] == 1
    # seq 1 again is a duplicate found in the store, not a gap
    assert w.write([batch(1, 1000)]).duplicates == {0}


def test_gateways_have_their_own_sequences(tmp_path: Path) -> None:
    w = TelemetryWriter(tmp_path / "t.db")
    res = w.write([batch(1, 1000, "gw-01"), batch(1, 1000, "gw-02")])
    assert res.duplicates == set()


def test_messages_without_seq_are_never_deduplicated(tmp_path: Path) -> None:
    w = TelemetryWriter(tmp_path / "t.db")
    b = EstateBatch("e1", "gw", readings=[Reading("h-1", "fire_hydrant", 1, {"pressure_mpa": 1})])
    assert w.write([b, b]).duplicates == set()
