"""Rules indexed by device kind, so a reading costs a dict lookup, not a scan of every rule.

Within a kind, rules are grouped by the metric they read, and each group knows the values none
of its rules can hit: plain value tests (``ValueGroup``), window aggregates (``WindowGroup``:
from a series' kept bounds, no aggregate of the window can reach a threshold) and ``all``
composites (``CompositeGate``: one part quiet, the whole is). A reading of a device with no
condition held costs about one comparison per group, however many rules the group has.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

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
from alerts.windows import HOUR_MS, Aggregate, SeriesWindow
from protocol.catalog import Catalog
from protocol.messages import Value

__all__ = ["CompositeGate", "KindRules", "RuleIndex", "ValueGroup", "WindowGroup"]


@dataclass(slots=True)
class ValueGroup:
    """The value tests of one (kind, metric). ``quiet(v)`` True means no test of the group
    can hit ``v``: a device with no condition held skips them all at once, which keeps a
    thousand rules nearly as cheap as ten."""

    tests: list[tuple[ValueTest, Rule]] = field(default_factory=list)
    quiet: Callable[[Value], bool] | None = None
    # When quiet is a range: lo < v < hi, for the evaluator to compare inline.
    ranged: bool = False
    lo: float = -math.inf
    hi: float = math.inf
    # When quiet is "not one of these values": them, for the columns to test inline.
    values: frozenset[Value] | None = None

    def seal(self) -> None:
        parts = [t.quiet for t, _ in self.tests]
        self.quiet = _group_quiet(parts)
        self.ranged, self.lo, self.hi = _group_range(parts)
        self.values = _group_values(parts)


def _group_values(parts: list[Quiet | None]) -> frozenset[Value] | None:
    """The values some part hits, if every part is quiet outside a set of values."""
    if parts and all(p is not None and p.shape == "values" for p in parts):
        found: set[Value] = set()
        for p in parts:
            assert p is not None
            found.update(p.values or ())  # type: ignore[arg-type]
        return frozenset(found)
    return None


def _group_range(parts: list[Quiet | None]) -> tuple[bool, float, float]:
    """(True, lo, hi) if every part is quiet strictly inside a range, lo < hi."""
    if parts and all(p is not None and p.shape == "range" for p in parts):
        lo = max(p.lo for p in parts if p is not None)
        hi = min(p.hi for p in parts if p is not None)
        if lo < hi:
            return True, lo, hi
    return False, -math.inf, math.inf


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


# Aggregates that lie within their window's samples' range (min <= agg <= max).
_WITHIN = frozenset({"max", "min", "mean"})
# A bound judged on an envelope is met with this relative margin (the aggregates' rounding).
_MARGIN = 1 + 1e-6


def _band(quiets: list[Quiet]) -> tuple[float, float] | None:
    """The values quiet for every one of these ranges (their intersection), if any."""
    lo = max(q.lo for q in quiets)
    hi = min(q.hi for q in quiets)
    return (lo, hi) if lo < hi else None


@dataclass(slots=True)
class WindowGroup:
    """The window-aggregate tests of one (kind, metric), each as (position among the kind's
    window tests, test, rule).

    ``quiet(w, now)`` True means no *guarded* test can hit at ``now``, known without computing
    an aggregate: every max/min/mean lies within the series' envelope (lo..hi of the kept
    samples), so an envelope strictly inside the tests' common quiet range (less the prefix
    sums' rounding error, for mean) cannot reach a threshold; a rate is (last - first) per hour
    over at least the time since the previous sample, so it lies within
    (last - hi, last - lo) / (last_ts - prev_ts). A rate is judged only on a whole window
    (``SeriesWindow.full``: its first sample in the window's first half), so at the newest
    sample's time it spans at least ``W - W // 2``: an envelope narrower than ``rate_span``
    keeps every rate test quiet whatever the gaps. Tests this cannot cover (sum, count,
    min_fall, quiet sets that are not a range) are in ``always`` and run at every reading.
    """

    tests: list[tuple[int, ValueTest, Rule]] = field(default_factory=list)
    always: list[tuple[int, ValueTest, Rule]] = field(default_factory=list)
    within: tuple[float, float] | None = None  # common quiet range of max/min/mean tests
    mean: bool = False  # some of those are means: allow for rounding
    rate: tuple[float, float] | None = None  # common quiet range of rate tests
    within_lo: float = -math.inf
    within_hi: float = math.inf
    rate_lo: float = -math.inf
    rate_hi: float = math.inf
    # The widest envelope (hi - lo) that keeps every rate test quiet on a whole window at the
    # newest sample's time: min over the tests of min(hi, -lo) per hour × (W - W // 2).
    rate_span: float = -math.inf

    def seal(self) -> None:
        within: list[Quiet] = []
        rate: list[Quiet] = []
        self.rate_span = math.inf
        for _p, t, _r in self.tests:
            q, agg = t.quiet, t.agg
            if q is None or q.shape != "range" or agg is None:
                continue
            if agg.fn in _WITHIN:
                within.append(q)
                self.mean |= agg.fn == "mean"
            elif agg.fn == "rate":
                rate.append(q)
                least = agg.window_ms - agg.window_ms // 2  # (SeriesWindow._full)
                room = min(q.hi, -q.lo) * least / HOUR_MS
                self.rate_span = min(self.rate_span, room)
        if not rate:
            self.rate_span = -math.inf
        self.within = _band(within) if within else None
        self.rate = _band(rate) if rate else None
        self.within_lo, self.within_hi = self.within or (-math.inf, math.inf)
        self.rate_lo, self.rate_hi = self.rate or (-math.inf, math.inf)
        self.always = []
        for entry in self.tests:
            _p, t, _r = entry
            assert t.agg is not None
            fn = t.agg.fn
            covered = (fn in _WITHIN and self.within is not None) or (
                fn == "rate" and self.rate is not None
            )
            if not covered or t.quiet is None or t.quiet.shape != "range":
                self.always.append(entry)

    @property
    def guarded(self) -> bool:
        return len(self.always) < len(self.tests)

    def quiet(self, w: SeriesWindow, now: int) -> bool:
        """No guarded test can hit at ``now`` (False: not known, evaluate them). When quiet,
        the series is marked so (``SeriesWindow.mark_quiet``), its envelope first loosened
        towards the thresholds (``_room``) so that the next samples seldom leave it: a
        sample within the envelope changes nothing, one outside it brings the group back
        here."""
        if self.rate is not None:
            w.catch_up()  # the times and last value below, and the slack they come with
        quiet, gap = self._quiet(w, now)
        if not quiet:
            return False
        a, b = self._room(w, now)
        if a < w.lo or w.hi < b:
            w.loosen(a, b)
            quiet, gap = self._quiet(w, now)
            if not quiet:  # rounding at the edge: back to the exact envelope
                w.tighten()
                quiet, gap = self._quiet(w, now)
                if not quiet:
                    return False
        if gap is not None:
            # (a mean's rounding allowance may grow up to where the envelope meets the range)
            slack = math.inf
            if self.within is not None and self.mean:
                slack = min(w.lo - self.within_lo, self.within_hi - w.hi)
            w.mark_quiet(self, gap, slack)
        return True

    def _quiet(self, w: SeriesWindow, now: int) -> tuple[bool, float | None]:
        """Whether no guarded test can hit at ``now``, and while samples stay within the
        envelope, for samples how far apart (None: not known beyond this one)."""
        lo = w.lo
        hi = w.hi
        if self.within is not None:
            slack = w.mean_slack if self.mean else 0.0
            if not (self.within_lo + slack < lo and hi < self.within_hi - slack):
                return False, None
        if self.rate is None:
            return True, -1.0
        last = w.newest_ts
        # Whole windows: quiet for any later sample too while the bounds hold (the rate tests
        # run at each sample's own time). (False for NaN bounds.)
        if last == now and 0.0 <= (hi - lo) * _MARGIN < self.rate_span:
            return True, -1.0
        prev = w.prev_ts
        if prev is not None:  # else at most one sample: no rate at all
            assert last is not None
            d = last - prev
            if last > now or d <= 0:
                return False, None
            v = w.last_val
            if not (
                self.rate_lo < (v - hi) * HOUR_MS / d and (v - lo) * HOUR_MS / d < self.rate_hi
            ):
                return False, None
        # Any later value within lo..hi keeps |rate| <= (hi - lo) per gap: quiet while the
        # gap is wide enough (with a margin for rounding). Needs 0 inside the rate range.
        if self.rate_lo < 0.0 < self.rate_hi:
            span = (hi - lo) * HOUR_MS
            return True, max(span / self.rate_hi, span / -self.rate_lo) * (1 + 1e-6) + 1
        return True, None

    def _room(self, w: SeriesWindow, now: int) -> tuple[float, float]:
        """An envelope around the series' one that the group is still quiet for: half the
        way to the nearest threshold of max/min/mean, and for rates no wider than keeps
        samples quiet: half of ``rate_span`` (whole windows), or of the rate allowed over the
        series' last gap if that is more."""
        lo, hi = w.lo, w.hi
        if not lo <= hi:  # no samples, or a NaN
            return lo, hi
        below = above = math.inf
        if self.within is not None:
            below = (lo - self.within_lo) / 2
            above = (self.within_hi - hi) / 2
        if self.rate is not None:
            prev, last = w.prev_ts, w.newest_ts
            allowed = self.rate_span / 2 if last == now else -math.inf
            gapped = prev is not None and last is not None and last > prev
            if gapped and self.rate_lo < 0.0 < self.rate_hi:
                assert prev is not None and last is not None
                gap = min(self.rate_hi, -self.rate_lo) * (last - prev) / HOUR_MS / 2
                allowed = max(allowed, gap)
            extra = (allowed - (hi - lo)) / 2
            if not extra > 0.0:
                return lo, hi
            below, above = min(below, extra), min(above, extra)
        if below == math.inf:  # one-sided: as far the other way
            below = above
        if above == math.inf:
            above = below
        if not (0.0 < below < math.inf and 0.0 < above < math.inf):
            return lo, hi
        return lo - below, hi + above


@dataclass(slots=True)
class CompositeGate:
    """``all`` composites of one kind gated on one of their parts' metric (a plain value
    test, with (position among the kind's composites, composite, rule)): when the device's
    latest value of ``metric`` is quiet for every gate part, none of them can hit."""

    members: list[tuple[int, Composite, Rule]] = field(default_factory=list)
    parts: list[ValueTest] = field(default_factory=list)
    quiet: Callable[[Value], bool] | None = None
    ranged: bool = False  # as ValueGroup's
    lo: float = -math.inf
    hi: float = math.inf
    values: frozenset[Value] | None = None

    def seal(self) -> None:
        quiets = [p.quiet for p in self.parts]
        self.quiet = _group_quiet(quiets)
        self.ranged, self.lo, self.hi = _group_range(quiets)
        self.values = _group_values(quiets)


@dataclass(slots=True)
class KindRules:
    """The rules one kind's readings and events can trigger."""

    groups: list[tuple[str, ValueGroup]] = field(default_factory=list)  # reading's value
    windowed: list[tuple[str, ValueTest, Rule]] = field(default_factory=list)  # an aggregate
    window_groups: list[tuple[str, WindowGroup]] = field(default_factory=list)  # by metric
    composites: list[tuple[Composite, Rule]] = field(default_factory=list)
    composite_gates: list[tuple[str, CompositeGate]] = field(default_factory=list)  # by metric
    ungated: list[tuple[int, Composite, Rule]] = field(default_factory=list)  # no gate part
    # The ungated ones' parts by metric, when all are ``any`` of plain parts (``columnar``):
    # quiet for every part, none can hit.
    ungated_screens: list[tuple[str, CompositeGate]] = field(default_factory=list)
    columnar: bool = True  # a run of readings may be screened by column
    # The evaluator's cache: the window bank's tracked metrics of this kind (window_plan_for)
    # as (position, metric, window group or None).
    window_plan: list[tuple[int, str, WindowGroup | None]] | None = None
    window_plan_for: dict[str, int] | None = None
    composite_metrics: frozenset[str] = frozenset()
    # The columns' cache (``columns.ranged_bounds``): the ranged groups' and gates' metrics
    # in the screen's order, with their bounds intersected per metric.
    column_bounds: tuple[list[str], npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None
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
        for kr in self.kinds.values():
            _group_windows(kr)
            _gate_composites(kr)
        # Some kind's readings may go by column (``Evaluator._by_column``): value tests alone
        # go reading by reading.
        self.by_column = any(
            kr.columnar and (kr.window_groups or kr.composites) for kr in self.kinds.values()
        )

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


def _group_windows(kr: KindRules) -> None:
    by_metric: dict[str, WindowGroup] = {}
    for pos, (metric, test, rule) in enumerate(kr.windowed):
        by_metric.setdefault(metric, WindowGroup()).tests.append((pos, test, rule))
    for group in by_metric.values():
        group.seal()
    kr.window_groups = list(by_metric.items())


def _gate_composites(kr: KindRules) -> None:
    """Gate each ``all`` composite on one of its plain parts that has quiet values, choosing
    the parts greedily so that few metrics gate many composites (fewer checks per reading)."""
    options: dict[int, dict[str, ValueTest]] = {}
    for pos, (comp, rule) in enumerate(kr.composites):
        parts = {p.metric: p for p in reversed(comp.parts) if p.agg is None and p.quiet is not None}
        if comp.all and parts:
            options[pos] = parts
        else:
            kr.ungated.append((pos, comp, rule))
    gates: dict[str, CompositeGate] = {}
    while options:
        counts: dict[str, int] = {}
        for parts in options.values():
            for metric in parts:
                counts[metric] = counts.get(metric, 0) + 1
        best = max(counts, key=lambda metric: counts[metric])  # the first of the most
        g = gates.setdefault(best, CompositeGate())
        for pos in [pos for pos, parts in options.items() if best in parts]:
            comp, rule = kr.composites[pos]
            g.members.append((pos, comp, rule))
            g.parts.append(options.pop(pos)[best])
    for g in gates.values():
        g.seal()
    kr.composite_gates = list(gates.items())
    _screen_ungated(kr)


def _screen_ungated(kr: KindRules) -> None:
    """For the columns (``alerts.rules.columns``): an ungated ``any`` of plain parts with quiet
    values cannot hit while every part's metric is quiet for all its parts; anything else
    ungated must be tested at every reading (``columnar`` False)."""
    parts: dict[str, CompositeGate] = {}
    for _pos, comp, _rule in kr.ungated:
        if comp.all or not all(p.agg is None and p.quiet is not None for p in comp.parts):
            kr.columnar = False
            return
        for p in comp.parts:
            parts.setdefault(p.metric, CompositeGate()).parts.append(p)
    for g in parts.values():
        g.seal()
    kr.ungated_screens = list(parts.items())
    kr.columnar = all(g.quiet is not None for _m, g in kr.ungated_screens)
