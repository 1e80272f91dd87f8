"""The hand-offs between ingest's decoder, writer and listener threads: events first, telemetry
bounded, nothing reordered within a kind, and an event never waits for a telemetry slot."""

from __future__ import annotations

import queue
import threading

import pytest

from ingest.consumer import _Handoff


def test_events_overtake_waiting_telemetry_and_each_kind_keeps_its_order() -> None:
    h: _Handoff[str] = _Handoff(3)
    h.put(_Handoff.TELEMETRY, "t1")
    h.put(_Handoff.TELEMETRY, "t2")
    h.put(_Handoff.EVENTS, "e1")
    h.put(_Handoff.END, None)
    h.put(_Handoff.EVENTS, "e2")
    h.put(_Handoff.TELEMETRY, "t3")
    got = [h.get(timeout=1) for _ in range(6)]
    assert [item for _rank, item in got] == ["e1", "e2", "t1", "t2", "t3", None]
    with pytest.raises(queue.Empty):
        h.get(timeout=0.01)


def test_telemetry_is_bounded_but_events_still_pass() -> None:
    h: _Handoff[str] = _Handoff(1)
    h.put(_Handoff.TELEMETRY, "t1")
    blocked = threading.Event()
    done = threading.Event()

    def second() -> None:
        blocked.set()
        h.put(_Handoff.TELEMETRY, "t2")  # waits for the slot t1 holds
        done.set()

    t = threading.Thread(target=second)
    t.start()
    blocked.wait(1)
    assert not done.wait(0.2)  # backpressure: the producer waits
    h.put(_Handoff.EVENTS, "e1")  # an event does not wait behind it
    assert h.get(timeout=1) == (_Handoff.EVENTS, "e1")
    assert not done.is_set()
    assert h.get(timeout=1) == (_Handoff.TELEMETRY, "t1")  # frees the slot
    assert done.wait(1)
    assert h.get(timeout=1) == (_Handoff.TELEMETRY, "t2")
    t.join()
