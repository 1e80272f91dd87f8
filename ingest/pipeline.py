"""Judging one MQTT message: the pure core of ingest.

A message is decoded once and split into what is stored (valid readings and events, a gateway
status) and what is dead-lettered (the whole message, or single bad items of a batch). No I/O:
the caller says which gateways are registered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import orjson

from ingest.model import DeadLetter, EstateBatch
from protocol.catalog import Catalog
from protocol.messages import (
    MAX_FUTURE_MS,
    CommandAck,
    MessageRejected,
    Reason,
    Reject,
    Status,
    decode_command_ack,
    decode_events,
    decode_status,
    decode_telemetry,
)
from protocol.topics import Channel, TopicError, parse_gateway_topic


class Registry(Protocol):
    """Which estates and gateways may publish."""

    def has_estate(self, estate: str) -> bool: ...
    def has_gateway(self, estate: str, gw: str) -> bool: ...


@dataclass(slots=True)
class Delivery:
    """What became of one message."""

    topic: str
    received_ms: int
    estate: str | None = None
    gateway: str | None = None
    seq: int | None = None
    batch: EstateBatch | None = None
    status: Status | None = None
    command_ack: CommandAck | None = None
    dead_letters: list[DeadLetter] = field(default_factory=list)

    @property
    def reading_count(self) -> int:
        return len(self.batch.readings) if self.batch else 0


def _item_letter(
    topic: str, received_ms: int, estate: str, gw: str, reject: Reject, payload: bytes
) -> DeadLetter:
    # A bad item of a batch is kept on its own; a whole-message reject keeps the payload (the
    # store keeps its head, size and hash).
    if reject.index is None:
        body = payload
    else:
        try:
            body = orjson.dumps(reject.item)
        except TypeError:  # too deep to encode again (orjson stops at 254 levels)
            body = payload
    return DeadLetter(
        received_ms, topic, reject.reason.value, reject.detail, body, estate, gw, reject.index
    )


def judge(
    topic: str,
    payload: bytes,
    received_ms: int,
    registry: Registry,
    catalog: Catalog,
    root: str = "estates",
    max_future_ms: int = MAX_FUTURE_MS,
) -> Delivery:
    """``max_future_ms``: how far ahead of its arrival a timestamp may be (the service's
    allowed clock skew; the contract's one day at most): later is dead-lettered, so no
    stored reading is later than the wall clock plus the skew."""
    d = Delivery(topic=topic, received_ms=received_ms)
    try:
        t = parse_gateway_topic(topic, root)
    except TopicError as exc:
        d.dead_letters.append(
            DeadLetter(received_ms, topic, Reason.BAD_TOPIC.value, str(exc), payload)
        )
        return d
    d.estate, d.gateway = t.estate, t.gw

    def letter(reason: Reason, detail: str) -> Delivery:
        d.dead_letters.append(
            DeadLetter(received_ms, topic, reason.value, detail, payload, t.estate, t.gw)
        )
        return d

    if t.channel == Channel.CMD:
        return d  # our own commands to gateways echo back on a wildcard; nothing to store
    if not registry.has_gateway(t.estate, t.gw):
        if registry.has_estate(t.estate):
            return letter(
                Reason.UNKNOWN_GATEWAY,
                f"gateway {t.gw!r} is not registered in estate {t.estate!r}; "
                "register it (POST /api/v1/estates/{estate}/gateways) before it publishes",
            )
        return letter(
            Reason.UNKNOWN_ESTATE,
            f"estate {t.estate!r} is not registered; register it (POST /api/v1/estates) first",
        )
    try:
        if t.channel == Channel.TELEMETRY:
            tb = decode_telemetry(payload, t.gw, received_ms, catalog, max_future_ms)
            d.seq = tb.seq
            d.batch = EstateBatch(t.estate, t.gw, readings=tb.readings, seq=tb.seq)
            rejects = tb.rejects
        elif t.channel == Channel.EVENTS:
            eb = decode_events(payload, t.gw, received_ms, catalog, max_future_ms)
            d.seq = eb.seq
            d.batch = EstateBatch(t.estate, t.gw, events=eb.events, seq=eb.seq)
            rejects = eb.rejects
        elif t.channel == Channel.STATUS:
            d.status = decode_status(payload, t.gw, received_ms, max_future_ms)
            return d
        else:
            d.command_ack = decode_command_ack(payload)
            return d
    except MessageRejected as exc:
        return letter(exc.reason, exc.detail)
    for rej in rejects:
        d.dead_letters.append(_item_letter(topic, received_ms, t.estate, t.gw, rej, payload))
    return d
