"""Rows ↔ dataclasses, declared once per table instead of written out by hand both ways.

A field goes to the column of its name (or of ``renames``). Its type hint says how: an enum by
its value, a tuple or list as a JSON list (read back as the field's own type), a bool read back
as a bool (SQLite keeps 0 and 1), anything else as it is; ``None`` stays ``None``. A column that
is no field's as it is gets a ``Col``: how to write it from the object, and how to read the
field back from the row, if at all. Columns neither are left to the caller (``extra``).
"""

from __future__ import annotations

import dataclasses
import enum
import operator
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

__all__ = ["Col", "RowMap"]

T = TypeVar("T")
Row = Mapping[Any, Any]  # a result row (SQLAlchemy keys it by name and by column)
Convert = Callable[[Any], Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Col:
    """A column written by ``dump(obj)`` and read back into its field by ``load(row)``."""

    dump: Callable[[Any], Any]
    load: Callable[[Row], Any] | None = None  # None: written only (derived, or read elsewhere)


def _optional(convert: Convert | None) -> Convert | None:
    if convert is None:
        return None
    return lambda v: None if v is None else convert(v)


def _converters(hint: Any) -> tuple[Convert | None, Convert | None]:
    """(to the column, from the column) for a field's type; None: the value passes as it is."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        dump, load = _converters(inner[0]) if len(inner) == 1 else (None, None)
        return _optional(dump), _optional(load)
    origin = typing.get_origin(hint) or hint
    if isinstance(origin, type) and issubclass(origin, enum.Enum):
        return operator.attrgetter("value"), origin
    if origin in (tuple, list):
        return list, origin
    if origin is bool:
        return None, bool
    return None, None


def _then(get: Convert, convert: Convert | None) -> Convert:
    return get if convert is None else lambda x: convert(get(x))


class RowMap(Generic[T]):
    """How one dataclass is kept in one table's rows."""

    def __init__(
        self,
        cls: type[T],
        columns: Iterable[str],
        renames: Mapping[str, str] | None = None,  # column -> field
        **cols: Col,
    ) -> None:
        hints = typing.get_type_hints(cls)
        fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        self.cls = cls
        self._dump: list[tuple[str, Convert]] = []
        self._load: list[tuple[str, Convert]] = []
        for column in columns:
            name = (renames or {}).get(column, column)
            if column in cols:
                col = cols[column]
                self._dump.append((column, col.dump))
                if col.load is not None and name in fields:
                    self._load.append((name, col.load))
            elif name in fields:
                dump, load = _converters(hints[name])
                self._dump.append((column, _then(operator.attrgetter(name), dump)))
                self._load.append((name, _then(operator.itemgetter(column), load)))

    def row(self, obj: T, **extra: Any) -> dict[str, Any]:
        """The row of ``obj``; ``extra`` gives the columns that are not its fields."""
        out = {column: dump(obj) for column, dump in self._dump}
        out.update(extra)
        return out

    def load(self, row: Row, **extra: Any) -> T:
        """The object of ``row``; ``extra`` gives the fields that are not in its columns."""
        return self.cls(**{name: load(row) for name, load in self._load}, **extra)
