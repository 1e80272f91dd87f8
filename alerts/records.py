"""What the alert engine knows, and its one way to change it.

The books (alarms, plans, silences, weather, rule state) are shared by the stream
(``on_committed``), the clock (``tick``) and people's actions, under one lock. Every change
goes through :meth:`Records.step`: gathered in a :class:`Changes` under the lock, written in
one transaction, and only then told to listeners and MQTT.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa

from alerts.alarms import Alarm, AlarmBook
from alerts.changes import Changes
from alerts.escalation import Chain
from alerts.estates import EstateDirectory
from alerts.inhibit import Inhibitor
from alerts.notices import Notices
from alerts.notify.mqtt import Publish
from alerts.notify.outbox import Outbox
from alerts.plans import Plan, PlanBook
from alerts.rules.evaluate import Evaluator
from alerts.rules.index import RuleIndex
from alerts.rules.loader import RuleSet
from alerts.rules.spec import Rule
from alerts.silences import SilenceBook
from alerts.store import AlertStore, StoreBatch
from alerts.weather import WeatherBoard
from alerts.weather.levels import Criteria
from alerts.window_bank import WindowBank
from ingest.model import NotOwner
from protocol.catalog import Catalog

__all__ = ["MAX_UNWRITTEN", "ChangeListener", "Records"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Receives {"type": "alarm" | "plan", ...} after each change is stored; must be quick.
ChangeListener = Callable[[dict[str, Any]], None]

# Changes kept in memory while the database is away (alarm states, timeline entries, ...).
MAX_UNWRITTEN = 200_000


@dataclass
class Records:
    clock: Callable[[], int]
    catalog: Catalog
    store: AlertStore
    outbox: Outbox
    notices: Notices
    estates: EstateDirectory
    rules: RuleSet
    plans: dict[str, Plan]
    criteria: Criteria
    windows: WindowBank
    evaluator: Evaluator
    inhibitor: Inhibitor
    alarms: AlarmBook
    silences: SilenceBook
    weather: WeatherBoard
    plan_book: PlanBook
    publish: Publish | None = None
    root: str = "estates"
    # With ingest split over shards, each engine keeps the state of its own estates only.
    owns: Callable[[str], bool] = lambda _estate: True
    # Data this much older than its arrival is late: history, not an emergency.
    late_after_ms: int = 10 * 60_000
    lock: threading.RLock = field(default_factory=threading.RLock)
    listeners: list[ChangeListener] = field(default_factory=list)
    # Rescues whose technician has arrived: alarm id -> (arrived_ms, by)
    arrivals: dict[str, tuple[int, str]] = field(default_factory=dict)
    # rule id -> auto_resolve ms (an estate's override wins over the default's)
    auto_resolve: dict[str, int] = field(default_factory=dict)
    _indexes: dict[str, RuleIndex] = field(default_factory=dict)
    _default_index: RuleIndex | None = None
    _unwritten: StoreBatch | None = None  # changes the database refused, to retry
    # Called under the lock with the estates a commit's fence refused (another process owns
    # them now): the engine drops their state (``AlertEngine.release``).
    lost: Callable[[set[str]], None] = lambda _estates: None

    # --- the rules in force --------------------------------------------------------------------
    def set_rules(self, rules: RuleSet) -> None:
        self.rules = rules
        self._indexes = {}
        self._default_index = RuleIndex(rules.defaults.values(), self.catalog)
        self.inhibitor.set_rules(rules.inhibit)
        self.auto_resolve = {
            r.id: r.auto_resolve_ms for r in rules.defaults.values() if r.auto_resolve_ms
        }
        for own in rules.estates.values():
            self.auto_resolve.update(
                {r.id: r.auto_resolve_ms for r in own.values() if r.auto_resolve_ms}
            )
        needs = list(self.criteria.window_needs())
        needs.extend(self._default_index.window_needs())
        for estate in rules.estates:
            needs.extend(self.index(estate).window_needs())
        self.windows.retrack(needs)

    def index(self, estate: str) -> RuleIndex:
        if estate not in self.rules.estates:
            assert self._default_index is not None, "set_rules first"
            return self._default_index
        idx = self._indexes.get(estate)
        if idx is None:
            idx = self._indexes[estate] = RuleIndex(self.rules.rules_for(estate), self.catalog)
        return idx

    def rule(self, estate: str, rule_id: str) -> Rule | None:
        own = self.rules.estates.get(estate, {})
        return own.get(rule_id) or self.rules.defaults.get(rule_id)

    def chain(self, alarm: Alarm) -> Chain:
        rule = self.rule(alarm.estate, alarm.rule)
        return self.rules.chain(rule.escalation if rule else None)

    def known_estates(self) -> set[str]:
        return self.estates.known() | {e for e, _ in self.evaluator.clocks}

    # --- one step: gather, write, tell ---------------------------------------------------------
    def step(self, fn: Callable[[int, Changes], T]) -> T:
        """Run ``fn(now, changes)`` under the lock, write what it changed in one transaction,
        then tell the listeners and MQTT (outside the lock).

        Raises NotOwner, after telling the rest, when the commit's fence refused some estates
        (their changes rolled back, their state dropped, nobody told of them)."""
        changes = Changes()
        with self.lock:
            result = fn(self.clock(), changes)
            refused = self.write(changes.batch)
            if refused:
                self.lost(refused)
        if refused:
            changes.news = [n for n in changes.news if n.get("estate") not in refused]
            changes.plan_estates -= refused
        self.tell(changes)
        if refused:
            raise NotOwner(refused, "the commit's fence refused them")
        return result

    def write(self, batch: StoreBatch) -> set[str]:
        """Store a batch of changes. If the database is away, keep them (bounded) and write
        them before the next batch, so no change and no notification is lost meanwhile.
        Returns the estates the fence refused: their changes are not written (the rest are,
        in a transaction of their own)."""
        if self._unwritten is not None:
            self._unwritten.merge(batch)
            batch = self._unwritten
        refused: set[str] = set()
        while batch:
            try:
                self.store.write(batch)
                break
            except NotOwner as exc:
                # Rolled back; the others' changes go again without those estates' (each
                # round drops at least one estate, so this ends).
                lost = set(exc.estates) & batch.estates() or batch.estates()
                if not lost:  # a fence refusing a write of no estate's: not ours to judge
                    raise
                log.warning("alerts: %s; their changes are dropped", exc)
                refused |= lost
                batch = batch.without(lost)
            except sa.exc.SQLAlchemyError:
                if batch.size > MAX_UNWRITTEN:
                    log.error("alerts: the database is away; %d changes dropped", batch.size)
                    self._unwritten = None
                    raise
                log.exception("alerts: could not store %d changes; will retry", batch.size)
                self._unwritten = batch
                return refused
        self._unwritten = None
        if batch.notifications:
            self.outbox.wake()
        return refused

    def unwritten_alarms(self) -> list[Alarm]:
        """Alarm states waiting for the database (it was away)."""
        return [] if self._unwritten is None else list(self._unwritten.alarms.values())

    def forget_unwritten(self, estates: set[str]) -> None:
        """Changes of these estates waiting for the database are not ours to write any more."""
        if self._unwritten is not None:
            self._unwritten = self._unwritten.without(estates)

    def tell(self, changes: Changes) -> None:
        for item in changes.news:
            for listener in self.listeners:
                try:
                    listener(item)
                except Exception:
                    log.exception("alerts: listener %r failed", listener)
        if self.publish is not None:
            for estate in sorted(changes.plan_estates):
                self._publish_plans(estate, self.publish)

    def _publish_plans(self, estate: str, publish: Publish) -> None:
        with self.lock:
            acts = [
                a.as_dict(self.plans.get(a.plan))
                for (e, _), a in sorted(self.plan_book.active.items())
                if e == estate
            ]
            body = {"v": 1, "estate": estate, "ts": self.clock(), "activations": acts}
        try:
            publish(f"{self.root}/{estate}/plans", orjson.dumps(body), True)
        except Exception:
            log.exception("alerts: could not publish the plans of %s", estate)
