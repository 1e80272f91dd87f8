"""Where the alerts' state is kept: alarms and their timelines (pending 'for' timers included),
deadman clocks, window samples, silences, the notification log, rescues, official warnings,
plan activations with their tasks and timelines, and drills.

SQLAlchemy Core on its own ``MetaData`` and its own schema-version table, so it shares the
state store's engine (SQLite or PostgreSQL) without touching the state store's schema. Writes
come in batches, one transaction per batch of changes, never one per reading.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from alerts.alarms.model import Alarm, AlarmState, TimelineEntry
from alerts.drills import Drill, DrillStatus
from alerts.escalation import Rescue
from alerts.notify import Notification
from alerts.plans.activation import (
    ActivationEntry,
    ActivationTask,
    PlanActivation,
    Source,
)
from alerts.plans.model import ResponseLevel
from alerts.rules.spec import Severity
from alerts.silences import Matcher, Silence
from alerts.weather.levels import Hazard, WeatherLevel
from alerts.weather.warnings import OfficialWarning
from ingest.schema import migrate_schema

__all__ = ["SCHEMA_VERSION", "AlertStore", "StoreBatch", "metadata"]

SCHEMA_VERSION = 3

metadata = sa.MetaData()
_ID = sa.String(32)
_EST = sa.String(63)
_DEV = sa.String(64)
_MS = sa.BigInteger
_AUTO_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")

schema_version = sa.Table(
    "alerts_schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("applied_ms", _MS, nullable=False),
)

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

alarm_timeline = sa.Table(
    "alert_alarm_timeline",
    metadata,
    sa.Column("id", _AUTO_ID, primary_key=True),
    sa.Column("alarm_id", _ID, nullable=False, index=True),
    sa.Column("ts", _MS, nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("detail", sa.JSON, nullable=False),
)

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

activation_timeline = sa.Table(
    "alert_activation_timeline",
    metadata,
    sa.Column("id", _AUTO_ID, primary_key=True),
    sa.Column("activation_id", _ID, nullable=False, index=True),
    sa.Column("ts", _MS, nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("level", sa.Integer, nullable=False),
    sa.Column("detail", sa.JSON, nullable=False),
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


# version -> migration from version-1
MIGRATIONS: dict[int, Callable[[Connection], None]] = {2: _v2_rescue_arrival, 3: _v3_wall_times}


@dataclass
class StoreBatch:
    """Changes to write in one transaction."""

    alarms: dict[str, Alarm] = field(default_factory=dict)
    alarm_entries: list[TimelineEntry] = field(default_factory=list)
    forget_alarms: set[str] = field(default_factory=set)  # pending alarms that never fired
    activations: dict[str, PlanActivation] = field(default_factory=dict)
    activation_entries: list[ActivationEntry] = field(default_factory=list)
    tasks: dict[tuple[str, str], ActivationTask] = field(default_factory=dict)
    rescues: dict[str, tuple[Rescue, bool]] = field(default_factory=dict)
    notifications: list[Notification] = field(default_factory=list)

    def merge(self, later: StoreBatch) -> None:
        """Fold a later batch into this one (the later state of an object wins)."""
        self.alarms.update(later.alarms)
        self.alarm_entries.extend(later.alarm_entries)
        self.forget_alarms |= later.forget_alarms
        self.activations.update(later.activations)
        self.activation_entries.extend(later.activation_entries)
        self.tasks.update(later.tasks)
        self.rescues.update(later.rescues)
        self.notifications.extend(later.notifications)

    @property
    def size(self) -> int:
        return (
            len(self.alarms)
            + len(self.alarm_entries)
            + len(self.activations)
            + len(self.activation_entries)
            + len(self.notifications)
        )

    def __bool__(self) -> bool:
        return bool(
            self.alarms
            or self.alarm_entries
            or self.forget_alarms
            or self.activations
            or self.activation_entries
            or self.tasks
            or self.rescues
            or self.notifications
        )


@functools.lru_cache(maxsize=64)
def _upsert_statement(dialect: str, table: sa.Table, keys: tuple[str, ...]) -> Any:
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


def _upsert(conn: Connection, table: sa.Table, rows: list[dict[str, Any]], keys: list[str]) -> None:
    if rows:
        conn.execute(_upsert_statement(conn.dialect.name, table, tuple(keys)), rows)


def _insert_new(
    conn: Connection, table: sa.Table, rows: list[dict[str, Any]], keys: list[str]
) -> None:
    if rows:
        conn.execute(_insert_new_statement(conn.dialect.name, table, tuple(keys)), rows)


class AlertStore:
    """Thread-safe: every call takes its own connection from the engine's pool."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def migrate(self, now_ms: int) -> int:
        """Bring the alerts' schema to SCHEMA_VERSION; returns the version found before."""
        with self.engine.begin() as conn:
            return migrate_schema(
                conn,
                metadata,
                schema_version,
                SCHEMA_VERSION,
                MIGRATIONS,
                now_ms,
                "the alerts tables",
            )

    # --- one batch of changes ------------------------------------------------------------------
    def write(self, batch: StoreBatch) -> None:
        if not batch:
            return
        with self.engine.begin() as conn:
            # Order matters for the one-open-alarm-per-(rule, subject) index: a pending alarm
            # forgotten and one closed in this batch must be gone before their successor for
            # the same subject opens.
            if batch.forget_alarms:
                ids = list(batch.forget_alarms)
                conn.execute(alarms.delete().where(alarms.c.id.in_(ids)))
                conn.execute(alarm_timeline.delete().where(alarm_timeline.c.alarm_id.in_(ids)))
            keep = [a for a in batch.alarms.values() if a.id not in batch.forget_alarms]
            keep.sort(key=lambda a: a.state.open)  # closed first, then open
            _upsert(conn, alarms, [_alarm_row(a) for a in keep], ["id"])
            entries = [e for e in batch.alarm_entries if e.alarm_id not in batch.forget_alarms]
            if entries:
                conn.execute(
                    alarm_timeline.insert(),
                    [
                        {
                            "alarm_id": e.alarm_id,
                            "ts": e.ts,
                            "action": e.action,
                            "actor": e.by,
                            "detail": e.detail,
                        }
                        for e in entries
                    ],
                )
            _upsert(
                conn, activations, [_activation_row(a) for a in batch.activations.values()], ["id"]
            )
            if batch.activation_entries:
                conn.execute(
                    activation_timeline.insert(),
                    [
                        {
                            "activation_id": e.activation_id,
                            "ts": e.ts,
                            "action": e.action,
                            "actor": e.by,
                            "level": int(e.level),
                            "detail": e.detail,
                        }
                        for e in batch.activation_entries
                    ],
                )
            _upsert(
                conn,
                activation_tasks,
                [_task_row(aid, t) for (aid, _), t in batch.tasks.items()],
                ["activation_id", "task_id"],
            )
            _upsert(
                conn,
                rescues,
                [_rescue_row(r, breached) for r, breached in batch.rescues.values()],
                ["alarm_id"],
            )
            _insert_new(
                conn, notifications, [_notification_row(n) for n in batch.notifications], ["key"]
            )

    # --- alarms --------------------------------------------------------------------------------
    def open_alarms(self) -> list[Alarm]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(alarms).where(alarms.c.is_open)).all()
        return [_alarm(r._mapping) for r in rows]

    def get_alarm(self, alarm_id: str) -> Alarm | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(alarms).where(alarms.c.id == alarm_id)).first()
        return None if row is None else _alarm(row._mapping)

    def alarm_timeline(self, alarm_id: str) -> list[dict[str, Any]]:
        q = (
            sa.select(alarm_timeline)
            .where(alarm_timeline.c.alarm_id == alarm_id)
            .order_by(alarm_timeline.c.id)
        )
        with self.engine.connect() as conn:
            return [
                {"ts": r.ts, "action": r.action, "by": r.actor, "detail": r.detail}
                for r in conn.execute(q)
            ]

    def list_alarms(
        self,
        estate: str | None = None,
        state: Sequence[str] | None = None,
        severity: Sequence[str] | None = None,
        limit: int = 100,
        offset: int = 0,
        estates: Collection[str] | None = None,
    ) -> list[Alarm]:
        """Newest first; ``estates`` limits to those (a user's estates)."""
        q = sa.select(alarms).order_by(alarms.c.started_ms.desc(), alarms.c.id).limit(limit)
        q = q.offset(offset)
        if estate:
            q = q.where(alarms.c.estate == estate)
        if estates is not None:
            q = q.where(alarms.c.estate.in_(sorted(estates)))
        if state:
            q = q.where(alarms.c.state.in_(list(state)))
        if severity:
            q = q.where(alarms.c.severity.in_(list(severity)))
        with self.engine.connect() as conn:
            return [_alarm(r._mapping) for r in conn.execute(q)]

    # --- silences ------------------------------------------------------------------------------
    def save_silence(self, s: Silence) -> None:
        row = {
            "id": s.id,
            "matchers": [m.as_dict() for m in s.matchers],
            "starts_ms": s.starts_ms,
            "ends_ms": s.ends_ms,
            "created_by": s.created_by,
            "comment": s.comment,
            "created_ms": s.created_ms,
        }
        with self.engine.begin() as conn:
            _upsert(conn, silences, [row], ["id"])

    def silences(self, ending_after_ms: int | None = None) -> list[Silence]:
        q = sa.select(silences).order_by(silences.c.created_ms.desc())
        if ending_after_ms is not None:
            q = q.where(silences.c.ends_ms > ending_after_ms)
        with self.engine.connect() as conn:
            return [
                Silence(
                    id=r.id,
                    matchers=tuple(
                        Matcher.load(m["name"], m["value"], m["op"], r.id) for m in r.matchers
                    ),
                    starts_ms=r.starts_ms,
                    ends_ms=r.ends_ms,
                    created_by=r.created_by,
                    comment=r.comment,
                    created_ms=r.created_ms,
                )
                for r in conn.execute(q)
            ]

    # --- notification log ----------------------------------------------------------------------
    def due_notifications(
        self, now: int, limit: int = 100, owns: Callable[[str], bool] | None = None
    ) -> list[Notification]:
        """Pending and due, oldest first; ``owns`` keeps only some estates' (a shard's)."""
        q = (
            sa.select(notifications)
            .where(notifications.c.state == "pending", notifications.c.next_ms <= now)
            .order_by(notifications.c.created_ms, notifications.c.key)
        )
        out: list[Notification] = []
        with self.engine.connect() as conn:
            for r in conn.execute(q).yield_per(500):
                if owns is None or owns(r.estate):
                    out.append(
                        Notification(r.key, r.receiver, r.estate, r.event, r.payload, r.created_ms)
                    )
                    if len(out) >= limit:
                        break
        return out

    def notification_sent(self, key: str, now: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                notifications.update()
                .where(notifications.c.key == key)
                .values(
                    state="sent",
                    sent_ms=now,
                    attempts=notifications.c.attempts + 1,
                    last_error=None,
                )
            )

    def notification_failed(self, key: str, next_ms: int | None, error: str) -> int:
        """Record a failed attempt; ``next_ms`` None gives up. Returns the attempts so far."""
        with self.engine.begin() as conn:
            conn.execute(
                notifications.update()
                .where(notifications.c.key == key)
                .values(
                    state="pending" if next_ms is not None else "failed",
                    next_ms=next_ms if next_ms is not None else notifications.c.next_ms,
                    attempts=notifications.c.attempts + 1,
                    last_error=error[:2000],
                )
            )
            return int(
                conn.execute(
                    sa.select(notifications.c.attempts).where(notifications.c.key == key)
                ).scalar_one()
            )

    def notification_attempts(self, key: str) -> int:
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(notifications.c.attempts).where(notifications.c.key == key)
            ).scalar_one_or_none()
        return int(found or 0)

    def purge_notifications(self, older_than_ms: int) -> int:
        """Forget delivered (or abandoned) notifications created before the cutoff."""
        with self.engine.begin() as conn:
            res = conn.execute(
                notifications.delete().where(
                    notifications.c.state != "pending", notifications.c.created_ms < older_than_ms
                )
            )
        return int(res.rowcount or 0)

    def list_notifications(
        self, estate: str | None = None, receiver: str | None = None, limit: int = 500
    ) -> list[dict[str, Any]]:
        q = sa.select(notifications).order_by(notifications.c.created_ms, notifications.c.key)
        if estate:
            q = q.where(notifications.c.estate == estate)
        if receiver:
            q = q.where(notifications.c.receiver == receiver)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q.limit(limit))]

    # --- clocks and windows --------------------------------------------------------------------
    def save_clocks(self, rows: Iterable[tuple[str, str, str, str, int]]) -> None:
        keys = ("estate", "device", "kind", "gateway", "last_ms")
        data = [dict(zip(keys, r, strict=True)) for r in rows]
        if data:
            with self.engine.begin() as conn:
                _upsert(conn, device_clocks, data, ["estate", "device"])

    def clocks(self) -> list[tuple[str, str, str, str, int]]:
        with self.engine.connect() as conn:
            return [
                (r.estate, r.device, r.kind, r.gateway, r.last_ms)
                for r in conn.execute(sa.select(device_clocks))
            ]

    def save_windows(self, rows: Iterable[tuple[str, str, str, bytes]], now: int) -> None:
        data = [
            {"estate": e, "device": d, "metric": m, "data": b, "saved_ms": now}
            for e, d, m, b in rows
        ]
        if data:
            with self.engine.begin() as conn:
                _upsert(conn, windows, data, ["estate", "device", "metric"])

    def windows(self) -> list[tuple[str, str, str, bytes]]:
        with self.engine.connect() as conn:
            return [
                (r.estate, r.device, r.metric, bytes(r.data))
                for r in conn.execute(sa.select(windows))
            ]

    # --- rescues -------------------------------------------------------------------------------
    def arrivals(self) -> dict[str, tuple[int, str]]:
        """Alarm id → (arrived_ms, by) of the rescues whose technician has arrived."""
        q = sa.select(rescues.c.alarm_id, rescues.c.arrived_ms, rescues.c.arrived_by).where(
            rescues.c.arrived_ms.is_not(None)
        )
        with self.engine.connect() as conn:
            return {r[0]: (int(r[1]), r[2] or "") for r in conn.execute(q)}

    def rescues(
        self, estate: str | None = None, estates: Collection[str] | None = None
    ) -> list[dict[str, Any]]:
        q = sa.select(rescues).order_by(rescues.c.trapped_ms)
        if estate:
            q = q.where(rescues.c.estate == estate)
        if estates is not None:
            q = q.where(rescues.c.estate.in_(sorted(estates)))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    # --- warnings ------------------------------------------------------------------------------
    def save_warning(self, w: OfficialWarning) -> None:
        row = {
            "id": w.id,
            "hazard": w.hazard.value,
            "level": w.level.colour,
            "estates": list(w.estates),
            "region": w.region,
            "issued_ms": w.issued_ms,
            "expires_ms": w.expires_ms,
            "text": w.text,
            "source": w.source,
            "created_by": w.created_by,
            "created_ms": w.created_ms,
            "cancelled_ms": w.cancelled_ms,
        }
        with self.engine.begin() as conn:
            _upsert(conn, warnings, [row], ["id"])

    def warnings(self, expiring_after_ms: int | None = None) -> list[OfficialWarning]:
        q = sa.select(warnings).order_by(warnings.c.issued_ms.desc())
        if expiring_after_ms is not None:
            q = q.where(warnings.c.expires_ms > expiring_after_ms)
        with self.engine.connect() as conn:
            return [
                OfficialWarning(
                    id=r.id,
                    hazard=Hazard(r.hazard),
                    level=WeatherLevel.parse(r.level),
                    issued_ms=r.issued_ms,
                    expires_ms=r.expires_ms,
                    estates=tuple(r.estates),
                    region=r.region,
                    text=r.text,
                    source=r.source,
                    created_by=r.created_by,
                    created_ms=r.created_ms,
                    cancelled_ms=r.cancelled_ms,
                )
                for r in conn.execute(q)
            ]

    # --- plan activations ----------------------------------------------------------------------
    def active_activations(self) -> list[PlanActivation]:
        return self._activations(sa.select(activations).where(activations.c.is_active))

    def list_activations(
        self,
        estate: str | None = None,
        active: bool | None = None,
        limit: int = 100,
        estates: Collection[str] | None = None,
    ) -> list[PlanActivation]:
        q = sa.select(activations).order_by(activations.c.started_ms.desc()).limit(limit)
        if estate:
            q = q.where(activations.c.estate == estate)
        if estates is not None:
            q = q.where(activations.c.estate.in_(sorted(estates)))
        if active is not None:
            q = q.where(activations.c.is_active == active)
        return self._activations(q)

    def get_activation(self, activation_id: str) -> PlanActivation | None:
        found = self._activations(sa.select(activations).where(activations.c.id == activation_id))
        return found[0] if found else None

    def activation_timeline(self, activation_id: str) -> list[dict[str, Any]]:
        q = (
            sa.select(activation_timeline)
            .where(activation_timeline.c.activation_id == activation_id)
            .order_by(activation_timeline.c.id)
        )
        with self.engine.connect() as conn:
            return [
                {
                    "ts": r.ts,
                    "action": r.action,
                    "by": r.actor,
                    "level": ResponseLevel(r.level).roman,
                    "detail": r.detail,
                }
                for r in conn.execute(q)
            ]

    def _activations(self, q: sa.Select[Any]) -> list[PlanActivation]:
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
            ids = [r.id for r in rows]
            task_rows = (
                conn.execute(
                    sa.select(activation_tasks)
                    .where(activation_tasks.c.activation_id.in_(ids))
                    .order_by(activation_tasks.c.due_ms, activation_tasks.c.task_id)
                ).all()
                if ids
                else []
            )
        tasks: dict[str, dict[str, ActivationTask]] = {}
        for t in task_rows:
            tasks.setdefault(t.activation_id, {})[t.task_id] = ActivationTask(
                task_id=t.task_id,
                level=ResponseLevel(t.level),
                text_zh=t.text_zh,
                text_en=t.text_en,
                role=t.role,
                added_ms=t.added_ms,
                due_ms=t.due_ms,
                done_ms=t.done_ms,
                done_by=t.done_by,
                note=t.note,
                overdue_ms=t.overdue_ms,
            )
        out = []
        for r in rows:
            out.append(
                PlanActivation(
                    id=r.id,
                    estate=r.estate,
                    plan=r.plan,
                    level=ResponseLevel(r.level),
                    started_ms=r.started_ms,
                    updated_ms=r.updated_ms,
                    hold_ms=r.hold_ms,
                    max_level=ResponseLevel(r.max_level),
                    levels_reached=list(r.levels_reached),
                    sources={
                        s["key"]: Source(s["key"], ResponseLevel.parse(s["level"]), s["detail"])
                        for s in r.sources
                    },
                    tasks=tasks.get(r.id, {}),
                    below_since_ms=r.below_since_ms,
                    ended_ms=r.ended_ms,
                    ended_by=r.ended_by,
                    summary=r.summary,
                )
            )
        return out

    # --- drills --------------------------------------------------------------------------------
    def save_drill(self, d: Drill) -> None:
        with self.engine.begin() as conn:
            _upsert(conn, drills, [_drill_row(d)], ["id"])

    def get_drill(self, drill_id: str) -> Drill | None:
        found = self.list_drills(drill_id=drill_id)
        return found[0] if found else None

    def list_drills(
        self,
        estate: str | None = None,
        plan: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        drill_id: str | None = None,
        estates: Collection[str] | None = None,
    ) -> list[Drill]:
        q = sa.select(drills).order_by(drills.c.created_ms.desc())
        if drill_id:
            q = q.where(drills.c.id == drill_id)
        if estates is not None:
            q = q.where(drills.c.estate.in_(sorted(estates)))
        if estate:
            q = q.where(drills.c.estate == estate)
        if plan:
            q = q.where(drills.c.plan == plan)
        when = sa.func.coalesce(drills.c.held_ms, drills.c.scheduled_ms, drills.c.created_ms)
        if since_ms is not None:
            q = q.where(when >= since_ms)
        if until_ms is not None:
            q = q.where(when < until_ms)
        with self.engine.connect() as conn:
            return [
                Drill(
                    id=r.id,
                    estate=r.estate,
                    plan=r.plan,
                    status=DrillStatus(r.status),
                    created_ms=r.created_ms,
                    scheduled_ms=r.scheduled_ms,
                    held_ms=r.held_ms,
                    participants=list(r.participants),
                    findings=r.findings,
                    outcome=r.outcome,
                    recorded_by=r.recorded_by,
                )
                for r in conn.execute(q)
            ]

    def drill_clocks(self) -> dict[tuple[str, str], int]:
        with self.engine.connect() as conn:
            return {(r.estate, r.plan): r.last_ms for r in conn.execute(sa.select(drill_clocks))}

    def save_drill_clock(self, estate: str, plan: str, last_ms: int) -> None:
        with self.engine.begin() as conn:
            _upsert(
                conn,
                drill_clocks,
                [{"estate": estate, "plan": plan, "last_ms": last_ms}],
                ["estate", "plan"],
            )


# --- rows -------------------------------------------------------------------------------------


def _alarm_row(a: Alarm) -> dict[str, Any]:
    return {
        "id": a.id,
        "rule": a.rule,
        "estate": a.estate,
        "subject": a.subject,
        "kind": a.kind,
        "gateway": a.gateway,
        "severity": a.severity.value,
        "state": a.state.value,
        "is_open": a.state.open,
        "summary_zh": a.summary_zh,
        "summary_en": a.summary_en,
        "started_ms": a.started_ms,
        "updated_ms": a.updated_ms,
        "fired_ms": a.fired_ms,
        "acked_ms": a.acked_ms,
        "acked_by": a.acked_by,
        "resolved_ms": a.resolved_ms,
        "resolved_by": a.resolved_by,
        "assignee": a.assignee,
        "tags": list(a.tags),
        "detail": a.detail,
        "last_ms": a.last_ms,
        "count": a.count,
        "for_ms": a.for_ms,
        "flapping": a.flapping,
        "silenced_by": a.silenced_by,
        "escalated": a.escalated,
        "deadline_ms": a.deadline_ms,
        "deadline_breached": a.deadline_breached,
        "raised_ms": a.raised_ms,
        "closed_ms": a.closed_ms,
        "late": a.late,
    }


def _alarm(r: Any) -> Alarm:
    return Alarm(
        id=r["id"],
        rule=r["rule"],
        estate=r["estate"],
        subject=r["subject"],
        kind=r["kind"],
        gateway=r["gateway"],
        severity=Severity(r["severity"]),
        state=AlarmState(r["state"]),
        summary_zh=r["summary_zh"],
        summary_en=r["summary_en"],
        started_ms=r["started_ms"],
        updated_ms=r["updated_ms"],
        fired_ms=r["fired_ms"],
        acked_ms=r["acked_ms"],
        acked_by=r["acked_by"],
        resolved_ms=r["resolved_ms"],
        resolved_by=r["resolved_by"],
        assignee=r["assignee"],
        tags=tuple(r["tags"]),
        detail=r["detail"],
        last_ms=r["last_ms"],
        count=r["count"],
        for_ms=r["for_ms"],
        flapping=bool(r["flapping"]),
        silenced_by=r["silenced_by"],
        escalated=r["escalated"],
        deadline_ms=r["deadline_ms"],
        deadline_breached=bool(r["deadline_breached"]),
        raised_ms=r["raised_ms"],
        closed_ms=r["closed_ms"],
        late=bool(r["late"]),
    )


def _activation_row(a: PlanActivation) -> dict[str, Any]:
    return {
        "id": a.id,
        "estate": a.estate,
        "plan": a.plan,
        "level": int(a.level),
        "is_active": a.active,
        "started_ms": a.started_ms,
        "updated_ms": a.updated_ms,
        "ended_ms": a.ended_ms,
        "ended_by": a.ended_by,
        "below_since_ms": a.below_since_ms,
        "hold_ms": a.hold_ms,
        "max_level": int(a.max_level),
        "levels_reached": list(a.levels_reached),
        "sources": [s.as_dict() for s in a.sources.values()],
        "summary": a.summary,
    }


def _task_row(activation_id: str, t: ActivationTask) -> dict[str, Any]:
    return {
        "activation_id": activation_id,
        "task_id": t.task_id,
        "level": int(t.level),
        "text_zh": t.text_zh,
        "text_en": t.text_en,
        "role": t.role,
        "added_ms": t.added_ms,
        "due_ms": t.due_ms,
        "done_ms": t.done_ms,
        "done_by": t.done_by,
        "note": t.note,
        "overdue_ms": t.overdue_ms,
    }


def _rescue_row(r: Rescue, breached: bool) -> dict[str, Any]:
    return {
        "alarm_id": r.alarm_id,
        "estate": r.estate,
        "device": r.device,
        "trapped_ms": r.trapped_ms,
        "deadline_ms": r.deadline_ms,
        "released_ms": r.released_ms,
        "released_by": r.released_by,
        "duration_ms": r.duration_ms,
        "breached": breached,
        "arrived_ms": r.arrived_ms,
        "arrived_by": r.arrived_by,
    }


def _notification_row(n: Notification) -> dict[str, Any]:
    return {
        "key": n.key,
        "receiver": n.receiver,
        "estate": n.estate,
        "event": n.event,
        "payload": n.payload,
        "state": "pending",
        "attempts": 0,
        "next_ms": n.created_ms,
        "created_ms": n.created_ms,
        "sent_ms": None,
        "last_error": None,
    }


def _drill_row(d: Drill) -> dict[str, Any]:
    return {
        "id": d.id,
        "estate": d.estate,
        "plan": d.plan,
        "status": d.status.value,
        "created_ms": d.created_ms,
        "scheduled_ms": d.scheduled_ms,
        "held_ms": d.held_ms,
        "participants": list(d.participants),
        "findings": d.findings,
        "outcome": d.outcome,
        "recorded_by": d.recorded_by,
    }
