"""A partition's persistent MQTT session keeps its queue while no worker holds it (issue 16),
on a real Mosquitto: the old owner subscribes with the partition's session id and shared
filters and goes away (released, or dead); what the estate's gateway sends meanwhile is handed
to the next owner, which connects with the same id and does not subscribe again."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cluster.partitions import partition_of, partition_subscriptions, session_id
from estatewatch.broker import ManagedMosquitto
from tests.support import waiter

pytestmark = pytest.mark.integration

ESTATE = "hohhot-large"


def _owner(broker: ManagedMosquitto, partition: int, got: list[bytes]) -> mqtt.Client:
    ep = broker.endpoint
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=session_id(partition), clean_session=False
    )
    client.username_pw_set(ep.username, ep.password)
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: connected.set()
    client.on_message = lambda c, u, m: got.append(m.payload)
    client.connect(ep.host, ep.port)
    client.loop_start()
    assert connected.wait(10)
    return client


def test_the_next_owner_gets_what_was_queued_for_the_partition(
    mosquitto: ManagedMosquitto,
) -> None:
    p = partition_of(ESTATE)
    filters = partition_subscriptions(p, [ESTATE, "hailar-small"], "estates")
    assert len(filters) == 4 and all(f"/{ESTATE}/" in f for f in filters)
    first: list[bytes] = []
    old = _owner(mosquitto, p, first)
    subscribed = threading.Event()
    old.on_subscribe = lambda c, u, mid, rcs, props: subscribed.set()
    old.subscribe([(f, 1) for f in filters])
    assert subscribed.wait(10)
    old.disconnect()  # the lease moves on; nobody holds the partition for a while
    old.loop_stop()

    creds = mosquitto.issue_gateway_credentials(ESTATE, "gw-01", "estates")
    assert creds is not None
    gw = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=creds.username)
    gw.username_pw_set(creds.username, creds.password)
    gw.connect(creds.host, creds.port)
    gw.loop_start()
    sent = [f"reading {i}".encode() for i in range(5)]
    for payload in sent:
        gw.publish(f"estates/{ESTATE}/gw/gw-01/telemetry", payload, qos=1).wait_for_publish(10)
    gw.disconnect()
    gw.loop_stop()

    got: list[bytes] = []
    new = _owner(mosquitto, p, got)  # the same session id, clean start off, no subscribe
    try:
        waiter(10, 0.05)(lambda: len(got) >= len(sent), what="the queued readings")
    finally:
        new.disconnect()
        new.loop_stop()
    assert got == sent and first == []
