"""The row mapper: a record's fields to its table's columns and back, by the fields' types."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from alerts.alarms.model import TimelineEntry
from alerts.rows import Col, RowMap
from alerts.tables import alarm_timeline


class Colour(StrEnum):
    RED = "red"


class Level(IntEnum):
    TWO = 2


@dataclass
class Record:
    id: str
    colour: Colour
    level: Level | None
    tags: tuple[str, ...]
    seen: list[int]
    done: bool
    note: str | None = None
    not_kept: int = 7  # no column: left to its default on the way back
    extra: dict[str, int] = field(default_factory=dict)


COLUMNS = ["id", "colour", "level", "tags", "seen", "done", "note", "extra", "shout"]
ROWS = RowMap(Record, COLUMNS, shout=Col(lambda r: r.id.upper()))


def test_a_record_goes_to_its_row_by_its_fields_types() -> None:
    r = Record("a", Colour.RED, Level.TWO, ("x", "y"), [1], True, extra={"k": 1})
    row = ROWS.row(r, more=1)
    assert row == {
        "id": "a",
        "colour": "red",
        "level": 2,
        "tags": ["x", "y"],
        "seen": [1],
        "done": True,
        "note": None,
        "extra": {"k": 1},
        "shout": "A",  # a Col: written, not read back
        "more": 1,  # extra: a column the record does not hold
    }
    assert type(row["colour"]) is str and type(row["level"]) is int


def test_a_row_comes_back_as_the_record_sqlite_kept_it_as() -> None:
    # SQLite gives 0/1 for booleans and JSON lists for tuples; None stays None
    row = {"id": "a", "colour": "red", "level": None, "tags": ["x"], "seen": [2], "done": 1}
    got = ROWS.load({**row, "note": None, "extra": {}, "shout": "A"})
    assert got == Record("a", Colour.RED, None, ("x",), [2], True)
    assert got.done is True and type(got.tags) is tuple and got.not_kept == 7


def test_a_renamed_column_maps_to_its_field() -> None:
    entries = RowMap(TimelineEntry, alarm_timeline.c.keys(), renames={"actor": "by"})
    e = TimelineEntry("al-1", 5, "acknowledged", "duty-1", {"note": "ok"})
    row = entries.row(e)
    assert row == {
        "alarm_id": "al-1",
        "ts": 5,
        "action": "acknowledged",
        "actor": "duty-1",
        "detail": {"note": "ok"},
    }  # the autoincrement id is the database's
    assert entries.load({**row, "id": 1}) == e
