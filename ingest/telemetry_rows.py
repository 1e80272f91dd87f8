"""The rows the telemetry writer appends, and how they reach SQLite.

``SeriesIds`` is the writer's copy of the ``series`` table, nested estate -> device -> metric
(one lookup a value, no key tuple made and hashed per value); a new series gets its id here
(the largest + 1, as SQLite would) and is inserted with the write's rows, in its transaction.

Rows are made flat (``ts, series, value, ts, ...``), numbers and texts in two lists, and
inserted by multi-row ``VALUES`` statements of a few fixed sizes (``insert_flat``) whose
other column is a literal NULL: SQLite binds the values straight from the list, at about a
third of the cost of encoding them to JSON and unpacking that with ``json_each``
(bench/README.md, "Pipelined commits"). No None is bound: Python's sqlite3 looks for an
adapter for every value that is not an int, a float or a str, and a None costs it two failed
attribute lookups, more than the insert of its row. A series' values are all numbers or all
texts (its metric's type in the catalog), so its rows keep their order; a write's numbers go
before its texts.

The JSON way (``insert_json``) is kept where it pays: rows encoded on another thread of the
same interpreter (``prepare_rows``), whose insert then runs without the interpreter lock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from functools import cache
from typing import Any

import orjson

from ingest.model import EstateBatch

# A readings row as made: (ts, series, value), the value a float (num) or a str (txt)
Row = tuple[int, int, float | str]
# Rows a statement at most (8,192 variables at most, of SQLite's 32,766); the rest of a write
# goes in statements of the powers of two below, so a dozen texts serve every size.
STATEMENT_ROWS = 2048
NUMBERS = ("readings", "ts, series, num, txt", "(?,?,?,NULL)")
TEXTS = ("readings", "ts, series, num, txt", "(?,?,NULL,?)")
SERIES = ("series", "id, estate, device, metric", "(?,?,?,?)")
# num and txt of "now" from a row (ts, series, value), bound (?1, ?2, ?3) or in JSON: the value
# goes to one or the other by its type
NOW_BOUND = "iif(typeof(?3) = 'text', NULL, ?3), iif(typeof(?3) = 'text', ?3, NULL)"
NOW_JSON = NOW_BOUND.replace("?3", "value ->> 2")


@cache
def _values_sql(table: str, columns: str, row: str, rows: int) -> str:
    return f"INSERT INTO {table} ({columns}) VALUES {','.join([row] * rows)}"


def insert_flat(conn: sqlite3.Connection, shape: tuple[str, str, str], flat: list[Any]) -> None:
    """Insert rows given as one flat list of their values, row after row, in that order;
    ``shape``: the table, its columns, and one row of the VALUES (``NUMBERS``, ``TEXTS``)."""
    table, columns, row = shape
    width = row.count("?")
    n = len(flat) // width
    done = 0
    size = STATEMENT_ROWS
    while done < n:
        while size > n - done:
            size //= 2
        conn.execute(
            _values_sql(table, columns, row, size), flat[done * width : (done + size) * width]
        )
        done += size


def insert_json(
    conn: sqlite3.Connection, table: str, columns: str, arrays: Sequence[bytes]
) -> None:
    """Insert rows encoded as JSON arrays of arrays, joined into one array without decoding
    them, in one statement unpacked by SQLite (``json_each``): it runs with the interpreter
    lock released, where binding each value holds it. Floats survive the trip exactly
    (shortest round-trip repr)."""
    names = [c.strip() for c in columns.split(",")]
    picks = ", ".join(f"value ->> {i}" for i in range(len(names)))
    if len(arrays) == 1:
        joined = arrays[0]
    else:
        # each is "[...]": the insides joined by commas make one array
        joined = b"[" + b",".join(memoryview(a)[1:-1] for a in arrays if len(a) > 2) + b"]"
    conn.execute(
        f"INSERT INTO {table} ({', '.join(names)}) SELECT {picks} FROM json_each(?)", (joined,)
    )


class SeriesIds:
    """The series table's ids. The writer's thread adds to it (and forgets what a rolled-back
    write made); ``json_rows`` may read it from another thread (see ``epoch``)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.ids: dict[str, dict[str, dict[str, int]]] = {}
        self.top = 0  # the largest id given out
        for sid, estate, device, metric in conn.execute(
            "SELECT id, estate, device, metric FROM series"
        ):
            self.ids.setdefault(estate, {}).setdefault(device, {})[metric] = sid
            self.top = max(self.top, sid)
        # Moves when a failed write forgets the ids it made (they are given out again): rows
        # made before with those ids are made again.
        self.epoch = 0
        self._made: list[tuple[int, str, str, str]] = []  # since begin()
        self._saved = 0  # of _made, inserted

    def begin(self) -> int:
        """A write starts (what was made before is committed or forgotten): the top to go
        back to if it fails."""
        self._made.clear()
        self._saved = 0
        return self.top

    def make(self, estate: str, device: str, metric: str) -> int:
        """The id of a new series, inserted by ``save`` in the write's transaction."""
        self.top += 1
        self.ids.setdefault(estate, {}).setdefault(device, {})[metric] = self.top
        self._made.append((self.top, estate, device, metric))
        return self.top

    def save(self) -> None:
        """Insert the series made since the last save (in the write's transaction)."""
        new = self._made[self._saved :]
        if new:
            insert_flat(self.conn, SERIES, [v for s in new for v in s])
            self._saved = len(self._made)

    def forget(self, top: int) -> None:
        """The write rolled back: drop the ids it made, give them out again, move the epoch."""
        for _sid, estate, device, metric in self._made:
            del self.ids[estate][device][metric]
        self._made.clear()
        self._saved = 0
        self.top = top
        self.epoch += 1

    def flat_rows(
        self, batch: EstateBatch, nums: list[Any], txts: list[Any], newest: dict[int, Row]
    ) -> None:
        """Append the batch's ``readings`` rows to ``nums`` and ``txts`` (flat), making the
        series not yet known, and keep each series' newest row in ``newest`` (of equal ts,
        the later). The hot loop of the store process: one dict lookup a value, no call for
        a float or a text."""
        estate = batch.estate
        devices = self.ids.get(estate)
        if devices is None:
            devices = self.ids[estate] = {}
        get_newest = newest.get
        value: Any  # checked by its type below (a variable, not per-value calls)
        row: Row
        for r in batch.readings:
            ts = r.ts
            metrics = devices.get(r.dev)
            if metrics is None:
                metrics = devices[r.dev] = {}
            for name, value in r.metrics.items():
                sid = metrics.get(name)
                if sid is None:
                    sid = self.make(estate, r.dev, name)
                t = type(value)
                if t is float:
                    row = (ts, sid, value)
                    nums += row
                elif t is str:
                    row = (ts, sid, value)
                    txts += row
                else:  # int, bool: as their float (a bool would be adapted, see above)
                    row = (ts, sid, float(value))
                    nums += row
                prev = get_newest(sid)
                if prev is None or prev[0] <= ts:
                    newest[sid] = row

    def json_rows(self, batch: EstateBatch) -> tuple[bytes, int] | None:
        """The batch's ``readings`` rows as one JSON array and their number, or None when a
        series is not known yet (``flat_rows`` makes it, on the writer's thread). Reads only."""
        devices = self.ids.get(batch.estate)
        if devices is None:
            return None
        rows: list[tuple[int, int, float | None, str | None]] = []
        append = rows.append
        for r in batch.readings:
            ts = r.ts
            metrics = devices.get(r.dev)
            if metrics is None:
                return None
            for name, value in r.metrics.items():
                sid = metrics.get(name)
                if sid is None:
                    return None
                if type(value) is str:
                    append((ts, sid, None, value))
                else:
                    append((ts, sid, float(value), None))
        return orjson.dumps(rows), len(rows)
