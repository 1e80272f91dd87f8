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
``alerts/notices.py``; deliveries → signals → alarm changes in ``alerts/stream.py``, estates
taken on and given up in ``alerts/tenure.py``, the clocks and windows written apart in
``alerts/snapshots.py``.
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
from alerts.rules.evaluate import Evaluator, Signal
from alerts.rules.loader import BUNDLED_RULES, RuleFileError, RuleSet, load_rules
from alerts.silences import SilenceBook
from alerts.snapshots import Snapshots
from alerts.store import AlertStore
from alerts.stream import apply_signals, observe
from alerts.tenure import drop_estates, load_estates, refresh_shared
from alerts.weather import BUNDLED_CRITERIA, Criteria, WeatherBoard, load_criteria
from alerts.weather.levels import check_criteria
from alerts.weather_plans import Readings, judge_stations
from alerts.window_bank import WindowBank
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
        # Estates adopted and not released since: this engine's, and estates released and not
        # adopted since: not, whatever ``owns`` says (until the service's view catches up).
        self._adopted: set[str] = set()
        self._gone: set[str] = set()
        rules, plans = self._rules_and_plans(plans_dir)
        criteria = self._criteria(criteria_path, zones_path)
        lookup = estate_records or partial(stored_estate_records, engine)
        directory = EstateDirectory(lookup, self.zones, estate_region, estate_profile)
        notify = notify or notifiers_for(publish, root, receivers)
        self._base_owns = owns or (lambda _estate: True)
        self.rec = self._records(
            clock, store, notify, directory, rules, plans, criteria, now,
            AlarmBook(flapping, late_after_ms), PlanBook(plans, plan_hold_ms), publish, root,
        )  # fmt: skip
        self.rec.set_rules(rules)
        self.rec.lost = self.release
        self._alias_parts()
        self._set_clocks(now, startup_grace_ms, fenced=fence is not None)
        self._load(None, now)

    # --- set-up --------------------------------------------------------------------------------
    def _rules_and_plans(self, plans_dir: Path) -> tuple[RuleSet, dict[str, Plan]]:
        rules = load_rules(self.catalog, self.rules_dir, self.override_dir)
        plans = load_plans(plans_dir)
        _check_plan_rules(rules, plans)
        return rules, plans

    def _records(
        self, clock: Callable[[], int], store: AlertStore, notify: Receivers,
        directory: EstateDirectory, rules: RuleSet, plans: dict[str, Plan], criteria: Criteria,
        now: int, alarms: AlarmBook, plan_book: PlanBook, publish: Publish | None, root: str,
    ) -> Records:  # fmt: skip
        """The engine's parts, over the records they share."""
        outbox = Outbox(store, notify.notifiers, clock, owns=self._mine)
        windows = WindowBank()
        intervals = {k.name: k.interval_s * 1000 for k in self.catalog.kinds.values()}
        return Records(
            clock, self.catalog, store, outbox,
            Notices(outbox.notifiers, notify.by_role, directory.name), directory, rules, plans,
            criteria, windows, Evaluator(windows, intervals),
            Inhibitor(rules.inhibit, lambda e, ts: directory.profile(e).in_heating_season(ts)),
            alarms, SilenceBook(store.silences(ending_after_ms=now)),
            WeatherBoard(criteria), plan_book,
            publish=publish, root=root, owns=self._mine, late_after_ms=alarms.late_after_ms,
        )  # fmt: skip

    def _mine(self, estate: str) -> bool:
        """Adopted, or not released and ``owns`` says so."""
        return estate in self._adopted or (estate not in self._gone and self._base_owns(estate))

    def _set_clocks(self, now: int, startup_grace_ms: int, fenced: bool) -> None:
        """When each periodic part of the tick last ran."""
        self._last_weather = self._last_purge = now
        self.saves = Snapshots(
            self.rec, self.release, self._gone, fenced, now, self.every.snapshot_ms,
            self.every.deadman_ms,
        )  # fmt: skip
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
        with self.rec.lock:
            self._gone |= gone
            self._adopted -= gone
            self.saves.forget(gone)
            dropped = drop_estates(self.rec, gone, self._drills, self._station_judged)
        if dropped:
            log.info("alerts: released %s (%d alarms)", ", ".join(sorted(gone)), dropped)

    def _load(self, estates: set[str] | None, now: int) -> None:
        load_estates(self.rec, estates, now, self._drills, self._offline_gateways)

    def _refresh_shared(self, now: int) -> None:
        refresh_shared(self.rec, now)

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
            self.saves.snapshot(self.rec.clock(), everything=True)

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
            observe(self.rec, deliveries, now, signals, stations, arrivals)
            self.saves.heard(deliveries)
            apply_signals(self.rec, signals, now, ch)
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

    # --- the clock -----------------------------------------------------------------------------
    def tick(self) -> None:
        """Everything that depends on time alone; the scheduler runs it every second."""
        rec = self.rec
        self._step(self._tick)
        with rec.lock:
            now = rec.clock()
            heard = self.saves.due(now)
            if now - self._last_purge >= _DAY:
                self._last_purge = now
                rec.store.purge_notifications(now - self.every.notification_retention_ms)
        if heard:
            self.saves.flush(heard)
        if not rec.outbox.running:
            rec.outbox.deliver_due()

    def _tick(self, now: int, ch: Changes) -> None:
        rec, ev = self.rec, self.rec.evaluator
        signals: list[Signal] = []
        if now - self._last_deadman >= self.every.deadman_ms:
            self._last_deadman = now
            ev.check_time(rec.index, now, signals)
        apply_signals(rec, signals, now, ch)
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
