from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.telemetry import EstateBatch, TelemetryReader, TelemetryWriter
from protocol.messages import Event, Reading


def test_write_latest_and_events(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    w = TelemetryWriter(path)
    r = TelemetryReader(path)
    w.write(
        [
            EstateBatch(
                "e1",
                "gw-01",
                readings=[
                    Reading(
                        "lift-1", "elevator", 1000, {"floor": 3, "running": True, "mode": "normal"}
                    ),
                    Reading("lift-1", "elevator", 2000, {"floor": 5}),
                ],
                events=[Event("lift-1", "elevator", 1500, "elevator.trapped", {"floor": 3})],
            )
        ]
    )
    latest = r.latest("e1")
    assert latest["lift-1"]["floor"] == (2000, 5.0)
    assert latest["lift-1"]["running"] == (1000, 1.0)
    assert latest["lift-1"]["mode"] == (1000, "normal")
    assert r.count_readings("e1") == 4
    assert r.recent_events("e1")[0]["type"] == "elevator.trapped"


def hydrant_h1(ts: int, mpa: float) -> list[EstateBatch]:
    """One message: hydrant h-1 of e1 at ``ts``."""
    reading = Reading("h-1", "fire_hydrant", ts, {"pressure_mpa": mpa})
    return [EstateBatch("e1", "g", readings=[reading])]


def test_an_older_reading_replayed_later_does_not_overwrite_now(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    w = TelemetryWriter(path)
    w.write(hydrant_h1(5000, 0.3))
    w.write(hydrant_h1(4000, 0.1))
    assert TelemetryReader(path).latest("e1")["h-1"]["pressure_mpa"] == (5000, 0.3)
    assert TelemetryReader(path).count_readings() == 2


def test_two_states_in_one_second_now_is_the_later(tmp_path: Path) -> None:
    """A fire panel's status word changes twice within a second (its clock has whole seconds):
    both rows carry the same time, and "now" is the one that came second, whether the two
    arrive in one message or in two commits folded together."""
    for interval in (0.0, 3600.0):
        path = tmp_path / f"t{interval}.db"
        w = TelemetryWriter(path, latest_interval_s=interval)
        word = [Reading("panel", "fire_panel", 7000, {"status_word": v}) for v in (1, 3)]
        w.write([EstateBatch("e1", "g", readings=word)])
        w.write(hydrant_h1(7000, 0.2))
        w.write(hydrant_h1(7000, 0.25))
        w.flush_latest()
        now = TelemetryReader(path).latest("e1")
        assert now["panel"]["status_word"] == (7000, 3.0)
        assert now["h-1"]["pressure_mpa"] == (7000, 0.25)


def test_series_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    w = TelemetryWriter(path)
    w.write(hydrant_h1(1, 0.3))
    w.close()
    w2 = TelemetryWriter(path)
    w2.write(hydrant_h1(2, 0.4))
    n = w2.conn.execute("SELECT count(*) FROM series").fetchone()[0]
    assert n == 1
    assert TelemetryReader(path).latest("e1")["h-1"]["pressure_mpa"] == (2, 0.4)


def test_latest_folded_once_a_second_under_load_and_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    w = TelemetryWriter(path, latest_interval_s=3600)
    w.write(hydrant_h1(1, 0.3))
    w.write(hydrant_h1(2, 0.4))
    # not folded yet: the interval has not passed and the writer was never idle
    assert TelemetryReader(path).latest("e1") == {}
    w.conn.close()  # the process dies before the next fold
    TelemetryWriter(path)  # the restart folds what was appended
    assert TelemetryReader(path).latest("e1")["h-1"]["pressure_mpa"] == (2, 0.4)


def test_an_idle_writer_folds_when_due(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    w = TelemetryWriter(path, latest_interval_s=0.05)
    w.write(hydrant_h1(1, 0.3))
    w._latest_flushed -= 1  # as if the interval had passed
    w.flush_latest_if_due()
    assert TelemetryReader(path).latest("e1")["h-1"]["pressure_mpa"] == (1, 0.3)


def test_values_stored_exactly_as_decoded(tmp_path: Path) -> None:
    """Rows travel to SQLite as one JSON array per commit: every float must come back
    bit-for-bit, ints and booleans as their float, text as text, events' data intact."""
    import random
    import sqlite3

    rng = random.Random(5)
    floats = [rng.uniform(-1e6, 1e6) for _ in range(3000)]
    floats += [rng.random() * 10 ** rng.randint(-300, 300) for _ in range(1000)]
    floats += [0.1, 0.2, 0.30000000000000004, -0.0, 5e-324, 1.7976931348623157e308]
    values: list[float | int | bool | str] = [*floats, 0, -7, 2**53, True, False, "开启", 'a"b']
    path = tmp_path / "t.db"
    w = TelemetryWriter(path)
    w.write(
        [
            EstateBatch(
                "e1",
                "g",
                readings=[Reading("d-1", "k", 1000 + i, {"x": v}) for i, v in enumerate(values)],
                events=[Event("d-1", "k", 1000, "t", {"note": '门 "开"', "n": 1.5})],
                seq=1,
            )
        ]
    )
    conn = sqlite3.connect(path)
    stored = conn.execute("SELECT num, txt FROM readings ORDER BY ts").fetchall()
    want = [(None, v) if isinstance(v, str) else (float(v), None) for v in values]
    assert stored == want
    assert conn.execute("SELECT typeof(ts), typeof(series) FROM readings LIMIT 1").fetchone() == (
        "integer",
        "integer",
    )
    assert TelemetryReader(path).recent_events("e1")[0]["data"] == {"note": '门 "开"', "n": 1.5}
    assert conn.execute("SELECT estate, gateway, seq FROM message_seqs").fetchall() == [
        ("e1", "g", 1)
    ]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(st.sampled_from(["h-1", "h-2", "h-3"]), st.integers(0, 5), st.integers(0, 9)),
            min_size=1,
            max_size=8,
        ),
        min_size=1,
        max_size=6,
    ),
    st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_now_kept_while_writing_is_what_sql_folds(
    tmp_path_factory: pytest.TempPathFactory,
    commits: list[list[tuple[str, int, int]]],
    folds: list[bool],
) -> None:
    """ "Now" folded from the rows the writer kept while making them (the store process's way)
    is the SQL fold's answer (the newest ts, of equal ts the later row, an older replay never
    over a newer one), whichever commits a fold falls after."""
    answers = []
    for by_sql in (False, True):
        path = tmp_path_factory.mktemp("now") / "t.db"
        w = TelemetryWriter(path, latest_interval_s=3600)
        for commit, fold in zip(commits, folds, strict=False):
            readings = [
                Reading(d, "fire_hydrant", ts, {"pressure_mpa": v / 10}) for d, ts, v in commit
            ]
            w.write([EstateBatch("e1", "g", readings=readings)])
            if by_sql:
                w._newest = None
            if fold:
                w.flush_latest()
        if by_sql:
            w._newest = None
        w.flush_latest()
        answers.append(TelemetryReader(path).latest("e1"))
        w.close()
    assert answers[0] == answers[1]
