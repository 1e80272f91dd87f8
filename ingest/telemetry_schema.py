"""The telemetry file's tables and their versions: made when missing, migrated up to
``SCHEMA_VERSION`` when older, refused when newer (written by a later estatewatch)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from protocol.clock import now_ms

SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_ms INTEGER);
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    estate TEXT NOT NULL, device TEXT NOT NULL, metric TEXT NOT NULL,
    UNIQUE (estate, device, metric)
);
-- Append-only, no index: rows arrive roughly in time order and an index would cost ~12x.
CREATE TABLE IF NOT EXISTS readings (
    ts INTEGER NOT NULL, series INTEGER NOT NULL, num REAL, txt TEXT
);
CREATE TABLE IF NOT EXISTS latest (
    series INTEGER PRIMARY KEY, ts INTEGER NOT NULL, num REAL, txt TEXT
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL, estate TEXT NOT NULL, gateway TEXT NOT NULL,
    device TEXT NOT NULL, kind TEXT NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS message_seqs (
    estate TEXT NOT NULL, gateway TEXT NOT NULL, seq INTEGER NOT NULL,
    committed_ms INTEGER NOT NULL,
    PRIMARY KEY (estate, gateway, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gateway_seqs (
    estate TEXT NOT NULL, gateway TEXT NOT NULL, max_seq INTEGER NOT NULL,
    missing TEXT NOT NULL, untracked_lost INTEGER NOT NULL, duplicates INTEGER NOT NULL,
    PRIMARY KEY (estate, gateway)
) WITHOUT ROWID;
-- The first readings rowid committed in each wall-clock minute: maps time to rowid ranges.
CREATE TABLE IF NOT EXISTS commit_marks (minute INTEGER PRIMARY KEY, first_rowid INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rollup_1m (
    series INTEGER NOT NULL, bucket INTEGER NOT NULL, min REAL, max REAL, sum REAL,
    count INTEGER, last_ts INTEGER, last REAL, PRIMARY KEY (series, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_1h (
    series INTEGER NOT NULL, bucket INTEGER NOT NULL, min REAL, max REAL, sum REAL,
    count INTEGER, last_ts INTEGER, last REAL, PRIMARY KEY (series, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_state (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

# Later schema versions: version -> SQL run on a database at version - 1. Tables that are only
# added are created by SCHEMA (IF NOT EXISTS), so version 2 needs nothing more.
MIGRATIONS: dict[int, str] = {2: ""}


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Make the tables that are missing and bring ``path``'s schema to SCHEMA_VERSION, in one
    transaction."""
    with conn:
        conn.executescript(SCHEMA)
        found = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
        if found is None:
            conn.execute(
                "INSERT OR IGNORE INTO schema_version VALUES (?, ?)", (SCHEMA_VERSION, now_ms())
            )
            return
        if found > SCHEMA_VERSION:
            raise RuntimeError(
                f"{path} is at schema version {found}, newer than this "
                f"program's {SCHEMA_VERSION}: upgrade estatewatch"
            )
        for version in range(found + 1, SCHEMA_VERSION + 1):
            if MIGRATIONS[version]:
                conn.executescript(MIGRATIONS[version])
            conn.execute("INSERT OR IGNORE INTO schema_version VALUES (?, ?)", (version, now_ms()))
