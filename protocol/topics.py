"""MQTT topic names of wire contract v1 (CONTRACT.md, "Topics").

Gateway topics are ``{root}/{estate}/gw/{gw}/{channel}``; estate-wide topics are
``{root}/{estate}/alerts`` and ``{root}/{estate}/plans``.
"""

from __future__ import annotations

import functools
import re
import zlib
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "DEFAULT_ROOT",
    "Channel",
    "GatewayTopic",
    "TopicError",
    "alerts_topic",
    "gateway_prefix",
    "gateway_topic",
    "is_valid_id",
    "parse_gateway_topic",
    "plans_topic",
    "service_subscriptions",
]

DEFAULT_ROOT = "estates"

_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class Channel(StrEnum):
    TELEMETRY = "telemetry"
    EVENTS = "events"
    STATUS = "status"
    CMD = "cmd"
    CMD_ACK = "cmd/ack"


class TopicError(ValueError):
    """A topic, topic part or root that does not follow the contract."""


@dataclass(frozen=True, slots=True)
class GatewayTopic:
    estate: str
    gw: str
    channel: Channel


# Channels the service listens to; cmd is the service's own output.
_SERVICE_CHANNELS = (Channel.TELEMETRY, Channel.EVENTS, Channel.STATUS, Channel.CMD_ACK)
_CHANNELS_BY_VALUE = {c.value: c for c in Channel}


def estate_slot(estate: str, slots: int) -> int:
    """Which of ``slots`` an estate falls in: crc32 of its id (stable across processes and
    hosts, unlike ``hash()``). Ingest shards and cluster partitions both split by it, and the
    API nodes route actions by it, so there is one."""
    return zlib.crc32(estate.encode()) % slots if slots > 1 else 0


def is_valid_id(value: str) -> bool:
    """True if ``value`` is an estate/gateway id: ``[a-z0-9][a-z0-9-]{0,62}``."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def _check_id(what: str, value: str) -> None:
    if not is_valid_id(value):
        raise TopicError(f"invalid {what} id {value!r}: must match [a-z0-9][a-z0-9-]{{0,62}}")


def _check_root(root: str) -> None:
    # The root may span levels ("prod/estates") but must be a concrete, publishable prefix.
    if not isinstance(root, str) or not root:
        raise TopicError(f"invalid topic root {root!r}: must be a non-empty string")
    if "+" in root or "#" in root or "\x00" in root:
        raise TopicError(f"invalid topic root {root!r}: must not contain MQTT wildcards")
    if any(level == "" for level in root.split("/")):
        raise TopicError(f"invalid topic root {root!r}: empty topic level")


def gateway_prefix(estate: str, gw: str, root: str = DEFAULT_ROOT) -> str:
    """``{root}/{estate}/gw/{gw}/`` - everything a gateway may publish lives under it."""
    _check_root(root)
    _check_id("estate", estate)
    _check_id("gateway", gw)
    return f"{root}/{estate}/gw/{gw}/"


def gateway_topic(estate: str, gw: str, channel: Channel, root: str = DEFAULT_ROOT) -> str:
    try:
        ch = Channel(channel)
    except ValueError:
        raise TopicError(f"unknown channel {channel!r}") from None
    return gateway_prefix(estate, gw, root) + ch.value


def alerts_topic(estate: str, root: str = DEFAULT_ROOT) -> str:
    _check_root(root)
    _check_id("estate", estate)
    return f"{root}/{estate}/alerts"


def plans_topic(estate: str, root: str = DEFAULT_ROOT) -> str:
    _check_root(root)
    _check_id("estate", estate)
    return f"{root}/{estate}/plans"


@functools.lru_cache(maxsize=4096)  # a gateway publishes on a handful of topics, over and over
def parse_gateway_topic(topic: str, root: str = DEFAULT_ROOT) -> GatewayTopic:
    """Split a gateway topic into estate, gateway and channel; TopicError if it is not one."""
    _check_root(root)
    if not isinstance(topic, str):
        raise TopicError(f"topic must be a string, got {type(topic).__name__}")
    head = root + "/"
    if not topic.startswith(head):
        raise TopicError(f"topic {topic!r} is not under root {root!r}")
    parts = topic[len(head) :].split("/")
    if len(parts) < 4 or parts[1] != "gw":
        raise TopicError(
            f"topic {topic!r} does not have the form {root}/{{estate}}/gw/{{gw}}/{{channel}}"
        )
    estate, gw = parts[0], parts[2]
    if not is_valid_id(estate):
        raise TopicError(f"topic {topic!r}: invalid estate id {estate!r}")
    if not is_valid_id(gw):
        raise TopicError(f"topic {topic!r}: invalid gateway id {gw!r}")
    channel_text = "/".join(parts[3:])
    channel = _CHANNELS_BY_VALUE.get(channel_text)
    if channel is None:
        known = ", ".join(c.value for c in Channel)
        raise TopicError(f"topic {topic!r}: unknown channel {channel_text!r} (known: {known})")
    return GatewayTopic(estate=estate, gw=gw, channel=channel)


def service_subscriptions(root: str = DEFAULT_ROOT) -> list[str]:
    """Topic filters the service subscribes to: every gateway's inbound channels."""
    _check_root(root)
    return [f"{root}/+/gw/+/{ch.value}" for ch in _SERVICE_CHANNELS]
