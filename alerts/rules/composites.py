"""Composite rules (``all``/``any`` of parts, values and window aggregates) on a device's
newest metrics: which can hit (an ``all`` whose gate part is quiet cannot), and their edges.
The evaluator (``alerts.rules.evaluate``) runs them after a reading's other tests."""

from __future__ import annotations

from operator import itemgetter

from alerts.rules.conditions import ConditionMemory, Signal, SubjectKey
from alerts.rules.index import KindRules
from alerts.rules.spec import Composite, Rule
from alerts.rules.window_tests import gather, needs_whole
from alerts.window_bank import WindowBank
from protocol.messages import Reading, Value

__all__ = ["CompositeTests"]


class CompositeTests(ConditionMemory):
    """The composite tests of :class:`alerts.rules.evaluate.Evaluator`."""

    windows: WindowBank
    latest: dict[SubjectKey, dict[str, Value]]  # composite rules' metrics only

    def _composites(
        self,
        kr: KindRules,
        estate: str,
        r: Reading,
        gateway: str,
        holding: bool,
        out: list[Signal],
    ) -> None:
        key = (estate, r.dev)
        latest = self.latest.get(key)
        if latest is None:
            latest = self.latest[key] = {}
        m = r.metrics
        if None in m.values():  # not from the decoder (values are never None): one by one
            for metric in kr.composite_metrics:
                v = m.get(metric)
                if v is not None:
                    latest[metric] = v
        else:  # every value (only the composites' metrics are ever read back)
            latest.update(m)
        if holding:  # some may clear: every one, in rule order
            for comp, rule in kr.composites:
                self._composite(rule, comp, estate, r.dev, r.kind, gateway, r.ts, out)
            return
        # Nothing held: only those that can hit. An ``all`` whose gate part is quiet cannot;
        # the others stop at their first part that decides (``_may_hit``).
        todo: list[tuple[int, Composite, Rule]] | None = None
        for metric, gate in kr.composite_gates:
            v = latest.get(metric)
            if v is None:
                continue  # the gate part has no value: it does not hit
            if gate.ranged:
                if gate.lo < v < gate.hi:  # type: ignore[operator]
                    continue
            else:
                quiet = gate.quiet
                if quiet is not None and quiet(v):
                    continue
            todo = gather(todo, gate.members)
        if kr.ungated:
            todo = gather(todo, kr.ungated)
        if todo is None:
            return
        if len(todo) > 1:
            todo.sort(key=itemgetter(0))
        for _pos, comp, rule in todo:
            if self._may_hit(comp, latest, estate, r.dev, r.ts):
                self._composite(rule, comp, estate, r.dev, r.kind, gateway, r.ts, out)

    def _may_hit(
        self, comp: Composite, latest: dict[str, Value], estate: str, dev: str, now: int
    ) -> bool:
        """Whether the composite's hit test passes, part by part, stopping at the first part
        that decides it (a miss for ``all``, a hit for ``any``)."""
        value = self.windows.value
        for p in comp.parts:
            v = (
                value(estate, dev, p.metric, p.agg, now, needs_whole(p))
                if p.agg is not None
                else latest.get(p.metric)
            )
            hit = v is not None and p.hit(v)
            if hit is not comp.all:
                return hit
        return comp.all

    def _composite(
        self,
        rule: Rule,
        comp: Composite,
        estate: str,
        dev: str,
        kind: str,
        gateway: str | None,
        now: int,
        out: list[Signal],
    ) -> None:
        latest = self.latest.get((estate, dev), {})
        values: dict[str, Value] = {}
        for p in comp.parts:
            v = (
                self.windows.value(estate, dev, p.metric, p.agg, now, needs_whole(p))
                if p.agg is not None
                else latest.get(p.metric)
            )
            if v is not None:
                values[p.agg.key(p.metric) if p.agg else p.metric] = v
        got = [(p, values.get(p.agg.key(p.metric) if p.agg else p.metric)) for p in comp.parts]
        detail = {"values": values, "test": comp.text, "ts": now}
        if self.holds(rule.id, estate, dev):
            cleared = [v is not None and p.clear(v) for p, v in got]
            if any(cleared) if comp.all else all(cleared):
                self.forget(rule.id, estate, dev)
                out.append(Signal(rule, estate, dev, kind, gateway, False, now, detail))
        else:
            hits = [v is not None and p.hit(v) for p, v in got]
            if all(hits) if comp.all else any(hits):
                self._hold(rule, (estate, dev))
                if any(p.agg is not None for p in comp.parts):
                    self._timed[(rule.id, estate, dev)] = (rule, comp)
                out.append(Signal(rule, estate, dev, kind, gateway, True, now, detail))
