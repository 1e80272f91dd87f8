"""The MQTT lanes' subscriptions across threads: a sharded ingest subscribes to new estates
on the scheduler's thread while the broker's confirmations arrive on the network thread."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from estatewatch.broker import ManagedMosquitto
from ingest import lanes
from ingest.consumer import Ingest
from ingest.shards import shard_of
from ingest.state import StateStore
from ingest.telemetry import TelemetryWriter
from protocol.catalog import default_catalog
from protocol.endpoint import MqttEndpoint


def test_a_subscription_confirmed_before_subscribe_returns_is_counted(tmp_path: Path) -> None:
    """The SUBACK can be handled on the network thread before ``subscribe()`` has returned
    its mid to the thread that asked. A broker's timing cannot be forced, so the client's
    subscribe() is wrapped here to deliver the confirmation from another thread (as paho's
    network thread would) before it returns: the estate must still count as subscribed."""
    state = StateStore.open(f"sqlite:///{tmp_path / 's.db'}")
    estate = next(f"est-{i}" for i in range(100) if shard_of(f"est-{i}", 2) == 0)
    state.add_estate(estate, estate)
    writer = TelemetryWriter(tmp_path / "t.db")
    # port 1: nothing listens; no connection is made
    ingest = Ingest(MqttEndpoint("127.0.0.1", 1), state, writer, default_catalog(), shard=(0, 2))
    lane = ingest.telemetry_lane
    confirmed = threading.Event()

    def suback(mid: int) -> None:  # on "the network thread"
        ingest.lanes.on_subscribe(lane.client, lane, mid, [], None)
        confirmed.set()

    def subscribe(filters: Any) -> tuple[int, int]:
        mid = 41
        network = threading.Thread(target=suback, args=(mid,))
        network.start()
        network.join(0.3)  # the confirmation is handled now, or waits for the mid's record
        return 0, mid

    lane.client.subscribe = subscribe  # type: ignore[method-assign]
    ingest.events_lane.client.subscribe = lambda filters: (0, 42)  # type: ignore[method-assign]
    ingest.subscribe_new_estates()
    assert confirmed.wait(5)
    assert ingest.subscribed_estates == [estate]
    writer.close()
    state.close()


def test_acks_fall_back_to_paho_public_ack_when_its_private_queue_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A paho whose private packet queue takes other arguments cannot be installed here (the
    real one is tested against Mosquitto in tests/integration/test_batched_acks.py), so a
    stand-in client: every message is still acknowledged, through ack(), from then on."""
    monkeypatch.setattr(lanes, "_batched_acks", True)

    class ChangedPaho:
        def __init__(self) -> None:
            self.queued = 0
            self.acked: list[int] = []

        def _packet_queue(self, command: int, packet: bytes) -> None:  # new signature
            self.queued += 1

        def ack(self, mid: int, qos: int) -> None:
            self.acked.append(mid)

    client = ChangedPaho()
    lanes.ack_all(client, [5, 6, 7])  # type: ignore[arg-type]
    lanes.ack_all(client, [8, 9])  # type: ignore[arg-type]
    assert client.acked == [5, 6, 7, 8, 9]
    assert client.queued == 0


@pytest.mark.integration
def test_a_refused_subscription_is_asked_for_again_on_the_same_connection(
    tmp_path: Path, mosquitto: ManagedMosquitto
) -> None:
    """A clustered broker electing a leader can answer SUBSCRIBE with 0x80, and the lane would
    then hear nothing until its next connection. Mosquitto grants what it then filters, so the
    refusal is handed to the lane as paho would (a SUBACK of 0x80 for its events filters) on a
    real connection: the lane asks again, and the real broker's grant settles it."""
    state = StateStore.open(f"sqlite:///{tmp_path / 's.db'}")
    writer = TelemetryWriter(tmp_path / "t.db")
    ingest = Ingest(mosquitto.endpoint, state, writer, default_catalog())
    ingest.start()
    try:
        lane = ingest.events_lane
        asked: list[Any] = []
        subscribe = lane.client.subscribe

        def spy(filters: Any) -> Any:
            asked.append(filters)
            return subscribe(filters)

        lane.client.subscribe = spy  # type: ignore[method-assign]
        filters = [(f, 1) for f in lanes.service_subscriptions("estates") if lane.wants(f)]
        refused = [ReasonCode(PacketTypes.SUBACK, identifier=0x80)] * len(filters)
        with ingest.lanes._subscriptions:
            ingest.lanes._asked[(lane, 60_000)] = (filters, None)
        ingest.lanes.on_subscribe(lane.client, lane, 60_000, refused, None)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (asked and not ingest.lanes._asked):
            time.sleep(0.05)
        assert asked == [filters]  # asked again, once, on the same connection
        assert not ingest.lanes._asked  # and granted by the broker
    finally:
        ingest.stop()
        writer.close()
        state.close()
