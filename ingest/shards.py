"""Static split of estates over ingest processes.

Rules keep per-device state (windows, `for` timers), so every message of an estate must reach
the same process: MQTT shared subscriptions would spread one estate over all of them. Each
process subscribes to the topics of the estates whose id hashes to it.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from ingest.model import ChartQuery
from ingest.telemetry import RawSource, TelemetryReader
from protocol.messages import Value
from protocol.topics import estate_slot


def shard_of(estate: str, shards: int) -> int:
    return estate_slot(estate, shards)


def estate_subscriptions(estate: str, root: str) -> list[str]:
    base = f"{root}/{estate}/gw/+/"
    return [base + c for c in ("telemetry", "events", "status", "cmd/ack")]


class ShardedTelemetryReader:
    """The API's view over the telemetry files of all ingest shards: an estate's data is in
    exactly one of them."""

    def __init__(self, paths: list[Path], raw_source: RawSource | None = None) -> None:
        self.readers = [TelemetryReader(p, raw_source) for p in paths]

    def _for(self, estate: str) -> TelemetryReader:
        return self.readers[shard_of(estate, len(self.readers))]

    def latest(
        self, estate: str, devices: Collection[str] | None = None
    ) -> dict[str, dict[str, tuple[int, Value]]]:
        return self._for(estate).latest(estate, devices)

    def count_readings(self, estate: str | None = None) -> int:
        if estate is None:
            return sum(r.count_readings() for r in self.readers if r.path.exists())
        return self._for(estate).count_readings(estate)

    def recent_events(self, estate: str, limit: int = 100) -> list[dict[str, Any]]:
        return self._for(estate).recent_events(estate, limit)

    def hours_with_data(self, estate: str, from_ms: int, to_ms: int) -> dict[str, int]:
        return self._for(estate).hours_with_data(estate, from_ms, to_ms)

    def gateway_health(self, estate: str) -> dict[str, dict[str, Any]]:
        return self._for(estate).gateway_health(estate)

    def telemetry(self, q: ChartQuery, now: int | None = None) -> dict[str, Any]:
        return self._for(q.estate).telemetry(q, now)
