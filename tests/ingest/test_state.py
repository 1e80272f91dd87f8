"""The state store on SQLite and on PostgreSQL: the same tests, both databases."""

from __future__ import annotations

import hashlib

import pytest
import sqlalchemy as sa

from ingest.state import (
    DEADLETTER_HEAD_BYTES,
    SCHEMA_VERSION,
    AlreadyExists,
    DeadLetter,
    NotFound,
    SchemaBusy,
    StateStore,
    create_engine,
    migrate,
)


@pytest.fixture
def store(database_url: str) -> StateStore:
    s = StateStore.open(database_url)
    yield s
    s.close()


def test_estates_and_gateways(store: StateStore) -> None:
    store.add_estate("hohhot-a", "新华小区", "呼和浩特市")
    with pytest.raises(AlreadyExists):
        store.add_estate("hohhot-a", "again")
    gw = store.add_gateway("hohhot-a", "gw-01", "main")
    assert gw["state"] == "unknown"
    with pytest.raises(AlreadyExists):
        store.add_gateway("hohhot-a", "gw-01")
    with pytest.raises(NotFound):
        store.add_gateway("nowhere", "gw-01")
    assert store.registered_gateways() == {("hohhot-a", "gw-01")}
    store.set_gateway_status("hohhot-a", "gw-01", "offline", 123, "1.4.2", 7)
    g = store.get_gateway("hohhot-a", "gw-01")
    assert (g["state"], g["state_ms"], g["fw"], g["buffered"]) == ("offline", 123, "1.4.2", 7)
    assert [e["name"] for e in store.list_estates()] == ["新华小区"]


def test_devices_are_registered_once(store: StateStore) -> None:
    store.add_estate("e1", "E1")
    store.add_devices([("e1", "lift-1", "elevator", "gw-01", 10)])
    store.add_devices(
        [("e1", "lift-1", "elevator", "gw-01", 20), ("e1", "ws-01", "weather_station", "gw-01", 30)]
    )
    devs = store.list_devices("e1")
    assert [(d["id"], d["first_seen_ms"]) for d in devs] == [("lift-1", 10), ("ws-01", 30)]
    assert store.known_devices() == {("e1", "lift-1"), ("e1", "ws-01")}


def test_an_estates_first_thousands_of_devices_in_one_call(store: StateStore) -> None:
    # an estate's first commit: thousands at once, one repeated within the call and one known
    store.add_estate("e1", "E1")
    store.add_devices([("e1", "d-0", "elevator", "gw-01", 5)])
    rows = [("e1", f"d-{i}", "elevator", "gw-01", 10 + i) for i in range(3000)]
    store.add_devices([*rows, ("e1", "d-7", "fire_hydrant", "gw-02", 99)])
    devs = {d["id"]: d for d in store.list_devices("e1")}
    assert len(devs) == 3000
    assert devs["d-0"]["first_seen_ms"] == 5  # known: left as it was
    assert (devs["d-7"]["kind"], devs["d-7"]["gateway"], devs["d-7"]["first_seen_ms"]) == (
        "elevator",
        "gw-01",
        17,
    )  # the first of the call's two


def test_dead_letters_keep_payload_reason_and_topic(store: StateStore) -> None:
    store.add_dead_letters(
        [
            DeadLetter(
                1000, "estates/e1/gw/g/telemetry", "invalid_json", "not JSON", b"\xff{", "e1", "g"
            ),
            DeadLetter(
                2000, "estates/e1/gw/g/telemetry", "out_of_range", "too high", b"{}", "e1", "g", 3
            ),
        ]
    )
    rows = store.list_dead_letters()
    assert [r["reason"] for r in rows] == ["out_of_range", "invalid_json"]
    assert rows[1]["payload"] == b"\xff{"
    assert rows[0]["item_index"] == 3
    assert store.count_dead_letters() == {"invalid_json": 1, "out_of_range": 1}
    assert [r["reason"] for r in store.list_dead_letters(reason="invalid_json")] == ["invalid_json"]
    assert store.purge_dead_letters(older_than_ms=1500) == 1
    assert store.count_dead_letters() == {"out_of_range": 1}


def test_migration_stamps_and_is_idempotent(database_url: str) -> None:
    engine = create_engine(database_url)
    assert migrate(engine) == 0
    assert migrate(engine) == SCHEMA_VERSION
    with engine.connect() as conn:
        versions = conn.execute(sa.text("SELECT version FROM schema_version")).scalars().all()
    assert versions == [SCHEMA_VERSION]
    engine.dispose()


def test_refuses_a_newer_schema(database_url: str) -> None:
    engine = create_engine(database_url)
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO schema_version VALUES (:v, 0)"), {"v": SCHEMA_VERSION + 1}
        )
    with pytest.raises(RuntimeError, match="upgrade estatewatch"):
        migrate(engine)
    engine.dispose()


def test_tables_without_their_version_row_are_busy_and_retried(database_url: str) -> None:
    """What a second process sees while the first is between creating the tables and stamping
    them (SQLite commits the DDL at once): SchemaBusy, which start-up retries."""
    from estatewatch.service import retry_schema

    engine = create_engine(database_url)
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM schema_version"))
    with pytest.raises(SchemaBusy):
        migrate(engine)
    calls = []

    def stamp_then_migrate() -> int:
        calls.append(1)
        if len(calls) == 2:  # the other process finishes meanwhile
            with engine.begin() as conn:
                conn.execute(
                    sa.text("INSERT INTO schema_version VALUES (:v, 0)"), {"v": SCHEMA_VERSION}
                )
        return migrate(engine)

    assert retry_schema(stamp_then_migrate, "state") == SCHEMA_VERSION
    assert len(calls) == 2  # busy once, then through
    engine.dispose()


def test_a_version_1_database_is_migrated(database_url: str) -> None:
    """A database made by the first release (no gateways.dropped) is brought to the current
    schema and keeps its rows."""
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
                "applied_ms BIGINT NOT NULL)"
            )
        )
        conn.execute(sa.text("INSERT INTO schema_version VALUES (1, 0)"))
        conn.execute(
            sa.text(
                "CREATE TABLE estates (id VARCHAR(63) PRIMARY KEY, name "
                "VARCHAR(200) NOT NULL, region VARCHAR(100) NOT NULL DEFAULT '', "
                "created_ms BIGINT NOT NULL)"
            )
        )
        conn.execute(
            sa.text(
                "CREATE TABLE gateways (estate VARCHAR(63), id VARCHAR(63), "
                "name VARCHAR(200) NOT NULL DEFAULT '', created_ms BIGINT NOT NULL, "
                "state VARCHAR(16) NOT NULL DEFAULT 'unknown', state_ms BIGINT, "
                "fw VARCHAR(64), buffered BIGINT, PRIMARY KEY (estate, id))"
            )
        )
        conn.execute(
            sa.text(
                "CREATE TABLE dead_letters (id INTEGER PRIMARY KEY, received_ms BIGINT NOT NULL, "
                "topic TEXT NOT NULL, estate VARCHAR(63), gateway VARCHAR(63), "
                "reason VARCHAR(32) NOT NULL, detail TEXT NOT NULL, item_index INTEGER, "
                f"payload {'BYTEA' if engine.dialect.name == 'postgresql' else 'BLOB'} NOT NULL)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO dead_letters (id, received_ms, topic, reason, detail, payload) "
                "VALUES (1, 0, 't', 'too_large', 'big', :big), (2, 0, 't', 'bad_item', 'x', :small)"
            ),
            {"big": b"x" * 100_000, "small": b"{}"},
        )
        conn.execute(sa.text("INSERT INTO estates VALUES ('old', 'Old', '', 0)"))
        conn.execute(
            sa.text("INSERT INTO gateways (estate, id, created_ms) VALUES ('old', 'gw-01', 0)")
        )
    assert migrate(engine) == 1
    store = StateStore(engine)
    store.set_gateway_status("old", "gw-01", "online", 5, "2.0", 3, dropped=12)
    assert store.get_gateway("old", "gw-01")["dropped"] == 12
    # v3: a dead letter stored whole before is cut to its head, keeping its size
    letters = {r["id"]: r for r in store.list_dead_letters()}
    assert letters[1]["payload"] == b"x" * DEADLETTER_HEAD_BYTES
    assert letters[1]["payload_size"] == 100_000
    assert (letters[2]["payload"], letters[2]["payload_size"]) == (b"{}", None)
    # v4 (issue 11): the estate's settings, empty until someone sets them
    old = store.get_estate("old")
    assert (old["zone"], old["heating_season"], old["rescue_arrival_min"]) == ("", "", None)
    store.update_estate("old", zone="hulunbuir", rescue_arrival_min=60)
    assert store.get_estate("old")["zone"] == "hulunbuir"
    engine.dispose()


def test_dead_letters_are_bounded_head_hash_and_size(store: StateStore) -> None:
    """Issue 12: payloads of 1.5-64 MiB were stored whole (state DB +79 MB, GET /deadletters
    of 79 MB). The letter keeps the head, and the size and SHA-256 of the whole."""
    body = b'{"v":1,' + b"x" * (3 << 20)
    topic = "estates/e1/gw/g/telemetry/" + "t" * 70_000
    store.add_dead_letters(
        [
            DeadLetter(1, topic, "too_large", "d" * 50_000, body, "e1", "g"),
            DeadLetter(2, "estates/e1/gw/g/status", "invalid_json", "short", b"{oops", "e1", "g"),
        ]
    )
    big, small = sorted(store.list_dead_letters(), key=lambda r: r["received_ms"])
    assert big["payload"] == body[:DEADLETTER_HEAD_BYTES]
    assert big["payload_size"] == len(body)
    assert big["payload_sha256"] == hashlib.sha256(body).hexdigest()
    assert len(big["topic"]) <= 512 and len(big["detail"]) <= 1000
    assert (small["payload"], small["payload_size"]) == (b"{oops", 5)
    assert small["payload_sha256"] == hashlib.sha256(b"{oops").hexdigest()
