"""The broker the service manages: real Mosquitto with hashed passwords and an ACL, and the
embedded amqtt fallback."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from estatewatch.broker import (
    PICK_PORTS,
    EmbeddedBroker,
    ManagedMosquitto,
    free_port,
    port_is_free,
)

pytestmark = pytest.mark.integration


def _client(host: str, port: int, user: str | None, password: str | None) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2)
    if user:
        c.username_pw_set(user, password)
    return c


def _connect_rc(host: str, port: int, user: str | None, password: str | None) -> object:
    result: list[object] = []
    done = threading.Event()
    c = _client(host, port, user, password)
    c.on_connect = lambda *a: (result.append(a[3]), done.set())
    c.connect(host, port)
    c.loop_start()
    done.wait(5)
    c.disconnect()
    c.loop_stop()
    return result[0] if result else None


def subscribe_to_estates(
    sub: mqtt.Client,
    host: str,
    port: int,
    on_message: Callable[[object, object, mqtt.MQTTMessage], None],
) -> None:
    """Connect ``sub`` and subscribe it to everything under estates/ (waits for the SUBACK)."""
    subscribed = threading.Event()
    sub.on_message = on_message
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_connect = lambda c, *a: c.subscribe("estates/#", 1)
    sub.connect(host, port)
    sub.loop_start()
    assert subscribed.wait(5)


def test_issued_credentials_log_in_and_wrong_ones_do_not(mosquitto: ManagedMosquitto) -> None:
    creds = mosquitto.issue_gateway_credentials("est-a", "gw-01", "estates")
    assert creds is not None
    assert _connect_rc(creds.host, creds.port, creds.username, creds.password) == 0
    assert _connect_rc(creds.host, creds.port, creds.username, "wrong") != 0
    assert _connect_rc(creds.host, creds.port, None, None) != 0
    # Issuing again gives the same credentials, not a second account.
    again = mosquitto.issue_gateway_credentials("est-a", "gw-01", "estates")
    assert again == creds


def test_gateways_registered_in_a_burst_all_log_in(mosquitto: ManagedMosquitto) -> None:
    """Each new account is a SIGHUP to Mosquitto, which loses one that arrives while it
    reloads (a gateway of a burst was refused for 7 s in a cluster test): every account of a
    burst logs in within a few seconds, however the signals fell."""
    issued = [
        mosquitto.issue_gateway_credentials(f"burst-{i}", "gw-01", "estates") for i in range(40)
    ]
    deadline = time.monotonic() + 5  # RELOAD_AGAIN_S after the last, and then some
    waiting = list(issued)
    while waiting and time.monotonic() < deadline:
        waiting = [c for c in waiting if _connect_rc(c.host, c.port, c.username, c.password) != 0]
    assert not waiting, [c.username for c in waiting]


def test_free_ports_come_from_outside_the_ephemeral_range() -> None:
    """Clients' connections take their local ports from the ephemeral range: a port given to a
    child process to listen on comes from below it, free, and seldom twice."""
    ports = [free_port() for _ in range(200)]
    assert all(p in PICK_PORTS for p in ports)
    assert all(port_is_free(p) for p in ports)
    assert len(set(ports)) > 150


def test_acl_lets_a_gateway_publish_only_under_its_own_prefix(
    mosquitto: ManagedMosquitto,
) -> None:
    creds = mosquitto.issue_gateway_credentials("est-a", "gw-01", "estates")
    assert creds is not None
    ep = mosquitto.endpoint
    got: list[str] = []
    done = threading.Event()
    sub = _client(ep.host, ep.port, ep.username, ep.password)

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        got.append(msg.topic)
        if msg.topic.endswith("gw-01/telemetry"):
            done.set()

    subscribe_to_estates(sub, ep.host, ep.port, on_message)

    gw = _client(creds.host, creds.port, creds.username, creds.password)
    gw.connect(creds.host, creds.port)
    gw.loop_start()
    # Same connection, in order: when the allowed message arrives, the forbidden one would
    # already have arrived had the broker let it through.
    gw.publish("estates/est-b/gw/gw-01/telemetry", b"{}", 1).wait_for_publish(5)
    gw.publish("estates/est-a/gw/gw-02/telemetry", b"{}", 1).wait_for_publish(5)
    gw.publish("estates/est-a/gw/gw-01/telemetry", b"{}", 1).wait_for_publish(5)
    assert done.wait(5)
    assert got == ["estates/est-a/gw/gw-01/telemetry"]
    for c in (gw, sub):
        c.disconnect()
        c.loop_stop()


def test_embedded_broker_carries_messages(tmp_path: Path) -> None:
    broker = EmbeddedBroker(free_port())
    broker.start()
    try:
        got = threading.Event()
        payloads: list[bytes] = []
        sub = _client(broker.host, broker.port, None, None)

        def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
            payloads.append(msg.payload)
            got.set()

        subscribe_to_estates(sub, broker.host, broker.port, on_message)
        pub = _client(broker.host, broker.port, None, None)
        pub.connect(broker.host, broker.port)
        pub.loop_start()
        pub.publish("estates/e/gw/g/telemetry", b"hello", 1).wait_for_publish(5)
        assert got.wait(5)
        assert payloads == [b"hello"]
        assert broker.issue_gateway_credentials("e", "g", "estates") is None
        for c in (pub, sub):
            c.disconnect()
            c.loop_stop()
    finally:
        broker.stop()


def test_mosquitto_that_cannot_start_says_why(tmp_path: Path) -> None:
    taken = ManagedMosquitto(tmp_path / "a", free_port())
    taken.start()
    try:
        second = ManagedMosquitto(tmp_path / "b", taken.port)
        with pytest.raises(RuntimeError, match="did not start"):
            second.start()
    finally:
        taken.stop()
