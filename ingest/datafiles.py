"""The SQLite files the service keeps, checked before it opens them.

A damaged file must stop the start with one line that names the file and says what to do,
not a driver traceback; and a state database that was emptied (a zero-length file where one
was initialised before: a failed copy, a full disk) must not be taken for a new one and
silently start the service with no estates, users or alarms.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

__all__ = [
    "DataFileError",
    "check_sqlite_file",
    "check_state_not_emptied",
    "explain_corruption",
    "mark_state_initialised",
    "sqlite_path",
]

_HEADER = b"SQLite format 3\x00"
# messages of SQLite errors that mean the file itself is damaged (not busy, not missing)
_CORRUPT = ("file is not a database", "malformed", "disk image", "file is encrypted")
STATE_MARKER = "state-db.initialised"


class DataFileError(RuntimeError):
    """A data file the service cannot use; the message names it and says what to do."""


def _restore_hint(path: Path) -> str:
    return (
        f"restore {path.name} from a backup, or move it aside (with its -wal and -shm "
        "files) to start with an empty one"
    )


def sqlite_path(url: str) -> Path | None:
    """The file behind an SQLAlchemy SQLite URL; None for another database or in memory."""
    parsed = sa.engine.make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser().resolve()


def check_sqlite_file(path: Path, what: str) -> None:
    """Refuse a file SQLite cannot read as a database, or one shorter than its header says
    (cut short by a copy or a full disk). Cheap: the header and the schema, not every page."""
    if not path.exists() or path.stat().st_size == 0:
        return
    size = path.stat().st_size
    with path.open("rb") as f:
        header = f.read(100)
    if len(header) < 100 or not header.startswith(_HEADER):
        raise DataFileError(f"{what} {path} is not an SQLite database: {_restore_hint(path)}")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # the page count is valid when "version-valid-for" equals the change counter
    if pages and header[24:28] == header[92:96] and size < pages * page_size:
        raise DataFileError(
            f"{what} {path} is truncated ({size} of {pages * page_size} bytes): "
            + _restore_hint(path)
        )
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        if _is_corruption(exc):
            raise DataFileError(
                f"{what} {path} is damaged ({exc}): {_restore_hint(path)}"
            ) from None
        raise


def _is_corruption(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(c in text for c in _CORRUPT)


@contextmanager
def explain_corruption(path: Path | None, what: str) -> Iterator[None]:
    """Damage found while opening (past what ``check_sqlite_file`` reads) as one line."""
    try:
        yield
    except (sqlite3.DatabaseError, sa.exc.DatabaseError) as exc:
        if path is None or not _is_corruption(exc):
            raise
        first = str(getattr(exc, "orig", exc)).splitlines()[0]
        raise DataFileError(f"{what} {path} is damaged ({first}): {_restore_hint(path)}") from None


def check_state_not_emptied(data_dir: Path, db: Path) -> None:
    """Refuse a state database that is missing or empty where one was initialised before."""
    marker = data_dir / STATE_MARKER
    if not marker.exists() or marker.read_text().strip() != str(db):
        return
    if db.exists() and db.stat().st_size > 0:
        return
    state = "empty (0 bytes)" if db.exists() else "missing"
    raise DataFileError(
        f"state database {db} is {state}, but it was initialised before ({marker}): restore "
        f"it from a backup; to start afresh on purpose, delete {marker}"
    )


def mark_state_initialised(data_dir: Path, db: Path) -> None:
    """Record that ``db`` holds the state, so an emptied file is noticed at the next start."""
    marker = data_dir / STATE_MARKER
    if not marker.exists() or marker.read_text().strip() != str(db):
        marker.write_text(f"{db}\n")
