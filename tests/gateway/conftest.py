"""A subscriber that sees what a gateway delivers to the broker, as the service would."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from estatewatch.broker import ManagedMosquitto

ESTATE, GW = "hohhot-xinhua", "gw-01"


@dataclass
class Received:
    """Every message in arrival order; ``wait`` blocks until a condition on them holds."""

    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def of(self, channel: str) -> list[dict[str, Any]]:
        with self.cond:
            return [m for t, m in self.messages if t.endswith("/" + channel)]

    def wait(self, check: Callable[[Received], bool], timeout: float, what: str) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: check(self), timeout):
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def deduplicated(self) -> list[dict[str, Any]]:
        """Telemetry and event messages, first arrival of each seq; a seq that came twice must
        have come with the same items both times (a resend, never a reuse)."""
        first: dict[int, dict[str, Any]] = {}
        order = []
        for topic, m in list(self.messages):
            if not topic.endswith(("/telemetry", "/events")):
                continue
            items = m.get("readings", m.get("events"))
            if m["seq"] in first:
                prev = first[m["seq"]]
                assert prev.get("readings", prev.get("events")) == items, f"seq {m['seq']} reused"
                continue
            first[m["seq"]] = m
            order.append(m)
        return order


@pytest.fixture
def subscriber(mosquitto: ManagedMosquitto) -> Iterator[Received]:
    """The service's view: a persistent QoS 1 session on the estate's gateway topics."""
    got = Received()
    ep = mosquitto.endpoint
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-service", clean_session=False)
    client.username_pw_set(ep.username, ep.password)
    client.reconnect_delay_set(0.1, 0.5)

    subscribed = threading.Event()

    def on_connect(c: mqtt.Client, *_: object) -> None:
        c.subscribe(f"estates/{ESTATE}/gw/{GW}/#", 1)

    def on_subscribe(*_: object) -> None:
        subscribed.set()

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with got.cond:
            got.messages.append((msg.topic, orjson.loads(msg.payload)))
            got.cond.notify_all()

    client.on_connect = on_connect
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.connect(ep.host, ep.port)
    client.loop_start()
    assert subscribed.wait(10), "the test subscriber could not subscribe"
    yield got
    client.disconnect()
    client.loop_stop()


def readings_of(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for m in messages for r in m.get("readings", [])]


def gateway_config(
    path: Path, mosquitto: ManagedMosquitto, adapter: dict[str, Any], **buffer: Any
) -> Path:
    """A gateway config file with the gateway's own broker credentials."""
    creds = mosquitto.issue_gateway_credentials(ESTATE, GW, "estates")
    lines = [
        "[gateway]",
        f'estate = "{ESTATE}"',
        f'id = "{GW}"',
        f'state_dir = "{path.parent / "gw-state"}"',
        "status_interval_s = 1",
        "poll_interval_s = 0.1",
        "[broker]",
        f'url = "mqtt://{creds.host}:{creds.port}"',
        f'username = "{creds.username}"',
        f'password = "{creds.password}"',
        "reconnect_min_s = 0.2",
        "reconnect_max_s = 1",
        "[buffer]",
        *(f"{k} = {v}" for k, v in buffer.items()),
        "[[adapters]]",
        *(f"{k} = {orjson.dumps(v).decode()}" for k, v in adapter.items()),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path
