"""The alert engine: rules → alarms → escalation and notification; weather → emergency plans.

The composition of the pure parts with their I/O. Ingest calls :meth:`AlertEngine.on_committed`
on its writer thread with what it just committed; the scheduler calls :meth:`tick` every second
for what depends on time alone ('for' timers, deadman clocks, escalation, overdue tasks,
stand-downs, drills); the API calls the methods below the "by people" line. One lock orders
them. Every change is written to the database (one transaction per call) before anyone is
told of it: listeners (the live stream), MQTT and webhooks through the notification log.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from alerts.alarms import (
    SYSTEM,
    Alarm,
    AlarmBook,
    AlarmChange,
    AlarmState,
    FlapDetector,
    InvalidTransition,
    TimelineEntry,
)
from alerts.alarms.model import new_id
from alerts.drills import Drill, DrillStatus, next_drill, year_bounds, yearly_counts
from alerts.escalation import Rescue, due_steps
from alerts.inhibit import Inhibitor
from alerts.notify import Notification, Notifier
from alerts.notify.mqtt import MqttNotifier, Publish
from alerts.notify.outbox import Outbox
from alerts.plans import (
    BUNDLED_PLANS,
    ActivationChange,
    Plan,
    PlanActivation,
    PlanBook,
    ResponseLevel,
    Source,
    load_plans,
)
from alerts.rules.evaluate import DeviceClock, Evaluator, Signal
from alerts.rules.index import RuleIndex
from alerts.rules.loader import BUNDLED_RULES, RuleFileError, RuleSet, load_rules
from alerts.rules.spec import Rule
from alerts.silences import Matcher, Silence, SilenceBook
from alerts.store import AlertStore, StoreBatch
from alerts.weather import (
    BUNDLED_CRITERIA,
    Hazard,
    OfficialWarning,
    WeatherBoard,
    WeatherLevel,
    load_criteria,
)
from alerts.weather.levels import check_criteria
from alerts.windows import SeriesWindow, WindowBank
from alerts.zones import BUNDLED_ZONES, EstateProfile, load_zones
from ingest.pipeline import Delivery
from ingest.schema import NotFound
from protocol.catalog import Catalog

__all__ = ["AlertEngine", "ChangeListener"]

log = logging.getLogger(__name__)

# Receives {"type": "alarm" | "plan", ...} after each change is stored; must be quick.
ChangeListener = Callable[[dict[str, Any]], None]

_MINUTE = 60_000
# Changes kept in memory while the database is away (alarm states, timeline entries, ...).
MAX_UNWRITTEN = 200_000
_DAY = 86_400_000


class AlertEngine:
    """Wiring (composition root)::

        alerts = AlertEngine(state.engine, catalog, now_ms, publish=mqtt_publish,
                             receivers=receivers_from_config(settings...))
        ingest.add_listener(alerts.on_committed)
        alerts.add_listener(lambda c: live.publish(c["estate"], c["type"], c))
        scheduler.add_job(alerts.tick, "interval", seconds=1, max_instances=1)
        alerts.start() ... alerts.stop()

    ``engine``: the state store's SQLAlchemy engine (its own tables, prefixed ``alert_``).
    ``clock``: epoch ms; tests pass a simulated one. ``publish(topic, payload, retain)``: MQTT
    out (alarm changes on ``{root}/{estate}/alerts``, plans retained on ``{root}/{estate}/plans``).
    ``receivers``: role (control_room, supervisor, authority) → notifiers. ``rules_dir``,
    ``override_dir`` (``<estate>/*.yaml``), ``plans_dir``, ``criteria_path``: the data files.
    ``estate_region``: estate → region text (default: the state store's ``estates.region``).
    ``estate_profile``: estate → its zone, heating season and rescue deadline (default: from
    the state store's ``estates`` settings and ``zones.yaml``).
    Raises RuleFileError or DataFileError when a data file has a mistake.
    """

    def __init__(
        self,
        engine: sa.Engine,
        catalog: Catalog,
        clock: Callable[[], int],
        publish: Publish | None = None,
        rules_dir: Path = BUNDLED_RULES,
        override_dir: Path | None = None,
        plans_dir: Path = BUNDLED_PLANS,
        criteria_path: Path = BUNDLED_CRITERIA,
        receivers: Mapping[str, Sequence[Notifier]] | None = None,
        root: str = "estates",
        estate_region: Callable[[str], str] | None = None,
        estate_profile: Callable[[str], EstateProfile] | None = None,
        zones_path: Path = BUNDLED_ZONES,
        plan_hold_ms: int = 2 * 3_600_000,
        flapping: FlapDetector | None = None,
        deadman_every_ms: int = 5_000,
        startup_grace_ms: int = 60_000,
        weather_every_ms: int = _MINUTE,
        snapshot_every_ms: int = 5 * _MINUTE,
        notification_retention_ms: int = 30 * _DAY,
        owns: Callable[[str], bool] | None = None,
        late_after_ms: int = 10 * _MINUTE,
    ) -> None:
        self.clock = clock
        # Data this much older than its arrival is late: history, not an emergency.
        self.late_after_ms = late_after_ms
        self.catalog = catalog
        self.root = root
        self.rules_dir, self.override_dir = rules_dir, override_dir
        self._publish = publish
        self._estate_region = estate_region
        self._estate_profile = estate_profile
        self.deadman_every_ms = deadman_every_ms
        self.weather_every_ms = weather_every_ms
        self.snapshot_every_ms = snapshot_every_ms
        self.notification_retention_ms = notification_retention_ms
        # With ingest split over shards, each engine keeps the state of its own estates only.
        self.owns: Callable[[str], bool] = owns or (lambda _estate: True)
        self._lock = threading.RLock()
        self._listeners: list[ChangeListener] = []

        now = clock()
        self.store = AlertStore(engine)
        self.store.migrate(now)
        self.rules: RuleSet = load_rules(catalog, rules_dir, override_dir)
        self.plans: dict[str, Plan] = load_plans(plans_dir)
        self._check_plan_rules(self.rules, self.plans)
        self.criteria = load_criteria(criteria_path)
        metrics = {k: list(v.metrics) for k, v in catalog.kinds.items()}
        check_criteria(self.criteria, metrics, str(criteria_path))
        self.zones = load_zones(zones_path)
        for zone in sorted(self.criteria.zones() - set(self.zones)):
            log.warning("alerts: %s: zone %r is not in %s", criteria_path, zone, zones_path)

        self.windows = WindowBank()
        intervals = {k.name: k.interval_s * 1000 for k in catalog.kinds.values()}
        self.evaluator = Evaluator(self.windows, intervals)
        self.inhibitor = Inhibitor(
            self.rules.inhibit, lambda e, ts: self._profile(e).in_heating_season(ts)
        )
        self.alarms = AlarmBook(flapping, late_after_ms)
        self.silences = SilenceBook(self.store.silences(ending_after_ms=now))
        self.weather = WeatherBoard(self.criteria)
        self.plan_book = PlanBook(self.plans, plan_hold_ms)
        self._indexes: dict[str, RuleIndex] = {}
        self._default_index = RuleIndex(self.rules.defaults.values(), catalog)
        self._auto_resolve = _auto_resolve(self.rules)
        self._retrack()

        notifiers: dict[str, Notifier] = {}
        if publish is not None:
            notifiers["mqtt"] = MqttNotifier(publish, root)
        self.receivers: dict[str, list[str]] = {}
        for role, items in (receivers or {}).items():
            for n in items:
                notifiers[n.name] = n
                self.receivers.setdefault(role, []).append(n.name)
        self.outbox = Outbox(self.store, notifiers, clock, owns=self.owns)

        self._regions: dict[str, str] = {}
        self._profiles: dict[str, EstateProfile] = {}
        self._names: dict[str, str] = {}  # estate -> its name, for what people read
        self._estate_ids: set[str] = set()
        self._regions_loaded_ms = -(10**15)
        self._last_weather = self._last_purge = now
        # After a (re)start, give ingest's backlog a minute to arrive before deadman clocks
        # restored from the last snapshot call devices silent.
        self._last_deadman = now + startup_grace_ms - deadman_every_ms
        self._last_snapshot = now
        self._drill_clocks = self.store.drill_clocks()
        self._drill_due: dict[tuple[str, str], int] = {}  # cache of the next cron time
        self._unwritten: StoreBatch | None = None  # changes the database refused, to retry
        # (estate, station) -> the newest reading time its levels were judged at
        self._station_judged: dict[tuple[str, str], int] = {}
        # Rescues whose technician has arrived: alarm id -> (arrived_ms, by)
        self._arrivals: dict[str, tuple[int, str]] = {}
        self._restore(now)

    # --- set-up --------------------------------------------------------------------------------
    @staticmethod
    def _check_plan_rules(rules: RuleSet, plans: dict[str, Plan]) -> list[str]:
        """Plan levels activated by rules that are not defined: said, not fatal (a deployment
        with its own rules may leave some out; those levels are then for people to call)."""
        problems = [
            f"{plan.source}: plan {plan.id!r} is activated by rule {rid!r}, which is not defined"
            for plan in plans.values()
            for rid in sorted(plan.rules)
            if rid not in rules.defaults
        ]
        for p in problems:
            log.warning("alerts: %s", p)
        return problems

    def _retrack(self) -> None:
        needs = list(self.criteria.window_needs())
        needs.extend(self._default_index.window_needs())
        for estate in self.rules.estates:
            needs.extend(self._index(estate).window_needs())
        self.windows.retrack(needs)

    def _restore(self, now: int) -> None:
        """Pick up where the last run stopped: open alarms (pending timers included) and the
        conditions behind them, deadman clocks, window samples, warnings, activations."""
        owns = self.owns
        open_alarms = [a for a in self.store.open_alarms() if owns(a.estate)]
        self.alarms.load(open_alarms)
        arrivals = self.store.arrivals()
        self._arrivals = {a.id: arrivals[a.id] for a in open_alarms if a.id in arrivals}
        held = []
        for a in open_alarms:
            rule = self._rule(a.estate, a.rule)
            if rule is not None:
                held.append((rule, a.estate, a.subject))
            if a.kind == "gateway" and a.gateway:
                self.inhibitor.observe_status(a.estate, a.gateway, online=False)
        self.evaluator.restore(held)
        for estate, dev, kind, gw, last in self.store.clocks():
            if owns(estate):
                self.evaluator.clocks[(estate, dev)] = DeviceClock(kind, gw, last)
        for estate, dev, metric, data in self.store.windows():
            if owns(estate):
                self.windows.series[(estate, dev, metric)] = SeriesWindow.from_bytes(data)
        self._refresh_shared(now)
        self.plan_book.load([a for a in self.store.active_activations() if owns(a.estate)])
        for estate, gw in self._offline_gateways():
            if owns(estate):
                self.inhibitor.observe_status(estate, gw, online=False)

    def _refresh_shared(self, now: int) -> None:
        """Warnings and silences may be posted to another process (the API's, or another
        shard's): read them from the store now and then."""
        for w in self.store.warnings(expiring_after_ms=now - _DAY):
            self.weather.add_warning(w)
        for s in self.store.silences(ending_after_ms=now):
            self.silences.add(s)

    def _offline_gateways(self) -> list[tuple[str, str]]:
        # The state store's view of gateways (read only; alerts may read ingest's store).
        try:
            with self.store.engine.connect() as conn:
                if not sa.inspect(conn).has_table("gateways"):
                    return []
                rows = conn.execute(
                    sa.text("SELECT estate, id FROM gateways WHERE state = 'offline'")
                ).all()
            return [(r[0], r[1]) for r in rows]
        except sa.exc.SQLAlchemyError:
            log.exception("alerts: could not read gateway states")
            return []

    def _index(self, estate: str) -> RuleIndex:
        if estate not in self.rules.estates:
            return self._default_index
        idx = self._indexes.get(estate)
        if idx is None:
            idx = self._indexes[estate] = RuleIndex(self.rules.rules_for(estate), self.catalog)
        return idx

    def _rule(self, estate: str, rule_id: str) -> Rule | None:
        own = self.rules.estates.get(estate, {})
        return own.get(rule_id) or self.rules.defaults.get(rule_id)

    def _region(self, estate: str) -> str:
        """The estate's region text (for low-temperature thresholds and regional warnings),
        cached for a few minutes: it is asked for on every weather evaluation."""
        self._refresh_estates()
        found = self._regions.get(estate)
        if found is None:
            found = self._estate_region(estate) if self._estate_region is not None else ""
            if estate:
                self._regions[estate] = found
        return found

    def _profile(self, estate: str) -> EstateProfile:
        """The estate's zone, heating season and rescue deadline (refreshed with regions)."""
        self._region(estate)
        found = self._profiles.get(estate)
        if found is None:
            found = (
                self._estate_profile(estate)
                if self._estate_profile is not None
                else EstateProfile()
            )
            if estate:
                self._profiles[estate] = found
        return found

    def _refresh_estates(self) -> None:
        now = time.monotonic_ns() // 1_000_000
        if now - self._regions_loaded_ms > 5 * _MINUTE:
            self._regions_loaded_ms = now
            table, profiles = self._load_regions()
            self._estate_ids = set(table)
            self._regions = table if self._estate_region is None else {}
            self._profiles = profiles if self._estate_profile is None else {}

    def _load_regions(self) -> tuple[dict[str, str], dict[str, EstateProfile]]:
        try:
            with self.store.engine.connect() as conn:
                if not sa.inspect(conn).has_table("estates"):
                    return {}, {}
                rows = conn.execute(sa.text("SELECT * FROM estates")).mappings().all()
            self._names = {r["id"]: r["name"] or r["id"] for r in rows}
        except sa.exc.SQLAlchemyError:
            log.exception("alerts: could not read estate regions")
            return {}, {}
        regions = {r["id"]: r["region"] or "" for r in rows}
        profiles = {
            r["id"]: EstateProfile.of(
                self.zones,
                r.get("zone") or "",
                r.get("heating_season") or "",
                r.get("rescue_arrival_min"),
            )
            for r in rows
        }
        return regions, profiles

    def _estate_name(self, estate: str) -> str:
        self._refresh_estates()
        return self._names.get(estate, estate)

    def _known_estates(self) -> set[str]:
        self._region("")  # refreshes the registered estates now and then
        return self._estate_ids | set(self._regions) | {e for e, _ in self.evaluator.clocks}

    # --- lifecycle -----------------------------------------------------------------------------
    def add_listener(self, listener: ChangeListener) -> None:
        """Called with each alarm or plan change after it is stored (on the caller's thread)."""
        self._listeners.append(listener)

    def start(self) -> None:
        """Deliver notifications on a thread of their own (otherwise tick() delivers them)."""
        self.outbox.start()

    def stop(self) -> None:
        self.outbox.stop()
        with self._lock:
            self._snapshot(self.clock(), everything=True)

    def reload_rules(self) -> RuleSet:
        """Load the rule files again. A file with a mistake raises RuleFileError (file, line,
        problem) and the rules in force stay."""
        rules = load_rules(self.catalog, self.rules_dir, self.override_dir)
        self._check_plan_rules(rules, self.plans)
        with self._lock:
            self.rules = rules
            self._indexes = {}
            self._default_index = RuleIndex(rules.defaults.values(), self.catalog)
            self.inhibitor.set_rules(rules.inhibit)
            self._auto_resolve = _auto_resolve(rules)
            self._retrack()
        return rules

    # --- the stream ----------------------------------------------------------------------------
    def on_committed(self, deliveries: Sequence[Delivery]) -> None:
        """Ingest's commit listener: evaluate what was just stored."""
        emitted: list[dict[str, Any]] = []
        plan_estates: set[str] = set()
        with self._lock:
            now = self.clock()
            # When the data reached us, on the engine's own clock: the wall clock in service
            # (ingest's receipt a moment ago), a simulated one in a replay run faster than real
            # time, so deadman clocks and "late" compare times of one clock.
            arrived = now
            signals: list[Signal] = []
            # (estate, station) -> its readings in these deliveries
            stations: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = {}
            station_kind = self.criteria.kind
            watched = self.inhibitor.watched
            arrivals: list[tuple[str, Any]] = []  # (estate, technician-arrived event)
            ev = self.evaluator
            for d in deliveries:
                if d.status is not None and d.estate and d.gateway:
                    online = d.status.state == "online"
                    self.inhibitor.observe_status(d.estate, d.gateway, online)
                    ev.observe_status(
                        self._index(d.estate), d.estate, d.gateway, online, arrived, signals
                    )
                b = d.batch
                if b is None:
                    continue
                idx = self._index(b.estate)
                if b.readings:
                    for r in b.readings:
                        if r.kind in watched:
                            self.inhibitor.observe_reading(b.estate, r.dev, r.kind, r.metrics)
                        if r.kind == station_kind:
                            stations.setdefault((b.estate, r.dev), []).append(
                                (r.ts, dict(r.metrics))
                            )
                    ev.observe_readings(idx, b.estate, b.gateway, b.readings, signals, arrived)
                if b.events:
                    ev.observe_events(idx, b.estate, b.gateway, b.events, signals, arrived)
                    arrivals.extend(
                        (b.estate, e) for e in b.events if e.type == "elevator.technician_arrived"
                    )
            batch = StoreBatch()
            self._apply(signals, now, batch, emitted, plan_estates)
            for estate, e in arrivals:
                self._arrival_event(estate, e, batch, emitted)
            # At each station reading, in time order: a station reports once a minute, so
            # this is one evaluation (~40 aggregates) per minute live, and a replayed backlog
            # or a faster-than-real scenario still steps its levels at the reading that
            # crossed the threshold (the windows answer "as of" any time).
            for (estate, dev), readings in stations.items():
                judged = self._station_judged.get((estate, dev), -1)
                for ts, metrics in sorted(readings, key=lambda x: x[0]):
                    # Levels step forward in time only: an older reading that arrives late
                    # joins the windows but does not take the level back (with windows of an
                    # hour, judging the past again would lower and raise it anew).
                    if ts < judged:
                        continue
                    judged = ts
                    self._station_judged[(estate, dev)] = ts
                    self._observe_station(estate, dev, ts)
                    reading = {"device": dev, "ts": ts, "metrics": metrics}
                    # Stamped with the reading's time while it is current; late (a backlog,
                    # a replay) with the service's clock, so the plan lasts in real time.
                    wall = ts if now - ts <= self.late_after_ms else now
                    self._weather_plans(
                        estate, ts, batch, emitted, plan_estates, reading, wall=wall
                    )
            self._write(batch)
        self._emit(emitted, plan_estates)

    def _arrival_event(
        self, estate: str, e: Any, batch: StoreBatch, emitted: list[dict[str, Any]]
    ) -> None:
        """A lift's own "technician arrived" signal (its maintenance check-in) for its open
        entrapment; none open, or recorded already: nothing to do."""
        for alarm in list(self.alarms.open.values()):
            if alarm.estate != estate or alarm.subject != e.dev or not alarm.state.open:
                continue
            rule = self._rule(estate, alarm.rule)
            if rule is None or not rule.rescue or alarm.id in self._arrivals:
                continue
            who = str(e.data.get("technician") or "device")[:100]
            self._arrive(alarm, who, e.ts, None, batch, emitted)

    def _apply(
        self,
        signals: Iterable[Signal],
        now: int,
        batch: StoreBatch,
        emitted: list[dict[str, Any]],
        plan_estates: set[str],
    ) -> None:
        for sig in signals:
            key = (sig.rule.id, sig.estate, sig.subject)
            if sig.hit and self.alarms.get(key) is None:
                reason = self.inhibitor.reason(
                    sig.rule.tags, sig.estate, sig.subject, sig.gateway, sig.ts
                )
                if reason is not None:
                    # Not raised; forgotten, so it is raised if it still holds once uninhibited.
                    self.evaluator.forget(sig.rule.id, sig.estate, sig.subject)
                    continue
            for change in self.alarms.apply(sig, now):
                self._alarm_changed(change, now, batch, emitted, plan_estates)

    # --- alarm changes -------------------------------------------------------------------------
    def _alarm_changed(
        self,
        change: AlarmChange,
        now: int,
        batch: StoreBatch,
        emitted: list[dict[str, Any]],
        plan_estates: set[str],
    ) -> None:
        alarm, action = change.alarm, change.action
        batch.alarms[alarm.id] = alarm
        batch.alarm_entries.append(change.entry)
        if action == "cancelled":
            batch.forget_alarms.add(alarm.id)
        rule = self._rule(alarm.estate, alarm.rule)
        if action in ("pending", "firing") and rule is not None and rule.rescue:
            # The estate's own arrival deadline (1 h outside a city with districts).
            minutes = self._profile(alarm.estate).rescue_arrival_min
            if minutes is not None and alarm.deadline_ms is not None:
                alarm.deadline_ms = alarm.started_ms + minutes * _MINUTE
        if alarm.late:
            # History: stored with its data's times (and a rescue's), shown in the list and
            # the report, but nobody is paged, nothing escalates, no plan starts, and the
            # live feed does not announce it as new.
            if rule is not None and rule.rescue and alarm.deadline_ms is not None:
                rescue = self._rescue(alarm)
                if action in ("firing", "resolved"):
                    batch.rescues[alarm.id] = (rescue, rescue.breached(alarm.resolved_ms or now))
            if change.entry.by != SYSTEM:  # a person's action on it is news to other screens
                emitted.append(_alarm_news(alarm, action, change.entry))
            return
        if action == "firing":
            self._refresh_silence(alarm, now, batch)
            if rule is not None and rule.rescue and alarm.deadline_ms is not None:
                batch.rescues[alarm.id] = (self._rescue(alarm), False)
            self._notify_alarm(alarm, "firing", (), batch, now, step=None)
            self._escalate(alarm, now, batch, emitted)
            self._alarm_plans(alarm, now, batch, emitted, plan_estates)
        elif action == "acknowledged":
            # For sirens and LED walls; the people told are the ones who acknowledge.
            self._notify_alarm(alarm, action, (), batch, now, step=None)
        elif action == "flapping":
            self._notify_alarm(alarm, action, self._notified_roles(alarm), batch, now, step=None)
        elif action == "resolved":
            if rule is not None and rule.rescue and alarm.deadline_ms is not None:
                rescue = self._rescue(alarm)
                batch.rescues[alarm.id] = (rescue, alarm.deadline_breached or rescue.breached(now))
                self._arrivals.pop(alarm.id, None)
            if alarm.fired_ms is not None:
                roles = self._notified_roles(alarm)
                self._notify_alarm(alarm, "resolved", roles, batch, now, step=None)
            self._alarm_plans(alarm, now, batch, emitted, plan_estates)
        emitted.append(_alarm_news(alarm, action, change.entry))

    def _rescue(self, alarm: Alarm) -> Rescue:
        assert alarm.deadline_ms is not None
        arrived = self._arrivals.get(alarm.id)
        return Rescue(
            alarm.id,
            alarm.estate,
            alarm.subject,
            alarm.started_ms,
            alarm.deadline_ms,
            alarm.resolved_ms,
            alarm.resolved_by,
            arrived[0] if arrived else None,
            arrived[1] if arrived else None,
        )

    def _refresh_silence(self, alarm: Alarm, now: int, batch: StoreBatch) -> None:
        s = self.silences.match(alarm.labels(), now)
        sid = s.id if s is not None else None
        if sid != alarm.silenced_by:
            alarm.silenced_by = sid
            batch.alarms[alarm.id] = alarm
            action = "silenced" if s is not None else "unsilenced"
            detail = {"silence": s.id, "comment": s.comment} if s is not None else {}
            by = s.created_by if s is not None else SYSTEM
            batch.alarm_entries.append(TimelineEntry(alarm.id, now, action, by, detail))

    def _notified_roles(self, alarm: Alarm) -> tuple[str, ...]:
        rule = self._rule(alarm.estate, alarm.rule)
        chain = self.rules.chain(rule.escalation if rule else None)
        roles: list[str] = []
        for i, step in enumerate(chain.steps):
            if alarm.escalated & (1 << i):
                roles.extend(r for r in step.notify if r not in roles)
        return tuple(roles)

    def _notify_alarm(
        self,
        alarm: Alarm,
        event: str,
        roles: Iterable[str],
        batch: StoreBatch,
        now: int,
        step: int | None,
        mqtt: bool = True,
    ) -> None:
        if alarm.silenced_by is not None:
            return  # muted: recorded, shown, not told
        tag = event if step is None else f"{event}.{step}"
        snapshot = alarm.as_dict()
        if mqtt and "mqtt" in self.outbox.notifiers:
            batch.notifications.append(
                Notification(
                    f"{alarm.id}:{tag}:mqtt", "mqtt", alarm.estate, event, {"alarm": snapshot}, now
                )
            )
        estate_name = self._estate_name(alarm.estate) if roles else alarm.estate
        for role in roles:
            for name in self._receivers(role, alarm.estate, alarm.severity.value):
                payload = {"alarm": snapshot, "role": role, "estate_name": estate_name}
                key = f"{alarm.id}:{tag}:{name}"
                batch.notifications.append(
                    Notification(key, name, alarm.estate, event, payload, now)
                )

    def _receivers(self, role: str, estate: str, severity: str | None = None) -> list[str]:
        """The role's receivers that take this estate's notices (and this severity's alarms)."""
        out = []
        for name in self.receivers.get(role, ()):
            wants = getattr(self.outbox.notifiers.get(name), "wants", None)
            if wants is None or wants(estate, severity):
                out.append(name)
        return out

    def _escalate(
        self, alarm: Alarm, now: int, batch: StoreBatch, emitted: list[dict[str, Any]]
    ) -> None:
        if (
            alarm.fired_ms is None
            or alarm.late
            or not alarm.state.open
            or alarm.state is AlarmState.PENDING
        ):
            return
        rule = self._rule(alarm.estate, alarm.rule)
        chain = self.rules.chain(rule.escalation if rule else None)
        acked = alarm.state is AlarmState.ACKNOWLEDGED
        # A technician who arrived in time met the deadline: its steps are not due. Steps are
        # timed from when the alarm reached the control room, in wall time.
        deadline = None if alarm.id in self._arrivals else alarm.deadline_ms
        raised = alarm.raised_ms if alarm.raised_ms is not None else alarm.fired_ms
        for i in due_steps(chain, alarm.escalated, raised, deadline, acked, now):
            step = chain.steps[i]
            if step.at_deadline and not alarm.deadline_breached:
                alarm.deadline_breached = True
                entry = TimelineEntry(
                    alarm.id, now, "deadline_breached", SYSTEM, {"deadline_ms": alarm.deadline_ms}
                )
                batch.alarm_entries.append(entry)
                batch.alarms[alarm.id] = alarm
                if rule is not None and rule.rescue:
                    batch.rescues[alarm.id] = (self._rescue(alarm), True)
                emitted.append(
                    {
                        "type": "alarm",
                        "estate": alarm.estate,
                        "action": entry.action,
                        "alarm": alarm.as_dict(),
                        "entry": entry.as_dict(),
                    }
                )
            if alarm.silenced_by is not None:
                continue  # told once the silence ends, if still due
            alarm.escalated |= 1 << i
            action = "notified" if i == 0 else "escalated"
            detail = {"step": i, "notify": list(step.notify)}
            batch.alarm_entries.append(TimelineEntry(alarm.id, now, action, SYSTEM, detail))
            batch.alarms[alarm.id] = alarm
            event = "deadline_breached" if step.at_deadline else ("firing" if i == 0 else action)
            # Step 0 is the first notice of the firing, which MQTT already carried.
            self._notify_alarm(alarm, event, step.notify, batch, now, step=i, mqtt=i > 0)
            if i > 0:
                emitted.append(
                    {
                        "type": "alarm",
                        "estate": alarm.estate,
                        "action": action,
                        "alarm": alarm.as_dict(),
                        "entry": {"ts": now, "action": action, "by": SYSTEM, "detail": detail},
                    }
                )

    # --- plans ---------------------------------------------------------------------------------
    def _alarm_plans(
        self,
        alarm: Alarm,
        now: int,
        batch: StoreBatch,
        emitted: list[dict[str, Any]],
        plan_estates: set[str],
    ) -> None:
        for plan in self.plans.values():
            level = plan.level_for_rule(alarm.rule)
            if level is ResponseLevel.NONE:
                continue
            if not alarm.state.open:
                level = ResponseLevel.NONE
            detail = {
                "alarm": alarm.id,
                "rule": alarm.rule,
                "subject": alarm.subject,
                "summary": alarm.summary_zh,
                "reading": alarm.detail,
            }
            change = self.plan_book.set_source(
                alarm.estate, plan.id, Source(f"alarm:{alarm.id}", level, detail), now
            )
            self._plan_changed(change, batch, emitted, plan_estates)
        # Independent signals together (a detector and a manual call point, ...): a level of
        # its own while every member of one group has an open alarm in the estate.
        for plan in self.plans.values():
            if alarm.rule not in plan.together_rules:
                continue
            open_rules = {
                a.rule
                for a in self.alarms.open.values()
                if a.estate == alarm.estate and a.state.open and a.rule in plan.together_rules
            }
            level = plan.level_for_together(open_rules)
            detail = {"rules": sorted(open_rules), "alarm": alarm.id}
            change = self.plan_book.set_source(
                alarm.estate, plan.id, Source("together", level, detail), now
            )
            self._plan_changed(change, batch, emitted, plan_estates)

    def _observe_station(self, estate: str, station: str, now: int) -> None:
        windows = self.windows

        def value_of(metric: str, agg: Any) -> float | None:
            return windows.value(estate, station, metric, agg, now)

        self.weather.observe_station(estate, station, value_of, self._profile(estate).zone)

    def _weather_plans(
        self,
        estate: str,
        now: int,
        batch: StoreBatch,
        emitted: list[dict[str, Any]],
        plan_estates: set[str],
        reading: dict[str, Any] | None = None,
        wall: int | None = None,
    ) -> None:
        """Weather levels as of ``now`` (a station reading's time); the activation's own times
        (start, steps, task deadlines) are ``wall``, the service's clock, so a plan raised
        from a replayed or faster-than-real station lasts and falls due in real time."""
        wall = now if wall is None else wall
        levels = self.weather.estate_levels(estate, self._region(estate), now)
        for plan in self.plans.values():
            if not plan.hazards:
                continue
            wanted: dict[str, Source] = {}
            for hazard in plan.hazards:
                hl = levels[hazard]
                detail: dict[str, Any] = {
                    "hazard": hazard.value,
                    "weather_level": hl.observed.colour,
                    "station": hl.station,
                    "evidence": list(hl.evidence),
                }
                if reading is not None and reading["device"] == hl.station:
                    detail["reading"] = reading
                obs = plan.level_for_weather(hl.observed)
                wanted[f"observed:{hazard.value}"] = Source(f"observed:{hazard.value}", obs, detail)
                for w in self.weather.warnings.values():
                    if (
                        w.hazard is hazard
                        and w.active(now)
                        and w.covers(estate, self._region(estate))
                    ):
                        key = f"warning:{w.id}"
                        wd = {
                            "hazard": hazard.value,
                            "weather_level": w.level.colour,
                            "warning": w.as_dict(),
                        }
                        wanted[key] = Source(key, plan.level_for_weather(w.level), wd)
            # Raise first, then drop: replacing one warning by another must not stand down.
            for src in sorted(wanted.values(), key=lambda s: -s.level):
                by = "warning" if src.key.startswith("warning:") else "weather"
                change = self.plan_book.set_source(estate, plan.id, src, wall, by=by)
                self._plan_changed(change, batch, emitted, plan_estates)
            act = self.plan_book.active.get((estate, plan.id))
            if act is None:
                continue
            for key in [k for k in act.sources if k.startswith("warning:") and k not in wanted]:
                gone = Source(
                    key,
                    ResponseLevel.NONE,
                    {
                        "reason": "warning expired or cancelled",
                        "reason_code": "warning_gone",
                    },
                )
                change = self.plan_book.set_source(
                    estate, plan.id, gone, wall, by="warning", stand_down_now=True
                )
                self._plan_changed(change, batch, emitted, plan_estates)

    def _plan_changed(
        self,
        change: ActivationChange | None,
        batch: StoreBatch,
        emitted: list[dict[str, Any]],
        plan_estates: set[str],
    ) -> None:
        if change is None:
            return
        act = change.activation
        batch.activations[act.id] = act
        batch.activation_entries.extend(change.entries)
        for t in change.tasks:
            batch.tasks[(act.id, t.task_id)] = t
        plan_estates.add(act.estate)
        plan = self.plans.get(act.plan)
        snapshot = act.as_dict(plan)
        if change.event is not None:
            now = change.entries[-1].ts if change.entries else act.updated_ms
            payload: dict[str, Any] = {
                "activation": snapshot,
                "estate_name": self._estate_name(act.estate),
            }
            tag = f"{change.event}.{len(act.levels_reached)}"
            if change.event == "task_overdue" and change.tasks:
                payload["task"] = change.tasks[0].as_dict()
                tag = f"task_overdue.{change.tasks[0].task_id}"
            roles: tuple[str, ...] = ("control_room",)
            if change.event == "task_overdue":
                roles = ("control_room", "supervisor")
            for role in roles:
                for name in self._receivers(role, act.estate):
                    batch.notifications.append(
                        Notification(
                            f"{act.id}:{tag}:{name}", name, act.estate, change.event,
                            {**payload, "role": role}, now,
                        )
                    )  # fmt: skip
        for entry in change.entries:
            emitted.append(
                {
                    "type": "plan",
                    "estate": act.estate,
                    "action": entry.action,
                    "activation": snapshot,
                    "entry": entry.as_dict(),
                }
            )

    # --- time ----------------------------------------------------------------------------------
    def tick(self) -> None:
        """Everything that depends on time alone; the scheduler runs it every second."""
        emitted: list[dict[str, Any]] = []
        plan_estates: set[str] = set()
        with self._lock:
            now = self.clock()
            batch = StoreBatch()
            signals: list[Signal] = []
            if now - self._last_deadman >= self.deadman_every_ms:
                self._last_deadman = now
                self.evaluator.check_time(self._index, now, signals)
            self._apply(signals, now, batch, emitted, plan_estates)
            ev = self.evaluator
            for change in self.alarms.tick(
                now, self._auto_resolve, lambda a: ev.subject_now(a.estate, a.subject, now)
            ):
                self._alarm_changed(change, now, batch, emitted, plan_estates)
            self._promote_late(now, batch, emitted, plan_estates)
            for alarm in list(self.alarms.open.values()):
                if alarm.state is not AlarmState.PENDING:
                    self._refresh_silence(alarm, now, batch)
                    self._escalate(alarm, now, batch, emitted)
            if now - self._last_weather >= self.weather_every_ms:
                self._last_weather = now
                self._refresh_shared(now)
                self._weather_tick(now, batch, emitted, plan_estates)
                self._season_tick(now, batch, emitted, plan_estates)
                self._drills_tick(now, batch)
                self.silences.prune(now)
                for wid in [
                    w.id for w in self.weather.warnings.values() if w.expires_ms < now - _DAY
                ]:
                    del self.weather.warnings[wid]  # kept in the store
            for plan_change in self.plan_book.tick(now):
                self._plan_changed(plan_change, batch, emitted, plan_estates)
            self._write(batch)
            if now - self._last_snapshot >= self.snapshot_every_ms:
                self._snapshot(now)
            if now - self._last_purge >= _DAY:
                self._last_purge = now
                self.store.purge_notifications(now - self.notification_retention_ms)
        self._emit(emitted, plan_estates)
        if not self.outbox.running:
            self.outbox.deliver_due()

    def _promote_late(
        self, now: int, batch: StoreBatch, emitted: list[dict[str, Any]], plan_estates: set[str]
    ) -> None:
        """A late alarm whose condition still holds once its subject's data is current again
        (the backlog drained) is an emergency now: raised as new, paged and escalated."""
        ev = self.evaluator
        for alarm in list(self.alarms.open.values()):
            if not alarm.late or alarm.state is not AlarmState.FIRING:
                continue
            clock = ev.clocks.get((alarm.estate, alarm.subject))
            if clock is None or clock.data_ms < 0 or now - clock.data_ms > self.late_after_ms:
                continue
            if clock.last_ms - clock.data_ms > self.late_after_ms:
                continue  # still arriving late
            if ev.holds(alarm.rule, alarm.estate, alarm.subject):
                change = self.alarms.promote(alarm, now)
                self._alarm_changed(change, now, batch, emitted, plan_estates)

    def _season_tick(
        self, now: int, batch: StoreBatch, emitted: list[dict[str, Any]], plan_estates: set[str]
    ) -> None:
        """Heating alarms still open when the estate's heating season has ended are over: the
        heating is off on purpose, so they are resolved, not left standing all summer."""
        tags = {r.hides_tag for r in self.inhibitor.rules if r.outside_heating_season}
        if not tags:
            return
        for alarm in list(self.alarms.open.values()):
            if alarm.state is AlarmState.PENDING or not alarm.state.open:
                continue
            rule = self._rule(alarm.estate, alarm.rule)
            if rule is None or not tags & rule.tags:
                continue
            if self._profile(alarm.estate).in_heating_season(now):
                continue
            self.evaluator.forget(alarm.rule, alarm.estate, alarm.subject)
            change = self.alarms.resolve(alarm, SYSTEM, now, "供暖季结束 heating season over")
            self._alarm_changed(change, now, batch, emitted, plan_estates)

    def _weather_tick(
        self, now: int, batch: StoreBatch, emitted: list[dict[str, Any]], plan_estates: set[str]
    ) -> None:
        """Levels fall as windows slide past old readings, and warnings expire."""
        for estate, station in self.weather.stations():
            self._observe_station(estate, station, now)
        estates = {e for e, _ in self.weather.stations()}
        estates |= {e for e, _ in self.plan_book.active}
        for w in self.weather.warnings.values():
            if w.issued_ms <= now < w.expires_ms + self.weather_every_ms * 2:
                estates |= self._estates_covered(w)
        for estate in sorted(estates):
            self._weather_plans(estate, now, batch, emitted, plan_estates)

    def _estates_covered(self, w: OfficialWarning) -> set[str]:
        regions = {e: self._region(e) for e in self._known_estates()}
        return {e for e in self.weather.estates_covered(w, regions) if self.owns(e)}

    def _drills_tick(self, now: int, batch: StoreBatch) -> None:
        for estate in sorted(e for e in self._known_estates() if self.owns(e)):
            for plan in self.plans.values():
                if plan.drill_cron is None:
                    continue
                key = (estate, plan.id)
                last = self._drill_clocks.get(key)
                if last is None:
                    self._drill_clocks[key] = now  # schedules count from when we first knew
                    self.store.save_drill_clock(estate, plan.id, now)
                    continue
                due = self._drill_due.get(key)
                if due is None:
                    due = self._drill_due[key] = next_drill(plan.drill_cron, last) or 2**62
                if due > now:
                    continue
                self._drill_due.pop(key, None)
                drill = Drill(
                    new_id("dr"), estate, plan.id, DrillStatus.SCHEDULED, now, scheduled_ms=due
                )
                self.store.save_drill(drill)
                self._drill_clocks[key] = now
                self.store.save_drill_clock(estate, plan.id, now)
                payload = {
                    "drill": {**drill.as_dict(), "plan_name": plan.name_zh},
                    "estate_name": self._estate_name(estate),
                }
                for name in self._receivers("control_room", estate):
                    batch.notifications.append(
                        Notification(
                            f"{drill.id}:drill_due:{name}", name, estate, "drill_due", payload, now
                        )
                    )

    def _snapshot(self, now: int, everything: bool = False) -> None:
        """Deadman clocks and window samples, so a restart resumes them (not per reading)."""
        since = -1 if everything else self._last_snapshot
        clocks = [
            (e, d, c.kind, c.gateway, c.last_ms)
            for (e, d), c in self.evaluator.clocks.items()
            if c.last_ms > since
        ]
        series = [
            (e, d, m, w.to_bytes())
            for (e, d, m), w in self.windows.series.items()
            if (w.last_ts or -1) > since
        ]
        self._last_snapshot = now
        try:
            self.store.save_clocks(clocks)
            self.store.save_windows(series, now)
        except sa.exc.SQLAlchemyError:
            log.exception("alerts: could not save deadman clocks and windows; will retry")

    # --- writing and telling -------------------------------------------------------------------
    def _write(self, batch: StoreBatch) -> None:
        """Store a batch of changes. If the database is away, keep them (bounded) and write
        them before the next batch, so no change and no notification is lost meanwhile."""
        if self._unwritten is not None:
            self._unwritten.merge(batch)
            batch = self._unwritten
        if not batch:
            return
        try:
            self.store.write(batch)
        except sa.exc.SQLAlchemyError:
            if batch.size > MAX_UNWRITTEN:
                log.error("alerts: the database is away; %d changes dropped", batch.size)
                self._unwritten = None
                raise
            log.exception("alerts: could not store %d changes; will retry", batch.size)
            self._unwritten = batch
            return
        self._unwritten = None
        if batch.notifications:
            self.outbox.wake()

    def _emit(self, emitted: list[dict[str, Any]], plan_estates: set[str]) -> None:
        for item in emitted:
            for listener in self._listeners:
                try:
                    listener(item)
                except Exception:
                    log.exception("alerts: listener %r failed", listener)
        if self._publish is not None:
            for estate in sorted(plan_estates):
                self._publish_plans(estate)

    def _publish_plans(self, estate: str) -> None:
        assert self._publish is not None
        acts = [
            a.as_dict(self.plans.get(a.plan))
            for (e, _), a in sorted(self.plan_book.active.items())
            if e == estate
        ]
        body = {"v": 1, "estate": estate, "ts": self.clock(), "activations": acts}
        try:
            self._publish(f"{self.root}/{estate}/plans", orjson.dumps(body), True)
        except Exception:
            log.exception("alerts: could not publish the plans of %s", estate)

    # ==========================================================================================
    # By people (the API)
    # ==========================================================================================

    # --- alarms --------------------------------------------------------------------------------
    def list_alarms(
        self,
        estate: str | None = None,
        state: Sequence[str] | None = None,
        severity: Sequence[str] | None = None,
        limit: int = 100,
        offset: int = 0,
        estates: Collection[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first. ``estates``: only these (the caller's), None: all."""
        found = self.store.list_alarms(estate, state, severity, limit, offset, estates)
        return [a.as_dict() for a in found]

    def get_alarm(self, alarm_id: str) -> dict[str, Any]:
        alarm = self.alarms.by_id.get(alarm_id) or self.store.get_alarm(alarm_id)
        if alarm is None:
            raise NotFound(f"alarm {alarm_id!r} not found")
        return {**alarm.as_dict(), "timeline": self.store.alarm_timeline(alarm_id)}

    def _open_alarm(self, alarm_id: str) -> Alarm:
        alarm = self.alarms.by_id.get(alarm_id)
        if alarm is not None:
            return alarm
        stored = self.store.get_alarm(alarm_id)
        if stored is None:
            raise NotFound(f"alarm {alarm_id!r} not found")
        raise InvalidTransition(f"alarm {alarm_id} is {stored.state.value}")

    def _by_person(self, fn: Callable[[int], AlarmChange]) -> dict[str, Any]:
        emitted: list[dict[str, Any]] = []
        plan_estates: set[str] = set()
        with self._lock:
            now = self.clock()
            change = fn(now)
            batch = StoreBatch()
            self._alarm_changed(change, now, batch, emitted, plan_estates)
            self._write(batch)
            result = change.alarm.as_dict()
        self._emit(emitted, plan_estates)
        return result

    def acknowledge(self, alarm_id: str, by: str, note: str | None = None) -> dict[str, Any]:
        return self._by_person(
            lambda now: self.alarms.acknowledge(self._open_alarm(alarm_id), by, now, note)
        )

    def resolve(self, alarm_id: str, by: str, note: str | None = None) -> dict[str, Any]:
        def resolve(now: int) -> AlarmChange:
            alarm = self._open_alarm(alarm_id)
            # A person says it is over: if the condition still holds, a new alarm follows.
            self.evaluator.forget(alarm.rule, alarm.estate, alarm.subject)
            return self.alarms.resolve(alarm, by, now, note)

        return self._by_person(resolve)

    def technician_arrived(
        self, alarm_id: str, by: str, note: str | None = None, at_ms: int | None = None
    ) -> dict[str, Any]:
        """The maintenance technician reached the trapped car (TSG T5002-2017: the deadline is
        the arrival); recorded apart from the release, which ends the alarm."""
        emitted: list[dict[str, Any]] = []
        plan_estates: set[str] = set()
        with self._lock:
            now = self.clock()
            batch = StoreBatch()
            alarm = self._open_alarm(alarm_id)
            self._arrive(alarm, by, at_ms if at_ms is not None else now, note, batch, emitted)
            self._write(batch)
            result = alarm.as_dict()
        self._emit(emitted, plan_estates)
        return result

    def _arrive(
        self,
        alarm: Alarm,
        by: str,
        ts: int,
        note: str | None,
        batch: StoreBatch,
        emitted: list[dict[str, Any]],
    ) -> None:
        rule = self._rule(alarm.estate, alarm.rule)
        if rule is None or not rule.rescue or alarm.deadline_ms is None:
            raise InvalidTransition(f"alarm {alarm.id} ({alarm.rule}) is not a rescue")
        if alarm.id in self._arrivals:
            _at, who = self._arrivals[alarm.id]
            raise InvalidTransition(f"the technician's arrival was recorded already by {who}")
        self._arrivals[alarm.id] = (ts, by)
        detail: dict[str, Any] = {"arrived_ms": ts, "late": ts > alarm.deadline_ms}
        if note:
            detail["note"] = note
        entry = TimelineEntry(alarm.id, ts, "arrived", by, detail)
        batch.alarm_entries.append(entry)
        batch.alarms[alarm.id] = alarm
        rescue = self._rescue(alarm)
        batch.rescues[alarm.id] = (rescue, alarm.deadline_breached or rescue.breached(ts))
        emitted.append(
            {
                "type": "alarm",
                "estate": alarm.estate,
                "action": "arrived",
                "alarm": alarm.as_dict(),
                "entry": entry.as_dict(),
            }
        )

    def confirm(self, alarm_id: str, by: str, note: str | None = None) -> dict[str, Any]:
        """A person confirms the alarm on site (a fire, GB 25201 §5.3): recorded on the alarm,
        and the plans it activates go to their confirmed level (fire: Ⅲ) and stay there
        until a person stands them down."""
        emitted: list[dict[str, Any]] = []
        plan_estates: set[str] = set()
        with self._lock:
            now = self.clock()
            alarm = self._open_alarm(alarm_id)
            targets = [
                (plan, plan.level_for_confirmation(alarm.rule)) for plan in self.plans.values()
            ]
            targets = [(p, lvl) for p, lvl in targets if lvl is not ResponseLevel.NONE]
            if not targets:
                raise InvalidTransition(f"alarm {alarm_id} ({alarm.rule}) is not one to confirm")
            batch = StoreBatch()
            detail: dict[str, Any] = {"plans": [p.id for p, _ in targets]}
            if note:
                detail["note"] = note
            entry = TimelineEntry(alarm.id, now, "confirmed", by, detail)
            self._alarm_changed(
                AlarmChange(alarm, entry, notify=False), now, batch, emitted, plan_estates
            )
            for plan, level in targets:
                source = Source(f"confirmed:{alarm.id}", level, {"by": by, "alarm": alarm.id})
                change = self.plan_book.set_source(alarm.estate, plan.id, source, now, by=by)
                self._plan_changed(change, batch, emitted, plan_estates)
            self._write(batch)
            result = alarm.as_dict()
        self._emit(emitted, plan_estates)
        return result

    def assign(self, alarm_id: str, assignee: str, by: str) -> dict[str, Any]:
        return self._by_person(
            lambda now: self.alarms.assign(self._open_alarm(alarm_id), assignee, by, now)
        )

    def add_note(self, alarm_id: str, text: str, by: str) -> dict[str, Any]:
        def note(now: int) -> AlarmChange:
            alarm = self.alarms.by_id.get(alarm_id) or self.store.get_alarm(alarm_id)
            if alarm is None:
                raise NotFound(f"alarm {alarm_id!r} not found")
            return self.alarms.note(alarm, text, by, now)

        return self._by_person(note)

    def rescues(
        self, estate: str | None = None, estates: Collection[str] | None = None
    ) -> list[dict[str, Any]]:
        """Every entrapment: trapped → released, its deadline, and whether it was breached."""
        return self.store.rescues(estate, estates)

    # --- silences ------------------------------------------------------------------------------
    def add_silence(
        self,
        matchers: Sequence[Mapping[str, str]],
        ends_ms: int,
        by: str,
        comment: str,
        starts_ms: int | None = None,
    ) -> dict[str, Any]:
        """Matchers: ``[{"name": "device", "value": "lift-1", "op": "="}, ...]``."""
        parsed = tuple(Matcher.parse(m["name"], m["value"], m.get("op", "=")) for m in matchers)
        with self._lock:
            now = self.clock()
            silence = Silence(
                new_id("si"), parsed, starts_ms if starts_ms is not None else now, ends_ms,
                by, comment, now,
            )  # fmt: skip
            self.store.save_silence(silence)
            self.silences.add(silence)
            batch = StoreBatch()
            for alarm in self.alarms.open.values():
                if alarm.state is not AlarmState.PENDING:
                    self._refresh_silence(alarm, now, batch)
            self._write(batch)
            return silence.as_dict(now)

    def expire_silence(self, silence_id: str, by: str) -> dict[str, Any]:
        with self._lock:
            now = self.clock()
            found = self.silences.silences.get(silence_id)
            if found is None:
                stored = [s for s in self.store.silences() if s.id == silence_id]
                if not stored:
                    raise NotFound(f"silence {silence_id!r} not found")
                found = stored[0]
            if found.ends_ms <= now:
                return found.as_dict(now)
            ended = Silence(
                found.id, found.matchers, min(found.starts_ms, now - 1), now,
                found.created_by, f"{found.comment} (ended by {by})", found.created_ms,
            )  # fmt: skip
            self.store.save_silence(ended)
            self.silences.add(ended)
            return ended.as_dict(now)

    def get_silence(self, silence_id: str) -> dict[str, Any]:
        found = [s for s in self.store.silences() if s.id == silence_id]
        if not found:
            raise NotFound(f"silence {silence_id!r} not found")
        return found[0].as_dict(self.clock())

    def list_silences(
        self, active: bool | None = None, estates: Collection[str] | None = None
    ) -> list[dict[str, Any]]:
        """``estates``: only silences limited to one of these (None: all, global ones too)."""
        now = self.clock()
        items = self.store.silences()
        if active is not None:
            items = [s for s in items if s.active(now) == active]
        if estates is not None:
            items = [s for s in items if s.estate is not None and s.estate in estates]
        return [s.as_dict(now) for s in items]

    # --- weather -------------------------------------------------------------------------------
    def post_warning(
        self,
        hazard: str,
        level: str,
        issued_ms: int,
        expires_ms: int,
        by: str,
        estates: Sequence[str] = (),
        region: str = "",
        text: str = "",
        source: str = "",
    ) -> dict[str, Any]:
        """An official warning; the plans of the estates it covers follow it at once."""
        unknown = self._unregistered(estates)
        if unknown:
            raise NotFound(f"estate {', '.join(map(repr, unknown[:5]))} not found")
        emitted: list[dict[str, Any]] = []
        plan_estates: set[str] = set()
        with self._lock:
            now = self.clock()
            warning = OfficialWarning(
                id=new_id("wa"),
                hazard=Hazard(hazard),
                level=WeatherLevel.parse(level),
                issued_ms=issued_ms,
                expires_ms=expires_ms,
                estates=tuple(estates),
                region=region,
                text=text,
                source=source,
                created_by=by,
                created_ms=now,
            )
            self.store.save_warning(warning)
            self.weather.add_warning(warning)
            batch = StoreBatch()
            for estate in sorted(self._estates_covered(warning)):
                self._weather_plans(estate, now, batch, emitted, plan_estates)
            self._write(batch)
            result = warning.as_dict(now)
            result["estates_covered"] = sorted(self._estates_covered(warning))
        self._emit(emitted, plan_estates)
        return result

    def _unregistered(self, estates: Sequence[str]) -> list[str]:
        """The estates named that the state store does not know (without one: none)."""
        if not estates:
            return []
        try:
            with self.store.engine.connect() as conn:
                if not sa.inspect(conn).has_table("estates"):
                    return []
                known = {r[0] for r in conn.execute(sa.text("SELECT id FROM estates"))}
        except sa.exc.SQLAlchemyError:
            log.exception("alerts: could not read the registered estates")
            return []
        return sorted(set(estates) - known)

    def cancel_warning(self, warning_id: str, by: str) -> dict[str, Any]:
        """The issuer lifts a warning early; plans it alone kept up stand down at once."""
        emitted: list[dict[str, Any]] = []
        plan_estates: set[str] = set()
        with self._lock:
            now = self.clock()
            found = [w for w in self.store.warnings() if w.id == warning_id]
            if not found:
                raise NotFound(f"warning {warning_id!r} not found")
            w = found[0]
            if not w.active(now):
                raise InvalidTransition(f"warning {warning_id} is not in force")
            lifted = dataclasses.replace(w, cancelled_ms=now, text=f"{w.text} (lifted by {by})")
            self.store.save_warning(lifted)
            self.weather.add_warning(lifted)
            batch = StoreBatch()
            for estate in sorted(self._estates_covered(lifted)):
                self._weather_plans(estate, now, batch, emitted, plan_estates)
            self._write(batch)
            result = lifted.as_dict(now)
        self._emit(emitted, plan_estates)
        return result

    def list_warnings(
        self, active: bool | None = None, estates: Collection[str] | None = None
    ) -> list[dict[str, Any]]:
        """``estates``: only warnings covering one of these (by name or by region)."""
        now = self.clock()
        items = self.store.warnings()
        if active is not None:
            items = [w for w in items if w.active(now) == active]
        if estates is not None:
            regions = {e: self._region(e) for e in estates}
            items = [w for w in items if any(w.covers(e, r) for e, r in regions.items())]
        return [w.as_dict(now) for w in items]

    def weather_levels(self, estate: str) -> list[dict[str, Any]]:
        with self._lock:
            levels = self.weather.estate_levels(estate, self._region(estate), self.clock())
        return [lv.as_dict() for lv in levels.values()]

    # --- plans ---------------------------------------------------------------------------------
    def list_plans(self) -> list[dict[str, Any]]:
        return [
            {
                "id": p.id,
                "name": {"zh": p.name_zh, "en": p.name_en},
                "hazards": [h.value for h in p.hazards],
                "levels": {
                    lvl.roman: {
                        "weather": pl.weather.colour if pl.weather else None,
                        "rules": sorted(pl.rules),
                        "together": [[sorted(alts) for alts in g] for g in pl.together],
                        "confirm": pl.confirm,
                        "person": pl.person,
                        "tasks": [
                            {"id": t.id, "text": t.text_zh, "role": t.role, "due_ms": t.due_ms}
                            for t in pl.tasks
                        ],
                    }
                    for lvl, pl in sorted(p.levels.items())
                },
                "drill": {"cron": p.drill_cron, "per_year": p.drills_per_year},
            }
            for p in self.plans.values()
        ]

    def list_activations(
        self,
        estate: str | None = None,
        active: bool | None = None,
        limit: int = 100,
        estates: Collection[str] | None = None,
    ) -> list[dict[str, Any]]:
        return [
            a.as_dict(self.plans.get(a.plan))
            for a in self.store.list_activations(estate, active, limit, estates)
        ]

    def get_activation(self, activation_id: str) -> dict[str, Any]:
        act = self.store.get_activation(activation_id)
        if act is None:
            raise NotFound(f"plan activation {activation_id!r} not found")
        return {
            **act.as_dict(self.plans.get(act.plan)),
            "timeline": self.store.activation_timeline(activation_id),
        }

    def _active_activation(self, activation_id: str) -> PlanActivation:
        act = self.plan_book.find(activation_id)
        if act is None:
            if self.store.get_activation(activation_id) is None:
                raise NotFound(f"plan activation {activation_id!r} not found")
            raise InvalidTransition(f"plan activation {activation_id} has stood down")
        return act

    def _plan_by_person(self, fn: Callable[[int], ActivationChange | None]) -> dict[str, Any]:
        emitted: list[dict[str, Any]] = []
        plan_estates: set[str] = set()
        with self._lock:
            now = self.clock()
            done = fn(now)
            batch = StoreBatch()
            self._plan_changed(done, batch, emitted, plan_estates)
            self._write(batch)
        self._emit(emitted, plan_estates)
        if done is None:
            return {}
        return done.activation.as_dict(self.plans.get(done.activation.plan))

    def complete_task(
        self, activation_id: str, task_id: str, by: str, note: str | None = None
    ) -> dict[str, Any]:
        def done(now: int) -> ActivationChange:
            act = self._active_activation(activation_id)
            task = act.tasks.get(task_id)
            if task is None:
                raise NotFound(f"plan activation {activation_id} has no task {task_id!r}")
            if task.done_ms is not None:
                raise InvalidTransition(f"task {task_id!r} was done by {task.done_by} already")
            return self.plan_book.complete_task(act, task_id, by, now, note)

        return self._plan_by_person(done)

    def activate_plan(
        self, estate: str, plan_id: str, level: str, by: str, reason: str
    ) -> dict[str, Any]:
        """A person activates (or re-levels) a plan; it stays up until a person stands it down."""
        if plan_id not in self.plans:
            raise NotFound(f"plan {plan_id!r} not found")
        lvl = ResponseLevel.parse(level)
        pl = self.plans[plan_id].levels[lvl]
        if not pl.person:
            raise InvalidTransition(f"level {lvl.roman} of {plan_id} is not activated by a person")
        source = Source("manual", lvl, {"by": by, "reason": reason})
        return self._plan_by_person(
            lambda now: self.plan_book.set_source(estate, plan_id, source, now, by=by)
        )

    def stand_down(self, activation_id: str, by: str, reason: str) -> dict[str, Any]:
        return self._plan_by_person(
            lambda now: self.plan_book.stand_down(
                self._active_activation(activation_id), by, now, reason
            )
        )

    # --- drills --------------------------------------------------------------------------------
    def record_drill(
        self,
        estate: str,
        plan_id: str,
        held_ms: int,
        by: str,
        participants: Sequence[str] = (),
        findings: str = "",
        outcome: str = "",
        drill_id: str | None = None,
        status: str = "held",
    ) -> dict[str, Any]:
        if plan_id not in self.plans:
            raise NotFound(f"plan {plan_id!r} not found")
        now = self.clock()
        drill: Drill | None = None
        if drill_id is not None:
            drill = self.store.get_drill(drill_id)
            if drill is None or (drill.estate, drill.plan) != (estate, plan_id):
                raise NotFound(f"drill {drill_id!r} of {plan_id} in {estate} not found")
            if drill.status is not DrillStatus.SCHEDULED:
                raise InvalidTransition(f"drill {drill_id} was recorded already")
        else:
            drill = Drill(new_id("dr"), estate, plan_id, DrillStatus.SCHEDULED, now)
        drill.status = DrillStatus(status)
        drill.held_ms = held_ms
        drill.participants = list(participants)
        drill.findings = findings
        drill.outcome = outcome
        drill.recorded_by = by
        self.store.save_drill(drill)
        return drill.as_dict()

    def list_drills(
        self,
        estate: str | None = None,
        plan: str | None = None,
        year: int | None = None,
        estates: Collection[str] | None = None,
    ) -> dict[str, Any]:
        """Drills, newest first; with an estate and a year, also the yearly count per plan
        against the number required."""
        since, until = year_bounds(year) if year is not None else (None, None)
        items = self.store.list_drills(estate, plan, since, until, estates=estates)
        out: dict[str, Any] = {"items": [d.as_dict() for d in items], "total": len(items)}
        if estate is not None and year is not None:
            out["yearly"] = yearly_counts(items, self.plans, estate, year)
        return out

    # --- health --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "rules": len(self.rules.defaults),
                "rule_files": len(self.rules.files),
                "open_alarms": len(self.alarms.open),
                "active_plans": len(self.plan_book.active),
                "devices_watched": len(self.evaluator.clocks),
                "notify_worker": self.outbox.running,
            }


def _auto_resolve(rules: RuleSet) -> dict[str, int]:
    # Keyed by rule id: an estate's override of auto_resolve wins over the default's.
    out = {r.id: r.auto_resolve_ms for r in rules.defaults.values() if r.auto_resolve_ms}
    for own in rules.estates.values():
        out.update({r.id: r.auto_resolve_ms for r in own.values() if r.auto_resolve_ms})
    return out


__all__ += ["RuleFileError"]


def _alarm_news(alarm: Alarm, action: str, entry: TimelineEntry) -> dict[str, Any]:
    """What the live feed and other screens are told of an alarm change."""
    return {
        "type": "alarm",
        "estate": alarm.estate,
        "action": action,
        "alarm": alarm.as_dict(),
        "entry": entry.as_dict(),
    }
