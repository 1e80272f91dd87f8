"""Rules indexed by device kind, so a reading costs a dict lookup, not a scan of every rule."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from alerts.rules.spec import (
    Composite,
    EventCount,
    EventMatch,
    GatewayOffline,
    NoData,
    Quiet,
    Rule,
    ValueTest,
)
from alerts.windows import Aggregate
from protocol.catalog import Catalog
from protocol.messages import Value

__all__ = ["KindRules", "RuleIndex"]


@dataclass(slots=True)
class ValueGroup:
    """The value tests of one (kind, metric). ``quiet(v)`` True means no test of the group
    can hit ``v``: a device with no condition held skips them all at once, which keeps a
    thousand rules nearly as cheap as ten."""

    tests: list[tuple[ValueTest, Rule]] = field(default_factory=list)
    quiet: Callable[[Value], bool] | None = None

    def seal(self) -> None:
        self.quiet = _group_quiet([t.quiet for t, _ in self.tests])


def _group_quiet(parts: list[Quiet | None]) -> Callable[[Value], bool] | None:
    if not parts or any(p is None for p in parts):
        return None
    quiets = [p for p in parts if p is not None]
    shapes = {p.shape for p in quiets}
    if shapes == {"range"}:
        lo = max(p.lo for p in quiets)
        hi = min(p.hi for p in quiets)
        if lo >= hi:
            return None
        return lambda v: lo < v < hi  # type: ignore[operator]
    if shapes == {"values"}:
        values = frozenset().union(*(p.values or () for p in quiets))
        return lambda v: v not in values
    if shapes == {"mask"}:
        mask = 0
        for p in quiets:
            mask |= p.mask
        return lambda v: type(v) is int and not v & mask
    return None


@dataclass(slots=True)
class KindRules:
    """The rules one kind's readings and events can trigger."""

    groups: list[tuple[str, ValueGroup]] = field(default_factory=list)  # reading's value
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
        groups: dict[tuple[str, str], ValueGroup] = {}
        for rule in self.rules.values():
            c = rule.condition
            if isinstance(c, GatewayOffline):
                self.gateway.append(rule)
                continue
            kinds = rule.kinds if rule.kinds is not None else frozenset(catalog.kinds)
            for kind in sorted(kinds):
                kr = self.kinds.setdefault(kind, KindRules())
                if isinstance(c, ValueTest):
                    if c.agg is not None:
                        kr.windowed.append((c.metric, c, rule))
                    else:
                        groups.setdefault((kind, c.metric), ValueGroup()).tests.append((c, rule))
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
        for (kind, metric), group in groups.items():
            group.seal()
            self.kinds[kind].groups.append((metric, group))

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
