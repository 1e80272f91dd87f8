"""The recorder's pipelined commits (issue 15) with a real store process: batches handed over
while earlier ones are still being committed, a message the child's SQLite refuses and a status
the state database refuses among them. Each is found alone and dead-lettered, the rest stored
once, and the listeners get every stored message once, in commit order."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from ingest.consumer import STORE_REFUSED, Ingest, Received
from ingest.handoff import Handoff
from ingest.pipeline import Delivery
from ingest.state import StateStore
from ingest.store_process import StoreProcess
from ingest.telemetry import TelemetryReader
from protocol.catalog import default_catalog
from protocol.endpoint import MqttEndpoint
from tests.ingest.test_poison import NOW, status, telemetry


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
    # every stored message once, batch by batch in the order committed
    assert seen == ["e1:1", "e1:2", "e1:3", "e3:1", "e3:2"]
    stats = ingest.stats
    assert (stats.readings, stats.duplicates, stats.poison_messages) == (5, 1, 2)
    assert stats.commit_failures >= 2 and stats.failing_since is None
    assert store.in_flight() == 0
    assert all(lane.budget.used == 0 for lane in ingest.lanes.all)
