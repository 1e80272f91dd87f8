"""What every store on the state database shares: its engine, the schema-version procedure
(as Home Assistant's recorder: a new database gets the current schema, stamped; an older one
runs the numbered migrations after its version; a newer one is refused) and the errors the
API turns into answers. No tables of its own: each package keeps its own, so alerts, api and
supervision import this rather than ingest's state store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine


class NotFound(LookupError):
    """What was asked for does not exist (the API answers 404)."""


class AlreadyExists(ValueError):
    """What was to be created exists already (the API answers 409)."""


def create_engine(url: str) -> Engine:
    """An engine for ``sqlite:///…`` or ``postgresql://…`` (psycopg 3)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    # A host cut off from the database finds out in seconds, not the kernel's minutes (a connect
    # ~2 min, a statement on a dead peer ~15): a scaled-out worker's threads stuck in such a
    # call stop handing partitions over (tests/cluster/test_netns_db_cut.py).
    return sa.create_engine(
        url,
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": 5,
            "tcp_user_timeout": 5000,
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 1,
            "keepalives_count": 3,
        },
    )


class SchemaBusy(RuntimeError):
    """Another process is creating the schema right now (its version row is not written yet):
    try again in a moment."""


def version_table(name: str, metadata: sa.MetaData) -> sa.Table:
    """The table :func:`migrate_schema` stamps: one row per schema version applied."""
    return sa.Table(
        name,
        metadata,
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("applied_ms", sa.BigInteger, nullable=False),
    )


def migrate_schema(
    conn: Connection,
    tables: sa.MetaData,
    version_table: sa.Table,
    current: int,
    migrations: dict[int, Callable[[Connection], None]],
    applied_ms: int,
    what: str,
) -> int:
    """Create ``tables`` on a new database, else run ``migrations`` up to ``current``, stamping
    each version in ``version_table``; returns the version found before (0: new). ``what`` names
    the tables in errors. Shared by every store with tables on the state database."""
    if not sa.inspect(conn).has_table(version_table.name):
        tables.create_all(conn)
        conn.execute(version_table.insert().values(version=current, applied_ms=applied_ms))
        return 0
    found = conn.execute(sa.select(sa.func.max(version_table.c.version))).scalar_one()
    if found is None:
        # SQLite commits DDL at once: another process made the tables, not yet the row
        raise SchemaBusy(f"{what}: the schema is being created by another process")
    if found > current:
        raise RuntimeError(
            f"{what}: schema version {found}, newer than this program's {current}: "
            "upgrade estatewatch"
        )
    for version in range(found + 1, current + 1):
        migrations[version](conn)
        conn.execute(version_table.insert().values(version=version, applied_ms=applied_ms))
    return int(found)
