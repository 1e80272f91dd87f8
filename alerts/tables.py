"""The alerts' tables, their migrations and the two write statements every table uses.

SQLAlchemy Core on its own ``MetaData`` and its own schema-version table, so it shares the
state store's engine (SQLite or PostgreSQL) without touching the state store's schema.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from ingest.schema import version_table

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "activation_tasks",
    "activation_timeline",
    "activations",
    "alarm_timeline",
    "alarms",
    "commands",
    "device_clocks",
    "drill_clocks",
    "drills",
    "insert_new",
    "metadata",
    "notifications",
    "rescues",
    "run_many",
    "schema_version",
    "silences",
    "upsert",
    "upsert_statement",
    "warnings",
    "windows",
]

SCHEMA_VERSION = 6

metadata = sa.MetaData()
_ID = sa.String(32)
_EST = sa.String(63)
_DEV = sa.String(64)
_MS = sa.BigInteger
_AUTO_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")

schema_version = version_table("alerts_schema_version", metadata)

alarms = sa.Table(
    "alert_alarms",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("rule", sa.String(100), nullable=False),
    sa.Column("estate", _EST, nullable=False),
    sa.Column("subject", _DEV, nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("gateway", _EST),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("is_open", sa.Boolean, nullable=False),
    sa.Column("summary_zh", sa.Text, nullable=False),
    sa.Column("summary_en", sa.Text, nullable=False),
    sa.Column("started_ms", _MS, nullable=False),
    sa.Column("updated_ms", _MS, nullable=False),
    sa.Column("fired_ms", _MS),
    sa.Column("acked_ms", _MS),
    sa.Column("acked_by", sa.String(100)),
    sa.Column("resolved_ms", _MS),
    sa.Column("resolved_by", sa.String(100)),
    sa.Column("assignee", sa.String(100)),
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("detail", sa.JSON, nullable=False),
    sa.Column("last_ms", _MS, nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("for_ms", _MS, nullable=False),
    sa.Column("flapping", sa.Boolean, nullable=False),
    sa.Column("silenced_by", _ID),
    sa.Column("escalated", sa.Integer, nullable=False),
    sa.Column("deadline_ms", _MS),
    sa.Column("deadline_breached", sa.Boolean, nullable=False),
    # wall-clock times: reached the control room, closed; late: raised from old data
    sa.Column("raised_ms", _MS),
    sa.Column("closed_ms", _MS),
    sa.Column("late", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_alert_alarms_estate_state", "estate", "state"),
    sa.Index("ix_alert_alarms_started", "started_ms"),
    # v6: the replay guard's look-up (``AlertStore.alarm_caused_at``), one subject's alarms
    # newest first, not every alarm of the estate
    sa.Index("ix_alert_alarms_subject", "rule", "estate", "subject", "started_ms"),
)
# One open alarm per (rule, subject): the database keeps the promise too.
sa.Index(
    "ux_alert_alarms_open",
    alarms.c.rule,
    alarms.c.estate,
    alarms.c.subject,
    unique=True,
    sqlite_where=alarms.c.is_open,
    postgresql_where=alarms.c.is_open,
)


def _timeline(name: str, owner: str, *more: sa.Column[Any]) -> sa.Table:
    """What happened to one owner (an alarm, an activation), in the order written (``id``)."""
    return sa.Table(
        name,
        metadata,
        sa.Column("id", _AUTO_ID, primary_key=True),
        sa.Column(owner, _ID, nullable=False, index=True),
        sa.Column("ts", _MS, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        *more,
        sa.Column("detail", sa.JSON, nullable=False),
    )


alarm_timeline = _timeline("alert_alarm_timeline", "alarm_id")

silences = sa.Table(
    "alert_silences",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("matchers", sa.JSON, nullable=False),
    sa.Column("starts_ms", _MS, nullable=False),
    sa.Column("ends_ms", _MS, nullable=False, index=True),
    sa.Column("created_by", sa.String(100), nullable=False),
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("created_ms", _MS, nullable=False),
)

notifications = sa.Table(
    "alert_notifications",
    metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("receiver", sa.String(100), nullable=False),
    sa.Column("estate", _EST, nullable=False),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # pending, sent, failed
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_ms", _MS, nullable=False),
    sa.Column("created_ms", _MS, nullable=False),
    sa.Column("sent_ms", _MS),
    sa.Column("last_error", sa.Text),
    sa.Index("ix_alert_notifications_due", "state", "next_ms"),
)

device_clocks = sa.Table(
    "alert_device_clocks",
    metadata,
    sa.Column("estate", _EST, primary_key=True),
    sa.Column("device", _DEV, primary_key=True),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("gateway", _EST, nullable=False),
    sa.Column("last_ms", _MS, nullable=False),
    # the newest data time it sent (a backlog's is behind last_ms): its timers run on it
    sa.Column("data_ms", _MS),
)

windows = sa.Table(
    "alert_windows",
    metadata,
    sa.Column("estate", _EST, primary_key=True),
    sa.Column("device", _DEV, primary_key=True),
    sa.Column("metric", sa.String(64), primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("saved_ms", _MS, nullable=False),
)

rescues = sa.Table(
    "alert_rescues",
    metadata,
    sa.Column("alarm_id", _ID, primary_key=True),
    sa.Column("estate", _EST, nullable=False, index=True),
    sa.Column("device", _DEV, nullable=False),
    sa.Column("trapped_ms", _MS, nullable=False),
    sa.Column("deadline_ms", _MS, nullable=False),
    sa.Column("released_ms", _MS),
    sa.Column("released_by", sa.String(100)),
    sa.Column("duration_ms", _MS),
    sa.Column("breached", sa.Boolean, nullable=False),
    # v2: the technician's arrival, which the deadline is about (TSG T5002-2017)
    sa.Column("arrived_ms", _MS),
    sa.Column("arrived_by", sa.String(100)),
)

warnings = sa.Table(
    "alert_warnings",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("hazard", sa.String(32), nullable=False),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Column("estates", sa.JSON, nullable=False),
    sa.Column("region", sa.String(100), nullable=False),
    sa.Column("issued_ms", _MS, nullable=False),
    sa.Column("expires_ms", _MS, nullable=False, index=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("source", sa.String(200), nullable=False),
    sa.Column("created_by", sa.String(100), nullable=False),
    sa.Column("created_ms", _MS, nullable=False),
    sa.Column("cancelled_ms", _MS),
)

activations = sa.Table(
    "alert_plan_activations",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("estate", _EST, nullable=False),
    sa.Column("plan", sa.String(64), nullable=False),
    sa.Column("level", sa.Integer, nullable=False),
    sa.Column("is_active", sa.Boolean, nullable=False),
    sa.Column("started_ms", _MS, nullable=False),
    sa.Column("updated_ms", _MS, nullable=False),
    sa.Column("ended_ms", _MS),
    sa.Column("ended_by", sa.String(100)),
    sa.Column("below_since_ms", _MS),
    sa.Column("hold_ms", _MS, nullable=False),
    sa.Column("max_level", sa.Integer, nullable=False),
    sa.Column("levels_reached", sa.JSON, nullable=False),
    sa.Column("sources", sa.JSON, nullable=False),
    sa.Column("summary", sa.JSON),
    sa.Index("ix_alert_plan_activations_estate", "estate", "is_active"),
)

activation_timeline = _timeline(
    "alert_activation_timeline", "activation_id", sa.Column("level", sa.Integer, nullable=False)
)

activation_tasks = sa.Table(
    "alert_activation_tasks",
    metadata,
    sa.Column("activation_id", _ID, primary_key=True),
    sa.Column("task_id", sa.String(64), primary_key=True),
    sa.Column("level", sa.Integer, nullable=False),
    sa.Column("text_zh", sa.Text, nullable=False),
    sa.Column("text_en", sa.Text, nullable=False),
    sa.Column("role", sa.String(64), nullable=False),
    sa.Column("added_ms", _MS, nullable=False),
    sa.Column("due_ms", _MS, nullable=False),
    sa.Column("done_ms", _MS),
    sa.Column("done_by", sa.String(100)),
    sa.Column("note", sa.Text),
    sa.Column("overdue_ms", _MS),
)

drills = sa.Table(
    "alert_drills",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("estate", _EST, nullable=False),
    sa.Column("plan", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_ms", _MS, nullable=False),
    sa.Column("scheduled_ms", _MS),
    sa.Column("held_ms", _MS),
    sa.Column("participants", sa.JSON, nullable=False),
    sa.Column("findings", sa.Text, nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("recorded_by", sa.String(100)),
    sa.Index("ix_alert_drills_estate_plan", "estate", "plan"),
)

drill_clocks = sa.Table(
    "alert_drill_clocks",
    metadata,
    sa.Column("estate", _EST, primary_key=True),
    sa.Column("plan", sa.String(64), primary_key=True),
    sa.Column("last_ms", _MS, nullable=False),
)

# Remote commands to devices (alerts/commands.py, alerts/remote.py); v4. Bounded: a device's
# newest COMMANDS_PER_DEVICE are kept.
commands = sa.Table(
    "alert_commands",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("estate", _EST, nullable=False),
    sa.Column("gateway", _EST, nullable=False),
    sa.Column("dev", _DEV, nullable=False),
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("reason", sa.String(200), nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("alarm_id", _ID),
    sa.Column("rule", sa.String(100)),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("error", sa.String(500)),
    sa.Column("sent_ms", _MS, nullable=False),
    sa.Column("deadline_ms", _MS, nullable=False),
    sa.Column("answered_ms", _MS),
    sa.Index("ix_alert_commands_device", "estate", "dev", "sent_ms"),
    sa.Index("ix_alert_commands_alarm", "alarm_id"),
    sa.Index("ix_alert_commands_state", "state"),
)


def _v2_rescue_arrival(conn: Connection) -> None:
    conn.execute(sa.text("ALTER TABLE alert_rescues ADD COLUMN arrived_ms BIGINT"))
    conn.execute(sa.text("ALTER TABLE alert_rescues ADD COLUMN arrived_by VARCHAR(100)"))


def _v3_wall_times(conn: Connection) -> None:
    """Alarms get their wall-clock times and the late mark. Older rows had only the data's
    times: those stand in (the durations clamp what a clock ahead made negative)."""
    conn.execute(sa.text("ALTER TABLE alert_alarms ADD COLUMN raised_ms BIGINT"))
    conn.execute(sa.text("ALTER TABLE alert_alarms ADD COLUMN closed_ms BIGINT"))
    conn.execute(sa.text("ALTER TABLE alert_alarms ADD COLUMN late BOOLEAN NOT NULL DEFAULT FALSE"))
    conn.execute(sa.text("UPDATE alert_alarms SET raised_ms = fired_ms, closed_ms = resolved_ms"))


def _v4_commands(conn: Connection) -> None:
    commands.create(conn, checkfirst=True)


def _v5_clock_data_time(conn: Connection) -> None:
    """Deadman clocks keep their device's data time too, for the engine that adopts them."""
    have = {c["name"] for c in sa.inspect(conn).get_columns("alert_device_clocks")}
    if "data_ms" not in have:  # (a database whose tables were made at v5 and set back)
        conn.execute(sa.text("ALTER TABLE alert_device_clocks ADD COLUMN data_ms BIGINT"))


def _v6_alarm_subject_index(conn: Connection) -> None:
    """The replay guard's index (created with the table on a new database)."""
    (ix,) = (i for i in alarms.indexes if i.name == "ix_alert_alarms_subject")
    ix.create(conn, checkfirst=True)


# version -> migration from version-1
MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    2: _v2_rescue_arrival,
    3: _v3_wall_times,
    4: _v4_commands,
    5: _v5_clock_data_time,
    6: _v6_alarm_subject_index,
}


@functools.lru_cache(maxsize=64)
def upsert_statement(dialect: str, table: sa.Table, keys: tuple[str, ...]) -> Any:
    # Built once per table: making the ``excluded`` alias costs more than the write itself
    # on the alerts' hot path (a commit's few alarms).
    mod: Any = postgresql if dialect == "postgresql" else sqlite
    stmt = mod.insert(table)
    update = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
    return stmt.on_conflict_do_update(index_elements=list(keys), set_=update)


@functools.lru_cache(maxsize=64)
def _insert_new_statement(dialect: str, table: sa.Table, keys: tuple[str, ...]) -> Any:
    mod: Any = postgresql if dialect == "postgresql" else sqlite
    return mod.insert(table).on_conflict_do_nothing(index_elements=list(keys))


def upsert(conn: Connection, table: sa.Table, rows: list[dict[str, Any]], keys: list[str]) -> None:
    if rows:
        conn.execute(upsert_statement(conn.dialect.name, table, tuple(keys)), rows)


def insert_new(
    conn: Connection, table: sa.Table, rows: list[dict[str, Any]], keys: list[str]
) -> None:
    if rows:
        conn.execute(_insert_new_statement(conn.dialect.name, table, tuple(keys)), rows)


@functools.lru_cache(maxsize=64)
def _plain(dialect: sa.Dialect, stmt: Any, names: tuple[str, ...]) -> tuple[str, list[int] | None]:
    """``stmt`` compiled once for ``names``' binds: its SQL and, for a positional paramstyle,
    where in a row each parameter is (None: the rows go as dicts)."""
    compiled = stmt.compile(dialect=dialect, column_keys=list(names))
    order = compiled.positiontup
    return compiled.string, None if order is None else [names.index(n) for n in order]


def run_many(
    conn: Connection, stmt: Any, names: tuple[str, ...], rows: list[tuple[Any, ...]]
) -> None:
    """``stmt`` for each row (values of ``names``; types the driver takes as they are: text,
    integers, bytes) through the driver's executemany: the snapshot's thousands of rows, for
    which SQLAlchemy's per-row parameter building cost more than the database's write."""
    if not rows:
        return
    sql, at = _plain(conn.dialect, stmt, names)
    if at is None:
        conn.exec_driver_sql(sql, [dict(zip(names, r, strict=True)) for r in rows])
    else:
        conn.exec_driver_sql(sql, [tuple([r[i] for i in at]) for r in rows])
