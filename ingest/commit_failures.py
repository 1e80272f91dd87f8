"""Why a commit failed, told apart by its cause: a store that is locked, unreachable or full
(``is_transient``: the same batch may go through later, so the recorder retries it) or the
data itself (the recorder splits the batch down to the message at fault and dead-letters it
as ``STORE_REFUSED``). Pure: judges an exception, stores nothing."""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa

# The reason of a message dead-lettered because the store refused it (not the decoder).
STORE_REFUSED = "store_refused"

# Statuses of a store's HTTP API (InfluxDB) that blame the data, not the store.
_DATA_STATUSES = frozenset({400, 413, 422})


def is_transient(exc: BaseException) -> bool:
    """True when a commit failed because of the store itself (locked, unreachable, full, a
    server error): the same batch may go through later, so it is retried, never dead-lettered.
    False blames the data: an integer SQLite cannot hold, a value that cannot be encoded, a
    constraint, a point InfluxDB refuses as bad (400/413/422)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, sa.exc.DBAPIError):  # SQLAlchemy's wrapper of a driver's error
            if e.connection_invalidated:
                return True
            if isinstance(e.orig, sqlite3.Error):
                e = e.orig  # judged below: SQLite's InterfaceError is a value it cannot bind
                continue
            # PostgreSQL: a lost or refused connection, a server shutting down
            return isinstance(e, sa.exc.OperationalError | sa.exc.InterfaceError)
        verdict = getattr(e, "transient", None)  # the store process's own verdict
        if type(verdict) is bool:
            return verdict
        if isinstance(e, sqlite3.OperationalError | OSError):
            return True  # locked, busy, read-only, disk full or I/O; OSError: the network
        status = getattr(e, "status", None)
        if type(status) is int and 400 <= status < 600:  # an HTTP store (InfluxDB)
            return status not in _DATA_STATUSES
        if type(e).__module__.split(".")[0] == "urllib3":
            return True  # connection refused, timeouts, retries used up
        e = getattr(e, "orig", None) or e.__cause__ or e.__context__
    return False


def shorten(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
