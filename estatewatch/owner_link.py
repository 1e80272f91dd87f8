"""Requests to an estate's owner and their replies over the shared broker (issue 16).

MQTT 3.1.1 has no response topic or correlation data, so both travel in the payload:

- request on ``{root}/_owners/{address}/req`` (QoS 1):
  ``{"v": 1, "id": <correlation id>, "reply_to": <topic>, "ttl_ms": …, "action", "args", "by"}``
- reply on the asking node's own topic ``{root}/_owners/_reply/{node}`` (QoS 1):
  ``{"v": 1, "id": <the request's id>, "status": 200, "body": …}`` or ``…, "error": {…}``

``_owners`` cannot be an estate id (the contract's ids are ``[a-z0-9][a-z0-9-]*``), and a
gateway may publish only under its own ``{root}/{estate}/gw/{gw}/`` and read only its ``cmd``
(the broker's ACL), so only service accounts ask or answer here.

One ``OwnerLink`` per process: a clean MQTT session of its own (subscriptions renewed on every
connect), never ingest's lanes. Bounded everywhere: at most ``max_waiting`` requests of this
node wait for replies (more: refused at once), an owner holds at most ``max_queued`` requests
(more: answered 503 busy at once), and a request that waited in the owner's queue longer than
its ``ttl_ms`` (its caller has given up) is dropped unapplied. Requests are applied one at a
time on the ``owner-requests`` thread, in arrival order (the engine takes one step at a time
anyway); the network thread only queues them.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from alerts.notify.mqtt import NoticeClient
from protocol.endpoint import MqttEndpoint

__all__ = ["OwnerLink", "live_topic", "reply_topic", "request_topic"]

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], dict[str, Any]]
OnLive = Callable[[str, str, dict[str, Any]], None]  # (estate, event, data), as LiveHub.publish
MAX_PAYLOAD = 1 << 20  # bytes of one request or reply; an alarm with its detail is far less


def request_topic(root: str, address: str) -> str:
    return f"{root}/_owners/{address}/req"


def reply_topic(root: str, node: str) -> str:
    return f"{root}/_owners/_reply/{node}"


def live_topic(root: str) -> str:
    """Owners' alarm, plan and command changes, for the API nodes' live streams (QoS 0)."""
    return f"{root}/_owners/_live"


class OwnerLink:
    """``request(address, body, timeout_s)`` asks an owner and waits for its reply;
    ``serve(address)`` answers the requests to an address with ``handler``."""

    def __init__(
        self,
        endpoint: MqttEndpoint,
        node: str,
        root: str = "estates",
        handler: Handler | None = None,
        max_waiting: int = 1000,
        max_queued: int = 256,
        on_live: OnLive | None = None,
    ) -> None:
        self.endpoint, self.node, self.root = endpoint, node, root
        self.handler = handler
        self.on_live = on_live
        self._live = live_topic(root)
        self.max_waiting = max_waiting
        self._replies = reply_topic(root, node)
        self._served: set[str] = set()
        self._waiting: dict[str, tuple[threading.Event, list[dict[str, Any]]]] = {}
        self._lock = threading.Lock()
        self._inbox: queue.Queue[tuple[float, dict[str, Any]] | None] = queue.Queue(max_queued)
        self._worker: threading.Thread | None = None
        # the service's own kind of session (as the notices'): clean, QoS 1, bounded
        self.session = NoticeClient(
            endpoint, f"estatewatch-owners-{node}", max_queued=max_waiting + max_queued
        )
        self.connected = self.session.connected
        self.client = self.session.client
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self, wait_s: float = 5.0) -> None:
        if self.handler is not None:
            self._worker = threading.Thread(target=self._work, name="owner-requests", daemon=True)
            self._worker.start()
        self.session.start(wait_s)

    def stop(self) -> None:
        self.session.stop()
        if self._worker is not None:
            with contextlib.suppress(queue.Full):  # a daemon thread: it ends with the process
                self._inbox.put_nowait(None)
            self._worker.join(5)

    def serve(self, address: str) -> None:
        """Answer requests to ``address`` (a shard now; a partition once leases are wired)."""
        with self._lock:
            self._served.add(address)
        if self.connected.is_set():
            self.client.subscribe(request_topic(self.root, address), qos=1)

    def unserve(self, address: str) -> None:
        with self._lock:
            self._served.discard(address)
        self.client.unsubscribe(request_topic(self.root, address))

    def serves(self, address: str) -> bool:
        with self._lock:
            return address in self._served

    def _on_connect(self, c: mqtt.Client, u: object, f: object, rc: object, p: object) -> None:
        """On every connect (a clean session): our replies and the addresses we serve."""
        self.session._on_connect(c, u, f, rc, p)
        if not self.connected.is_set():
            return  # refused; the session logged why
        with self._lock:
            topics = [self._replies, *(request_topic(self.root, a) for a in self._served)]
        if self.on_live is not None:
            topics.append(self._live)
        c.subscribe([(t, 1) for t in topics])

    # --- asking --------------------------------------------------------------------------------
    def request(
        self, address: str, body: dict[str, Any], timeout_s: float
    ) -> dict[str, Any] | None:
        """The owner's reply, or None when none came within ``timeout_s`` (or the broker is
        away, or too many requests of this node wait already)."""
        if not self.connected.is_set():
            return None
        rid = uuid.uuid4().hex
        done: tuple[threading.Event, list[dict[str, Any]]] = (threading.Event(), [])
        with self._lock:
            if len(self._waiting) >= self.max_waiting:
                log.warning("owners: %d requests wait already; refusing", self.max_waiting)
                return None
            self._waiting[rid] = done
        try:
            msg = {
                **body,
                "v": 1,
                "id": rid,
                "reply_to": self._replies,
                "ttl_ms": int(timeout_s * 1000),
            }
            info = self.client.publish(request_topic(self.root, address), orjson.dumps(msg), 1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return None
            done[0].wait(timeout_s)
            return done[1][0] if done[1] else None
        finally:
            with self._lock:
                self._waiting.pop(rid, None)

    # --- both sides ----------------------------------------------------------------------------
    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        if len(msg.payload) > MAX_PAYLOAD:
            log.warning("owners: %d bytes on %s: too large, dropped", len(msg.payload), msg.topic)
            return
        try:
            data = orjson.loads(msg.payload)
        except orjson.JSONDecodeError:
            log.warning("owners: not JSON on %s, dropped", msg.topic)
            return
        if msg.topic == self._live:
            self._told(data)
            return
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            log.warning("owners: no id on %s, dropped", msg.topic)
            return
        if msg.topic == self._replies:
            with self._lock:
                waiting = self._waiting.get(data["id"])
            if waiting is not None and not waiting[1]:  # a late or second reply is dropped
                waiting[1].append(data)
                waiting[0].set()
            return
        if self.handler is None:
            return
        try:
            self._inbox.put_nowait((time.monotonic(), data))
        except queue.Full:
            busy = {"code": "owner_busy", "message": "the owner is busy; try again shortly"}
            self._reply(data, {"status": 503, "error": busy})

    # --- live changes --------------------------------------------------------------------------
    def tell(self, estate: str, event: str, data: dict[str, Any]) -> None:
        """An owner's alarm, plan or command change, for every API node's live stream. QoS 0:
        a frame lost is a change the page shows at its next read, as for a dropped stream."""
        body = {"estate": estate, "event": event, "data": data}
        self.client.publish(self._live, orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS), 0)

    def _told(self, data: Any) -> None:
        if self.on_live is None or not isinstance(data, dict):
            return
        estate, event, change = data.get("estate"), data.get("event"), data.get("data")
        if isinstance(estate, str) and isinstance(event, str) and isinstance(change, dict):
            self.on_live(estate, event, change)

    def _work(self) -> None:
        assert self.handler is not None
        while (item := self._inbox.get()) is not None:
            received, data = item
            ttl = data.get("ttl_ms")
            waited_ms = (time.monotonic() - received) * 1000
            if isinstance(ttl, int) and waited_ms > ttl:
                log.warning("owners: %s waited %.0f ms, its caller gave up: not applied",
                            data.get("action"), waited_ms)  # fmt: skip
                continue
            self._reply(data, self.handler(data))

    def _reply(self, request: dict[str, Any], answer: dict[str, Any]) -> None:
        to = request.get("reply_to")
        if not isinstance(to, str) or not to.startswith(f"{self.root}/_owners/_reply/"):
            log.warning("owners: a request without a reply topic of ours, not answered")
            return
        body = orjson.dumps({**answer, "v": 1, "id": request["id"]}, option=orjson.OPT_NON_STR_KEYS)
        self.client.publish(to, body, 1)
