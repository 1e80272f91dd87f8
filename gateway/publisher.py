"""Publishing per the wire contract: telemetry and event batches with a persisted ``seq``,
QoS 1, a retained status and an ``offline`` Last Will.

This is the walking-skeleton publisher: what the broker has not acknowledged is kept by paho in
memory only. The on-disk store-and-forward buffer comes with the gateway issue.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from protocol.endpoint import MqttEndpoint
from protocol.messages import (
    MAX_ITEMS,
    Event,
    Reading,
    encode_events,
    encode_status,
    encode_telemetry,
)
from protocol.topics import Channel, gateway_topic

log = logging.getLogger(__name__)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class SeqCounter:
    """The per-gateway message sequence number, kept in a file so a restart never reuses one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._last = int(path.read_text().strip() or 0)
        except FileNotFoundError:
            self._last = 0
        self._lock = threading.Lock()

    @property
    def last(self) -> int:
        return self._last

    def next(self) -> int:
        with self._lock:
            self._last += 1
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(str(self._last))
            os.replace(tmp, self.path)  # atomic: a crash leaves the old or the new number
            return self._last


class GatewayPublisher:
    def __init__(
        self,
        estate: str,
        gw: str,
        endpoint: MqttEndpoint,
        state_dir: Path,
        root: str = "estates",
        fw: str = "estatewatch-gateway 0.1",
        max_inflight: int = 100,
    ) -> None:
        self.estate, self.gw, self.root, self.fw = estate, gw, root, fw
        self.endpoint = endpoint
        self.seq = SeqCounter(state_dir / f"{estate}.{gw}.seq")
        self._connected = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"gw-{estate}-{gw}",
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        if endpoint.username:
            self.client.username_pw_set(endpoint.username, endpoint.password)
        if endpoint.tls:
            self.client.tls_set(ca_certs=endpoint.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        self.client.max_inflight_messages_set(max_inflight)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.will_set(
            self.topic(Channel.STATUS), encode_status(gw, "offline", now_ms(), fw=fw), 1, True
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect

    def topic(self, channel: Channel) -> str:
        return gateway_topic(self.estate, self.gw, channel, self.root)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, reason: object, _p: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            log.error(
                "gateway %s/%s: broker refused the connection: %s", self.estate, self.gw, reason
            )
            return
        client.publish(
            self.topic(Channel.STATUS),
            encode_status(self.gw, "online", now_ms(), fw=self.fw, buffered=0),
            1,
            True,
        )
        self._connected.set()

    def _on_disconnect(self, *_args: object) -> None:
        self._connected.clear()

    def start(self, wait_s: float = 10.0) -> bool:
        self.client.connect_async(self.endpoint.host, self.endpoint.port, keepalive=30)
        self.client.loop_start()
        return self._connected.wait(wait_s)

    def publish_telemetry(self, readings: Sequence[Reading]) -> list[mqtt.MQTTMessageInfo]:
        infos = []
        for i in range(0, len(readings), MAX_ITEMS):
            payload = encode_telemetry(
                self.gw, self.seq.next(), now_ms(), readings[i : i + MAX_ITEMS]
            )
            infos.append(self.client.publish(self.topic(Channel.TELEMETRY), payload, 1))
        return infos

    def publish_events(self, events: Sequence[Event]) -> list[mqtt.MQTTMessageInfo]:
        infos = []
        for i in range(0, len(events), MAX_ITEMS):
            payload = encode_events(self.gw, self.seq.next(), now_ms(), events[i : i + MAX_ITEMS])
            infos.append(self.client.publish(self.topic(Channel.EVENTS), payload, 1))
        return infos

    def stop(self) -> None:
        """Announce ``offline`` (retained) and disconnect cleanly."""
        if self.connected:
            info = self.client.publish(
                self.topic(Channel.STATUS),
                encode_status(self.gw, "offline", now_ms(), fw=self.fw),
                1,
                True,
            )
            info.wait_for_publish(5)
        self.client.disconnect()
        self.client.loop_stop()
