"""Where the alerts' state is kept: alarms and their timelines (pending 'for' timers included),
deadman clocks, window samples, silences, the notification log, rescues, official warnings,
plan activations with their tasks and timelines, and drills.

The tables and their migrations are in ``alerts.tables``; how each record is kept in its rows
is declared once below (``alerts.rows.RowMap``). Writes come in batches, one transaction per
batch of changes, never one per reading.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from alerts.alarms.model import SYSTEM, Alarm, AlarmState, TimelineEntry
from alerts.drills import Drill
from alerts.escalation import Rescue
from alerts.notify import Notification
from alerts.plans.activation import ActivationEntry, ActivationTask, PlanActivation, Source
from alerts.plans.model import ResponseLevel
from alerts.rows import Col, RowMap
from alerts.silences import Matcher, Silence
from alerts.store_batch import StoreBatch
from alerts.tables import (
    MIGRATIONS,
    SCHEMA_VERSION,
    activation_tasks,
    activation_timeline,
    activations,
    alarm_timeline,
    alarms,
    device_clocks,
    drill_clocks,
    drills,
    insert_new,
    metadata,
    notifications,
    rescues,
    run_many,
    schema_version,
    silences,
    upsert,
    upsert_statement,
    warnings,
    windows,
)
from alerts.weather.levels import WeatherLevel
from alerts.weather.warnings import OfficialWarning
from ingest.model import Fence
from ingest.schema import migrate_schema

T = TypeVar("T")
AnyOf = Sequence[str] | None  # any of these values; None or empty: all
Estates = Collection[str] | None  # only these estates (a user's); None: all
# estate, device, kind, gateway, last_ms (arrival, wall clock), data_ms (-1: not known)
ClockRow = tuple[str, str, str, str, int, int]

__all__ = ["SCHEMA_VERSION", "AlertStore", "StoreBatch", "alarms", "metadata", "schema_version"]

# --- how each record is kept in its rows ------------------------------------------------------
_ALARM = RowMap(Alarm, alarms.c.keys(), is_open=Col(lambda a: a.state.open))
_ALARM_ENTRY = RowMap(TimelineEntry, alarm_timeline.c.keys(), renames={"actor": "by"})
_SILENCE = RowMap(
    Silence,
    silences.c.keys(),
    matchers=Col(
        lambda s: [m.as_dict() for m in s.matchers],
        lambda r: tuple(
            Matcher.load(m["name"], m["value"], m["op"], r["id"]) for m in r["matchers"]
        ),
    ),
)
# a notification is written pending and due at once; the outbox's updates write the rest
_NOTIFICATION = RowMap(
    Notification,
    notifications.c.keys(),
    state=Col(lambda n: "pending"),
    attempts=Col(lambda n: 0),
    next_ms=Col(operator.attrgetter("created_ms")),
    sent_ms=Col(lambda n: None),
    last_error=Col(lambda n: None),
)
_RESCUE = RowMap(Rescue, rescues.c.keys(), duration_ms=Col(operator.attrgetter("duration_ms")))
_WARNING = RowMap(
    OfficialWarning,
    warnings.c.keys(),
    level=Col(lambda w: w.level.colour, lambda r: WeatherLevel.parse(r["level"])),
)
_ACTIVATION = RowMap(
    PlanActivation,
    activations.c.keys(),
    is_active=Col(operator.attrgetter("active")),
    sources=Col(
        lambda a: [s.as_dict() for s in a.sources.values()],
        lambda r: {
            s["key"]: Source(s["key"], ResponseLevel.parse(s["level"]), s["detail"])
            for s in r["sources"]
        },
    ),
)
_ACTIVATION_ENTRY = RowMap(ActivationEntry, activation_timeline.c.keys(), renames={"actor": "by"})
_TASK = RowMap(ActivationTask, activation_tasks.c.keys())
_DRILL = RowMap(Drill, drills.c.keys())


@functools.lru_cache(maxsize=4)
def _clock_upsert(dialect: str) -> Any:
    """Insert a deadman clock, or move a stored one forward (never back)."""
    mod: Any = postgresql if dialect == "postgresql" else sqlite
    stmt = mod.insert(device_clocks)
    keys = ("estate", "device")
    update = {c.name: stmt.excluded[c.name] for c in device_clocks.columns if c.name not in keys}
    return stmt.on_conflict_do_update(
        index_elements=list(keys),
        set_=update,
        where=stmt.excluded.last_ms >= device_clocks.c.last_ms,
    )


def _scoped(
    q: sa.Select[Any], table: sa.Table, estate: str | None, estates: Estates
) -> sa.Select[Any]:
    """Rows of one estate, and only of ``estates`` (a user's) when given."""
    if estate:
        q = q.where(table.c.estate == estate)
    if estates is not None:
        q = q.where(table.c.estate.in_(sorted(estates)))
    return q


class AlertStore:
    """Thread-safe: every call takes its own connection from the engine's pool.

    ``fence``: run first in every transaction that writes estates' state (alarms, timelines,
    plans, rescues, notifications, drills, deadman clocks and windows) with those estates; it
    raises ``ingest.model.NotOwner`` when this process may no longer write for some of them,
    and the transaction rolls back (issue 16: a worker that lost its partition's lease)."""

    def __init__(self, engine: Engine, fence: Fence | None = None) -> None:
        self.engine = engine
        self.fence = fence

    def _fenced(self, conn: Connection, estates: Collection[str]) -> None:
        if self.fence is not None and estates:
            self.fence(conn, estates)

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
            self._fenced(conn, batch.estates())
            # Order matters for the one-open-alarm-per-(rule, subject) index: a pending alarm
            # forgotten and one closed in this batch must be gone before their successor for
            # the same subject opens.
            if batch.forget_alarms:
                ids = list(batch.forget_alarms)
                conn.execute(alarms.delete().where(alarms.c.id.in_(ids)))
                conn.execute(alarm_timeline.delete().where(alarm_timeline.c.alarm_id.in_(ids)))
            keep = [a for a in batch.alarms.values() if a.id not in batch.forget_alarms]
            keep.sort(key=lambda a: a.state.open)  # closed first, then open
            upsert(conn, alarms, [_ALARM.row(a) for a in keep], ["id"])
            entries = [e for e in batch.alarm_entries if e.alarm_id not in batch.forget_alarms]
            if entries:
                conn.execute(alarm_timeline.insert(), [_ALARM_ENTRY.row(e) for e in entries])
            upsert(
                conn, activations, [_ACTIVATION.row(a) for a in batch.activations.values()], ["id"]
            )
            if batch.activation_entries:
                conn.execute(
                    activation_timeline.insert(),
                    [_ACTIVATION_ENTRY.row(e) for e in batch.activation_entries],
                )
            upsert(
                conn,
                activation_tasks,
                [_TASK.row(t, activation_id=aid) for (aid, _), t in batch.tasks.items()],
                ["activation_id", "task_id"],
            )
            upsert(
                conn,
                rescues,
                [_RESCUE.row(r, breached=breached) for r, breached in batch.rescues.values()],
                ["alarm_id"],
            )
            insert_new(
                conn, notifications, [_NOTIFICATION.row(n) for n in batch.notifications], ["key"]
            )
            upsert(conn, silences, [_SILENCE.row(x) for x in batch.silences.values()], ["id"])
            upsert(conn, warnings, [_WARNING.row(w) for w in batch.warnings.values()], ["id"])
            upsert(conn, drills, [_DRILL.row(d) for d in batch.drills.values()], ["id"])
            clocks = [
                {"estate": e, "plan": p, "last_ms": ms} for (e, p), ms in batch.drill_clocks.items()
            ]
            upsert(conn, drill_clocks, clocks, ["estate", "plan"])

    def _save(
        self, table: sa.Table, rows: list[dict[str, Any]], keys: list[str], owned: bool = False
    ) -> None:
        """``owned``: rows of estates' own state (their owner's to write: fenced)."""
        if rows:
            with self.engine.begin() as conn:
                if owned:
                    self._fenced(conn, {r["estate"] for r in rows})
                upsert(conn, table, rows, keys)

    def _rows(self, q: sa.Select[Any]) -> list[sa.RowMapping]:
        with self.engine.connect() as conn:
            return list(conn.execute(q).mappings())

    def _timeline(self, owner: sa.Column[Any], owner_id: str) -> list[sa.RowMapping]:
        """One alarm's or activation's timeline, in the order it was written."""
        table = owner.table
        return self._rows(sa.select(table).where(owner == owner_id).order_by(table.c.id))

    def _in_force(
        self, rows: RowMap[T], newest: sa.Column[Any], ends: sa.Column[Any], after: int | None
    ) -> list[T]:
        """Newest first; with ``after``, only those that end after it."""
        q = sa.select(newest.table).order_by(newest.desc())
        if after is not None:
            q = q.where(ends > after)
        return [rows.load(r) for r in self._rows(q)]

    # --- alarms --------------------------------------------------------------------------------
    def open_alarms(self, estates: Estates = None) -> list[Alarm]:
        q = _scoped(sa.select(alarms).where(alarms.c.is_open), alarms, None, estates)
        return [_ALARM.load(r) for r in self._rows(q)]

    def cleared_alarms(self, estates: Estates = None) -> list[Alarm]:
        """Cleared before anyone acknowledged them: still the control room's to take."""
        q = sa.select(alarms).where(alarms.c.state == AlarmState.CLEARED.value)
        return [_ALARM.load(r) for r in self._rows(_scoped(q, alarms, None, estates))]

    def alarm_caused_at(self, rule: str, estate: str, subject: str, ts: int) -> Alarm | None:
        """A stored alarm of (rule, estate, subject) whose own fault a condition that began
        holding at ``ts`` (data time) is (:meth:`Alarm.caused_at`): a replayed reading's."""
        c = alarms.c
        q = sa.select(alarms).where(
            c.rule == rule, c.estate == estate, c.subject == subject, c.started_ms <= ts
        )
        closed = sa.and_(~c.is_open, c.resolved_by == SYSTEM, c.resolved_ms >= ts)
        q = q.where(sa.or_(c.started_ms == ts, closed)).order_by(c.started_ms.desc()).limit(1)
        found = self._rows(q)
        return _ALARM.load(found[0]) if found else None

    def get_alarm(self, alarm_id: str) -> Alarm | None:
        found = self._rows(sa.select(alarms).where(alarms.c.id == alarm_id))
        return _ALARM.load(found[0]) if found else None

    def alarm_timeline(self, alarm_id: str) -> list[dict[str, Any]]:
        return [
            {"ts": r["ts"], "action": r["action"], "by": r["actor"], "detail": r["detail"]}
            for r in self._timeline(alarm_timeline.c.alarm_id, alarm_id)
        ]

    def list_alarms(
        self,
        estate: str | None = None,
        state: AnyOf = None,
        severity: AnyOf = None,
        limit: int = 100,
        offset: int = 0,
        estates: Estates = None,
    ) -> list[Alarm]:
        """Newest first; ``estates`` limits to those (a user's estates)."""
        q = sa.select(alarms).order_by(alarms.c.started_ms.desc(), alarms.c.id).limit(limit)
        q = _scoped(q.offset(offset), alarms, estate, estates)
        if state:
            q = q.where(alarms.c.state.in_(list(state)))
        if severity:
            q = q.where(alarms.c.severity.in_(list(severity)))
        return [_ALARM.load(r) for r in self._rows(q)]

    # --- silences ------------------------------------------------------------------------------
    def save_silence(self, s: Silence) -> None:
        self._save(silences, [_SILENCE.row(s)], ["id"])

    def silences(self, ending_after_ms: int | None = None) -> list[Silence]:
        return self._in_force(_SILENCE, silences.c.created_ms, silences.c.ends_ms, ending_after_ms)

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
            for r in conn.execute(q).mappings().yield_per(500):
                if owns is None or owns(r["estate"]):
                    out.append(_NOTIFICATION.load(r))
                    if len(out) >= limit:
                        break
        return out

    @staticmethod
    def _attempted(conn: Connection, key: str, **values: Any) -> None:
        conn.execute(
            notifications.update()
            .where(notifications.c.key == key)
            .values(attempts=notifications.c.attempts + 1, **values)
        )

    def notification_sent(self, key: str, now: int) -> None:
        with self.engine.begin() as conn:
            self._attempted(conn, key, state="sent", sent_ms=now, last_error=None)

    def notification_failed(self, key: str, next_ms: int | None, error: str) -> int:
        """Record a failed attempt; ``next_ms`` None gives up. Returns the attempts so far."""
        with self.engine.begin() as conn:
            self._attempted(
                conn,
                key,
                state="pending" if next_ms is not None else "failed",
                next_ms=next_ms if next_ms is not None else notifications.c.next_ms,
                last_error=error[:2000],
            )
            attempts = sa.select(notifications.c.attempts).where(notifications.c.key == key)
            return int(conn.execute(attempts).scalar_one())

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
        q = _scoped(q, notifications, estate, None)
        if receiver:
            q = q.where(notifications.c.receiver == receiver)
        return [dict(r) for r in self._rows(q.limit(limit))]

    # --- clocks and windows --------------------------------------------------------------------
    def save_clocks(self, rows: Iterable[ClockRow]) -> None:
        rows = list(rows)
        if rows:
            with self.engine.begin() as conn:
                self._fenced(conn, {r[0] for r in rows})
                self._upsert_clocks(conn, rows)

    @staticmethod
    def _upsert_clocks(conn: Connection, rows: Sequence[ClockRow]) -> None:
        """A clock only moves forward: an older one (a snapshot racing a flush) never
        overwrites a newer one."""
        keys = ("estate", "device", "kind", "gateway", "last_ms", "data_ms")
        newest: dict[tuple[str, str], ClockRow] = {}
        for r in rows:
            old = newest.get((r[0], r[1]))
            if old is None or r[4] >= old[4]:
                newest[(r[0], r[1])] = r
        run_many(conn, _clock_upsert(conn.dialect.name), keys, list(newest.values()))

    def clocks(self, estates: Estates = None) -> list[ClockRow]:
        q = _scoped(sa.select(device_clocks), device_clocks, None, estates)
        return [
            (
                r["estate"], r["device"], r["kind"], r["gateway"], r["last_ms"],
                -1 if r["data_ms"] is None else r["data_ms"],
            )
            for r in self._rows(q)
        ]  # fmt: skip

    def save_windows(self, rows: Iterable[tuple[str, str, str, bytes]], now: int) -> None:
        data = [(e, d, m, b, now) for e, d, m, b in rows]
        if data:
            with self.engine.begin() as conn:
                self._fenced(conn, {r[0] for r in data})
                stmt = upsert_statement(conn.dialect.name, windows, ("estate", "device", "metric"))
                run_many(conn, stmt, ("estate", "device", "metric", "data", "saved_ms"), data)

    def windows(self, estates: Estates = None) -> list[tuple[str, str, str, bytes]]:
        q = _scoped(sa.select(windows), windows, None, estates)
        return [(r["estate"], r["device"], r["metric"], bytes(r["data"])) for r in self._rows(q)]

    # --- rescues -------------------------------------------------------------------------------
    def arrivals(self, estates: Estates = None) -> dict[str, tuple[int, str]]:
        """Alarm id → (arrived_ms, by) of the rescues whose technician has arrived."""
        q = sa.select(rescues.c.alarm_id, rescues.c.arrived_ms, rescues.c.arrived_by).where(
            rescues.c.arrived_ms.is_not(None)
        )
        q = _scoped(q, rescues, None, estates)
        with self.engine.connect() as conn:
            return {r[0]: (int(r[1]), r[2] or "") for r in conn.execute(q)}

    def rescues(self, estate: str | None = None, estates: Estates = None) -> list[dict[str, Any]]:
        q = _scoped(sa.select(rescues).order_by(rescues.c.trapped_ms), rescues, estate, estates)
        return [dict(r) for r in self._rows(q)]

    # --- warnings ------------------------------------------------------------------------------
    def save_warning(self, w: OfficialWarning) -> None:
        self._save(warnings, [_WARNING.row(w)], ["id"])

    def warnings(self, expiring_after_ms: int | None = None) -> list[OfficialWarning]:
        return self._in_force(
            _WARNING, warnings.c.issued_ms, warnings.c.expires_ms, expiring_after_ms
        )

    # --- plan activations ----------------------------------------------------------------------
    def active_activations(self, estates: Estates = None) -> list[PlanActivation]:
        q = sa.select(activations).where(activations.c.is_active)
        return self._activations(_scoped(q, activations, None, estates))

    def list_activations(
        self,
        estate: str | None = None,
        active: bool | None = None,
        limit: int = 100,
        estates: Estates = None,
    ) -> list[PlanActivation]:
        q = sa.select(activations).order_by(activations.c.started_ms.desc()).limit(limit)
        q = _scoped(q, activations, estate, estates)
        if active is not None:
            q = q.where(activations.c.is_active == active)
        return self._activations(q)

    def get_activation(self, activation_id: str) -> PlanActivation | None:
        found = self._activations(sa.select(activations).where(activations.c.id == activation_id))
        return found[0] if found else None

    def activation_timeline(self, activation_id: str) -> list[dict[str, Any]]:
        return [
            {
                "ts": r["ts"],
                "action": r["action"],
                "by": r["actor"],
                "level": ResponseLevel(r["level"]).roman,
                "detail": r["detail"],
            }
            for r in self._timeline(activation_timeline.c.activation_id, activation_id)
        ]

    def _activations(self, q: sa.Select[Any]) -> list[PlanActivation]:
        with self.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
            ids = [r["id"] for r in rows]
            task_rows = (
                conn.execute(
                    sa.select(activation_tasks)
                    .where(activation_tasks.c.activation_id.in_(ids))
                    .order_by(activation_tasks.c.due_ms, activation_tasks.c.task_id)
                )
                .mappings()
                .all()
                if ids
                else []
            )
        tasks: dict[str, dict[str, ActivationTask]] = {}
        for t in task_rows:
            tasks.setdefault(t["activation_id"], {})[t["task_id"]] = _TASK.load(t)
        return [_ACTIVATION.load(r, tasks=tasks.get(r["id"], {})) for r in rows]

    # --- drills --------------------------------------------------------------------------------
    def save_drill(self, d: Drill) -> None:
        self._save(drills, [_DRILL.row(d)], ["id"])

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
        estates: Estates = None,
    ) -> list[Drill]:
        q = _scoped(sa.select(drills).order_by(drills.c.created_ms.desc()), drills, estate, estates)
        if drill_id:
            q = q.where(drills.c.id == drill_id)
        if plan:
            q = q.where(drills.c.plan == plan)
        when = sa.func.coalesce(drills.c.held_ms, drills.c.scheduled_ms, drills.c.created_ms)
        if since_ms is not None:
            q = q.where(when >= since_ms)
        if until_ms is not None:
            q = q.where(when < until_ms)
        return [_DRILL.load(r) for r in self._rows(q)]

    def drill_clocks(self, estates: Estates = None) -> dict[tuple[str, str], int]:
        rows = self._rows(_scoped(sa.select(drill_clocks), drill_clocks, None, estates))
        return {(r["estate"], r["plan"]): r["last_ms"] for r in rows}

    def save_drill_clock(self, estate: str, plan: str, last_ms: int) -> None:
        row = {"estate": estate, "plan": plan, "last_ms": last_ms}
        self._save(drill_clocks, [row], ["estate", "plan"])
