"""A commit's PUBACKs written as one (ingest.consumer.ack_all) against a real Mosquitto: the
broker takes them as acknowledgements, each for its own message, and only those."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from estatewatch.broker import ManagedMosquitto
from ingest.consumer import ack_all

pytestmark = pytest.mark.integration

TOPIC = "estates/acks/gw/gw-01/telemetry"


def _session(
    broker: ManagedMosquitto, got: list[mqtt.MQTTMessage], event: threading.Event, want: int
) -> mqtt.Client:
    ep = broker.endpoint
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id="acks-under-test",
        clean_session=False,
        protocol=mqtt.MQTTv311,
        manual_ack=True,
    )
    c.username_pw_set(ep.username, ep.password)
    c.max_inflight_messages_set(1000)

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        got.append(msg)
        if len(got) >= want:
            event.set()

    c.on_connect = lambda cl, *_a: cl.subscribe(TOPIC, 1)
    c.on_message = on_message
    c.connect(ep.host, ep.port)
    c.loop_start()
    return c


def _publish(broker: ManagedMosquitto, n: int) -> None:
    ep = broker.endpoint
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="acks-publisher")
    pub.username_pw_set(ep.username, ep.password)
    pub.connect(ep.host, ep.port)
    pub.loop_start()
    for info in [pub.publish(TOPIC, str(i).encode(), 1) for i in range(n)]:
        info.wait_for_publish(10)
    pub.disconnect()
    pub.loop_stop()


def _stop(c: mqtt.Client) -> None:
    time.sleep(0.3)  # let the network thread write what was queued
    c.disconnect()
    c.loop_stop()


def test_messages_acknowledged_in_one_write_are_not_delivered_again(
    mosquitto: ManagedMosquitto,
) -> None:
    got: list[mqtt.MQTTMessage] = []
    done = threading.Event()
    c = _session(mosquitto, got, done, 60)
    time.sleep(0.3)  # subscribed
    _publish(mosquitto, 60)
    assert done.wait(10)
    # the first 40 in one write; the last 20 never
    ack_all(c, [m.mid for m in got[:40]])
    _stop(c)

    again: list[mqtt.MQTTMessage] = []
    back = threading.Event()
    c = _session(mosquitto, again, back, 20)
    assert back.wait(10)
    time.sleep(0.5)  # nothing more comes
    ack_all(c, [m.mid for m in again])
    _stop(c)
    assert sorted(int(m.payload) for m in again) == list(range(40, 60))
    assert all(m.dup for m in again)  # redelivered, as the broker must

    last: list[mqtt.MQTTMessage] = []
    c = _session(mosquitto, last, threading.Event(), 1)
    time.sleep(1.0)
    _stop(c)
    assert last == []  # all 60 acknowledged now


def test_one_message_goes_through_paho_own_ack(mosquitto: ManagedMosquitto) -> None:
    got: list[mqtt.MQTTMessage] = []
    done = threading.Event()
    c = _session(mosquitto, got, done, 1)
    time.sleep(0.3)
    _publish(mosquitto, 1)
    assert done.wait(10)
    ack_all(c, [got[0].mid])
    _stop(c)
    again: list[mqtt.MQTTMessage] = []
    c = _session(mosquitto, again, threading.Event(), 1)
    time.sleep(1.0)
    _stop(c)
    assert again == []
