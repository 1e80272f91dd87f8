"""The alert engine: the stream and the clock over the alerts' records.

Ingest calls :meth:`AlertEngine.on_committed` on its listeners thread with what it just
committed; the scheduler calls :meth:`tick` every second for what depends on time alone
('for' timers, deadman clocks, escalation, overdue tasks, stand-downs, drills); the API calls
people's actions (``alerts/actions.py``) and reads (``alerts/queries.py``) through the
methods of the same names here. One lock (``Records.lock``) orders all of them, reads too.

Each call is one step (``Records.step``): its changes (alarms, plans, silences, warnings,
drills, notifications) are gathered in a ``Changes`` and written in one transaction before
anyone is told: listeners (the live stream), MQTT and webhooks through the notification log.
Written apart, on their own schedule: the snapshot of deadman clocks and window samples
(every 5 min and at stop), the purge of old notifications (daily), and the outbox's marks of
what it delivered (on its own thread).

What follows an alarm change is in ``alerts/followups.py``, weather → plans in
``alerts/weather_plans.py``, what falls due with time in ``alerts/due.py``, who is told in
``alerts/notices.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, cast

import sqlalchemy as sa

from alerts.actions import PeopleActions
from alerts.alarms import AlarmBook, AlarmState, FlapDetector
from alerts.changes import Changes
from alerts.due import DrillClocks, drills_due, promote_late, season_over, weather_due
from alerts.estates import EstateDirectory, EstateLookup
from alerts.followups import alarm_changed, arrival_event, escalate, plan_changed, refresh_silence
from alerts.inhibit import Inhibitor
from alerts.notices import Notices, Receivers, notifiers_for
from alerts.notify import Notifier
from alerts.notify.mqtt import Publish
from alerts.notify.outbox import Outbox
from alerts.plans import BUNDLED_PLANS, Plan, PlanBook, load_plans
from alerts.queries import Queries
from alerts.records import ChangeListener, Records
from alerts.rules.evaluate import DeviceClock, Evaluator, Signal
from alerts.rules.loader import BUNDLED_RULES, RuleFileError, RuleSet, load_rules
from alerts.silences import SilenceBook
from alerts.store import AlertStore, ClockRow
from alerts.weather import BUNDLED_CRITERIA, Criteria, WeatherBoard, load_criteria
from alerts.weather.levels import check_criteria
from alerts.weather_plans import Readings, judge_stations, observe_station
from alerts.window_bank import WindowBank
from alerts.windows import SeriesWindow
from alerts.zones import BUNDLED_ZONES, EstateProfile, load_zones
from ingest.directory import estate_records as stored_estate_records
from ingest.directory import offline_gateways as stored_offline_gateways
from ingest.model import Fence, NotOwner
from ingest.pipeline import Delivery
from protocol.catalog import Catalog

__all__ = ["AlertEngine", "ChangeListener", "RuleFileError"]

log = logging.getLogger(__name__)

_MINUTE = 60_000
_DAY = 86_400_000

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")


class _Via(Generic[S, P, R]):
    """A method of the engine answered by one of its parts (the attribute ``part``), so the
    API keeps calling ``engine.acknowledge(...)`` with the part's own signature."""

    def __init__(self, part: str, fn: Callable[Concatenate[S, P], R]) -> None:
        self.part, self.fn = part, fn
        self.__doc__ = fn.__doc__

    def __get__(self, obj: object, owner: type | None = None) -> Callable[P, R]:
        if obj is None:  # on the class (introspection, documentation): the part's function
            return cast(Callable[P, R], self.fn)
        return partial(self.fn, getattr(obj, self.part))


@dataclass(frozen=True, slots=True)
class _Every:
    """How often the tick's periodic parts run, and how long notifications are kept."""

    deadman_ms: int
    weather_ms: int
    snapshot_ms: int
    notification_retention_ms: int


class AlertEngine:
    """Wiring (the composition root, ``estatewatch/service.py``)::

        alerts = AlertEngine(state.engine, catalog, now_ms, publish=notices.publish,
                             notify=notifiers_for(notices.publish, root, receivers),
                             estate_records=partial(estate_records, state.engine),
                             offline_gateways=partial(offline_gateways, state.engine))
        ingest.add_listener(alerts.on_committed)
        alerts.add_listener(lambda c: live.publish(c["estate"], c["type"], c))
        scheduler.add_job(alerts.tick, "interval", seconds=1, max_instances=1)
        alerts.start() ... alerts.stop()

    ``engine``: the state store's SQLAlchemy engine (the alerts' own tables, ``alert_*``).
    ``clock``: epoch ms; tests pass a simulated one. ``publish(topic, payload, retain)``: the
    plans, retained on ``{root}/{estate}/plans``. ``notify``: the notifiers and each role's
    receivers; without it, built from ``publish`` (MQTT alarm notices) and ``receivers`` (role
    → notifiers). ``estate_records`` / ``offline_gateways``: ingest's look-ups (default: ingest's
    ``ingest.directory`` on ``engine``); ``estate_region`` / ``estate_profile`` answer for one
    estate instead. ``rules_dir``, ``override_dir`` (``<estate>/*.yaml``), ``plans_dir``,
    ``criteria_path``, ``zones_path``: the data files. Raises RuleFileError or DataFileError
    when a data file has a mistake.

    Estates move between engines (issue 16, a scaled-out worker's partitions): ``owns`` says
    which estates are this engine's at start (loaded then); :meth:`adopt` takes more on from
    the store, :meth:`release` drops them. ``fence(conn, estates)`` runs first in every
    transaction that writes estates' state; when it raises ``ingest.model.NotOwner`` the
    transaction rolls back and those estates are released, their next owner continuing from
    what was committed. With a fence, the deadman clocks heard are also written every deadman
    period, so the successor's clocks are the predecessor's last ones, not a snapshot minutes
    old.
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
        notify: Receivers | None = None,
        estate_records: EstateLookup | None = None,
        offline_gateways: Callable[[], list[tuple[str, str]]] | None = None,
        fence: Fence | None = None,
    ) -> None:
        self.catalog = catalog
        self.rules_dir, self.override_dir = rules_dir, override_dir
        self.every = _Every(
            deadman_every_ms, weather_every_ms, snapshot_every_ms, notification_retention_ms
        )
        self._offline_gateways = offline_gateways or partial(stored_offline_gateways, engine)
        now = clock()
        store = AlertStore(engine, fence)
        store.migrate(now)
        # With a fence (a scaled-out worker), the deadman clocks heard since the last flush,
        # written every deadman period: a successor continues from them (not a snapshot).
        self._dirty: set[tuple[str, str]] | None = set() if fence is not None else None
        # Estates adopted and not released since: this engine's, and estates released and not
        # adopted since: not, whatever ``owns`` says (until the service's view catches up).
        self._adopted: set[str] = set()
        self._gone: set[str] = set()
        rules, plans = self._rules_and_plans(plans_dir)
        criteria = self._criteria(criteria_path, zones_path)
        lookup = estate_records or partial(stored_estate_records, engine)
        directory = EstateDirectory(lookup, self.zones, estate_region, estate_profile)
        notify = notify or notifiers_for(publish, root, receivers)
        base_owns = owns or (lambda _estate: True)
        adopted, gone = self._adopted, self._gone

        def mine(estate: str) -> bool:
            return estate in adopted or (estate not in gone and base_owns(estate))

        outbox = Outbox(store, notify.notifiers, clock, owns=mine)
        windows = WindowBank()
        intervals = {k.name: k.interval_s * 1000 for k in catalog.kinds.values()}
        self.rec = Records(
            clock, catalog, store, outbox,
            Notices(outbox.notifiers, notify.by_role, directory.name), directory, rules, plans,
            criteria, windows, Evaluator(windows, intervals),
            Inhibitor(rules.inhibit, lambda e, ts: directory.profile(e).in_heating_season(ts)),
            AlarmBook(flapping, late_after_ms), SilenceBook(store.silences(ending_after_ms=now)),
            WeatherBoard(criteria), PlanBook(plans, plan_hold_ms),
            publish=publish, root=root, owns=mine, late_after_ms=late_after_ms,
        )  # fmt: skip
        self.rec.set_rules(rules)
        self.rec.lost = self.release
        self._alias_parts()
        self._set_clocks(now, startup_grace_ms)
        self._load(None, now)

    # --- set-up --------------------------------------------------------------------------------
    def _rules_and_plans(self, plans_dir: Path) -> tuple[RuleSet, dict[str, Plan]]:
        rules = load_rules(self.catalog, self.rules_dir, self.override_dir)
        plans = load_plans(plans_dir)
        _check_plan_rules(rules, plans)
        return rules, plans

    def _set_clocks(self, now: int, startup_grace_ms: int) -> None:
        """When each periodic part of the tick last ran."""
        self._last_weather = self._last_purge = self._last_snapshot = self._last_flush = now
        # After a (re)start, give ingest's backlog a minute to arrive before deadman clocks
        # restored from the last snapshot call devices silent.
        self._last_deadman = now + startup_grace_ms - self.every.deadman_ms
        self._drills = DrillClocks({})  # loaded with the estates
        # (estate, station) -> the newest reading time its levels were judged at
        self._station_judged: dict[tuple[str, str], int] = {}

    def _criteria(self, criteria_path: Path, zones_path: Path) -> Criteria:
        """The CMA criteria, checked against the catalog and the climate zones."""
        criteria = load_criteria(criteria_path)
        metrics = {k: list(v.metrics) for k, v in self.catalog.kinds.items()}
        check_criteria(criteria, metrics, str(criteria_path))
        self.zones = load_zones(zones_path)
        for zone in sorted(criteria.zones() - set(self.zones)):
            log.warning("alerts: %s: zone %r is not in %s", criteria_path, zone, zones_path)
        return criteria

    def _alias_parts(self) -> None:
        """The parts by their old names, for the service, tests and benches."""
        rec = self.rec
        self.store, self.outbox, self.criteria = rec.store, rec.outbox, rec.criteria
        self.plans: dict[str, Plan] = rec.plans
        self.alarms, self.plan_book, self.silences = rec.alarms, rec.plan_book, rec.silences
        self.weather, self.windows, self.evaluator = rec.weather, rec.windows, rec.evaluator
        self.inhibitor, self.receivers = rec.inhibitor, rec.notices.receivers
        self.actions, self.queries = PeopleActions(rec), Queries(rec)

    @property
    def rules(self) -> RuleSet:
        return self.rec.rules

    @property
    def clock(self) -> Callable[[], int]:
        return self.rec.clock

    @clock.setter
    def clock(self, clock: Callable[[], int]) -> None:
        self.rec.clock = clock

    @property
    def late_after_ms(self) -> int:
        return self.rec.late_after_ms

    @property
    def owns(self) -> Callable[[str], bool]:
        return self.rec.owns

    # --- estates taken on and given up ---------------------------------------------------------
    def adopt(self, estates: Collection[str]) -> None:
        """Take these estates on from the store, as if this engine had run them all along:
        their open and cleared alarms (pending 'for' timers, escalation steps, rescues'
        arrivals), the conditions behind them, deadman clocks, window samples, plan
        activations with their tasks, drill clocks and offline gateways (silences and warnings
        are everyone's, read again). Idempotent: what is already in memory stays (it is as
        new as the store's or newer)."""
        wanted = set(estates)
        if not wanted:
            return
        with self.rec.lock:
            new = {e for e in wanted if not self.rec.owns(e)}
            self._gone -= wanted
            self._adopted |= wanted
            try:
                self._load(wanted, self.rec.clock())
            except BaseException:
                self.release(new)  # not half of them (the caller may try again)
                raise

    def release(self, estates: Collection[str]) -> None:
        """Drop everything in memory of these estates (alarms, held conditions, deadman
        clocks, windows, plans, inhibitions, weather, drill clocks, changes waiting for the
        database) without writing anything: their next owner continues from the store.
        Idempotent; until :meth:`adopt`, their deliveries are ignored."""
        gone = set(estates)
        if not gone:
            return
        rec = self.rec
        with rec.lock:
            self._gone |= gone
            self._adopted -= gone
            dropped = [a for a in rec.alarms.by_id.values() if a.estate in gone]
            dropped += [a for a in rec.alarms.cleared.values() if a.estate in gone]
            for a in dropped:
                rec.alarms.open.pop(a.key, None)
                rec.alarms.by_id.pop(a.id, None)
                rec.alarms.cleared.pop(a.id, None)
                rec.arrivals.pop(a.id, None)
            rec.alarms.flaps.drop(gone)
            ev = rec.evaluator
            for rule_id, held in list(ev.asserted.items()):
                for estate, subject in [k for k in held if k[0] in gone]:
                    ev.forget(rule_id, estate, subject)
            for table in (ev.clocks, ev.latest, ev.event_counts, rec.windows.series):
                _drop_keys(table, gone)
            rec.inhibitor.offline -= {k for k in rec.inhibitor.offline if k[0] in gone}
            _drop_keys(rec.inhibitor.modes, gone)
            _drop_keys(rec.plan_book.active, gone)
            for estate in gone:
                rec.weather.observed.pop(estate, None)
            _drop_keys(self._station_judged, gone)
            _drop_keys(self._drills.last, gone)
            _drop_keys(self._drills.due, gone)
            if self._dirty:
                self._dirty -= {k for k in self._dirty if k[0] in gone}
            rec.forget_unwritten(gone)
        if dropped:
            log.info("alerts: released %s (%d alarms)", ", ".join(sorted(gone)), len(dropped))

    def _load(self, estates: set[str] | None, now: int) -> None:
        """Load the state of ``estates`` (None: every estate ``owns`` accepts, at start) that
        is not in memory yet."""
        rec = self.rec
        keep = rec.owns if estates is None else estates.__contains__
        book = rec.alarms
        open_alarms = [
            a
            for a in rec.store.open_alarms(estates)
            if keep(a.estate) and a.key not in book.open and a.id not in book.by_id
        ]
        book.load(open_alarms)
        book.load(
            a
            for a in rec.store.cleared_alarms(estates)
            if keep(a.estate) and a.id not in book.cleared and a.id not in book.by_id
        )
        arrivals = rec.store.arrivals(estates)
        rec.arrivals.update({a.id: arrivals[a.id] for a in open_alarms if a.id in arrivals})
        held = []
        for a in open_alarms:
            rule = rec.rule(a.estate, a.rule)
            if rule is not None:
                held.append((rule, a.estate, a.subject))
            if a.kind == "gateway" and a.gateway:
                rec.inhibitor.observe_status(a.estate, a.gateway, online=False)
        rec.evaluator.restore(held)
        clocks = rec.evaluator.clocks
        stations = []
        for estate, dev, kind, gw, last, data in rec.store.clocks(estates):
            known = clocks.get((estate, dev))
            if keep(estate) and (known is None or known.last_ms < last):
                clocks[(estate, dev)] = DeviceClock(kind, gw, last, data)
            if kind == rec.criteria.kind and keep(estate):
                stations.append((estate, dev))
        series = rec.windows.series
        for estate, dev, metric, blob in rec.store.windows(estates):
            if keep(estate) and (estate, dev, metric) not in series:
                series[(estate, dev, metric)] = SeriesWindow.from_bytes(blob)
        # The weather stations' levels from their windows, before the next weather period
        # judges the estates' plans (with none, it would lower them).
        for estate, dev in stations:
            c = clocks[(estate, dev)]
            if dev not in rec.weather.observed.get(estate, {}):
                observe_station(rec, estate, dev, c.data_ms if c.data_ms >= 0 else now)
        self._refresh_shared(now)
        plan_book = rec.plan_book
        plan_book.load(
            [
                a
                for a in rec.store.active_activations(estates)
                if keep(a.estate) and (a.estate, a.plan) not in plan_book.active
            ]
        )
        for key, last in rec.store.drill_clocks(estates).items():
            if keep(key[0]) and last > self._drills.last.get(key, -1):
                self._drills.last[key] = last
                self._drills.due.pop(key, None)
        try:
            offline = self._offline_gateways()
        except sa.exc.SQLAlchemyError:
            log.exception("alerts: could not read gateway states")
            offline = []
        for estate, gw in offline:
            if keep(estate):
                rec.inhibitor.observe_status(estate, gw, online=False)

    def _refresh_shared(self, now: int) -> None:
        """Warnings and silences may be posted to another process (the API's, or another
        shard's): read them from the store now and then."""
        for w in self.rec.store.warnings(expiring_after_ms=now - _DAY):
            self.rec.weather.add_warning(w)
        for s in self.rec.store.silences(ending_after_ms=now):
            self.rec.silences.add(s)

    # --- lifecycle -----------------------------------------------------------------------------
    def add_listener(self, listener: ChangeListener) -> None:
        """Called with each alarm or plan change after it is stored (on the caller's thread)."""
        self.rec.listeners.append(listener)

    def start(self) -> None:
        """Deliver notifications on a thread of their own (otherwise tick() delivers them)."""
        self.rec.outbox.start()

    def stop(self) -> None:
        self.rec.outbox.stop()
        with self.rec.lock:
            self._snapshot(self.rec.clock(), everything=True)

    def reload_rules(self) -> RuleSet:
        """Load the rule files again. A file with a mistake raises RuleFileError (file, line,
        problem) and the rules in force stay."""
        rules = load_rules(self.catalog, self.rules_dir, self.override_dir)
        _check_plan_rules(rules, self.rec.plans)
        with self.rec.lock:
            self.rec.set_rules(rules)
        return rules

    # --- the stream ----------------------------------------------------------------------------
    def on_committed(self, deliveries: Sequence[Delivery]) -> None:
        """Ingest's commit listener: evaluate what was just stored."""

        def step(now: int, ch: Changes) -> None:
            nonlocal deliveries
            if self._gone:  # released estates' data is their next owner's (under the lock)
                deliveries = [d for d in deliveries if (d.estate or "") not in self._gone]
            # When the data reached us, on the engine's own clock: the wall clock in service
            # (ingest's receipt a moment ago), a simulated one in a replay run faster than real
            # time, so deadman clocks and "late" compare times of one clock.
            signals: list[Signal] = []
            stations: Readings = {}
            arrivals: list[tuple[str, Any]] = []  # (estate, technician-arrived event)
            self._observe(deliveries, now, signals, stations, arrivals)
            if self._dirty is not None:
                self._heard(deliveries, self._dirty)
            self._apply(signals, now, ch)
            for estate, e in arrivals:
                arrival_event(self.rec, estate, e, ch)
            judge_stations(self.rec, stations, self._station_judged, now, ch)

        self._step(step)

    def _step(self, fn: Callable[[int, Changes], None]) -> None:
        """A step of the stream or the clock: estates a fence refused are released (by
        ``Records.step``) and the others' changes stored; nobody waits for an answer."""
        try:
            self.rec.step(fn)
        except NotOwner as exc:
            log.info("alerts: %s: released", exc)

    @staticmethod
    def _heard(deliveries: Sequence[Delivery], dirty: set[tuple[str, str]]) -> None:
        """The devices these deliveries moved the deadman clocks of."""
        for d in deliveries:
            b = d.batch
            if b is not None:
                estate = b.estate
                dirty.update([(estate, r.dev) for r in b.readings])
                if b.events:
                    dirty.update([(estate, e.dev) for e in b.events])

    def _dirty_clocks(self) -> list[ClockRow]:
        """The deadman clocks heard since the last flush (under the lock), to write apart."""
        dirty, clocks = self._dirty, self.rec.evaluator.clocks
        if not dirty:
            return []
        rows = [
            (e, d, c.kind, c.gateway, c.last_ms, c.data_ms)
            for e, d in dirty
            if (c := clocks.get((e, d))) is not None
        ]
        dirty.clear()
        return rows

    def _flush_clocks(self, rows: list[ClockRow]) -> None:
        """Write them (fenced; estates refused are released), outside the lock: one
        transaction per deadman period, not one per commit. The successor's clocks are at most
        that far behind, and it checks them at that period anyway."""
        try:
            self._save_owned(lambda: self.rec.store.save_clocks(rows), rows)
        except sa.exc.SQLAlchemyError:
            log.exception("alerts: could not write deadman clocks; will retry")
            with self.rec.lock:
                if self._dirty is not None:
                    self._dirty.update((r[0], r[1]) for r in rows if r[0] not in self._gone)

    def _save_owned(self, save: Callable[[], None], *rows: list[Any]) -> None:
        """Run a fenced write of rows (each starting with its estate); estates the fence refuses
        are released and the write runs again without them."""
        for _ in range(3):
            try:
                save()
                return
            except NotOwner as exc:
                self.release(exc.estates)
                for r in rows:
                    r[:] = [x for x in r if x[0] not in exc.estates]

    def _observe(
        self,
        deliveries: Sequence[Delivery],
        arrived: int,
        signals: list[Signal],
        stations: Readings,
        arrivals: list[tuple[str, Any]],
    ) -> None:
        """Feed the deliveries to the inhibitor and the evaluator (its signals into
        ``signals``); gather weather-station readings and technicians' arrivals."""
        rec, ev, inhibitor = self.rec, self.rec.evaluator, self.rec.inhibitor
        station_kind, watched = rec.criteria.kind, inhibitor.watched
        for d in deliveries:
            if d.status is not None and d.estate and d.gateway:
                online = d.status.state == "online"
                inhibitor.observe_status(d.estate, d.gateway, online)
                idx = rec.index(d.estate)
                ev.observe_status(idx, d.estate, d.gateway, online, arrived, signals)
            b = d.batch
            if b is None:
                continue
            idx = rec.index(b.estate)
            if b.readings:
                for r in b.readings:
                    if r.kind in watched:
                        inhibitor.observe_reading(b.estate, r.dev, r.kind, r.metrics)
                    if r.kind == station_kind:
                        stations.setdefault((b.estate, r.dev), []).append((r.ts, dict(r.metrics)))
                ev.observe_readings(idx, b.estate, b.gateway, b.readings, signals, arrived)
            if b.events:
                ev.observe_events(idx, b.estate, b.gateway, b.events, signals, arrived)
                arrivals.extend(
                    (b.estate, e) for e in b.events if e.type == "elevator.technician_arrived"
                )

    def _apply(self, signals: Sequence[Signal], now: int, ch: Changes) -> None:
        rec = self.rec
        for sig in signals:
            key = (sig.rule.id, sig.estate, sig.subject)
            if sig.hit and rec.alarms.get(key) is None:
                reason = rec.inhibitor.reason(
                    sig.rule.tags, sig.estate, sig.subject, sig.gateway, sig.ts
                )
                if reason is not None:
                    # Not raised; forgotten, so it is raised if it still holds once uninhibited.
                    rec.evaluator.forget(sig.rule.id, sig.estate, sig.subject)
                    continue
            for change in rec.alarms.apply(sig, now):
                alarm_changed(rec, change, now, ch)

    # --- the clock -----------------------------------------------------------------------------
    def tick(self) -> None:
        """Everything that depends on time alone; the scheduler runs it every second."""
        rec = self.rec
        self._step(self._tick)
        heard: list[ClockRow] = []
        with rec.lock:
            now = rec.clock()
            if now - self._last_snapshot >= self.every.snapshot_ms:
                self._snapshot(now)
            elif self._dirty and now - self._last_flush >= self.every.deadman_ms:
                self._last_flush = now
                heard = self._dirty_clocks()
            if now - self._last_purge >= _DAY:
                self._last_purge = now
                rec.store.purge_notifications(now - self.every.notification_retention_ms)
        if heard:
            self._flush_clocks(heard)
        if not rec.outbox.running:
            rec.outbox.deliver_due()

    def _tick(self, now: int, ch: Changes) -> None:
        rec, ev = self.rec, self.rec.evaluator
        signals: list[Signal] = []
        if now - self._last_deadman >= self.every.deadman_ms:
            self._last_deadman = now
            ev.check_time(rec.index, now, signals)
        self._apply(signals, now, ch)
        for change in rec.alarms.tick(
            now, rec.auto_resolve, lambda a: ev.subject_now(a.estate, a.subject, now)
        ):
            alarm_changed(rec, change, now, ch)
        promote_late(rec, now, ch)
        for alarm in list(rec.alarms.open.values()):
            if alarm.state is not AlarmState.PENDING:
                refresh_silence(rec, alarm, now, ch)
                escalate(rec, alarm, now, ch)
        if now - self._last_weather >= self.every.weather_ms:
            self._last_weather = now
            self._minutely(now, ch)
        for plan_change in rec.plan_book.tick(now):
            plan_changed(rec, plan_change, ch)

    def _minutely(self, now: int, ch: Changes) -> None:
        """Once a weather period: shared warnings and silences, weather levels, the heating
        season's end, drills; old silences and warnings leave memory (kept in the store)."""
        rec = self.rec
        self._refresh_shared(now)
        weather_due(rec, now, self.every.weather_ms, ch)
        season_over(rec, now, ch)
        drills_due(rec, self._drills, now, ch)
        rec.silences.prune(now)
        for wid in [w.id for w in rec.weather.warnings.values() if w.expires_ms < now - _DAY]:
            del rec.weather.warnings[wid]

    def _snapshot(self, now: int, everything: bool = False) -> None:
        """Deadman clocks and window samples, so a restart resumes them (not per reading)."""
        since = -1 if everything else self._last_snapshot
        clocks = [
            (e, d, c.kind, c.gateway, c.last_ms, c.data_ms)
            for (e, d), c in self.rec.evaluator.clocks.items()
            if c.last_ms > since
        ]
        series = [
            (e, d, m, w.to_bytes())
            for (e, d, m), w in self.rec.windows.series.items()
            if (w.last_ts or -1) > since
        ]
        self._last_snapshot = now
        if self._dirty is not None:
            self._dirty.clear()  # every clock heard since the last flush is in this one
        store = self.rec.store
        try:
            self._save_owned(lambda: store.save_clocks(clocks), clocks)
            self._save_owned(lambda: store.save_windows(series, now), series)
        except sa.exc.SQLAlchemyError:
            log.exception("alerts: could not save deadman clocks and windows; will retry")

    # --- by people (the API): actions and reads, answered by their own modules ------------------
    acknowledge = _Via("actions", PeopleActions.acknowledge)
    resolve = _Via("actions", PeopleActions.resolve)
    confirm = _Via("actions", PeopleActions.confirm)
    assign = _Via("actions", PeopleActions.assign)
    add_note = _Via("actions", PeopleActions.add_note)
    technician_arrived = _Via("actions", PeopleActions.technician_arrived)
    add_silence = _Via("actions", PeopleActions.add_silence)
    expire_silence = _Via("actions", PeopleActions.expire_silence)
    post_warning = _Via("actions", PeopleActions.post_warning)
    cancel_warning = _Via("actions", PeopleActions.cancel_warning)
    activate_plan = _Via("actions", PeopleActions.activate_plan)
    stand_down = _Via("actions", PeopleActions.stand_down)
    complete_task = _Via("actions", PeopleActions.complete_task)
    record_drill = _Via("actions", PeopleActions.record_drill)
    list_alarms = _Via("queries", Queries.list_alarms)
    get_alarm = _Via("queries", Queries.get_alarm)
    rescues = _Via("queries", Queries.rescues)
    get_silence = _Via("queries", Queries.get_silence)
    list_silences = _Via("queries", Queries.list_silences)
    list_warnings = _Via("queries", Queries.list_warnings)
    weather_levels = _Via("queries", Queries.weather_levels)
    list_plans = _Via("queries", Queries.list_plans)
    list_activations = _Via("queries", Queries.list_activations)
    get_activation = _Via("queries", Queries.get_activation)
    list_drills = _Via("queries", Queries.list_drills)
    status = _Via("queries", Queries.status)


def _drop_keys(table: dict[Any, Any], estates: set[str]) -> None:
    """Drop the entries whose key (a tuple) starts with one of ``estates``."""
    for key in [k for k in table if k[0] in estates]:
        del table[key]


def _check_plan_rules(rules: RuleSet, plans: dict[str, Plan]) -> list[str]:
    """Plan levels activated by rules that are not defined: said, not fatal (a deployment with
    its own rules may leave some out; those levels are then for people to call)."""
    problems = [
        f"{plan.source}: plan {plan.id!r} is activated by rule {rid!r}, which is not defined"
        for plan in plans.values()
        for rid in sorted(plan.rules)
        if rid not in rules.defaults
    ]
    for p in problems:
        log.warning("alerts: %s", p)
    return problems
