"""The on-disk store-and-forward buffer, without a broker."""

from __future__ import annotations

from pathlib import Path

from gateway.buffer import EVENTS, TELEMETRY, ForwardBuffer
from protocol.catalog import default_catalog
from protocol.messages import Event, Reading, decode_events, decode_telemetry

CAT = default_catalog()
T0 = 1_768_428_000_000
LATER = 2 * 10**13  # a "now" long after any row was written: every batch is past its linger


def readings(n: int, start: int = 0) -> list[Reading]:
    return [
        Reading(
            f"b1-hydrant-{(start + i) % 7}",
            "fire_hydrant",
            T0 + (start + i) * 1000,
            {"pressure_mpa": 0.3},
        )
        for i in range(n)
    ]


def trapped(ts: int) -> Event:
    return Event("b1-lift-1", "elevator", ts, "elevator.trapped", {"floor": 3, "people": True})


def drain(buf: ForwardBuffer) -> list[tuple[int, int, bytes]]:
    out = []
    while (msg := buf.next_message(now_ms=LATER)) is not None:
        out.append((msg.seq, msg.channel, msg.payload("gw-01", T0)))
        buf.delivered([msg.seq])
    return out


def telemetry_of(sent: list[tuple[int, int, bytes]]) -> list[Reading]:
    return [
        r
        for _, channel, payload in sent
        if channel == TELEMETRY
        for r in decode_telemetry(payload, "gw-01", T0, CAT).readings
    ]


def test_batches_by_size_then_by_linger_time(tmp_path: Path) -> None:
    buf = ForwardBuffer(tmp_path / "b.db", batch_max_readings=100, batch_linger_ms=1000)
    buf.add_readings(readings(250))
    first = buf.next_message(now_ms=0)  # full batches go at once, whatever the time
    assert first is not None and first.channel == TELEMETRY
    batch = decode_telemetry(first.payload("gw-01", T0), "gw-01", T0, CAT)
    assert (batch.seq, len(batch.readings), batch.rejects) == (1, 100, [])
    buf.delivered([1])
    second = buf.next_message(now_ms=0)
    assert second is not None and second.seq == 2
    buf.delivered([2])
    # The last 50 are not a full batch: they wait for their linger time.
    assert buf.next_message(now_ms=0) is None
    assert buf.stats.readings == 50 and buf.stats.messages == 1
    last = buf.next_message(now_ms=LATER)
    assert last is not None and last.seq == 3


def test_events_go_first_and_every_seq_is_used_once_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    buf = ForwardBuffer(path, batch_max_readings=10)
    buf.add_readings(readings(25))
    first = buf.next_message(now_ms=LATER)
    assert first is not None and first.seq == 1  # sealed, in flight when the process dies
    buf.add_events([trapped(T0)])
    buf.close()  # a kill -9 leaves the same file: every write is committed before returning

    again = ForwardBuffer(path, batch_max_readings=10)
    assert (again.stats.last_seq, again.stats.readings, again.stats.events) == (2, 25, 1)
    sent = drain(again)
    # The event first; the unacknowledged message again under its own seq; then new seqs.
    assert [(s, c) for s, c, _ in sent] == [
        (2, EVENTS),
        (1, TELEMETRY),
        (3, TELEMETRY),
        (4, TELEMETRY),
    ]
    ev = decode_events(sent[0][2], "gw-01", T0, CAT)
    assert ev.events[0].type == "elevator.trapped" and ev.rejects == []
    assert telemetry_of(sent) == readings(25)
    again.add_readings(readings(1))
    assert drain(again)[0][0] == 5
    assert again.stats.messages == 0 and again.stats.bytes == 0


def test_full_buffer_drops_oldest_telemetry_keeps_events_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    limits = {"max_bytes": 64 * 1024, "batch_max_readings": 50, "batch_max_bytes": 16 * 1024}
    buf = ForwardBuffer(path, **limits)  # type: ignore[arg-type]
    buf.add_events([trapped(T0)])
    for k in range(40):  # 2,000 readings of ~90 bytes: far more than 64 KiB
        buf.add_readings(readings(50, start=k * 50))
    st = buf.stats
    assert st.bytes <= 64 * 1024
    assert st.events == 1
    assert st.dropped_readings == 2000 - st.readings > 0
    buf.close()
    again = ForwardBuffer(path, **limits)  # type: ignore[arg-type]
    assert again.stats.dropped_readings == st.dropped_readings  # persisted for the status
    sent = drain(again)
    assert sent[0][1] == EVENTS
    kept = telemetry_of(sent)
    assert len(kept) == st.readings
    assert kept == readings(2000)[-len(kept) :]  # the newest survive, in order
    assert [s for s, _, _ in sent] == list(range(1, len(sent) + 1))  # drops leave no seq gap
