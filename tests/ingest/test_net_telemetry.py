"""Cluster mode's telemetry store against a real PostgreSQL and a real VictoriaMetrics: the dedup
book moves with the database (a takeover sees the first owner's seqs), raw writes are idempotent
(a replay stores no second point), a fence that says "not the owner" commits nothing, and every
node reads back "now", events, gateway health and charts."""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Iterator
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa

from ingest.influx import InfluxTelemetrySink
from ingest.model import ChartQuery, EstateBatch, NotOwner
from ingest.net_telemetry import (
    NetworkTelemetryReader,
    NetworkTelemetryStore,
    events,
    gateway_seqs,
    latest,
    message_seqs,
)
from ingest.schema import create_engine
from ingest.victoria import VictoriaMetricsReader
from protocol.catalog import default_catalog
from protocol.messages import Event, Reading

pytestmark = pytest.mark.integration
CAT = default_catalog()
PG = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
MINUTE = 60_000


def flush(url: str) -> None:
    # just-written points are searchable once VictoriaMetrics flushed its in-memory buffer
    httpx.get(f"{url}/internal/force_flush", timeout=10).raise_for_status()


def exported(url: str, estate: str) -> list[tuple[str, int, float]]:
    """Every raw point VictoriaMetrics holds for ``estate``: (series name, ts, value)."""
    flush(url)
    # to a day ahead: the default end (now) may leave out the newest points
    end = int(time.time()) + 86_400
    r = httpx.post(
        f"{url}/api/v1/export",
        data={"match[]": f'{{estate="{estate}"}}', "start": "0", "end": str(end)},
        timeout=10,
    )
    r.raise_for_status()
    out = []
    for line in r.content.splitlines():
        row = orjson.loads(line)
        name = row["metric"]["__name__"]
        out += [(name, t, v) for t, v in zip(row["timestamps"], row["values"], strict=True)]
    return sorted(out)


def hydrant_batch(estate: str, seq: int, ts: int, value: float, gw: str = "gw-01") -> EstateBatch:
    return EstateBatch(
        estate,
        gw,
        readings=[Reading("b1-hydrant-1", "fire_hydrant", ts, {"pressure_mpa": value})],
        seq=seq,
    )


@pytest.fixture
def sink(victoriametrics: str) -> Iterator[InfluxTelemetrySink]:
    s = InfluxTelemetrySink(victoriametrics, "unused-token", "estatewatch", "telemetry", CAT)
    yield s
    s.close()


def table_counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                for t in (latest, events, gateway_seqs, message_seqs)
            }
    finally:
        engine.dispose()


@PG
def test_a_takeover_finds_the_first_owners_seqs_and_stores_nothing_twice(
    database_url: str, sink: InfluxTelemetrySink, victoriametrics: str
) -> None:
    now = int(time.time() * 1000)
    first = [
        hydrant_batch("e1", seq, now - (10 - seq) * 1000, 0.3 + seq / 100) for seq in (1, 2, 3)
    ]
    a = NetworkTelemetryStore(database_url, sink)
    done = a.write(first)
    assert (done.readings, done.values, done.duplicates) == (3, 3, set())
    a.close()  # the first owner is gone; its successor opens the same database
    b = NetworkTelemetryStore(database_url, sink)
    replay = [*first, hydrant_batch("e1", 5, now, 0.5)]  # the broker redelivers, then seq 5
    assert b.find_duplicates(replay) == {0, 1, 2}
    result = b.write(replay)
    assert (result.readings, result.duplicates) == (1, {0, 1, 2})
    # one point per reading in the store, though seqs 1-3 were offered twice
    points = exported(victoriametrics, "e1")
    assert [t for _, t, _ in points] == sorted(b.readings[0].ts for b in replay)
    # the book moved with the database: seq 4 is missing, three duplicates were refused
    reader = NetworkTelemetryReader(
        b.engine, VictoriaMetricsReader(victoriametrics), lambda e, d: "fire_hydrant"
    )
    assert reader.gateway_health("e1") == {
        "gw-01": {"max_seq": 5, "lost_messages": 1, "duplicates": 3}
    }
    assert b.gateway_lost() == {("e1", "gw-01"): 1}
    assert reader.count_readings("e1") == 4 and reader.count_readings() == 4
    b.close()


@PG
def test_a_replayed_raw_write_counts_once_in_victoriametrics(
    database_url: str, sink: InfluxTelemetrySink, victoriametrics: str
) -> None:
    """The owner writes the raw points, then its commit is fenced (it lost the lease): nothing
    is committed, and the successor writes the same message again. VictoriaMetrics, with
    -dedup.minScrapeInterval=1ms, keeps one point per series and millisecond."""
    now = int(time.time() * 1000)
    batch = EstateBatch(
        "e2",
        "gw-01",
        readings=[
            Reading("b1-hydrant-1", "fire_hydrant", now - i * 1000, {"pressure_mpa": 0.3 + i / 100})
            for i in range(20)
        ],
        seq=1,
    )
    assert sink.write([batch]) == 20 and sink.write([batch]) == 20  # the sink alone, twice

    def lost_lease(conn: Any, estates: Collection[str]) -> None:
        raise NotOwner(estates, "its lease moved to worker-b")

    old = NetworkTelemetryStore(database_url, sink, fence=lost_lease)
    with pytest.raises(NotOwner):
        old.write([batch])
    old.close()
    new = NetworkTelemetryStore(database_url, sink)
    assert new.write([batch]).duplicates == set()  # nothing of it was committed before
    new.close()
    points = exported(victoriametrics, "e2")
    assert len(points) == 20  # offered four times
    assert [t for _, t, _ in points] == sorted(r.ts for r in batch.readings)


@PG
def test_a_fence_that_says_not_the_owner_rolls_the_whole_write_back(
    database_url: str, sink: InfluxTelemetrySink
) -> None:
    now = int(time.time() * 1000)
    calls: list[tuple[bool, list[str]]] = []
    owner = {"ok": True}

    def fence(conn: sa.Connection, estates: Collection[str]) -> None:
        # first inside the transaction: nothing written yet for these estates
        calls.append((conn.in_transaction(), sorted(estates)))
        if not owner["ok"]:
            raise NotOwner(estates, "lease lost")

    store = NetworkTelemetryStore(database_url, sink, fence=fence)
    alarm = Event("fap-1", "fire_panel", now, "fire.alarm", {"zone": "B2"})
    batches = [
        hydrant_batch("e3", 1, now, 0.31),
        EstateBatch("e4", "gw-09", events=[alarm], seq=7),
    ]
    owner["ok"] = False
    with pytest.raises(NotOwner) as raised:
        store.write(batches)
    assert raised.value.estates == {"e3", "e4"}
    assert calls == [(True, ["e3", "e4"])]
    # no seqs, no gateway book, no latest, no events
    assert table_counts(database_url) == {
        "telemetry_latest": 0,
        "telemetry_events": 0,
        "telemetry_gateway_seqs": 0,
        "telemetry_message_seqs": 0,
    }
    assert store.gateway_lost() == {}
    owner["ok"] = True  # the lease is back (or another owner writes): the same write goes in
    result = store.write(batches)
    assert (result.readings, result.events, result.duplicates) == (1, 1, set())
    assert table_counts(database_url) == {
        "telemetry_latest": 1,
        "telemetry_events": 1,
        "telemetry_gateway_seqs": 2,
        "telemetry_message_seqs": 2,
    }
    store.close()


@PG
def test_a_stale_duplicate_check_is_judged_again_under_the_gateways_lock(
    database_url: str, sink: InfluxTelemetrySink, victoriametrics: str
) -> None:
    """Two owners at once (the old one not yet fenced): each checked the seqs before the other
    committed, so each thinks the messages new. The book rows are locked FOR UPDATE and judged
    again inside the transaction: each message is committed by exactly one of them."""
    now = int(time.time() * 1000)
    batches = [hydrant_batch("e5", seq, now - 100 + seq, 0.3) for seq in range(1, 41)]
    a = NetworkTelemetryStore(database_url, sink)
    b = NetworkTelemetryStore(database_url, sink)
    assert a.find_duplicates(batches) == b.find_duplicates(batches) == set()
    start = threading.Barrier(2)
    results: dict[str, set[int]] = {}

    def run(name: str, store: NetworkTelemetryStore, part: list[EstateBatch]) -> None:
        start.wait()
        results[name] = {part[i].seq or 0 for i in store.write(part, set()).duplicates}

    # a writes all 40; b writes the even ones: whoever commits second finds them stored
    threads = [
        threading.Thread(target=run, args=("a", a, batches)),
        threading.Thread(target=run, args=("b", b, batches[1::2])),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    evens = {s for s in range(2, 41, 2)}
    assert (results["a"] == set() and results["b"] == evens) or (
        results["a"] == evens and (results["b"] == set())
    ), results
    assert table_counts(database_url)["telemetry_message_seqs"] == 40
    health = NetworkTelemetryReader(
        a.engine, VictoriaMetricsReader(victoriametrics), lambda e, d: ""
    )
    assert health.gateway_health("e5") == {
        "gw-01": {"max_seq": 40, "lost_messages": 0, "duplicates": 20}
    }
    a.close()
    b.close()


@PG
def test_latest_events_health_and_charts_read_back_from_any_node(
    database_url: str, sink: InfluxTelemetrySink, victoriametrics: str
) -> None:
    now = int(time.time() * 1000)
    store = NetworkTelemetryStore(database_url, sink)
    samples = [(now - 30 * MINUTE + i * MINUTE, round(0.3 + (i % 7) / 100, 2)) for i in range(30)]
    lift = Reading("lift-1", "elevator", now - 5000, {"door": "open", "floor": 3})
    store.write(
        [
            EstateBatch(
                "e6",
                "gw-01",
                readings=[
                    *(
                        Reading("b1-hydrant-1", "fire_hydrant", t, {"pressure_mpa": v})
                        for t, v in samples
                    ),
                    lift,
                ],
                seq=1,
            ),
            EstateBatch(
                "e6",
                "gw-01",
                events=[Event("fap-1", "fire_panel", now - 1000, "fire.alarm", {"zone": "B2"})],
                seq=3,
            ),
        ]
    )
    # a gateway's backlog arrives late: older than what is stored, it does not become "now"
    store.write([hydrant_batch("e6", 2, now - 60 * MINUTE, 0.99)])
    store.close()
    # an API node: its own engine, nothing of the writer's
    engine = create_engine(database_url)
    kinds = {"b1-hydrant-1": "fire_hydrant", "lift-1": "elevator"}
    reader = NetworkTelemetryReader(
        engine, VictoriaMetricsReader(victoriametrics), lambda e, d: kinds[d]
    )
    assert reader.latest("e6") == {
        "b1-hydrant-1": {"pressure_mpa": samples[-1]},
        "lift-1": {"door": (lift.ts, "open"), "floor": (lift.ts, 3.0)},
    }
    assert reader.latest("e6", ["lift-1"]) == {
        "lift-1": {"door": (lift.ts, "open"), "floor": (lift.ts, 3.0)}
    }
    assert reader.latest("nowhere") == {}
    (event,) = reader.recent_events("e6")
    assert event == {
        "ts": now - 1000,
        "gateway": "gw-01",
        "dev": "fap-1",
        "kind": "fire_panel",
        "type": "fire.alarm",
        "data": {"zone": "B2"},
    }
    assert reader.gateway_health("e6") == {
        "gw-01": {"max_seq": 3, "lost_messages": 0, "duplicates": 0}
    }
    flush(victoriametrics)
    chart = reader.telemetry(
        ChartQuery("e6", "b1-hydrant-1", "pressure_mpa", now - 31 * MINUTE, now, 500, 60_000), now
    )
    assert chart["resolution"] == "raw"
    assert [(p["ts"], p["value"]) for p in chart["points"]] == samples
    hours = reader.hours_with_data("e6", now - 2 * 3_600_000, now + 1)
    assert hours["b1-hydrant-1"] >= 1 and hours["lift-1"] == 1
    # 30 + 1 hydrant values, the lift's two metrics (its text state too)
    assert reader.count_readings("e6") == 33
    engine.dispose()
