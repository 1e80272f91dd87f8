"""Rules indexed by device kind, so a reading costs a dict lookup, not a scan of every rule."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from alerts.rules.spec import (
    Composite,
    EventCount,
    EventMatch,
    GatewayOffline,
    NoData,
    Rule,
    ValueTest,
)
from alerts.windows import Aggregate
from protocol.catalog import Catalog

__all__ = ["KindRules", "RuleIndex"]


@dataclass(slots=True)
class KindRules:
    """The rules one kind's readings and events can trigger."""

    values: list[tuple[str, ValueTest, Rule]] = field(default_factory=list)  # reading's value
    windowed: list[tuple[str, ValueTest, Rule]] = field(default_factory=list)  # an aggregate
    composites: list[tuple[Composite, Rule]] = field(default_factory=list)
    composite_metrics: frozenset[str] = frozenset()
    events: dict[str, list[tuple[EventMatch, Rule]]] = field(default_factory=dict)
    counts: dict[str, list[tuple[EventCount, Rule]]] = field(default_factory=dict)
    clear_events: dict[str, list[Rule]] = field(default_factory=dict)
    no_data: list[tuple[NoData, Rule]] = field(default_factory=list)


class RuleIndex:
    def __init__(self, rules: Iterable[Rule], catalog: Catalog) -> None:
        self.rules = {r.id: r for r in rules}
        self.kinds: dict[str, KindRules] = {}
        self.gateway: list[Rule] = []
        for rule in self.rules.values():
            c = rule.condition
            if isinstance(c, GatewayOffline):
                self.gateway.append(rule)
                continue
            kinds = rule.kinds if rule.kinds is not None else frozenset(catalog.kinds)
            for kind in sorted(kinds):
                kr = self.kinds.setdefault(kind, KindRules())
                if isinstance(c, ValueTest):
                    (kr.windowed if c.agg else kr.values).append((c.metric, c, rule))
                elif isinstance(c, Composite):
                    kr.composites.append((c, rule))
                    kr.composite_metrics |= {p.metric for p in c.parts}
                elif isinstance(c, EventMatch):
                    for t in c.types:
                        kr.events.setdefault(t, []).append((c, rule))
                    for t in rule.clear_events:
                        kr.clear_events.setdefault(t, []).append(rule)
                elif isinstance(c, EventCount):
                    kr.counts.setdefault(c.type, []).append((c, rule))
                else:
                    kr.no_data.append((c, rule))

    def window_needs(self) -> Iterable[tuple[str, str, Aggregate]]:
        """(kind, metric, aggregate) the windows must keep history for."""
        for kind, kr in self.kinds.items():
            for metric, test, _ in kr.windowed:
                assert test.agg is not None
                yield kind, metric, test.agg
            for comp, _ in kr.composites:
                for part in comp.parts:
                    if part.agg is not None:
                        yield kind, part.metric, part.agg
