"""Alarm changes on ``estates/{estate}/alerts`` (QoS 1, not retained), for sirens, LED walls
and other systems; plans retained on ``estates/{estate}/plans``.

They go out on :class:`NoticeClient`, an MQTT session of their own, never on ingest's
telemetry lane: under backpressure that lane's network thread blocks (it stops reading so the
broker holds the backlog), and whatever was published on it would wait with it.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from alerts.notify import Notification, NotifyError
from protocol.endpoint import MqttEndpoint
from protocol.failover import Failover, hop

__all__ = ["MqttNotifier", "NoticeClient", "Publish"]

log = logging.getLogger(__name__)

# (topic, payload, retain)
Publish = Callable[[str, bytes, bool], None]


class MqttNotifier:
    def __init__(self, publish: Publish, root: str = "estates", name: str = "mqtt") -> None:
        self._publish = publish
        self.root = root
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def send(self, notification: Notification) -> None:
        body = {"v": 1, "event": notification.event, **notification.payload}
        topic = f"{self.root}/{notification.estate}/alerts"
        self._publish(topic, orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS), False)


class NoticeClient:
    """The notices' own MQTT client: its own network thread, clean session (it subscribes to
    nothing), QoS 1, at most ``max_queued`` notices held while the broker is away (then
    :meth:`publish` raises NotifyError and the outbox retries later). On a clustered broker it
    moves to the next node when its node is lost (protocol/failover.py)."""

    KEEPALIVE_S = 30

    def __init__(
        self,
        endpoint: MqttEndpoint,
        client_id: str = "estatewatch-notices",
        max_queued: int = 10_000,
    ) -> None:
        self.endpoint = endpoint
        self.failover = Failover(endpoint, min_s=0.5, max_s=30.0)
        self.connected = threading.Event()
        self._stopping = False
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        if endpoint.username:
            c.username_pw_set(endpoint.username, endpoint.password)
        if endpoint.tls:
            c.tls_set(ca_certs=endpoint.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        c.max_queued_messages_set(max_queued)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_connect_fail = self._on_connect_fail
        self.client = c

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, rc: object, _p: object) -> None:
        if getattr(rc, "is_failure", False):
            log.warning("notices: broker refused the connection: %s", rc)
            return
        self.failover.connected()
        self.connected.set()

    def _on_disconnect(
        self, c: mqtt.Client, _u: object, _f: object, rc: object, _p: object
    ) -> None:
        self.connected.clear()
        if not self._stopping:
            hop(c, self.failover, self.KEEPALIVE_S)

    def _on_connect_fail(self, c: mqtt.Client, _u: object) -> None:
        if not self._stopping:
            hop(c, self.failover, self.KEEPALIVE_S)

    def start(self, wait_s: float = 5.0) -> None:
        host, port = self.failover.node
        self.client.connect_async(host, port, keepalive=self.KEEPALIVE_S)
        self.client.loop_start()
        if not self.connected.wait(wait_s):
            log.warning("notices: not connected to %s yet; notices wait", self.endpoint.url)

    def stop(self) -> None:
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes, retain: bool) -> None:
        """Queue one notice (QoS 1); its network thread sends it at once, or on reconnect."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            raise NotifyError(f"notices: {self.endpoint.url} is away and the queue is full")
