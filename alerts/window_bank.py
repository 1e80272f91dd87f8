"""The bank of window series: which (kind, metric) are tracked and for how long, and how a
device's reading reaches its series (``WindowBank.add_reading``, or kept as one row of the
device's log, ``DeviceSeries``). One series and its aggregates are ``alerts.windows``.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from operator import itemgetter, le
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from alerts import windows  # its _TAIL, read at use: one length for the series and the logs
from alerts.windows import Aggregate, SeriesWindow

__all__ = ["DeviceSeries", "LogColumns", "SeriesKey", "WindowBank"]

SeriesKey = tuple[str, str, str]  # (estate, device, metric)


class _Group(Protocol):
    """What ``WindowBank.add_reading`` needs of a rules' window group."""

    @property
    def always(self) -> Sized: ...


_G = TypeVar("_G", bound=_Group)


class DeviceSeries(Generic[_G]):
    """One device's series along its kind's window plan ``(position, metric, group)``, with
    a log of the readings not yet handed to them.

    Most readings change nothing a rule looks at: they come in time order with a value for
    each of the device's series, every window group is known quiet for its series
    (``SeriesWindow.mark_quiet``) at the gap the reading keeps, and the values lie within
    their series' envelopes. Such a reading is kept here as one row (its time and values)
    instead of being appended to each series: one append per reading however many series the
    rules track. A value outside its envelope widens it there and then (its group is checked
    again). The rows go to the series (``catch_up``) when the log is ``_TAIL`` long or when
    anything reads a series' samples; any change to a series (bounds, quiet mark, times)
    makes the log ``stale``, and the next reading looks at the series again (``refresh``).
    """

    __slots__ = (
        "_cols",
        "_gap",
        "_groups",
        "_hi",
        "_last",
        "_lo",
        "_members",
        "_pick",
        "_pos",
        "_single",
        "_slot",
        "_unseen",
        "fast",
        "found",
        "fresh",
        "plan",
        "rows",
        "times",
    )

    _pick: Callable[[Mapping[str, object]], Any]  # the members' values of a reading

    def __init__(self, plan: Sequence[tuple[int, str, _G | None]]) -> None:
        self.plan = plan
        self.found: list[SeriesWindow | None] = [None] * len(plan)
        self.times = array("q")  # the kept rows' times
        self.rows: list[tuple[Any, ...]] = []  # and values (the reading's, as they came)
        self.fresh = False  # fast is up to date with the series
        self.fast = False  # rows may be taken
        self._members: list[SeriesWindow] = []  # the found series, in a row's order
        self._pos: list[int] = []  # their plan positions
        self._groups: list[_G | None] = []  # their groups
        self._single = False  # one member: _pick gives the value, not a tuple
        self._lo: tuple[float, ...] = ()
        self._hi: tuple[float, ...] = ()
        self._unseen: frozenset[str] = frozenset()  # planned metrics with no series yet
        self._last = 0  # the members' newest time
        self._gap = 0.0  # a row must come more than this after _last (the groups' quiet gaps)
        # The kind's columns this log is mirrored in (``LogColumns``), and its row there.
        self._cols: LogColumns[Any] | None = None
        self._slot = 0

    def attach(self, i: int, w: SeriesWindow) -> None:
        """``w`` is the series at plan position ``i`` (it leaves any log it had)."""
        w.catch_up()
        w._log = self
        self.found[i] = w
        self.stale()

    def has_rows(self) -> bool:
        """Rows wait here or in the kind's columns (``LogColumns``)."""
        cols = self._cols
        return bool(self.times) or (cols is not None and bool(cols.log_n[self._slot]))

    def _from_columns(self) -> None:
        """The rows the kind's columns took for this log join its own (before a newer one)."""
        cols = self._cols
        assert cols is not None
        slot = self._slot
        n = int(cols.log_n[slot])
        cols.log_n[slot] = 0
        self.times.extend(cols.log_ts[slot, :n].tolist())
        self.rows.extend(map(tuple, cols.log_val[slot, :n][:, self._pos].tolist()))

    def stale(self) -> None:
        """A series changed: look again before taking a row."""
        self.fresh = self.fast = False
        if self._cols is not None:
            self._cols.fast[self._slot] = False

    def take(
        self, metrics: Mapping[str, object], ts: int
    ) -> Sequence[tuple[_G, SeriesWindow]] | None:
        """Keep the reading as a row if it can be (see above). Returns the (group, series)
        whose envelope the row widened, for the caller to check (mostly none); None: not
        taken, the reading goes series by series (``WindowBank.add_reading``)."""
        if not self.fast:
            if self.fresh:
                return None
            self.refresh()
            if not self.fast:
                return None
        if ts - self._last <= self._gap:
            return None
        if self._unseen and not self._unseen.isdisjoint(metrics.keys()):
            return None  # a new series
        lo, hi = self._lo, self._hi
        try:
            if self._single:
                v = self._pick(metrics)
                row: tuple[Any, ...] = (v,)
                inside = lo[0] <= v <= hi[0]
            else:
                row = self._pick(metrics)
                # (a C loop over the members: false for NaN, TypeError for a str or None)
                inside = all(map(le, lo, row)) and all(map(le, row, hi))
            if not inside:  # (False for NaN; a str or None raises TypeError)
                out = [(k, float(v)) for k, v in enumerate(row) if not lo[k] <= v <= hi[k]]
        except (KeyError, TypeError):
            return None
        if self._cols is not None and self._cols.log_n[self._slot]:
            self._from_columns()
        times = self.times
        times.append(ts)
        self.rows.append(row)
        self._last = ts
        if self._cols is not None:
            self._cols.last[self._slot] = ts
        if inside:
            if len(times) >= windows._TAIL:
                self.catch_up()
            return ()
        widened = []
        for k, v in out:
            w = self._members[k]
            w._widen(v)
            group = self._groups[k]
            if group is not None:
                widened.append((group, w))
        if len(times) >= windows._TAIL:
            self.catch_up()
        return widened

    def refresh(self) -> None:
        """Look at the series again: may a reading be kept as a row, and within what."""
        self.fresh = True
        self.fast = False
        if self._cols is not None:
            self._cols.fast[self._slot] = False
        pending = self.has_rows()  # then the members are the same and _last their newest
        members: list[SeriesWindow] = []
        groups: list[_G | None] = []
        names: list[str] = []
        pos: list[int] = []
        unseen: list[str] = []
        gap = -1.0
        last: int | None = None
        for (_i, metric, group), w in zip(self.plan, self.found, strict=True):
            if w is None:
                unseen.append(metric)
                continue
            if group is not None:
                if w.quiet_for is not group or group.always:
                    return
                gap = max(gap, w.quiet_gap)
            t = self._last if pending else w.newest_ts
            if t is None or (last is not None and t != last):
                return  # a row has one time for all
            last = t
            members.append(w)
            groups.append(group)
            names.append(metric)
            pos.append(len(pos) + len(unseen))
        if last is None:
            return
        self.fast = True
        self._members, self._groups, self._pos = members, groups, pos
        self._pick = itemgetter(*names)
        self._single = len(names) == 1
        self._lo = tuple(w.lo for w in members)
        self._hi = tuple(w.hi for w in members)
        self._unseen = frozenset(unseen)
        self._last = last
        self._gap = gap
        if self._cols is not None:
            self._cols.mirror(self)

    def catch_up(self) -> None:
        """Hand the kept rows to their series: its own, then those in the kind's columns
        (newer: a row of its own is only added once those joined it). The log goes on taking
        rows: rows within the envelopes change no bound nor quiet mark, and what changes a
        series (a flush's slack, a new sample, a widened bound) makes the log stale itself.
        (Made stale here, every device of a kind reporting every 5 minutes or more looked at
        its series again at each reading, after the timer's snapshot read it.)"""
        cols = self._cols
        n = 0 if cols is None else int(cols.log_n[self._slot])
        times = self.times
        if not times and not n:
            return
        rows = self.rows
        self.times, self.rows = array("q"), []
        if n:
            assert cols is not None
            slot = self._slot
            cols.log_n[slot] = 0
            more = cols.log_ts[slot, :n].tobytes()
            # A plan position's values, one after another (one copy for all members).
            values = memoryview(cols.log_val[slot, :n].T.tobytes())
            last = int(cols.log_ts[slot, n - 1])
        else:
            last = times[-1]
        step = 8 * n
        for k, w in enumerate(self._members):
            if times:
                w._tail_ts.extend(times)
                w._tail_val.extend([row[k] for row in rows])
            if n:  # (the same machine types as the tails' arrays: int64, float64)
                w._tail_ts.frombytes(more)
                at = self._pos[k] * step
                w._tail_val.frombytes(values[at : at + step])
            w.newest_ts = last
            if len(w._tail_ts) >= windows._TAIL:
                w._flush()


_B = npt.NDArray[np.bool_]
_F = npt.NDArray[np.float64]


_ARRAYS = ("fast", "last", "gap", "lo", "hi", "member", "log_n", "log_ts", "log_val")


class LogColumns(Generic[_G]):
    """The logs of one estate's devices of one kind as columns, one row (slot) a device: what
    ``DeviceSeries.take`` checks (may rows be taken, the envelopes, the newest time, the
    gap), mirrored by each log as it changes, so that a run of the kind's readings is screened
    with a few numpy calls (``alerts.rules.columns``) instead of a ``take`` a reading. Also
    the devices' slots for kinds without windows (``plan`` None: no columns but the slots).
    Columns ``plan`` positions; ``member`` False where the device has no series yet."""

    __slots__ = (
        "devices",
        "fast",
        "gap",
        "hi",
        "last",
        "lo",
        "log_n",
        "log_ts",
        "log_val",
        "member",
        "plan",
        "slot_of",
    )

    # Rows a device's log keeps here before they join its series (DeviceSeries.catch_up):
    # every windows._DEPTH readings a device, one catch-up; that × plan width floats a device.

    def __init__(self, plan: Sequence[tuple[int, str, _G | None]] | None) -> None:
        self.plan = plan
        self.slot_of: dict[str, int] = {}  # device -> its row
        self.devices: list[DeviceSeries[_G] | None] = []  # the row's log
        self._size(64)

    def _arrays(self) -> tuple[npt.NDArray[Any], ...]:
        """Every per-device array, in one order (what a resize copies over)."""
        return tuple(getattr(self, name) for name in _ARRAYS)

    def _size(self, cap: int) -> None:
        width = len(self.plan) if self.plan else 0
        old = self.devices and self._arrays()
        self.fast: _B = np.zeros(cap, np.bool_)  # rows may be taken (DeviceSeries.fast)
        self.last: npt.NDArray[np.int64] = np.zeros(cap, np.int64)  # the members' newest time
        self.gap: _F = np.zeros(cap)
        self.lo: _F = np.zeros((cap, width))
        self.hi: _F = np.zeros((cap, width))
        self.member: _B = np.zeros((cap, width), np.bool_)
        # The rows taken by column (``alerts.rules.columns``): times, values along the plan
        # (NaN: none), how many, per device.
        self.log_n: npt.NDArray[np.int64] = np.zeros(cap, np.int64)
        depth = self.log_ts.shape[1] if old else windows._DEPTH
        self.log_ts: npt.NDArray[np.int64] = np.zeros((cap, depth), np.int64)
        self.log_val: _F = np.zeros((cap, depth, width))
        if old:
            n = len(old[0])
            new = self._arrays()
            for now, was in zip(new, old, strict=True):
                now[:n] = was

    def slot(self, dev: str) -> int:
        """The device's row (a new one if it has none)."""
        slot = self.slot_of.get(dev)
        if slot is None:
            slot = self.slot_of[dev] = len(self.devices)
            self.devices.append(None)
            if slot >= len(self.fast):
                self._size(2 * slot)
        return slot

    def bind(self, slot: int, device: DeviceSeries[_G] | None) -> None:
        """``device`` is the log of the slot's device (it leaves any columns it had)."""
        self.devices[slot] = device
        if device is None:
            return
        device._cols = self
        device._slot = slot
        if device.fast:
            self.mirror(device)
        else:
            self.fast[slot] = False

    def mirror(self, device: DeviceSeries[Any]) -> None:
        """Copy what ``take`` checks from a log just made ready to take rows (``refresh``)."""
        slot = device._slot
        lo, hi = device._lo, device._hi
        if len(lo) == self.lo.shape[1]:  # a series at every position (mostly)
            self.lo[slot] = lo
            self.hi[slot] = hi
            self.member[slot] = True
        else:
            found = device.found
            inf = math.inf
            at_lo, at_hi = iter(lo), iter(hi)
            self.lo[slot] = [inf if w is None else next(at_lo) for w in found]
            self.hi[slot] = [-inf if w is None else next(at_hi) for w in found]
            self.member[slot] = [w is not None for w in found]
        self.last[slot] = device._last
        self.gap[slot] = device._gap
        self.fast[slot] = True


class WindowBank:
    """The windows of every tracked series; which (kind, metric) are tracked, and for how
    long, is decided by the rules and the weather criteria in force."""

    def __init__(self, intervals_ms: Mapping[str, int] | None = None) -> None:
        self.horizons: dict[str, dict[str, int]] = {}  # kind -> metric -> horizon_ms
        self.series: dict[SeriesKey, SeriesWindow] = {}
        # kind -> reporting interval: a series keeps a few samples per interval whatever the
        # rate (SeriesWindow.bucket_ms); a kind not in it, a few per second.
        self.intervals_ms: Mapping[str, int] = intervals_ms or {}

    def _new(self, kind: str, horizon_ms: int) -> SeriesWindow:
        return SeriesWindow(horizon_ms, bucket_ms=self.intervals_ms.get(kind, 1000))

    def _bucketed(self, w: SeriesWindow, kind: str) -> SeriesWindow:
        """A series restored from a snapshot written before buckets (every sample kept) is
        summarised from now on too."""
        if not w.bucket_ms:
            w._flush()
            w.bucket_ms = self.intervals_ms.get(kind, 1000)
            w._recount()
        return w

    def track(self, kind: str, metric: str, agg: Aggregate) -> None:
        metrics = self.horizons.setdefault(kind, {})
        metrics[metric] = max(metrics.get(metric, 0), agg.horizon_ms)

    def retrack(self, needs: Iterable[tuple[str, str, Aggregate]]) -> None:
        """Replace what is tracked (new rules); existing series keep their samples."""
        self.horizons = {}
        for kind, metric, agg in needs:
            self.track(kind, metric, agg)
        for (_e, _d, metric), w in list(self.series.items()):
            w.horizon_ms = max(
                (h.get(metric, 0) for h in self.horizons.values()), default=w.horizon_ms
            )

    def observe(
        self,
        estate: str,
        dev: str,
        metrics: dict[str, float | int | bool | str],
        ts: int,
        kind: str,
    ) -> None:
        tracked = self.horizons.get(kind)
        if not tracked:
            return
        series = self.series
        for metric, horizon in tracked.items():
            v = metrics.get(metric)
            if v is None or isinstance(v, str):
                continue
            key = (estate, dev, metric)
            w = series.get(key)
            if w is None:
                w = series[key] = self._new(kind, horizon)
            elif not w.bucket_ms:
                self._bucketed(w, kind)
            w.append(ts, float(v))

    def add_reading(
        self,
        device: DeviceSeries[_G],
        estate: str,
        dev: str,
        kind: str,
        metrics: Mapping[str, object],
        ts: int,
    ) -> list[tuple[_G, SeriesWindow]] | None:
        """``observe`` for one device's reading that its log did not take
        (``DeviceSeries.take``), along its kind's plan of tracked metrics
        ``(position, metric, group)`` (``device.plan``), with the device's series at those
        positions in ``device.found`` (filled in as met). Returns the (group, series) whose
        group is not known quiet (``SeriesWindow.add``; a group that has tests run at every
        reading is never), for each metric the reading has: the caller checks those."""
        device.catch_up()
        device.stale()  # the series move on without the log
        found = device.found
        tail_len = windows._TAIL
        unsure: list[tuple[_G, SeriesWindow]] | None = None
        for i, metric, group in device.plan:
            v = metrics.get(metric)
            w = found[i]
            if w is not None and type(v) is float:
                last = w.newest_ts
                if last is not None and ts >= last:  # in order: append, inline
                    tail = w._tail_ts
                    tail.append(ts)
                    w._tail_val.append(v)
                    w.newest_ts = ts
                    if not w.lo <= v <= w.hi:  # False for NaN too
                        w._widen(v)
                    if len(tail) >= tail_len:
                        w._flush()
                    if group is None or (
                        w.quiet_for is group and ts - last > w.quiet_gap and not group.always
                    ):
                        continue
                    if unsure is None:
                        unsure = [(group, w)]
                    else:
                        unsure.append((group, w))
                    continue
            # The general case: a new series, a late sample, not a float, no value.
            if w is None:
                if v is None and (group is None or metric not in metrics):
                    continue
                skey = (estate, dev, metric)
                w = self.series.get(skey)
                if w is None:
                    if v is None or isinstance(v, str):
                        continue  # nothing to add, nothing to aggregate
                    w = self.series[skey] = self._new(kind, self.horizons[kind][metric])
                device.attach(i, self._bucketed(w, kind))
            if v is not None and not isinstance(v, str):
                if w.add(ts, float(v), group) and group is not None and not group.always:  # type: ignore[arg-type]
                    continue
            elif group is None or metric not in metrics:
                continue
            if group is None:
                continue
            if unsure is None:
                unsure = [(group, w)]
            else:
                unsure.append((group, w))
        return unsure

    def get(self, estate: str, dev: str, metric: str) -> SeriesWindow | None:
        return self.series.get((estate, dev, metric))

    def value(
        self,
        estate: str,
        dev: str,
        metric: str,
        agg: Aggregate,
        now: int,
        whole: bool | None = None,
    ) -> float | None:
        """``SeriesWindow.aggregate`` of the series (None: no such series)."""
        w = self.series.get((estate, dev, metric))
        return None if w is None else w.aggregate(agg, now, whole)
