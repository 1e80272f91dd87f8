"""Evaluating rules on the stream: readings, events and gateway statuses in, edges out.

The evaluator remembers, per rule, which subjects the condition currently holds for, and emits
a :class:`Signal` only when that changes (it starts holding, or it clears), or for every
matching event. Hysteresis comes from that memory: a held condition is only ended by its clear
test. Time-based conditions (no data, windows sliding past old samples) are checked by
:meth:`Evaluator.check_time`, which the engine's tick calls with its clock.

Hot path: a reading costs one dict lookup for its kind and, per group of rules on one of its
metrics (value tests, window aggregates, ``all`` composites gated on a part), one quiet check
when its device holds no condition; only the rules of a group that is not quiet are tested, in
rule order, each window aggregate computed once for all of them. A device with a condition held
has every rule on its kind tested (so held ones can clear). The signals are the same either way.

By column (issue 15): a kind's readings of a delivery are first screened together
(``alerts.rules.columns``); those that change nothing a rule reads are done in bulk, and only
the others take the path above, in their order. A device met in two kinds' runs of one
delivery (one id, two kinds) is not looked for: device ids name one device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress
from operator import itemgetter
from typing import Any

from alerts.datafile import format_duration
from alerts.rules import columns
from alerts.rules.composites import CompositeTests
from alerts.rules.conditions import Signal, SubjectKey
from alerts.rules.index import KindRules, RuleIndex, WindowGroup
from alerts.rules.spec import Composite, EventCount, Rule, ValueTest
from alerts.rules.window_tests import due_tests, gather, needs_whole, window_plan
from alerts.window_bank import DeviceSeries, LogColumns, WindowBank
from alerts.windows import Aggregate, SeriesWindow
from protocol.messages import Event, Reading, Value

__all__ = ["NO_DATA_INTERVALS", "DeviceClock", "Evaluator", "Signal"]

# A device is missing after this many of its kind's reporting intervals without a message
# (the same allowance the devices view uses for "online").
NO_DATA_INTERVALS = 3


@dataclass(slots=True)
class DeviceClock:
    """When a device was last heard from: the deadman clock of its no-data rules. It runs on
    arrivals (the service's clock), not on the data's own times: a gateway replaying a backlog
    from yesterday is heard from now."""

    kind: str
    gateway: str
    last_ms: int  # arrival of its newest message, wall clock
    data_ms: int = -1  # the newest data time it sent (-1: as last_ms)
    # The evaluator's cache: the device's window series along its kind's window plan (see
    # window_plan), so a reading finds them without lookups.
    series: DeviceSeries[WindowGroup] | None = field(default=None, compare=False, repr=False)


class Evaluator(CompositeTests):
    def __init__(self, windows: WindowBank, intervals_ms: Mapping[str, int]) -> None:
        super().__init__()
        self.windows = windows
        self.intervals_ms = intervals_ms
        if not windows.intervals_ms:  # the windows' buckets: a kind's reporting interval
            windows.intervals_ms = intervals_ms
        self.clocks: dict[SubjectKey, DeviceClock] = {}
        self.latest: dict[SubjectKey, dict[str, Value]] = {}  # composite rules' metrics only
        self.event_counts: dict[tuple[str, str, str], SeriesWindow] = {}
        # Rules by column: a kind's readings in a delivery are screened together from this
        # many (fewer: the numpy calls cost more than they save); the logs' columns per
        # (estate, kind); how many readings the columns handled (tests, benches).
        self.column_run = columns.COLUMN_RUN
        self.columns: dict[tuple[str, str], LogColumns[WindowGroup]] = {}
        self.by_column = 0

    # --- readings ------------------------------------------------------------------------------
    def observe_readings(
        self,
        index: RuleIndex,
        estate: str,
        gateway: str,
        readings: Sequence[Reading],
        out: list[Signal],
        heard_ms: int | None = None,
    ) -> None:
        """``heard_ms``: when the readings arrived (default: their own times).

        A kind's readings in runs of at least ``column_run`` are screened by column
        (``_by_column``): those that change nothing a rule reads but clocks, logs and latest
        values are handled there; the others go reading by reading (``_each``), in their
        order, with the same signals as if all had."""
        if len(readings) < self.column_run or not index.by_column:
            self._each(index, estate, gateway, readings, out, heard_ms)
            return
        runs: dict[str, list[int]] = {}
        for i, r in enumerate(readings):
            run = runs.get(r.kind)
            if run is None:
                runs[r.kind] = [i]
            else:
                run.append(i)
        rest: list[int] = []
        screened: list[tuple[LogColumns[WindowGroup], list[int]]] = []
        for kind, run in runs.items():
            got = None
            if len(run) >= self.column_run:
                got = self._by_column(index, kind, estate, gateway, readings, run, heard_ms)
            if got is None:
                rest.extend(run)
                continue
            cols, left = got
            if left:
                rest.extend(left)
                screened.append((cols, left))
        if not rest:
            return
        if len(rest) == len(readings):
            self._each(index, estate, gateway, readings, out, heard_ms)
        else:
            rest.sort()
            self._each(index, estate, gateway, [readings[i] for i in rest], out, heard_ms)
        # The devices met reading by reading get (or keep) their slots in the columns.
        clocks = self.clocks
        for cols, slow in screened:
            plan = cols.plan
            for i in slow:
                dev = readings[i].dev
                slot = cols.slot(dev)
                if plan is None:
                    continue
                clock = clocks.get((estate, dev))
                device = None if clock is None else clock.series
                if device is not None and device.plan is plan and cols.devices[slot] is not device:
                    cols.bind(slot, device)

    def _by_column(
        self,
        index: RuleIndex,
        kind: str,
        estate: str,
        gateway: str,
        readings: Sequence[Reading],
        run: list[int],
        heard_ms: int | None,
    ) -> tuple[LogColumns[WindowGroup], list[int]] | None:
        """The readings ``run`` (positions in ``readings``) of one kind, screened by column:
        a reading whose device holds nothing, whose values are quiet for every value group
        and composite gate of the kind (``index``), and whose device's log would take it
        without widening an envelope (``DeviceSeries.take``, from the kind's ``LogColumns``)
        changes only its clock, its log and its latest values; those are done here. Returns
        the kind's columns and the positions left for ``_each``; None: the kind is not
        screened (no rules, or some that must see every reading)."""
        kr = index.kinds.get(kind)
        if kr is None or not kr.columnar:
            return None
        tk = self.windows.horizons.get(kind)
        plan = None
        if kr.window_groups:
            plan = kr.window_plan
            if plan is None or tk is None or kr.window_plan_for is not tk or len(tk) != len(plan):
                return None  # not planned yet, or the general path: reading by reading
        elif tk is not None or not kr.composites:
            return None  # (value tests alone: reading by reading is as cheap)
        for _m, group in kr.groups:
            if group.quiet is None:
                return None
        for _m, gate in kr.composite_gates:
            if gate.quiet is None:
                return None
        key = (estate, kind)
        cols = self.columns.get(key)
        if cols is None or cols.plan is not plan:
            cols = self.columns[key] = LogColumns(plan)
        rs = [readings[i] for i in run]
        try:
            done = columns.screen(self, cols, kr, estate, gateway, rs, heard_ms)
        except (TypeError, ValueError):  # a value numpy cannot compare: reading by reading
            return cols, run
        left = list(compress(run, (~done).tolist()))  # (a C loop)
        self.by_column += len(run) - len(left)
        return cols, left

    def _each(
        self,
        index: RuleIndex,
        estate: str,
        gateway: str,
        readings: Iterable[Reading],
        out: list[Signal],
        heard_ms: int | None = None,
    ) -> None:
        """Reading by reading: every step a rule may need (the reference for the columns)."""
        kinds = index.kinds
        asserted = self.asserted
        held_count = self.held_count
        clocks = self.clocks
        windows = self.windows
        tracked = windows.horizons
        for r in readings:
            key = (estate, r.dev)
            ts = r.ts
            heard = ts if heard_ms is None else heard_ms
            clock = clocks.get(key)
            if clock is None:
                clock = clocks[key] = DeviceClock(r.kind, gateway, heard, ts)
            else:
                if heard > clock.last_ms:
                    clock.last_ms = heard
                    clock.gateway = gateway
                if ts > clock.data_ms:
                    clock.data_ms = ts
            m = r.metrics
            kr = kinds.get(r.kind)
            tk = tracked.get(r.kind)
            holding = key in held_count
            # Window samples, once per reading for the rules' windows and the weather criteria
            # alike; with nothing held, the window tests that could hit are picked meanwhile.
            wtodo: list[tuple[int, ValueTest, Rule]] | None = None
            if kr is not None and kr.window_groups and not holding:
                plan = kr.window_plan
                if kr.window_plan_for is not tk or (tk is not None and len(tk) != len(plan or ())):
                    plan = window_plan(kr, tk)
                if plan is not None:
                    device = clock.series
                    if device is None or device.plan is not plan:
                        device = clock.series = DeviceSeries(plan)
                    # Mostly one row in the device's log and nothing to check.
                    unsure = device.take(m, ts)
                    if unsure is None:
                        unsure = windows.add_reading(device, estate, r.dev, r.kind, m, ts)
                    if unsure:
                        wtodo = self._window_due(unsure, ts)
                else:
                    if tk is not None:
                        windows.observe(estate, r.dev, m, ts, r.kind)
                    wtodo = self._window_candidates(kr, estate, r)
            elif tk is not None:
                windows.observe(estate, r.dev, m, ts, r.kind)
            if kr is None:
                continue
            if holding and kr.no_data:
                self._heard(kr, key, r.kind, gateway, heard, out)
            for metric, group in kr.groups:
                v = m.get(metric)
                if v is None:
                    continue
                if not holding:
                    if group.ranged:
                        if group.lo < v < group.hi:  # type: ignore[operator]
                            continue
                    else:
                        quiet = group.quiet
                        if quiet is not None and quiet(v):
                            continue
                for test, rule in group.tests:
                    held = asserted.get(rule.id)
                    if held is not None and key in held:
                        if test.clear(v):
                            self._release(rule.id, key)
                            detail = _value_detail(test, v, ts)
                            out.append(
                                Signal(rule, estate, r.dev, r.kind, gateway, False, ts, detail)
                            )
                    elif test.hit(v):
                        self._hold(rule, key)
                        detail = _value_detail(test, v, ts)
                        out.append(Signal(rule, estate, r.dev, r.kind, gateway, True, ts, detail))
            if wtodo is not None:
                self._windows_some(wtodo, estate, r, gateway, out)
            elif holding and kr.window_groups:
                self._windows_all(kr, estate, r, gateway, out)
            if kr.composites:
                self._composites(kr, estate, r, gateway, holding, out)

    def _windows_all(
        self, kr: KindRules, estate: str, r: Reading, gateway: str, out: list[Signal]
    ) -> None:
        """Every window test on the reading's metrics, in rule order (a held device: some
        may clear); each aggregate is computed once however many rules test it."""
        m = r.metrics
        cache: dict[tuple[str, Aggregate, bool], float | None] = {}
        for metric, test, rule in kr.windowed:
            if metric in m:
                self._window_test(rule, test, estate, r.dev, r.kind, gateway, r.ts, out, cache)

    def _window_due(
        self, unsure: Iterable[tuple[WindowGroup, SeriesWindow]], now: int
    ) -> list[tuple[int, ValueTest, Rule]] | None:
        """For a device with nothing held, the window tests that could hit among these
        groups (None: none can). A group whose series' bounds keep every aggregate quiet is
        passed over (``WindowGroup.quiet``)."""
        todo: list[tuple[int, ValueTest, Rule]] | None = None
        for group, w in unsure:
            tests = due_tests(group, w, now)
            if tests:
                todo = gather(todo, tests)
        return todo

    def _window_candidates(
        self, kr: KindRules, estate: str, r: Reading
    ) -> list[tuple[int, ValueTest, Rule]] | None:
        """The window tests that could hit, without appending (the samples are in): the general
        case."""
        m = r.metrics
        series = self.windows.series
        now = r.ts
        todo: list[tuple[int, ValueTest, Rule]] | None = None
        for metric, group in kr.window_groups:
            if metric not in m:
                continue
            w = series.get((estate, r.dev, metric))
            if w is None:
                continue
            tests = due_tests(group, w, now)
            if tests:
                todo = gather(todo, tests)
        return todo

    def _windows_some(
        self,
        todo: list[tuple[int, ValueTest, Rule]],
        estate: str,
        r: Reading,
        gateway: str,
        out: list[Signal],
    ) -> None:
        """These window tests, in rule order, each aggregate computed once."""
        if len(todo) > 1:
            todo.sort(key=itemgetter(0))
        cache: dict[tuple[str, Aggregate, bool], float | None] = {}
        for _pos, test, rule in todo:
            self._window_test(rule, test, estate, r.dev, r.kind, gateway, r.ts, out, cache)

    def _window_test(
        self,
        rule: Rule,
        test: ValueTest,
        estate: str,
        dev: str,
        kind: str,
        gateway: str | None,
        now: int,
        out: list[Signal],
        cache: dict[tuple[str, Aggregate, bool], float | None] | None = None,
    ) -> None:
        agg = test.agg
        assert agg is not None
        whole = needs_whole(test)  # (issue 11: no judgement on a part window that may undo it)
        if cache is None:
            v = self.windows.value(estate, dev, test.metric, agg, now, whole)
        else:
            ck = (test.metric, agg, whole)
            if ck in cache:
                v = cache[ck]
            else:
                v = cache[ck] = self.windows.value(estate, dev, test.metric, agg, now, whole)
        if v is None:
            return
        key = (estate, dev)
        if self.holds(rule.id, estate, dev):
            if test.clear(v):
                self.forget(rule.id, estate, dev)
                out.append(
                    Signal(rule, estate, dev, kind, gateway, False, now,
                           _value_detail(test, v, now))
                )  # fmt: skip
        elif test.hit(v):
            self._hold(rule, key)
            self._timed[(rule.id, estate, dev)] = (rule, test)
            out.append(
                Signal(rule, estate, dev, kind, gateway, True, now, _value_detail(test, v, now))
            )

    def _heard(
        self, kr: KindRules, key: SubjectKey, kind: str, gateway: str, ts: int, out: list[Signal]
    ) -> None:
        for _cond, rule in kr.no_data:
            held = self.asserted.get(rule.id)
            if held is not None and key in held:
                self._release(rule.id, key)
                out.append(Signal(rule, key[0], key[1], kind, gateway, False, ts, {"heard_ms": ts}))

    # --- events --------------------------------------------------------------------------------
    def observe_events(
        self,
        index: RuleIndex,
        estate: str,
        gateway: str,
        events: Sequence[Event],
        out: list[Signal],
        heard_ms: int | None = None,
    ) -> None:
        for e in events:
            key = (estate, e.dev)
            heard = e.ts if heard_ms is None else heard_ms
            clock = self.clocks.get(key)
            if clock is None:
                self.clocks[key] = DeviceClock(e.kind, gateway, heard, e.ts)
            else:
                clock.last_ms = max(clock.last_ms, heard)
                clock.data_ms = max(clock.data_ms, e.ts)
            kr = index.kinds.get(e.kind)
            if kr is None:
                continue
            if kr.no_data and key in self.held_count:
                self._heard(kr, key, e.kind, gateway, heard, out)
            detail = {"event": e.type, "data": e.data, "ts": e.ts}
            for rule in kr.clear_events.get(e.type, ()):
                if self.holds(rule.id, estate, e.dev):
                    self.forget(rule.id, estate, e.dev)
                    out.append(Signal(rule, estate, e.dev, e.kind, gateway, False, e.ts, detail))
            for match, rule in kr.events.get(e.type, ()):
                if match.matches(e.data):
                    # Every event is a signal: a repeat is recorded on the open alarm.
                    self._hold(rule, key)
                    out.append(Signal(rule, estate, e.dev, e.kind, gateway, True, e.ts, detail))
            for count, rule in kr.counts.get(e.type, ()):
                ckey = (estate, e.dev, e.type)
                w = self.event_counts.get(ckey)
                if w is None:
                    w = self.event_counts[ckey] = SeriesWindow(count.window_ms)
                elif w.horizon_ms < count.window_ms:
                    w.horizon_ms = count.window_ms
                w.append(e.ts, 1.0)
                self._count_test(rule, count, estate, e.dev, e.kind, gateway, e.ts, out)

    def _count_test(
        self,
        rule: Rule,
        count: EventCount,
        estate: str,
        dev: str,
        kind: str,
        gateway: str | None,
        now: int,
        out: list[Signal],
    ) -> None:
        w = self.event_counts.get((estate, dev, count.type))
        n = 0 if w is None else int(w.aggregate(Aggregate("count", count.window_ms), now) or 0)
        detail = {
            "event": count.type,
            "count": n,
            "window": format_duration(count.window_ms),
            "test": count.test.text,
            "ts": now,
        }
        if self.holds(rule.id, estate, dev):
            if count.test.clear(n):
                self.forget(rule.id, estate, dev)
                out.append(Signal(rule, estate, dev, kind, gateway, False, now, detail))
        elif count.test.hit(n):
            self._hold(rule, (estate, dev))
            self._timed[(rule.id, estate, dev)] = (rule, count)
            out.append(Signal(rule, estate, dev, kind, gateway, True, now, detail))

    # --- gateways ------------------------------------------------------------------------------
    def observe_status(
        self,
        index: RuleIndex,
        estate: str,
        gateway: str,
        online: bool,
        ts: int,
        out: list[Signal],
    ) -> None:
        detail = {"gateway": gateway, "state": "online" if online else "offline", "ts": ts}
        for rule in index.gateway:
            held = self.holds(rule.id, estate, gateway)
            if online and held:
                self.forget(rule.id, estate, gateway)
                out.append(Signal(rule, estate, gateway, "gateway", gateway, False, ts, detail))
            elif not online and not held:
                self._hold(rule, (estate, gateway))
                out.append(Signal(rule, estate, gateway, "gateway", gateway, True, ts, detail))

    # --- time ----------------------------------------------------------------------------------
    def subject_now(self, estate: str, subject: str, now: int) -> int:
        """The time of a subject's data now: its newest data time plus the wall time since it
        arrived. ``now`` for a device reporting live; behind it for one replaying a backlog,
        whose windows and timers must slide on its own time, not empty out at once."""
        c = self.clocks.get((estate, subject))
        if c is None or c.data_ms < 0:
            return now
        return min(now, c.data_ms + max(0, now - c.last_ms))

    def check_time(
        self, index_for: Callable[[str], RuleIndex], now: int, out: list[Signal]
    ) -> None:
        """Deadman clocks, and held window/count conditions that cleared as time passed."""
        for (estate, dev), clock in self.clocks.items():
            kr = index_for(estate).kinds.get(clock.kind)
            if kr is None or not kr.no_data:
                continue
            for cond, rule in kr.no_data:
                after = cond.after_ms
                if after is None:
                    after = NO_DATA_INTERVALS * self.intervals_ms.get(clock.kind, 60_000)
                if now - clock.last_ms > after and not self.holds(rule.id, estate, dev):
                    self._hold(rule, (estate, dev))
                    detail = {"last_seen_ms": clock.last_ms, "after": format_duration(after)}
                    out.append(
                        Signal(rule, estate, dev, clock.kind, clock.gateway, True, now, detail)
                    )
        for (_rid, estate, dev), (rule, timed) in list(self._timed.items()):
            found = self.clocks.get((estate, dev))
            kind = found.kind if found else ""
            gateway = found.gateway if found else None
            t = self.subject_now(estate, dev, now)
            if isinstance(timed, EventCount):
                self._count_test(rule, timed, estate, dev, kind, gateway, t, out)
            elif isinstance(timed, Composite):
                self._composite(rule, timed, estate, dev, kind, gateway, t, out)
            else:
                self._window_test(rule, timed, estate, dev, kind, gateway, t, out)

    def restore(self, held: Iterable[tuple[Rule, str, str]]) -> None:
        """After a restart: the conditions of the open alarms hold until shown otherwise."""
        for rule, estate, subject in held:
            self._hold(rule, (estate, subject))
            c = rule.condition
            if isinstance(c, EventCount | Composite) or (isinstance(c, ValueTest) and c.agg):
                self._timed[(rule.id, estate, subject)] = (rule, c)


def _value_detail(test: ValueTest, v: Value, ts: int) -> dict[str, Any]:
    detail: dict[str, Any] = {"metric": test.metric, "value": v, "test": test.text, "ts": ts}
    if test.agg is not None:
        detail["aggregate"] = test.agg.fn
        detail["window"] = format_duration(test.agg.window_ms)
    return detail
