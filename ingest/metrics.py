"""Prometheus metrics of ingest, read from its counters at scrape time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ingest.consumer import Ingest

RATE_WINDOW_S = 10.0


class IngestCollector(Collector):
    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    def collect(self) -> Iterator[Metric]:
        st = self.ingest.stats
        counters: list[tuple[str, str, float]] = [
            ("messages", "MQTT messages received", st.received),
            (
                "committed_messages",
                "messages whose content is committed (then acknowledged)",
                st.committed_messages,
            ),
            ("readings", "valid readings stored", st.readings),
            ("events", "valid events stored", st.events),
            (
                "duplicates",
                "messages dropped as already stored (same gateway and seq)",
                st.duplicates,
            ),
            (
                "commit_failures",
                "store calls that failed (retried when the store failed, else split)",
                st.commit_failures,
            ),
            (
                "poison_messages",
                "messages the store refused on their own: dead-lettered (store_refused), "
                "acknowledged",
                st.poison_messages,
            ),
        ]
        for name, doc, value in counters:
            yield CounterMetricFamily(f"estatewatch_ingest_{name}", doc, value=value)
        c = CounterMetricFamily(
            "estatewatch_ingest_rejects",
            "dead letters: messages or readings not stored",
            labels=["reason"],
        )
        for reason, n in sorted(st.dead_letter_counts().items()):
            c.add_metric([reason], n)
        yield c
        health = self.ingest.writer_health()
        msg_rate, reading_rate = st.rates(time.monotonic(), RATE_WINDOW_S)
        gauges: list[tuple[str, str, float]] = [
            (
                "ingest_writer_ok",
                "1 while the writer commits: not retrying a failing store, not stuck in a batch",
                1.0 if health["ok"] else 0.0,
            ),
            (
                "ingest_writer_retrying_seconds",
                "how long the writer has been retrying a failing store (0 when it is not)",
                health["retrying_s"],
            ),
            (
                "ingest_writer_busy_seconds",
                "time since the writer last finished a batch or was idle",
                health["busy_s"],
            ),
            (
                "ingest_messages_per_second",
                f"messages committed per second over the last {RATE_WINDOW_S:g} s",
                msg_rate,
            ),
            (
                "ingest_readings_per_second",
                f"readings stored per second over the last {RATE_WINDOW_S:g} s",
                reading_rate,
            ),
            (
                "ingest_queue_depth",
                "messages waiting between the MQTT thread and the store writer",
                self.ingest.queue_depth,
            ),
            ("ingest_queue_capacity", "bound of that queue", self.ingest.queue_capacity),
            (
                "ingest_queued_bytes",
                "undecoded payload bytes held between the MQTT threads and the store writer",
                self.ingest.queued_bytes,
            ),
            (
                "broker_connected",
                "1 while connected to the broker",
                1.0 if self.ingest.connected else 0.0,
            ),
        ]
        if st.last_commit_ms is not None:
            age = max(0.0, time.time() - st.last_commit_ms / 1000)
            gauges.append(
                ("ingest_last_commit_age_seconds", "time since the last successful commit", age)
            )
        for name, doc, value in gauges:
            yield GaugeMetricFamily(f"estatewatch_{name}", doc, value=value)
        lost = GaugeMetricFamily(
            "estatewatch_gateway_lost_messages",
            "messages missing from the gateway's seq (gaps not replayed)",
            labels=["estate", "gateway"],
        )
        seen = GaugeMetricFamily(
            "estatewatch_gateway_last_seen_seconds",
            "when the gateway's last message arrived (unix time)",
            labels=["estate", "gateway"],
        )
        for (estate, gw), n in sorted(st.gateway_lost.items()):
            lost.add_metric([estate, gw], n)
        for (estate, gw), ms in sorted(st.last_seen().items()):
            seen.add_metric([estate, gw], ms / 1000)
        yield lost
        yield seen


def ingest_registry(ingest: Ingest) -> tuple[CollectorRegistry, Histogram]:
    """A registry of its own per service (tests run several in one process)."""
    registry = CollectorRegistry()
    registry.register(IngestCollector(ingest))
    commit_seconds = Histogram(
        "estatewatch_ingest_commit_seconds",
        "time to commit one batch of messages",
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        registry=registry,
    )
    return registry, commit_seconds
