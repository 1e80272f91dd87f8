"""A scaled-out worker's ingest sessions by partition (issue 16), on a real Mosquitto: a held
partition's two persistent sessions subscribe to its registered estates only; a partition lost
while its messages wait uncommitted is closed at once and acknowledges none of them, so the
broker hands them again to the partition's next session, where each is stored once; what was
committed and acknowledged is not delivered again."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cluster.partitions import partition_of, session_id, subscriptions
from estatewatch.broker import ManagedMosquitto
from ingest.consumer import Ingest, PartitionSessions
from ingest.influx import InfluxTelemetrySink
from ingest.net_telemetry import NetworkTelemetryStore
from ingest.state import StateStore
from ingest.telemetry import TelemetryWriter
from protocol.catalog import default_catalog
from tests.support import SeqsSeen, waiter

pytestmark = pytest.mark.integration

PARTITIONS = 8
MINE, OTHER = "north-1", "north-2"  # partitions 0 and 2 of 8
wait_for = waiter(20, 0.05)


@pytest.fixture
def worker(tmp_path: Path, mosquitto: ManagedMosquitto) -> Iterator[Ingest]:
    state = StateStore.open(f"sqlite:///{tmp_path / 's.db'}")
    for estate in (MINE, OTHER):
        state.add_estate(estate, estate)
        state.add_gateway(estate, "gw-01")
    store = TelemetryWriter(tmp_path / "t.db")
    sessions = PartitionSessions(PARTITIONS, session_id, subscriptions)
    ingest = Ingest(
        mosquitto.endpoint, state, store, default_catalog(), linger_s=0.05, partitions=sessions
    )
    ingest.start(wait_s=0)
    yield ingest
    ingest.stop()
    store.close()
    state.close()


def _gateway(broker: ManagedMosquitto, estate: str) -> mqtt.Client:
    creds = broker.issue_gateway_credentials(estate, "gw-01", "estates")
    assert creds is not None
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=creds.username)
    c.username_pw_set(creds.username, creds.password)
    c.connect(creds.host, creds.port)
    c.loop_start()
    wait_for(c.is_connected, what=f"{estate}'s gateway connected")
    return c


def _send(gw: mqtt.Client, estate: str, seq: int) -> None:
    now = int(time.time() * 1000)
    reading = {"dev": "ws-01", "kind": "weather_station", "ts": now - 60_000 + seq, "m": {}}
    reading["m"] = {"temp_c": 1.0}
    body = {"v": 1, "gw": "gw-01", "seq": seq, "sent": now, "readings": [reading]}
    topic = f"estates/{estate}/gw/gw-01/telemetry"
    gw.publish(topic, orjson.dumps(body), 1).wait_for_publish(10)


def test_a_lost_partition_acknowledges_nothing_uncommitted(
    worker: Ingest, mosquitto: ManagedMosquitto
) -> None:
    assert [partition_of(e, PARTITIONS) for e in (MINE, OTHER)] == [0, 2]
    seen = SeqsSeen()
    worker.add_listener(seen)
    worker.open_partition(0)
    wait_for(lambda: worker.subscribed_estates == [MINE], what="partition 0's estate subscribed")
    sessions = worker.partition_sessions()
    assert list(sessions) == [0] and sessions[0]["session_id"] == "estatewatch-p0"
    wait_for(lambda: worker.connected, what="both sessions connected")
    gws = {e: _gateway(mosquitto, e) for e in (MINE, OTHER)}
    try:
        gate = threading.Event()
        held = worker.run_maintenance(gate.wait)  # the writer commits nothing meanwhile
        for seq in (1, 2, 3):
            _send(gws[MINE], MINE, seq)
        _send(gws[OTHER], OTHER, 1)  # partition 2 is not ours: never received here
        wait_for(lambda: worker.stats.received == 3, what="three messages received")
        worker.close_partition(0)  # the lease went: nothing of them may be acknowledged
        assert worker.partition_sessions() == {} and not worker.subscribed_estates
        gate.set()
        held.result(10)
        wait_for(lambda: worker.queued_bytes == 0, what="the dropped messages' bytes freed")
        assert len(seen) == 0  # none stored, none given to the listeners
        worker.open_partition(0)  # the partition's next session: the broker's queue again
        wait_for(lambda: seen.sorted() == [1, 2, 3], what="the three, stored once")
        worker.close_partition(0)
        worker.open_partition(0)  # acknowledged once committed: not delivered again
        wait_for(lambda: worker.connected and worker.subscribed_estates == [MINE])
        _send(gws[MINE], MINE, 4)
        wait_for(lambda: seen.sorted() == [1, 2, 3, 4], what="the next reading")
        assert worker.stats.duplicates == 0
    finally:
        for gw in gws.values():
            gw.disconnect()
            gw.loop_stop()


def _worker(database_url: str, victoriametrics: str, broker: ManagedMosquitto) -> Ingest:
    """A worker's ingest as `run --role ingest` builds it: the cluster telemetry store (the dedup
    book in PostgreSQL, raw readings in VictoriaMetrics), sessions by partition."""
    state = StateStore.open(database_url)
    sink = InfluxTelemetrySink(victoriametrics, "", "", "", default_catalog())
    store = NetworkTelemetryStore(database_url, sink)
    sessions = PartitionSessions(PARTITIONS, session_id, subscriptions)
    ingest = Ingest(
        broker.endpoint, state, store, default_catalog(), linger_s=0.05, partitions=sessions
    )
    ingest.start(wait_s=0)
    return ingest


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_what_a_dead_holder_committed_unacknowledged_reaches_the_next_ones_rules(
    mosquitto: ManagedMosquitto, database_url: str, victoriametrics: str
) -> None:
    """Worker A commits three readings of partition 0 and loses it while its rules are still
    on them (a worker acknowledges a commit once its rules have had it: so none is). Worker B,
    the partition's next holder, gets them again from the broker (DUP), finds them in the
    dedup book, and gives them to its rules all the same; a gateway's own repeat later is a
    duplicate as ever."""
    state = StateStore.open(database_url)
    state.add_estate(MINE, MINE)
    state.add_gateway(MINE, "gw-01")
    state.close()
    a = _worker(database_url, victoriametrics, mosquitto)
    b = _worker(database_url, victoriametrics, mosquitto)
    gw = _gateway(mosquitto, MINE)
    try:
        rules = threading.Event()  # A's rules, busy until told

        def busy_rules(deliveries: object) -> None:
            rules.wait(20)

        a.add_listener(busy_rules)
        a.open_partition(0)
        wait_for(lambda: a.subscribed_estates == [MINE], what="A subscribed")
        for seq in (1, 2, 3):
            _send(gw, MINE, seq)
        wait_for(lambda: a.stats.committed_messages == 3, what="A's commit")
        a.close_partition(0, wait=True)  # lost (dead, cut off) before its rules were done
        rules.set()
        seen = SeqsSeen()
        b.add_listener(seen)
        b.open_partition(0)
        wait_for(lambda: seen.sorted() == [1, 2, 3], what="B's rules given the three")
        assert b.stats.duplicates == 0
        _send(gw, MINE, 3)  # the gateway's own repeat (not the broker's): a duplicate
        _send(gw, MINE, 4)
        wait_for(lambda: seen.sorted() == [1, 2, 3, 4], what="the next reading")
        wait_for(lambda: b.stats.duplicates == 1, what="the repeat dropped")
    finally:
        gw.disconnect()
        gw.loop_stop()
        for worker in (a, b):
            worker.stop()
            worker.telemetry.close()
            worker.state.close()
