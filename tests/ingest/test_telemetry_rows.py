"""The readings' insert path of the store process (ingest.telemetry_rows): rows made flat and
bound into multi-row VALUES statements (numbers, then texts) store exactly what the JSON path
stored, each series' rows in their order, whatever the number of rows against the statement
sizes; a write that rolls back forgets the series it made."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingest.telemetry import EstateBatch, TelemetryReader, TelemetryWriter
from ingest.telemetry_rows import NUMBERS, STATEMENT_ROWS, TEXTS, insert_flat, insert_json
from protocol.messages import Reading

READINGS = (
    "CREATE TABLE readings (ts INTEGER NOT NULL, series INTEGER NOT NULL, num REAL, txt TEXT)"
)
# Around each statement size: below, at, above, and a sum of several.
SIZES = [0, 1, 2, 31, 32, 33, STATEMENT_ROWS - 1, STATEMENT_ROWS, STATEMENT_ROWS + 1]
SIZES += [2 * STATEMENT_ROWS + 1023, 5 * STATEMENT_ROWS + 7]


def some_values(rng: random.Random, n: int) -> list[float | str]:
    """Floats of every magnitude (and the awkward ones), texts with quotes and CJK."""
    awkward: list[float | str] = [0.1, 0.30000000000000004, 5e-324, 1.7976931348623157e308]
    awkward += ["开启", 'a"b', "", "\\n", "x" * 200]
    out: list[float | str] = []
    for i in range(n):
        pick = rng.random()
        if i < len(awkward):
            out.append(awkward[i])
        elif pick < 0.6:
            out.append(rng.uniform(-1e6, 1e6))
        elif pick < 0.8:
            out.append(rng.random() * 10 ** rng.randint(-300, 300))
        else:
            out.append(rng.choice(["normal", "fault", "门开", "off"]))
    return out


def rows_of(values: Sequence[float | str]) -> list[tuple[int, int, float | None, str | None]]:
    return [
        (1_764_288_000_000 + i // 3, i % 97 + 1, *((None, v) if isinstance(v, str) else (v, None)))
        for i, v in enumerate(values)
    ]


@pytest.mark.parametrize("n", SIZES)
def test_flat_rows_store_what_json_stored_in_order(n: int) -> None:
    rows = rows_of(some_values(random.Random(n), n))
    conn = sqlite3.connect(":memory:")
    conn.execute(READINGS)
    conn.execute(READINGS.replace("readings", "by_json"))
    nums = [r for r in rows if r[3] is None]
    txts = [r for r in rows if r[3] is not None]
    insert_flat(conn, NUMBERS, [v for r in nums for v in r[:3]])
    insert_flat(conn, TEXTS, [v for r in txts for v in (*r[:2], r[3])])
    insert_json(conn, "by_json", "ts, series, num, txt", [orjson.dumps(nums + txts)])
    ask = "SELECT ts, series, num, txt, typeof(ts), typeof(num), typeof(txt) FROM {} ORDER BY rowid"
    flat = conn.execute(ask.format("readings")).fetchall()
    assert flat == conn.execute(ask.format("by_json")).fetchall()
    assert [r[:4] for r in flat] == nums + txts  # floats bit for bit (== on floats), in order
    assert all(r[4] == "integer" and r[5] in ("real", "null") for r in flat)


def estate_batches(per_batch: Sequence[int], seed: int) -> list[EstateBatch]:
    """Messages of ``per_batch`` values each: devices of three metrics (a number, a
    switch, a text), some of their readings carrying an int, a bool or a float."""
    rng = random.Random(seed)
    batches = []
    ts = 1_764_288_000_000
    for k, n in enumerate(per_batch):
        readings = []
        while n > 0:
            ts += rng.randint(0, 2)
            dev = f"d-{rng.randint(1, 400)}"
            metrics: dict[str, Any] = {
                "x": rng.choice([rng.uniform(-50, 50), rng.randint(-9, 9), 2**53]),
                "on": rng.random() < 0.5,
                "mode": rng.choice(["auto", "手动", "off"]),
            }
            picked = dict(list(metrics.items())[: min(n, rng.randint(1, 3))])
            readings.append(Reading(dev, "k", ts, picked))
            n -= len(picked)
        batches.append(EstateBatch("e1", "gw-01", readings=readings, seq=k + 1))
    return batches


def stored(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT r.ts, s.device, s.metric, r.num, r.txt FROM readings r "
            "JOIN series s ON s.id = r.series ORDER BY s.device, s.metric, r.rowid"
        ).fetchall()
    finally:
        conn.close()


def expected(batches: Sequence[EstateBatch]) -> list[tuple[Any, ...]]:
    """Each series' rows in the order of the messages (sorted by series, stably)."""
    rows = [
        (
            r.ts,
            r.dev,
            m,
            None if isinstance(v, str) else float(v),
            v if isinstance(v, str) else None,
        )
        for b in batches
        for r in b.readings
        for m, v in r.metrics.items()
    ]
    return sorted(rows, key=lambda row: row[1:3])


@pytest.mark.parametrize(
    "per_batch",
    [[1], [STATEMENT_ROWS - 1], [STATEMENT_ROWS], [STATEMENT_ROWS, 1], [500] * 9, [3000, 29, 1]],
)
def test_a_write_stores_each_value_once_in_order(tmp_path: Path, per_batch: list[int]) -> None:
    """The store process's write (rows made flat, series made in its transaction): every
    value once, each series' in the messages' order, int and bool as their float, text as
    text; "now" is each series' newest value; the series table holds what the writer's
    cache says."""
    batches = estate_batches(per_batch, seed=len(per_batch) + per_batch[0])
    path = tmp_path / "t.db"
    w = TelemetryWriter(path)
    result = w.write(batches)
    assert result.values == sum(per_batch)
    assert stored(path) == expected(batches)
    by_rows: dict[tuple[str, str], tuple[Any, ...]] = {}
    for ts, dev, metric, num, txt in expected(batches):  # of equal ts, the later
        if (dev, metric) not in by_rows or by_rows[dev, metric][0] <= ts:
            by_rows[dev, metric] = (ts, num if txt is None else txt)
    now = TelemetryReader(path).latest("e1")
    assert {(d, m): v for d, ms in now.items() for m, v in ms.items()} == by_rows
    series = w.conn.execute("SELECT id, estate, device, metric FROM series").fetchall()
    assert sorted(series) == sorted(
        (i, e, d, m)
        for e, ds in w._series.ids.items()
        for d, ms in ds.items()
        for m, i in ms.items()
    )


def test_the_prepared_json_rows_and_the_flat_rows_store_the_same(tmp_path: Path) -> None:
    """The service's one-process shape prepares rows as JSON on its decoder thread; the store
    process makes them flat: the same messages give the same table."""
    every: dict[str, float | bool | str] = {
        "x": 0.5,
        "on": True,
        "mode": "auto",
    }  # the series first, so JSON rows can be made
    prime = [Reading(f"d-{i}", "k", 0, every) for i in range(1, 401)]
    batches = [EstateBatch("e1", "gw-01", prime), *estate_batches([700, 300, 2100], seed=3)]
    made, prepared = tmp_path / "made.db", tmp_path / "prepared.db"
    TelemetryWriter(made).write(batches)
    w = TelemetryWriter(prepared)
    w.write(batches[:1])
    ready = [w.prepare_rows(b) for b in batches[1:]]
    assert all(p is not None for p in ready)
    w.write(batches[1:], prepared=ready)
    assert stored(made) == stored(prepared) == expected(batches)


def test_a_write_that_rolls_back_forgets_the_series_it_made(tmp_path: Path) -> None:
    """A value SQLite cannot take (a lone surrogate) fails the write after its new series
    were given ids: nothing of it is stored, the ids are given out again, rows prepared
    before are made again (the epoch moved), and the table and the cache agree."""
    path = tmp_path / "t.db"
    w = TelemetryWriter(path)
    w.write([EstateBatch("e1", "g", [Reading("a", "k", 1, {"x": 1.5})], seq=1)])
    known = EstateBatch("e1", "g", [Reading("a", "k", 2, {"x": 2.5})], seq=2)
    early = w.prepare_rows(known)
    assert early is not None and early.epoch == w.series_epoch
    bad = [
        Reading("b", "k", 3, {"x": 3.5, "y": "ok"}),
        Reading("c", "k", 3, {"mode": "\ud800"}),
    ]
    with pytest.raises(UnicodeEncodeError):
        w.write([EstateBatch("e1", "g", bad, seq=3)])
    assert w.series_epoch == early.epoch + 1
    assert w._series.ids == {"e1": {"a": {"x": 1}, "b": {}, "c": {}}}
    assert stored(path) == [(1, "a", "x", 1.5, None)]
    assert w.conn.execute("SELECT count(*) FROM message_seqs").fetchone()[0] == 1
    good = EstateBatch("e1", "g", [Reading("c", "k", 4, {"mode": "auto"})], seq=3)
    w.write([known, good], prepared=[early, None])
    assert stored(path) == [
        (1, "a", "x", 1.5, None),
        (2, "a", "x", 2.5, None),
        (4, "c", "mode", None, "auto"),
    ]
    series = w.conn.execute("SELECT id, device, metric FROM series ORDER BY id").fetchall()
    assert series == [(1, "a", "x"), (2, "c", "mode")]  # id 2 given out again


class Sink:
    """A raw sink (InfluxDB's place) that keeps what it is given, or refuses once."""

    def __init__(self) -> None:
        self.got: list[EstateBatch] = []
        self.refuse = False

    def write(self, batches: Sequence[EstateBatch]) -> int:
        if self.refuse:
            self.refuse = False
            raise OSError("influx down")
        self.got.extend(batches)
        return sum(len(b.readings) for b in batches)


def test_raw_rows_elsewhere_keep_now_here(tmp_path: Path) -> None:
    """With a raw sink, readings go to it and "now" is upserted here: each series' newest of
    the write (of equal ts the later), never over a newer one; a refused write stores nothing
    and forgets its series."""
    path = tmp_path / "t.db"
    sink = Sink()
    w = TelemetryWriter(path, raw_sink=sink)
    first = [Reading("p", "k", 7, {"word": 1}), Reading("p", "k", 7, {"word": 3})]
    first.append(Reading("p", "k", 5, {"word": 9, "mode": "auto"}))
    w.write([EstateBatch("e1", "g", first, seq=1)])
    sink.refuse = True
    with pytest.raises(OSError):
        w.write([EstateBatch("e1", "g", [Reading("q", "k", 8, {"word": 2})], seq=2)])
    w.write([EstateBatch("e1", "g", [Reading("p", "k", 6, {"word": 4})], seq=2)])
    assert TelemetryReader(path).latest("e1") == {"p": {"word": (7, 3.0), "mode": (5, "auto")}}
    assert stored(path) == []
    assert len(sink.got) == 2
    assert w.conn.execute("SELECT device FROM series ORDER BY id").fetchall() == [("p",), ("p",)]
