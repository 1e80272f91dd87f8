"""The writer against messages a store refuses (issue 12): a commit that fails for the data is
split until the message at fault is alone, which is dead-lettered and acknowledged; a store
that fails itself is retried, never dead-lettered; the writer's health says which; a stop does
not wait for a failing store.

The faults are real: SQLite's OverflowError on an integer beyond 64 bits, orjson's recursion
limit, a read-only SQLite connection. The messages reach the writer already judged, with what
the decoder (which bounds all of this now) would have let through before."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ingest.consumer import STORE_REFUSED, Ingest, Received, is_transient
from ingest.pipeline import Delivery
from ingest.state import DeadLetter, StateStore
from ingest.telemetry import EstateBatch, TelemetryReader, TelemetryWriter
from protocol.catalog import default_catalog
from protocol.endpoint import MqttEndpoint
from protocol.messages import Event, Reading, Status

NOW = int(time.time() * 1000)


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.state = StateStore.open(f"sqlite:///{tmp_path / 's.db'}")
        for estate in ("e1", "e2", "e3"):
            self.state.add_estate(estate, estate)
            self.state.add_gateway(estate, "gw-01")
        self.path = tmp_path / "t.db"
        self.writer = TelemetryWriter(self.path)
        # port 1: nothing listens; these tests hand messages to the writer themselves
        self.ingest = Ingest(
            MqttEndpoint("127.0.0.1", 1), self.state, self.writer, default_catalog()
        )
        self.ingest.stats.samples.append((time.monotonic(), 0, 0))

    def item(self, delivery: Delivery, events: bool = False) -> Received:
        lane = self.ingest.events_lane if events else self.ingest.telemetry_lane
        item = Received(delivery.topic, b"{}", NOW, 1, 1, 0, lane, 100)
        item.delivery = delivery
        lane.budget.used += item.weight
        return item

    def readings(self, estate: str) -> dict[str, Any]:
        return TelemetryReader(self.path).latest(estate)

    def letters(self) -> list[dict[str, Any]]:
        return self.state.list_dead_letters()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.writer.close()
    w.state.close()


def telemetry(estate: str, seq: int, dev: str = "h-1", pressure: float = 0.3) -> Delivery:
    reading = Reading(dev, "fire_hydrant", NOW, {"pressure_mpa": pressure})
    batch = EstateBatch(estate, "gw-01", readings=[reading], seq=seq)
    topic = f"estates/{estate}/gw/gw-01/telemetry"
    return Delivery(topic, NOW, estate, "gw-01", seq, batch=batch)


def status(estate: str, buffered: int) -> Delivery:
    st = Status("gw-01", "online", NOW, "1.0", buffered, {})
    return Delivery(f"estates/{estate}/gw/gw-01/status", NOW, estate, "gw-01", status=st)


def deep_event(estate: str, seq: int, depth: int = 300) -> Delivery:
    data: dict[str, Any] = {}
    for _ in range(depth):
        data = {"a": data}
    event = Event("lift-1", "elevator", NOW, "elevator.trapped", data)
    batch = EstateBatch(estate, "gw-01", events=[event], seq=seq)
    return Delivery(f"estates/{estate}/gw/gw-01/events", NOW, estate, "gw-01", seq, batch=batch)


def test_poison_messages_are_found_alone_dead_lettered_and_the_rest_committed(
    world: World,
) -> None:
    pending = [
        world.item(telemetry("e1", 1)),
        world.item(status("e2", 2**63)),  # OverflowError in SQLite (state database)
        world.item(telemetry("e3", 1, "h-3")),
        world.item(telemetry("e2", 2**63)),  # OverflowError in SQLite (the seq book)
        world.item(telemetry("e1", 2, "h-2", 0.4)),
        world.item(status("e3", 5)),
    ]
    assert world.ingest.recorder.commit(pending) is True
    letters = world.letters()
    assert sorted((x["reason"], x["topic"]) for x in letters) == [
        (STORE_REFUSED, "estates/e2/gw/gw-01/status"),
        (STORE_REFUSED, "estates/e2/gw/gw-01/telemetry"),
    ]
    assert all("OverflowError" in x["detail"] for x in letters)
    assert set(world.readings("e1")) == {"h-1", "h-2"}
    assert set(world.readings("e3")) == {"h-3"}
    assert world.readings("e2") == {}
    assert world.state.get_gateway("e3", "gw-01")["buffered"] == 5
    stats = world.ingest.stats
    assert stats.poison_messages == 2 and stats.dead_letters[STORE_REFUSED] == 2
    assert stats.committed_messages == 4 and stats.failing_since is None
    assert world.ingest.writer_health()["state"] != "retrying"
    # what goes on to the listeners: the stored ones, in order
    stored = [p.delivery for p in pending if p.outcome is not None and p.outcome.name == "STORED"]
    assert [d.topic for d in stored] == [pending[i].topic for i in (0, 2, 4, 5)]


def test_an_event_too_deep_to_encode_is_dead_lettered_beside_a_good_event(world: World) -> None:
    pending = [
        world.item(deep_event("e1", 1), events=True),
        world.item(deep_event("e1", 2, depth=3), events=True),
    ]
    assert world.ingest.recorder.commit(pending) is True
    assert [x["reason"] for x in world.letters()] == [STORE_REFUSED]
    events = TelemetryReader(world.path).recent_events("e1")
    assert [e["data"] for e in events] == [{"a": {"a": {"a": {}}}}]
    # the seq of the refused message is not taken: nothing else of it is stored either
    assert world.writer.seqs.get("e1", "gw-01").max_seq == 2


def test_series_made_by_a_rolled_back_commit_are_made_again(world: World) -> None:
    # both messages bring a new series; the commit of both rolls back, so SQLite hands the
    # same series ids out again: a cached id would then name another device's series
    pending = [world.item(telemetry("e1", 1, "h-new")), world.item(telemetry("e1", 2**63, "x"))]
    assert world.ingest.recorder.commit(pending) is True
    later = [world.item(telemetry("e1", 3, "h-other", 0.9))]
    assert world.ingest.recorder.commit(later) is True
    latest = world.readings("e1")
    assert latest["h-new"]["pressure_mpa"][1] == pytest.approx(0.3)
    assert latest["h-other"]["pressure_mpa"][1] == pytest.approx(0.9)


def test_a_store_that_fails_itself_is_retried_not_dead_lettered(world: World) -> None:
    world.writer.conn.execute("PRAGMA query_only = 1")  # sqlite3.OperationalError on writes
    pending = [world.item(telemetry("e1", 1)), world.item(telemetry("e2", 1))]
    for _ in range(3):
        assert world.ingest.recorder.commit(pending) is False
    assert world.letters() == []
    assert all(p.outcome is None for p in pending)
    health = world.ingest.writer_health()
    assert health["state"] in ("retrying", "stopped") and health["ok"] is False
    assert world.ingest.stats.failing_since is not None
    assert "readonly" in (health["last_error"] or "")
    world.writer.conn.execute("PRAGMA query_only = 0")
    assert world.ingest.recorder.commit(pending) is True
    assert set(world.readings("e1")) == {"h-1"} and set(world.readings("e2")) == {"h-1"}
    assert world.letters() == [] and world.ingest.stats.failing_since is None


def test_dead_letters_are_not_written_again_on_a_retry(world: World) -> None:
    d = telemetry("e1", 1)
    d.dead_letters.append(DeadLetter(NOW, d.topic, "out_of_range", "reading 1", b"{}", "e1"))
    pending = [world.item(d)]
    world.writer.conn.execute("PRAGMA query_only = 1")
    assert world.ingest.recorder.commit(pending) is False
    assert world.ingest.recorder.commit(pending) is False
    world.writer.conn.execute("PRAGMA query_only = 0")
    assert world.ingest.recorder.commit(pending) is True
    assert [x["reason"] for x in world.letters()] == ["out_of_range"]


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (sqlite3.OperationalError("database is locked"), True),
        (sqlite3.OperationalError("database or disk is full"), True),
        (sa.exc.OperationalError("INSERT", {}, Exception("server closed the connection")), True),
        (ConnectionRefusedError(), True),
        (OverflowError("Python int too large to convert to SQLite INTEGER"), False),
        (TypeError("Recursion limit reached"), False),
        (sqlite3.IntegrityError("NOT NULL constraint failed"), False),
        (sa.exc.DataError("INSERT", {}, Exception("value out of range")), False),
        (sa.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("locked")), True),
        (sa.exc.InterfaceError("INSERT", {}, sqlite3.InterfaceError("binding")), False),
        (sa.exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE")), False),
        (ValueError("bad"), False),
    ],
)
def test_failures_are_told_apart(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_http_store_statuses_are_told_apart() -> None:
    class ApiError(Exception):
        def __init__(self, status: int) -> None:
            self.status = status

    assert is_transient(ApiError(503)) and is_transient(ApiError(429))
    assert is_transient(ApiError(401))  # a token problem is the store's, not the data's
    assert not is_transient(ApiError(400)) and not is_transient(ApiError(422))
    try:
        try:
            raise sqlite3.OperationalError("database is locked")
        except sqlite3.OperationalError as inner:
            raise RuntimeError("commit failed") from inner
    except RuntimeError as outer:
        assert is_transient(outer)  # the cause decides


def test_stop_does_not_wait_for_a_failing_store(world: World) -> None:
    ingest = world.ingest
    ingest.start(wait_s=0)
    world.writer.conn.execute("PRAGMA query_only = 1")
    from protocol.messages import encode_telemetry

    payload = encode_telemetry(
        "gw-01", 1, NOW, [Reading("h-1", "fire_hydrant", NOW, {"pressure_mpa": 0.3})]
    )
    lane = ingest.telemetry_lane
    lane.budget.used += len(payload)
    lane.queue.put(
        Received("estates/e1/gw/gw-01/telemetry", payload, NOW, 1, 1, 0, lane, len(payload))
    )
    deadline = time.monotonic() + 10
    while ingest.stats.commit_failures < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ingest.stats.commit_failures >= 2  # retrying
    assert ingest.writer_health()["state"] == "retrying"
    started = time.monotonic()
    assert ingest.stop() is True
    assert time.monotonic() - started < 5  # was: the join timeouts, 30 s each
    world.writer.conn.execute("PRAGMA query_only = 0")
    assert world.letters() == [] and world.readings("e1") == {}  # unacknowledged, not lost


def test_health_says_stalled_while_the_writer_is_stuck_in_one_batch(world: World) -> None:
    ingest = world.ingest
    ingest.stall_s = 0.3
    ingest.start(wait_s=0)
    try:
        time.sleep(0.2)
        assert ingest.writer_health()["state"] == "ok"
        release = threading.Event()
        done = ingest.run_maintenance(lambda: release.wait(10))
        deadline = time.monotonic() + 5
        while ingest.writer_health()["state"] != "stalled" and time.monotonic() < deadline:
            time.sleep(0.05)
        health = ingest.writer_health()
        assert health["state"] == "stalled" and health["ok"] is False
        release.set()
        done.result(5)
        time.sleep(0.2)
        assert ingest.writer_health()["ok"] is True
    finally:
        ingest.stop()
    assert ingest.writer_health()["state"] == "stopped"


def test_influxdb_down_is_retried_not_dead_lettered(tmp_path: Path) -> None:
    """The raw sink unreachable (nothing listens on its port): the store's failure, retried."""
    from estatewatch.broker import free_port
    from ingest.influx import InfluxTelemetrySink

    sink = InfluxTelemetrySink(
        f"http://127.0.0.1:{free_port()}", "t", "o", "b", default_catalog(), 1000, retries=0
    )
    state = StateStore.open(f"sqlite:///{tmp_path / 's.db'}")
    state.add_estate("e1", "e1")
    state.add_gateway("e1", "gw-01")
    writer = TelemetryWriter(tmp_path / "t.db", raw_sink=sink)
    ingest = Ingest(MqttEndpoint("127.0.0.1", 1), state, writer, default_catalog())
    item = Received("estates/e1/gw/gw-01/telemetry", b"{}", NOW, 1, 1, 0, ingest.telemetry_lane, 1)
    item.delivery = telemetry("e1", 1)
    batch = item.delivery.batch
    assert batch is not None
    try:
        with pytest.raises(Exception) as exc:
            sink.write([batch])
        assert is_transient(exc.value), repr(exc.value)
        assert ingest.recorder.commit([item]) is False
        assert ingest.recorder.commit([item]) is False
        assert state.list_dead_letters() == [] and item.outcome is None
        assert writer.seqs.get("e1", "gw-01").max_seq == 0  # the seq waits with its readings
    finally:
        sink.close()
        writer.close()
        state.close()


def test_health_says_stalled_while_the_decoder_is_stuck_in_one_message(world: World) -> None:
    """The queue not moving counts as much as the writer not moving: here the decoder is held
    inside one message (as a pathological payload would hold it)."""
    ingest = world.ingest
    ingest.stall_s = 0.3
    release = threading.Event()
    judge = ingest.decoder.judge

    def held(item: Received) -> Delivery:
        release.wait(10)
        return judge(item)

    ingest.decoder.judge = held  # type: ignore[method-assign]
    ingest.start(wait_s=0)
    try:
        lane = ingest.telemetry_lane
        lane.budget.used += 10
        lane.queue.put(Received("estates/e1/gw/gw-01/telemetry", b"{}", NOW, 1, 1, 0, lane, 10))
        deadline = time.monotonic() + 5
        while ingest.writer_health()["state"] != "stalled" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ingest.writer_health()["state"] == "stalled"
        release.set()
        deadline = time.monotonic() + 5
        while not ingest.writer_health()["ok"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ingest.writer_health()["ok"] is True
    finally:
        release.set()
        ingest.stop()
