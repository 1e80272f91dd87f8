"""The recorder's pipelined commits (issue 15) with a real store process: batches handed over
while earlier ones are still being committed, a message the child's SQLite refuses and a status
the state database refuses among them. Each is found alone and dead-lettered, the rest stored
once, and the listeners get every stored message once, in commit order."""

from __future__ import annotations

import pickle
import queue
import threading
from collections.abc import Iterator, Sequence
from multiprocessing import Pipe
from pathlib import Path
from typing import Any

import pytest

from ingest.consumer import STORE_REFUSED, Ingest, Received
from ingest.handoff import Handoff
from ingest.model import EstateBatch
from ingest.pipeline import Delivery
from ingest.state import StateStore
from ingest.store_process import StoreProcess, _read_requests
from ingest.telemetry import PendingWrite, PreparedRows, TelemetryReader, WriteResult
from protocol.catalog import default_catalog
from protocol.endpoint import MqttEndpoint
from tests.ingest.test_poison import NOW, deep_event, status, telemetry
from tests.support import waiter

wait_for = waiter(every=0.01)


@pytest.fixture
def ingest(tmp_path: Path) -> Iterator[Ingest]:
    state = StateStore.open(f"sqlite:///{tmp_path / 's.db'}")
    for estate in ("e1", "e2", "e3"):
        state.add_estate(estate, estate)
        state.add_gateway(estate, "gw-01")
    store = StoreProcess(tmp_path / "t.db")
    # port 1: nothing listens; the test hands the recorder its batches itself
    made = Ingest(MqttEndpoint("127.0.0.1", 1), state, store, default_catalog())
    yield made
    store.close()
    state.close()


def received(ingest: Ingest, delivery: Delivery) -> Received:
    lane = ingest.telemetry_lane
    item = Received(delivery.topic, b"{}", NOW, 1, 0, 0, lane, 100)  # QoS 0: no PUBACK
    item.delivery = delivery
    lane.budget.used += item.weight
    return item


def test_pipelined_commits_find_what_the_stores_refuse_and_keep_the_order(
    ingest: Ingest,
) -> None:
    store = ingest.telemetry
    assert isinstance(store, StoreProcess)
    store.ready()
    seen: list[str] = []
    lock = threading.Lock()

    def listener(deliveries: Sequence[Delivery]) -> None:
        with lock:
            seen.extend(f"{d.estate}:{d.seq}" for d in deliveries if d.seq is not None)

    ingest.add_listener(listener)
    batches = [
        [telemetry("e1", 1), status("e2", 2**63)],  # the state database refuses the status
        [telemetry("e1", 2, "h-2"), telemetry("e2", 2**63), telemetry("e1", 3, "h-3")],
        [telemetry("e3", 1, "h-3")],
        [telemetry("e1", 2, "h-2"), telemetry("e3", 2, "h-4")],  # e1:2 again: a duplicate
    ]
    recorder = ingest.recorder
    recorder.handoff = Handoff(len(batches))  # all handed over at once: commits overlap
    for batch in batches:
        recorder.handoff.put(Handoff.TELEMETRY, [received(ingest, d) for d in batch])
    recorder.handoff.put(Handoff.END, None)
    ingest.fanout.thread.start()
    recorder.thread.start()
    recorder.thread.join(60)
    ingest.fanout.thread.join(10)
    assert not recorder.thread.is_alive()

    letters = ingest.state.list_dead_letters()
    assert sorted(x["topic"] for x in letters) == [
        "estates/e2/gw/gw-01/status",
        "estates/e2/gw/gw-01/telemetry",
    ]
    assert {x["reason"] for x in letters} == {STORE_REFUSED}
    now = TelemetryReader(store.path)
    assert set(now.latest("e1")) == {"h-1", "h-2", "h-3"}
    assert set(now.latest("e3")) == {"h-3", "h-4"}
    assert now.latest("e2") == {}
    # every stored message once, each estate's in the order sent; across estates the order is
    # the order committed, which depends on whether the batch after a refused one was already
    # with the store process when the refusal came back (the refused one is stored again after)
    assert sorted(seen) == ["e1:1", "e1:2", "e1:3", "e3:1", "e3:2"]
    for estate in ("e1", "e3"):
        mine = [s for s in seen if s.startswith(estate)]
        assert mine == sorted(mine)
    stats = ingest.stats
    assert (stats.readings, stats.duplicates, stats.poison_messages) == (5, 1, 2)
    assert stats.commit_failures >= 2 and stats.failing_since is None
    assert store.in_flight() == 0
    assert all(lane.budget.used == 0 for lane in ingest.lanes.all)


class HeldStore:
    """A PipelinedStore whose writes wait until the test answers them, one by one."""

    def __init__(self) -> None:
        self.writes: list[tuple[list[EstateBatch], PendingWrite]] = []
        self.lock = threading.Lock()

    def submit_write(
        self,
        batches: Sequence[EstateBatch],
        prepared: Sequence[PreparedRows | None] | None,
        urgent: bool = False,
    ) -> PendingWrite:
        pending = PendingWrite()
        with self.lock:
            self.writes.append((list(batches), pending))
        return pending

    def answer(self, i: int) -> None:
        batches, pending = self.writes[i]
        pending.answer.set_result(WriteResult(0, sum(len(b.readings) for b in batches)))

    def prepare_rows(self, batch: EstateBatch) -> PreparedRows | None:
        return None

    def find_duplicates(self, batches: Sequence[EstateBatch]) -> set[int]:
        raise AssertionError("the pipelined recorder asks the write, not find_duplicates")

    def write(self, *args: Any) -> WriteResult:
        raise AssertionError("the pipelined recorder submits writes")

    def gateway_lost(self) -> dict[tuple[str, str], int]:
        return {}

    def flush_latest_if_due(self) -> None:
        pass


def held_ingest(tmp_path: Path, store: HeldStore) -> Ingest:
    """An ingest of estate e1 whose store answers when the test says (no broker: port 1)."""
    state = StateStore.open(f"sqlite:///{tmp_path / 's.db'}")
    state.add_estate("e1", "e1")
    state.add_gateway("e1", "gw-01")
    return Ingest(MqttEndpoint("127.0.0.1", 1), state, store, default_catalog())  # type: ignore[arg-type]


def test_two_telemetry_commits_in_flight_events_beside_them_and_landed_in_order(
    tmp_path: Path,
) -> None:
    """Two telemetry writes in flight hold back a third, not an events batch; the events
    commit lands as soon as it is answered, telemetry only in the order sent."""
    store = HeldStore()
    ingest = held_ingest(tmp_path, store)
    seen: list[int] = []
    ingest.add_listener(lambda ds: seen.extend(d.seq for d in ds if d.seq is not None))
    recorder = ingest.recorder
    recorder.handoff = Handoff(8)
    for seq in (1, 2, 3):
        recorder.handoff.put(Handoff.TELEMETRY, [received(ingest, telemetry("e1", seq))])
    ingest.fanout.thread.start()
    recorder.thread.start()
    try:
        wait_for(lambda: len(store.writes) == 2, 10, "two telemetry writes in flight")
        event = received(ingest, deep_event("e1", 9, depth=1))
        event.lane = ingest.events_lane
        recorder.handoff.put(Handoff.EVENTS, [event])
        wait_for(lambda: len(store.writes) == 3, 10, "the events write beside them")
        assert [b[0].seq for b, _ in store.writes] == [1, 2, 9]  # the third telemetry waits
        store.answer(2)  # the events commit
        wait_for(lambda: seen == [9], 10, "the events commit landed first")
        store.answer(1)  # the second telemetry commit: not before the first
        store.answer(0)
        wait_for(lambda: seen == [9, 1, 2], 10, "telemetry in the order sent")
        wait_for(lambda: len(store.writes) == 4, 10, "the third telemetry write")
        store.answer(3)
        wait_for(lambda: seen == [9, 1, 2, 3], 10, "the third")
    finally:
        recorder.handoff.put(Handoff.END, None)
        recorder.thread.join(10)
        ingest.fanout.thread.join(10)
        ingest.state.close()
    assert ingest.stats.committed_messages == 4


def test_the_child_takes_events_before_telemetry_it_has_not_started() -> None:
    """The store process's reader queues urgent requests (events) before telemetry writes
    still waiting, the rest in order, and the parent gone before anything."""
    ours, theirs = Pipe()
    for rid, urgent in ((1, False), (2, False), (3, True), (4, False)):
        ours.send_bytes(pickle.dumps((rid, "write", urgent, ())))
    ours.close()
    requests: queue.PriorityQueue[tuple[Any, ...]] = queue.PriorityQueue()
    _read_requests(theirs, requests)
    order = [requests.get_nowait()[2:4] for _ in range(5)]
    assert order == [(0, "end"), (3, "write"), (1, "write"), (2, "write"), (4, "write")]


def test_listeners_behind_hold_back_telemetry_not_events(tmp_path: Path) -> None:
    """With the listeners stuck in a commit, the recorder starts no telemetry commit the
    listeners' hand-off has no slot for (bounded), and still commits and acknowledges an
    event meanwhile instead of waiting in that hand-off; once the listeners move, they get
    every commit once: the event before the telemetry that waited, telemetry in order."""
    store = HeldStore()
    ingest = held_ingest(tmp_path, store)
    seen: list[int] = []
    held = threading.Event()
    release = threading.Event()

    def stuck(deliveries: Sequence[Delivery]) -> None:
        if any(d.seq == 1 for d in deliveries):
            held.set()
            release.wait(20)
        seen.extend(d.seq for d in deliveries if d.seq is not None)

    ingest.add_listener(stuck)
    answering = threading.Event()

    def answer_all() -> None:  # the store answers every write at once
        done = 0
        while not answering.is_set():
            with store.lock:
                fresh = len(store.writes)
            for i in range(done, fresh):
                store.answer(i)
            done = fresh
            answering.wait(0.005)

    answerer = threading.Thread(target=answer_all)
    recorder = ingest.recorder
    recorder.handoff = Handoff(16)
    for seq in range(1, 9):
        recorder.handoff.put(Handoff.TELEMETRY, [received(ingest, telemetry("e1", seq))])
    ingest.fanout.thread.start()
    recorder.thread.start()
    answerer.start()
    try:
        wait_for(held.is_set, 10, "the listeners stuck in the first commit")
        # the one the listeners hold, then QUEUED + LANDING waiting for them: no more
        bound = 1 + ingest.fanout.handoff.capacity
        wait_for(lambda: len(store.writes) == bound, 10, "the telemetry the hand-off holds")
        assert not answering.wait(0.3) and len(store.writes) == bound
        event = received(ingest, deep_event("e1", 99, depth=1))
        ingest.telemetry_lane.budget.used -= event.weight  # it came on the events lane
        event.lane = ingest.events_lane
        event.lane.budget.used += event.weight
        recorder.handoff.put(Handoff.EVENTS, [event])
        wait_for(lambda: event.outcome is not None, 10, "the event committed")
        wait_for(lambda: ingest.events_lane.budget.used == 0, 10, "and acknowledged")
        assert seen == [] and len(store.writes) == bound + 1
        release.set()
        wait_for(lambda: len(seen) == 9, 10, "every commit to the listeners")
        assert seen == [1, 99, 2, 3, 4, 5, 6, 7, 8]
    finally:
        release.set()
        answering.set()
        answerer.join(10)
        recorder.handoff.put(Handoff.END, None)
        recorder.thread.join(10)
        ingest.fanout.thread.join(10)
        ingest.state.close()
    assert ingest.stats.committed_messages == 9
