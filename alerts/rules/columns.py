"""Rules by column: one kind's readings of a delivery screened together (issue 15).

A delivery's readings come in runs of hundreds of one kind (500 readings: 454 e-bike chargers,
or 161 smoke detectors and 130 hydrants…), and nearly all of them change nothing a rule
looks at. ``screen`` finds those with a few numpy calls per (kind, metric), whatever the
number of rules: the value of every value group's and composite gate's metric quiet for it
(``lo < value < hi`` over the column, a set or mask test per value otherwise), and the
device's window log ready to take the reading as a row within its envelopes
(``LogColumns``: the checks of ``DeviceSeries.take`` per device slot). ``take`` then does
what the evaluator does for such a reading: its clock, its row in the log, its latest values.
Every other reading (a device holding a condition, one met for the first time, twice in the
run, a value outside an envelope or not quiet…) goes reading by reading
(``Evaluator._each``), which emits the signals; so the signals are the same either way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import chain, repeat
from operator import is_not, itemgetter
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from alerts.rules.index import CompositeGate, KindRules, ValueGroup, WindowGroup
from alerts.window_bank import LogColumns
from protocol.messages import Reading, Value

if TYPE_CHECKING:
    from alerts.rules.evaluate import Evaluator

__all__ = ["COLUMN_RUN", "screen", "take"]

# A kind's readings in one delivery are screened by column from this many: below it the
# numpy calls (~1 µs each, a dozen a run) cost more than the Python step they save.
COLUMN_RUN = 16

_B = npt.NDArray[np.bool_]
_F = npt.NDArray[np.float64]


class _Columns:
    """The run's values per metric, made once: as they came (``None``: absent) and as
    float64 (NaN: absent; a str raises ValueError)."""

    __slots__ = ("_floats", "_objects", "metrics", "n")

    def __init__(self, metrics: list[dict[str, Value]]) -> None:
        self.metrics = metrics
        self.n = len(metrics)
        self._objects: dict[str, list[Value | None]] = {}
        self._floats: dict[str, _F] = {}

    def prefetch(
        self, ranged: list[str], plan: Sequence[tuple[int, str, WindowGroup | None]] | None
    ) -> _F | None:
        """The float columns the screen will need (``ranged``: the ranged groups' and gates'
        metrics, then the window plan's), made in one pass over the readings when all have
        them all (else one by one, as asked): the block, a row per metric, ``ranged`` first."""
        want = list(ranged)
        if plan is not None:
            want.extend(m for _i, m, _g in plan)
        want = list(dict.fromkeys(want))
        if not want:
            return None
        width = len(want)
        get = itemgetter(*want)
        try:  # (fromiter: numpy's nested-list conversion costs ~1.7× as much)
            flat = (
                chain.from_iterable(map(get, self.metrics)) if width > 1 else map(get, self.metrics)
            )
            rows = np.fromiter(flat, np.float64, self.n * width).reshape(self.n, width)
        except (KeyError, TypeError, ValueError):  # some reading lacks one, or a str
            return None
        # One contiguous row per metric: numpy compares and reduces those at about half the
        # cost of the rows' strided columns.
        block = np.ascontiguousarray(rows.T)
        for k, metric in enumerate(want):
            self._floats[metric] = block[k]
        return block

    def objects(self, metric: str) -> list[Value | None]:
        col = self._objects.get(metric)
        if col is None:
            col = self._objects[metric] = list(map(dict.get, self.metrics, repeat(metric)))
        return col

    def floats(self, metric: str) -> _F:
        col = self._floats.get(metric)
        if col is None:
            col = self._floats[metric] = np.fromiter(self.objects(metric), np.float64, self.n)
        return col

    def absent(self, metric: str, rows: _B) -> _B:
        """Of ``rows`` (NaN in ``floats``), those with no value (a NaN value is present)."""
        col = self.objects(metric)
        out = rows.copy()
        for j in np.flatnonzero(rows).tolist():
            out[j] = col[j] is None
        return out


def ranged_bounds(kr: KindRules) -> tuple[list[str], _F, _F]:
    """The metrics of the kind's ranged value groups and gates, each once (the groups'
    first), with per metric the tightest bounds of them: a value is quiet for all of them
    iff max(lo) < value < min(hi). The bounds as columns, for the block's rows. Cached on
    ``kr``."""
    bounds = kr.column_bounds
    if bounds is None:
        lo: dict[str, float] = {}
        hi: dict[str, float] = {}
        screens: list[tuple[str, ValueGroup | CompositeGate]] = [*kr.groups]
        screens.extend((*kr.composite_gates, *kr.ungated_screens))
        for metric, g in screens:
            if g.ranged:
                lo[metric] = max(lo.get(metric, -math.inf), g.lo)
                hi[metric] = min(hi.get(metric, math.inf), g.hi)
        bounds = (list(lo), np.array([*lo.values()])[:, None], np.array([*hi.values()])[:, None])
        kr.column_bounds = bounds
    return bounds


def _quiet(
    cols: _Columns,
    metric: str,
    group: ValueGroup | CompositeGate,
    absent_quiet: bool,
) -> _B:
    """Per reading, whether the group (or gate) is quiet for its value of ``metric``; a
    reading without one: ``absent_quiet``."""
    if group.ranged:
        x = cols.floats(metric)
        q: _B = (group.lo < x) & (x < group.hi)
        nan = ~q & np.isnan(x)
        if nan.any():
            absent = cols.absent(metric, nan)
            q = q | absent if absent_quiet else q
        return q
    objs = cols.objects(metric)
    values = group.values
    if values is not None:  # (None is never one of them)
        # (one C loop for the membership: a list comprehension costs twice as much)
        q = ~np.fromiter(map(values.__contains__, objs), np.bool_, cols.n)
        if not absent_quiet:
            q &= np.fromiter(map(is_not, objs, repeat(None)), np.bool_, cols.n)
        return q
    quiet = group.quiet
    assert quiet is not None
    return np.fromiter(((absent_quiet if v is None else quiet(v)) for v in objs), np.bool_, cols.n)


def screen(
    ev: Evaluator,
    cols: LogColumns[WindowGroup],
    kr: KindRules,
    estate: str,
    gateway: str,
    run: Sequence[Reading],
    heard_ms: int | None,
) -> _B:
    """Per reading of ``run`` (one kind's), whether it was handled here (see the module).
    A device's readings go in rounds, its first in the first: each round's log checks see
    the rows the one before took; once one of a device's readings is left for ``_each``, so
    are its later ones. Raises ValueError or TypeError, having done nothing, on a value
    numpy cannot compare."""
    n = len(run)
    slot_of = cols.slot_of
    slots = np.array([slot_of.get(r.dev, -1) for r in run], dtype=np.int64)
    ok: _B = slots >= 0
    done = np.zeros(n, np.bool_)
    if not ok.any():
        return done
    values = _Columns([r.metrics for r in run])
    ranged, lo, hi = ranged_bounds(kr)
    block = values.prefetch(ranged, cols.plan)
    if block is not None and ranged:  # every reading has every ranged metric: one test
        x = block[: len(ranged)]
        ok &= ((lo < x) & (x < hi)).all(axis=0)
    for metric, group in kr.groups:
        if block is None or not group.ranged:
            ok &= _quiet(values, metric, group, True)
    for metric, gate in (*kr.composite_gates, *kr.ungated_screens):
        # Without the metric in the reading, the gate reads the device's latest value: one
        # by one. (With it, the latest value is this one.)
        if block is None or not gate.ranged:
            ok &= _quiet(values, metric, gate, False)
    plan = cols.plan
    floats = [values.floats(metric) for _i, metric, _g in plan] if plan is not None else []
    # Which of its device's readings each is (0: the first in the run).
    order = np.argsort(slots, kind="stable")
    ordered = slots[order]
    first = np.ones(n, np.bool_)
    first[1:] = ordered[1:] != ordered[:-1]
    if first.all():
        rounds = [np.arange(n)]
    else:
        starts = np.maximum.accumulate(np.where(first, np.arange(n), 0))
        nth = np.empty(n, np.int64)
        nth[order] = np.arange(n) - starts
        rounds = [np.flatnonzero(nth == k) for k in range(int(nth.max()) + 1)]
    blocked = np.zeros(len(cols.fast), np.bool_)
    for k, this in enumerate(rounds):
        rows = this[ok[this]]
        if k:
            rows = rows[~blocked[slots[rows]]]
        if plan is not None and len(rows):
            good, ts, v = _takes(cols, values, floats, slots[rows], rows, run)
            rows, ts, v = rows[good], ts[good], v[good]
        if len(rows):
            flags = take(ev, cols, kr, estate, gateway, run, rows.tolist(), heard_ms, slots[rows])
            done[rows] = flags
            if plan is not None:
                took = np.array(flags, np.bool_)
                _log(cols, slots[rows[took]], ts[took], v[took])
        if len(rounds) > 1:
            left = this[~done[this]]
            blocked[slots[left[slots[left] >= 0]]] = True
    return done


def _takes(
    cols: LogColumns[WindowGroup],
    values: _Columns,
    floats: list[_F],
    at: npt.NDArray[np.int64],
    rows: npt.NDArray[np.int64],
    run: Sequence[Reading],
) -> tuple[_B, npt.NDArray[np.int64], _F]:
    """Of ``rows`` (devices' slots ``at``), the readings their logs would take as rows
    within every envelope (``DeviceSeries.take`` returning ``()``); with the rows' times and
    values along the plan."""
    plan = cols.plan
    assert plan is not None
    ts = np.array([run[j].ts for j in rows.tolist()], dtype=np.int64)
    fast = cols.fast[at]
    if not fast.all():  # logs that must look at their series again first, as take would
        devices = cols.devices
        for slot in at[~fast].tolist():
            device = devices[slot]
            if device is not None and not device.fresh:
                device.refresh()
        fast = cols.fast[at]
    good: _B = fast & (ts - cols.last[at] > cols.gap[at])
    v = np.column_stack([col[rows] for col in floats])
    inside = (cols.lo[at] <= v) & (v <= cols.hi[at])
    member = cols.member[at]
    if not member.all():  # a metric with no series yet must not be in the reading
        for k, (_i, metric, _g) in enumerate(plan):
            new = ~member[:, k]
            if new.any():
                nan = new & np.isnan(v[:, k])
                full = np.zeros(values.n, np.bool_)
                full[rows[nan]] = True
                inside[:, k] |= nan & values.absent(metric, full)[rows]
    good &= inside.all(axis=1)
    return good, ts, v


def _log(
    cols: LogColumns[WindowGroup], at: npt.NDArray[np.int64], ts: npt.NDArray[np.int64], v: _F
) -> None:
    """The rows taken: into the devices' logs in the columns (a full one joins its series)."""
    n = cols.log_n[at]
    cols.log_ts[at, n] = ts
    cols.log_val[at, n] = v
    n += 1
    cols.log_n[at] = n
    cols.last[at] = ts
    full = n >= cols.log_ts.shape[1]
    if full.any():
        devices = cols.devices
        for slot in at[full].tolist():
            device = devices[slot]
            assert device is not None
            device.catch_up()


def take(
    ev: Evaluator,
    cols: LogColumns[WindowGroup],
    kr: KindRules,
    estate: str,
    gateway: str,
    run: Sequence[Reading],
    rows: list[int],
    heard_ms: int | None,
    at: npt.NDArray[np.int64],
) -> list[bool]:
    """Do for the screened readings ``rows`` what ``Evaluator._each`` would, but the row in
    the device's log (``_log``): the clock, the latest values. A reading whose device turns
    out to hold a condition, or to have a clock or log the columns do not know, is left for
    ``_each`` (False in the answer). ``at``: the rows' slots."""
    clocks = ev.clocks
    held_count = ev.held_count or None  # (none held, mostly: no look-up)
    latest = ev.latest if kr.composites else None
    plan = cols.plan
    devices = cols.devices
    done: list[bool] = []
    for j, slot in zip(rows, at.tolist(), strict=True):
        r = run[j]
        key = (estate, r.dev)
        clock = clocks.get(key)
        if clock is None or (held_count is not None and key in held_count):
            done.append(False)
            continue
        ts = r.ts
        m = r.metrics
        if plan is not None:
            device = clock.series
            if device is None or device is not devices[slot]:
                done.append(False)
                continue
            device._last = ts  # (the row: into the columns, by the caller)
        heard = ts if heard_ms is None else heard_ms
        if heard > clock.last_ms:
            clock.last_ms = heard
            clock.gateway = gateway
        if ts > clock.data_ms:
            clock.data_ms = ts
        if latest is not None:
            values = latest.get(key)
            if values is None:
                latest[key] = dict(m)
            else:
                values.update(m)
        done.append(True)
    return done
