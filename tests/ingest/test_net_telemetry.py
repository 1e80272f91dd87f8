"""Cluster mode's telemetry store against a real PostgreSQL and a real VictoriaMetrics: the dedup
book moves with the database (a takeover sees the first owner's seqs), raw writes are idempotent
(a replay stores no second point), a fence that says "not the owner" commits nothing, and every
node reads back "now", events, gateway health and charts."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from cluster.partitions import partition_of
from estatewatch.broker import ManagedMosquitto, free_port
from estatewatch.service import Service, StartupError
from estatewatch.settings import SettingsError, load_settings
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
from ingest.telemetry import TelemetryReader, TelemetryWriter
from ingest.victoria import VictoriaMetricsReader
from protocol.catalog import default_catalog
from protocol.messages import Event, Reading
from tests.support import run_env, waiter

pytestmark = pytest.mark.integration
CAT = default_catalog()
PG = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
MINUTE = 60_000
TOKEN = "test-admin-token-0123456789"
wait_for = waiter(every=0.2)


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
    # one point per reading in VictoriaMetrics, though seqs 1-3 reached the store twice
    points = exported(victoriametrics, "e1")
    assert [t for _, t, _ in points] == sorted(m.readings[0].ts for m in replay)
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
def test_the_gap_book_survives_in_order_sends_and_a_late_fill(
    database_url: str, sink: InfluxTelemetrySink, victoriametrics: str
) -> None:
    """A gap stays open while the gateway sends on in order (its gaps are then not rewritten)
    and closes when the missing message arrives late, as a next owner reads it."""
    now = int(time.time() * 1000)
    store = NetworkTelemetryStore(database_url, sink)
    reader = NetworkTelemetryReader(
        store.engine, VictoriaMetricsReader(victoriametrics), lambda e, d: "fire_hydrant"
    )

    def health() -> tuple[int, int, int]:
        h = reader.gateway_health("e11")["gw-01"]
        return h["max_seq"], h["lost_messages"], h["duplicates"]

    store.write([hydrant_batch("e11", 1, now - 9, 0.3), hydrant_batch("e11", 4, now - 8, 0.3)])
    assert health() == (4, 2, 0)
    store.write([hydrant_batch("e11", 5, now - 7, 0.3)])  # in order: the gaps unchanged
    store.write([hydrant_batch("e11", 6, now - 6, 0.3), hydrant_batch("e11", 6, now - 6, 0.3)])
    assert health() == (6, 2, 1)
    store.write([hydrant_batch("e11", 3, now - 5, 0.3)])  # a replay fills one
    store.close()
    successor = NetworkTelemetryStore(database_url, sink)
    offered = [hydrant_batch("e11", seq, now, 0.3) for seq in range(1, 8)]
    assert successor.find_duplicates(offered) == {0, 2, 3, 4, 5}  # seqs 2 and 7 are new
    assert health() == (6, 1, 1)
    successor.close()


class FlakySink:
    """A raw store that refuses writes while ``down`` (as an unreachable VictoriaMetrics)."""

    def __init__(self, real: InfluxTelemetrySink) -> None:
        self.real, self.down, self.calls = real, True, 0

    def write(self, batches: Sequence[EstateBatch]) -> int:
        self.calls += 1
        if self.down:
            raise OSError("connection refused")
        return self.real.write(batches)


@PG
def test_a_failed_raw_write_commits_nothing(
    database_url: str, sink: InfluxTelemetrySink, victoriametrics: str
) -> None:
    """The raw write runs beside the transaction; the commit waits for it, and when it fails
    the transaction rolls back: the seqs never say "stored" for points the store lacks."""
    now = int(time.time() * 1000)
    flaky = FlakySink(sink)
    store = NetworkTelemetryStore(database_url, flaky)
    batch = hydrant_batch("e10", 1, now, 0.3)
    with pytest.raises(OSError, match="refused"):
        store.write([batch])
    assert set(table_counts(database_url).values()) == {0}
    # events need no raw write: an alarm is stored while VictoriaMetrics is down
    alarm = Event("fap-1", "fire_panel", now, "fire.alarm", {"zone": "B2"})
    assert store.write([EstateBatch("e10", "gw-02", events=[alarm], seq=1)]).events == 1
    assert flaky.calls == 1
    flaky.down = False  # the recorder tries the same batch again
    assert store.write([batch]).duplicates == set()
    assert [t for _, t, _ in exported(victoriametrics, "e10")] == [now]
    assert flaky.calls == 2
    store.close()


@PG
def test_retention_forgets_old_seqs_and_keeps_the_book(
    database_url: str, sink: InfluxTelemetrySink
) -> None:
    """The hourly retention job trims the stored seqs by commit (wall) time, as the SQLite
    store's, in chunks; the gateways' book (max seq, gaps, duplicates) stays."""
    now = int(time.time() * 1000)
    store = NetworkTelemetryStore(database_url, sink)
    store.write([hydrant_batch("e8", seq, now - seq, 0.3) for seq in (1, 2, 4)])
    store.purge(now - 86_400_000, 0)  # a day ago: nothing is that old
    assert table_counts(database_url)["telemetry_message_seqs"] == 3
    other = create_engine(database_url)
    with other.begin() as conn:  # another worker is purging: this one leaves it to that one
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('telemetry_purge'))"))
        store.purge(int(time.time() * 1000) + 1, 0)
        assert table_counts(database_url)["telemetry_message_seqs"] == 3
    other.dispose()
    assert store.purge(int(time.time() * 1000) + 1, 0) == 0  # no raw row is deleted here
    counts = table_counts(database_url)
    assert (counts["telemetry_message_seqs"], counts["telemetry_gateway_seqs"]) == (0, 1)
    # the book still knows seq 3 is missing and 4 is the newest: 3 fills the gap, 5 is new
    assert store.find_duplicates([hydrant_batch("e8", 3, now, 0.3)]) == set()
    result = store.write([hydrant_batch("e8", 3, now, 0.3), hydrant_batch("e8", 5, now, 0.3)])
    assert result.duplicates == set()
    assert store.gateway_lost() == {("e8", "gw-01"): 0}
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


def test_cluster_mode_needs_victoriametrics(tmp_path: Path) -> None:
    env = {
        "ESTATEWATCH_PARTITIONS": "8",
        "ESTATEWATCH_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/any",
    }
    with pytest.raises(SettingsError, match=r"networked store.*ESTATEWATCH_TIMESERIES"):
        load_settings(None, env)
    vm = {
        "ESTATEWATCH_TIMESERIES": "victoriametrics",
        "ESTATEWATCH_VICTORIAMETRICS_URL": "http://vm:8428",
    }
    assert load_settings(None, {**env, **vm}).raw_store_url == "http://vm:8428"


@PG
def test_a_worker_built_in_code_without_victoriametrics_refuses_to_start(
    database_url: str, mosquitto: ManagedMosquitto, tmp_path: Path
) -> None:
    """Settings files and the environment are checked when loaded; a Settings made in code
    reaches the service, which says what to set instead of writing telemetry to its disk."""
    env = run_env(
        tmp_path, mosquitto.endpoint, free_port(), TOKEN, ESTATEWATCH_DATABASE_URL=database_url
    )
    settings = dataclasses.replace(load_settings(None, env), partitions=4)
    svc = Service(settings, role="ingest")
    try:
        with pytest.raises(StartupError, match='timeseries = "victoriametrics"'):
            svc.start()
    finally:
        svc.stop()
    assert not list(tmp_path.glob("telemetry*.db"))


@PG
def test_an_api_node_reads_what_a_worker_process_stored(
    database_url: str, mosquitto: ManagedMosquitto, victoriametrics: str, tmp_path: Path
) -> None:
    """A `run --role ingest` worker (its own process, its own data dir) stores a gateway's
    readings; an API-role Service with another data dir answers their latest values and chart
    from PostgreSQL and VictoriaMetrics alone."""
    cluster = {
        "ESTATEWATCH_DATABASE_URL": database_url,
        "ESTATEWATCH_PARTITIONS": "4",
        "ESTATEWATCH_LEASE_TTL_S": "3",
        "ESTATEWATCH_LEASE_RENEW_S": "1",
        "ESTATEWATCH_TIMESERIES": "victoriametrics",
        "ESTATEWATCH_VICTORIAMETRICS_URL": victoriametrics,
        "ESTATEWATCH_COMMIT_INTERVAL_MS": "50",
    }
    api_env = run_env(tmp_path / "api", mosquitto.endpoint, free_port(), TOKEN, **cluster)
    api = Service(load_settings(None, api_env), role="api")
    worker_port = free_port()
    worker_env = run_env(tmp_path / "worker", mosquitto.endpoint, worker_port, TOKEN, **cluster)
    log = tmp_path / "worker.log"
    worker: subprocess.Popen[bytes] | None = None
    try:
        api.start()
        http = httpx.Client(
            base_url=api.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )
        assert http.post("/api/v1/estates", json={"id": "e7", "name": "东苑"}).status_code == 201
        assert http.post("/api/v1/estates/e7/gateways", json={"id": "gw-01"}).status_code == 201
        worker = subprocess.Popen(
            [sys.executable, "-m", "estatewatch.cli", "run", "--role", "ingest", "--shard", "0"],
            env=worker_env,
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )

        def worker_ready() -> bool:
            assert worker is not None and worker.poll() is None, log.read_text()
            try:
                body = httpx.get(f"http://127.0.0.1:{worker_port}/healthz", timeout=2).json()
            except httpx.HTTPError:
                return False
            # it owns every partition (its commits pass the fence), and e7's partition's
            # sessions are subscribed to it (ingest by partition)
            held = body.get("partitions", {}).get("held")
            return bool(held == [0, 1, 2, 3] and body["ingest"]["estates"] == ["e7"])

        wait_for(worker_ready, 60, "the worker to hold the partitions")
        creds = mosquitto.issue_gateway_credentials("e7", "gw-01", "estates")
        assert creds is not None
        now = int(time.time() * 1000)
        samples = [(now - 20 * MINUTE + i * MINUTE, round(0.3 + i / 100, 2)) for i in range(20)]
        body = {
            "v": 1,
            "gw": "gw-01",
            "seq": 1,
            "sent": now,
            "readings": [
                {"dev": "b1-hydrant-1", "kind": "fire_hydrant", "ts": t, "m": {"pressure_mpa": v}}
                for t, v in samples
            ],
        }
        gw = mqtt.Client(CallbackAPIVersion.VERSION2)
        gw.username_pw_set(creds.username, creds.password)
        gw.connect(creds.host, creds.port)
        gw.loop_start()

        def now_shown() -> Any:
            items = http.get("/api/v1/estates/e7/devices").json()["items"]
            return items and items[0]["metrics"].get("pressure_mpa")

        shown = None
        for _ in range(5):  # sent again (same seq) should the worker not have subscribed yet
            gw.publish("estates/e7/gw/gw-01/telemetry", orjson.dumps(body), 1).wait_for_publish(10)
            try:
                shown = wait_for(now_shown, 6, "the API node to show the hydrant")
                break
            except AssertionError:
                continue
        gw.loop_stop()
        gw.disconnect()
        assert shown == samples[-1][1], log.read_text()
        flush(victoriametrics)
        chart = http.get(
            "/api/v1/estates/e7/devices/b1-hydrant-1/telemetry",
            params={"metric": "pressure_mpa", "from": now - 21 * MINUTE, "to": now},
        )
        assert chart.status_code == 200, chart.text
        assert chart.json()["resolution"] == "raw"
        assert [(p["ts"], p["value"]) for p in chart.json()["points"]] == samples
        (gateway,) = http.get("/api/v1/estates/e7/gateways").json()["items"]
        assert (gateway["max_seq"], gateway["lost_messages"]) == (1, 0)
        # nothing of the worker's data dir was read: the API node has no telemetry file
        assert not list((tmp_path / "api").glob("telemetry*.db"))
        assert not list((tmp_path / "worker").glob("telemetry*.db"))
        assert http.get("/healthz").json()["timeseries"]["state"] == "up"
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                worker.kill()
        api.stop()


@PG
def test_a_workers_store_is_fenced_by_its_partition_leases(
    database_url: str, mosquitto: ManagedMosquitto, victoriametrics: str, tmp_path: Path
) -> None:
    """`run --role ingest` in cluster mode writes through this store with the service's lease
    check as its fence: once another worker holds the estate's partition at a newer epoch, the
    old one's write raises NotOwner and leaves nothing in PostgreSQL."""
    env = run_env(
        tmp_path,
        mosquitto.endpoint,
        free_port(),
        TOKEN,
        ESTATEWATCH_DATABASE_URL=database_url,
        ESTATEWATCH_PARTITIONS="4",
        ESTATEWATCH_LEASE_TTL_S="3",
        ESTATEWATCH_LEASE_RENEW_S="1",
        ESTATEWATCH_TIMESERIES="victoriametrics",
        ESTATEWATCH_VICTORIAMETRICS_URL=victoriametrics,
    )
    svc = Service(load_settings(None, env), role="ingest")
    try:
        svc.start()
        assert isinstance(svc.telemetry_writer, NetworkTelemetryStore)
        owner = svc.partitions
        assert owner is not None
        wait_for(lambda: len(owner.held) == 4, 30, "the worker to hold every partition")
        now = int(time.time() * 1000)
        assert svc.telemetry_writer.write([hydrant_batch("e9", 1, now - 1, 0.3)]).readings == 1
        part = partition_of("e9", 4)
        engine = create_engine(database_url)
        with engine.begin() as conn:  # another worker took the partition over
            conn.execute(
                sa.text(
                    "UPDATE cluster_leases SET owner = 'worker-b', epoch = epoch + 1, "
                    "expires_at = clock_timestamp() + interval '1 hour' WHERE partition = :p"
                ),
                {"p": part},
            )
        with pytest.raises(NotOwner) as raised:
            svc.telemetry_writer.write([hydrant_batch("e9", 2, now, 0.4)])
        assert raised.value.estates == {"e9"}
        reader = NetworkTelemetryReader(
            engine, VictoriaMetricsReader(victoriametrics), lambda e, d: "fire_hydrant"
        )
        assert reader.gateway_health("e9")["gw-01"]["max_seq"] == 1
        assert reader.latest("e9") == {"b1-hydrant-1": {"pressure_mpa": (now - 1, 0.3)}}
        engine.dispose()
    finally:
        svc.stop()


class NullSink:
    """A raw store that keeps nothing (the verdicts below do not depend on it)."""

    def write(self, batches: Sequence[EstateBatch]) -> int:
        return sum(len(b.readings) for b in batches)


COMMITS = st.lists(
    st.lists(st.tuples(st.sampled_from(["g1", "g2"]), st.integers(1, 12)), min_size=1, max_size=6),
    min_size=1,
    max_size=5,
)


@PG
def test_the_network_book_judges_as_the_sqlite_one(database_url: str, tmp_path: Path) -> None:
    """Any sequence of commits of (gateway, seq) messages: the same duplicates and the same
    gateway health from this store as from the embedded SQLite one (``TelemetryWriter``)."""
    store = NetworkTelemetryStore(database_url, NullSink())
    reader = NetworkTelemetryReader(
        store.engine, VictoriaMetricsReader("http://unused"), lambda e, d: ""
    )
    now = int(time.time() * 1000)
    runs = iter(range(1_000_000))

    @settings(max_examples=40, deadline=None)
    @given(commits=COMMITS)
    def same_verdicts(commits: list[list[tuple[str, int]]]) -> None:
        run = next(runs)
        estate = f"eq-{run}"
        local = TelemetryWriter(tmp_path / f"t{run}.db")
        try:
            for commit in commits:
                batches = [hydrant_batch(estate, seq, now - seq, 0.3, gw) for gw, seq in commit]
                assert store.write(batches).duplicates == local.write(batches).duplicates
            want = TelemetryReader(tmp_path / f"t{run}.db").gateway_health(estate)
            assert reader.gateway_health(estate) == want
        finally:
            local.close()

    same_verdicts()
    store.close()
