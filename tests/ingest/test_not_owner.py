"""A scaled-out worker's recorder when a partition is no longer its own (issue 16), against the
cluster telemetry store on a real PostgreSQL and VictoriaMetrics: a commit whose fence says
"not the owner" of some estates stores the rest of the batch without them, and their messages
are neither stored, nor acknowledged, nor given to the listeners; messages of a partition whose
sessions were closed (its lease lost) while they waited are dropped before the store."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from ingest.consumer import Ingest, Received
from ingest.handoff import Handoff
from ingest.influx import InfluxTelemetrySink
from ingest.lanes import Lane, Outcome
from ingest.model import EstateBatch, NotOwner
from ingest.net_telemetry import NetworkTelemetryStore
from ingest.pipeline import Delivery
from ingest.state import StateStore
from protocol.catalog import default_catalog
from protocol.endpoint import MqttEndpoint
from protocol.messages import Reading

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]
NOW = int(time.time() * 1000)


class Leases:
    """The fence the service passes the store (``Service._fence_commit``), over a set of
    estates whose partition this worker has lost (the lease check itself is tested in
    tests/cluster/test_pg_leases.py)."""

    def __init__(self) -> None:
        self.lost: set[str] = set()
        self.calls = 0

    def __call__(self, conn: Any, estates: Collection[str]) -> None:
        self.calls += 1
        gone = self.lost & set(estates)
        if gone:
            raise NotOwner(gone, "the lease of its partition is held by another worker")


@dataclasses.dataclass
class World:
    state: StateStore
    store: NetworkTelemetryStore
    ingest: Ingest
    leases: Leases

    def item(self, estate: str, seq: int, lane: Lane | None = None) -> Received:
        reading = Reading("ws-01", "weather_station", NOW - 60_000 + seq, {"temp_c": 1.0})
        batch = EstateBatch(estate, "gw-01", readings=[reading], seq=seq)
        topic = f"estates/{estate}/gw/gw-01/telemetry"
        lane = lane or self.ingest.telemetry_lane
        item = Received(topic, b"{}", NOW, seq, 1, lane.generation, lane, 100)
        item.delivery = Delivery(topic, NOW, estate, "gw-01", seq, batch=batch)
        lane.budget.used += item.weight
        return item

    def stored(self, estate: str, seq: int) -> bool:
        probe = EstateBatch(estate, "gw-01", seq=seq)
        return self.store.find_duplicates([probe]) == {0}


@pytest.fixture
def world(tmp_path: Path, database_url: str, victoriametrics: str) -> Iterator[World]:
    state = StateStore.open(database_url)
    for estate in ("e1", "e2", "e3"):
        state.add_estate(estate, estate)
        state.add_gateway(estate, "gw-01")
    sink = InfluxTelemetrySink(victoriametrics, "", "", "", default_catalog())
    leases = Leases()
    store = NetworkTelemetryStore(database_url, sink, fence=leases)
    # port 1: nothing listens; these tests hand messages to the recorder themselves
    ingest = Ingest(MqttEndpoint("127.0.0.1", 1), state, store, default_catalog())
    yield World(state, store, ingest, leases)
    store.close()
    state.close()


def test_a_fenced_estate_is_dropped_unacknowledged_and_the_rest_committed(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    acked: list[Sequence[int]] = []
    monkeypatch.setattr("ingest.acks.ack_all", lambda client, mids: acked.append(list(mids)))
    world.leases.lost = {"e2"}  # e2's partition went to another worker meanwhile
    pending = [world.item("e1", 1), world.item("e2", 1), world.item("e3", 1), world.item("e2", 2)]
    recorder = world.ingest.recorder
    assert recorder.commit(pending) is True
    assert [p.outcome for p in pending] == [
        Outcome.STORED,
        Outcome.NOT_OWNER,
        Outcome.STORED,
        Outcome.NOT_OWNER,
    ]
    assert world.leases.calls == 2  # fenced, then the rest without e2
    assert world.stored("e1", 1) and world.stored("e3", 1)
    assert not world.stored("e2", 1) and not world.stored("e2", 2)
    recorder._acknowledge(pending)
    assert acked == [[1, 1]]  # e1's and e3's (mid = seq here), never e2's
    assert world.ingest.telemetry_lane.budget.used == 0  # their bytes freed all the same
    stats = world.ingest.stats
    assert stats.commit_failures == 0 and stats.failing_since is None


def test_messages_of_a_lost_partition_are_dropped_before_the_store(world: World) -> None:
    base = world.ingest.telemetry_lane
    # a partition's session feeding the worker's queue and budget, then its lease lost
    session = dataclasses.replace(base, name="p3-telemetry", partition=3)
    pending = [world.item("e1", 5), world.item("e3", 5, session)]
    session.revoked = True  # what Lanes.close_partition sets as the lease goes
    assert world.ingest.recorder.commit(pending) is True
    assert [p.outcome for p in pending] == [Outcome.STORED, Outcome.NOT_OWNER]
    assert world.stored("e1", 5) and not world.stored("e3", 5)
    assert world.leases.calls == 1


def test_the_recorder_thread_drops_lost_estates_and_passes_on_the_rest(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same through the recorder's own thread (batches handed over at once, so commits
    may overlap): what goes to the listeners and what is acknowledged."""
    acked: list[int] = []
    monkeypatch.setattr("ingest.acks.ack_all", lambda client, mids: acked.extend(mids))
    seen: list[str] = []
    world.ingest.add_listener(lambda ds: seen.extend(f"{d.estate}:{d.seq}" for d in ds))
    world.leases.lost = {"e2"}
    session = dataclasses.replace(world.ingest.telemetry_lane, name="p3-telemetry", partition=3)
    session.revoked = True
    batches = [
        [world.item("e1", 11), world.item("e2", 11)],
        [world.item("e3", 11), world.item("e2", 12)],
        [world.item("e1", 12, session)],  # its partition's sessions closed while it waited
        [world.item("e3", 12)],
    ]
    recorder = world.ingest.recorder
    recorder.handoff = Handoff(len(batches))
    for batch in batches:
        recorder.handoff.put(Handoff.TELEMETRY, batch)
    recorder.handoff.put(Handoff.END, None)
    world.ingest.fanout.thread.start()
    recorder.thread.start()
    recorder.thread.join(60)
    world.ingest.fanout.thread.join(10)
    assert not recorder.thread.is_alive()
    assert seen == ["e1:11", "e3:11", "e3:12"]
    assert sorted(acked) == [11, 11, 12]  # e1:11, e3:11, e3:12 (mid = seq here)
    assert [world.stored("e1", s) for s in (11, 12)] == [True, False]
    assert [world.stored("e2", s) for s in (11, 12)] == [False, False]
    assert world.ingest.telemetry_lane.budget.used == 0
    assert world.ingest.stats.failing_since is None
