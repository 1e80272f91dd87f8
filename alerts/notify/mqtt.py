"""Alarm changes on ``estates/{estate}/alerts`` (QoS 1, not retained), for sirens, LED walls
and other systems. The MQTT client is not ours: the service injects its publish callable."""

from __future__ import annotations

from collections.abc import Callable

import orjson

from alerts.notify import Notification

__all__ = ["MqttNotifier", "Publish"]

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
