"""The hand-offs between ingest's decoder, writer and listener threads: events first, telemetry
bounded, nothing reordered within a kind, and an event never waits for a telemetry slot."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ingest.consumer import INCIDENT_BATCH_READINGS, INCIDENT_S, Handoff, Ingest, Received
from ingest.decoder import IDLE_BATCH_READINGS
from ingest.state import StateStore
from ingest.telemetry import TelemetryWriter
from protocol.catalog import default_catalog
from protocol.endpoint import MqttEndpoint
from protocol.messages import Event, Reading, encode_events, encode_telemetry


def test_events_overtake_waiting_telemetry_and_each_kind_keeps_its_order() -> None:
    h: Handoff[str] = Handoff(3)
    h.put(Handoff.TELEMETRY, "t1")
    h.put(Handoff.TELEMETRY, "t2")
    h.put(Handoff.EVENTS, "e1")
    h.put(Handoff.END, None)
    h.put(Handoff.EVENTS, "e2")
    h.put(Handoff.TELEMETRY, "t3")
    got = [h.get(timeout=1) for _ in range(6)]
    assert [item for _rank, item in got] == ["e1", "e2", "t1", "t2", "t3", None]
    with pytest.raises(queue.Empty):
        h.get(timeout=0.01)


def test_telemetry_is_bounded_but_events_still_pass() -> None:
    h: Handoff[str] = Handoff(1)
    h.put(Handoff.TELEMETRY, "t1")
    blocked = threading.Event()
    done = threading.Event()

    def second() -> None:
        blocked.set()
        h.put(Handoff.TELEMETRY, "t2")  # waits for the slot t1 holds
        done.set()

    t = threading.Thread(target=second)
    t.start()
    blocked.wait(1)
    assert not done.wait(0.2)  # backpressure: the producer waits
    h.put(Handoff.EVENTS, "e1")  # an event does not wait behind it
    assert h.get(timeout=1) == (Handoff.EVENTS, "e1")
    assert not done.is_set()
    assert h.get(timeout=1) == (Handoff.TELEMETRY, "t1")  # frees the slot
    assert done.wait(1)
    assert h.get(timeout=1) == (Handoff.TELEMETRY, "t2")
    t.join()


def test_telemetry_without_a_slot_gives_up_after_its_timeout() -> None:
    # the decoder then passes waiting events on before it tries again
    h: Handoff[str] = Handoff(1)
    assert h.put(Handoff.TELEMETRY, "t1", timeout=0.05)
    assert not h.put(Handoff.TELEMETRY, "t2", timeout=0.05)  # nothing put
    assert h.put(Handoff.EVENTS, "e1", timeout=0.05)
    assert [h.get(timeout=1)[1] for _ in range(2)] == ["e1", "t1"]
    with pytest.raises(queue.Empty):
        h.get(timeout=0.01)


def test_telemetry_waiting_is_counted_and_a_taker_is_woken() -> None:
    # the recorder starts no telemetry commit the listeners' hand-off has no slot for, and
    # waits for one on the event the hand-off sets when the listeners take a commit
    h: Handoff[str] = Handoff(2)
    h.taker = taken = threading.Event()
    h.put(Handoff.TELEMETRY, "t1")
    h.put(Handoff.EVENTS, "e1")
    h.put(Handoff.TELEMETRY, "t2")
    assert h.telemetry_waiting == 2
    assert h.get(timeout=1) == (Handoff.EVENTS, "e1")
    assert not taken.is_set() and h.telemetry_waiting == 2  # an event frees no slot
    assert h.get(timeout=1) == (Handoff.TELEMETRY, "t1")
    assert taken.is_set() and h.telemetry_waiting == 1


def decoding(tmp_path: Path, estate: str) -> tuple[StateStore, TelemetryWriter, Ingest]:
    """An ingest with no broker (port 1: nothing listens), its decoder driven by hand:
    messages are put on the lanes as the network thread would."""
    state = StateStore.open(f"sqlite:///{tmp_path / 's.db'}")
    state.add_estate(estate, estate)
    state.add_gateway(estate, "gw-01")
    writer = TelemetryWriter(tmp_path / "t.db")
    ingest = Ingest(
        MqttEndpoint("127.0.0.1", 1), state, writer, default_catalog(), linger_s=0.0,
        max_batch_readings=10_000,
    )  # fmt: skip
    return state, writer, ingest


def queue_telemetry(ingest: Ingest, estate: str, seq: int, now: int) -> None:
    """One message of 500 hydrant readings on the telemetry lane."""
    readings = [Reading(f"h-{i}", "fire_hydrant", now, {"pressure_mpa": 0.3}) for i in range(500)]
    payload = encode_telemetry("gw-01", seq, now, readings)
    ingest.telemetry_lane.queue.put(
        Received(f"estates/{estate}/gw/gw-01/telemetry", payload, now, 1, 1, 0,
                  ingest.telemetry_lane, len(payload))
    )  # fmt: skip


def test_telemetry_batches_are_short_while_events_arrive(tmp_path: Path) -> None:
    """The decoder's batches: up to max_batch_readings normally; after an event (an incident,
    when the next alarm must not wait behind a long commit), at most INCIDENT_BATCH_READINGS.
    No broker: messages are put on the lanes as the network thread would."""
    state, writer, ingest = decoding(tmp_path, "inc")
    now = int(time.time() * 1000)
    seq = iter(range(1, 1000))

    def telemetry(n: int) -> None:
        for _ in range(n):
            queue_telemetry(ingest, "inc", next(seq), now)

    def event() -> None:
        e = Event("h-1", "fire_hydrant", now, "fire.fault", {})
        payload = encode_events("gw-01", next(seq), now, [e])
        ingest.events_lane.queue.put(
            Received("estates/inc/gw/gw-01/events", payload, now, 1, 1, 0,
                      ingest.events_lane, len(payload))
        )  # fmt: skip

    def readings(batch: list[Any]) -> int:
        return sum(item.delivery.reading_count for item in batch)

    telemetry(30)
    assert readings(ingest.decoder.next_batch()) == 10_000
    event()
    first = ingest.decoder.next_batch()
    assert [item.lane.events for item in first] == [True]  # the event, on its own, first
    assert readings(ingest.decoder.next_batch()) == INCIDENT_BATCH_READINGS
    ingest.decoder.last_event -= INCIDENT_S  # the incident is over
    telemetry(30)  # 1,000 were left; 16,000 now
    assert readings(ingest.decoder.next_batch()) == 10_000
    writer.close()
    state.close()


def test_a_batch_is_short_while_the_store_would_idle(tmp_path: Path) -> None:
    """While the recorder has nothing to commit (draining a backlog's first messages, or after
    a pause), the decoder hands over IDLE_BATCH_READINGS at once instead of filling a whole
    batch while the store idles; once a commit is in flight, batches grow to their limit."""
    state, writer, ingest = decoding(tmp_path, "idle")
    now = int(time.time() * 1000)
    for seq in range(1, 31):
        queue_telemetry(ingest, "idle", seq, now)
    store_idle = True
    ingest.decoder.recorder_idle = lambda: store_idle

    def batch() -> list[int]:
        return [item.delivery.seq for item in ingest.decoder.next_batch()]

    assert batch() == list(range(1, 1 + IDLE_BATCH_READINGS // 500))
    store_idle = False
    assert batch() == list(range(5, 25))  # 10,000 readings, in order, none skipped
    store_idle = True
    assert batch() == [25, 26, 27, 28]
    writer.close()
    state.close()


def test_the_recorder_waits_for_work_only_with_nothing_to_commit(tmp_path: Path) -> None:
    state = StateStore.open(f"sqlite:///{tmp_path / 's.db'}")
    writer = TelemetryWriter(tmp_path / "t.db")
    ingest = Ingest(MqttEndpoint("127.0.0.1", 1), state, writer, default_catalog())
    recorder = ingest.recorder
    assert not recorder.waiting_for_work()  # not running: nothing known
    recorder.thread.start()
    deadline = time.monotonic() + 5
    while not recorder.waiting_for_work() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert recorder.waiting_for_work()
    recorder.handoff.put(Handoff.END, None)
    recorder.thread.join(5)
    assert not recorder.thread.is_alive()
    writer.close()
    state.close()
