"""Window aggregates over a device's recent readings, kept incrementally in numpy arrays.

A :class:`SeriesWindow` holds the samples of one (estate, device, metric) for as long as the
longest window anybody asks of it. Each reading appends one sample and a running prefix sum, so
the sum over any window is two binary searches and a subtraction; minima, maxima and rates are
numpy reductions over the window's slice. Nothing is re-read from the telemetry store.
The bank of every tracked series, fed a device's reading at a time, is ``alerts.window_bank``.
"""

from __future__ import annotations

import math
import struct
from array import array
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from alerts.aggregates import AGGREGATES, DAY_MS, HOUR_MS, Aggregate
from alerts.bucket_runs import bucket_runs

if TYPE_CHECKING:
    from alerts.window_bank import DeviceSeries

__all__ = ["AGGREGATES", "DAY_MS", "HOUR_MS", "Aggregate", "SeriesWindow"]

_F64 = npt.NDArray[np.float64]
_I64 = npt.NDArray[np.int64]
# Samples appended in time order wait in a tail this long before joining the numpy arrays.
_TAIL = 128
# A device's rows taken by column (``alerts.rules.columns``) wait in its kind's columns this
# many at most (``window_bank.LogColumns``) before they join its series.
_DEPTH = 32
# A bucket keeps at most this many samples: first, lowest, highest, last (see SeriesWindow).
_PER_BUCKET = 4


class SeriesWindow:
    """Time-ordered samples of one series covering at least ``horizon_ms``.

    Bounded by time (older samples are dropped) and by rate: a bucket of ``bucket_ms`` (the
    kind's reporting interval) with more than ``_PER_BUCKET`` samples keeps its first, lowest,
    highest (a NaN) and last; the dropped ones' sum and count go with the next kept one (the
    prefix sums at a kept sample are unchanged). Every aggregate stays exact over windows on
    bucket edges; only the bucket at a window's start may be off, and only above that rate.
    At most ``_PER_BUCKET`` × horizon ÷ bucket samples at any rate (issue 15).

    Appending is cheap: samples in time order wait in a short tail (``array`` buffers, no numpy
    call per sample) and join the numpy arrays in one go when an aggregate is asked for or the
    tail is full. The series also keeps an *envelope*, bounds ``lo <= v <= hi`` on the value of
    every kept sample (possibly loose: still covering samples dropped since it was last made
    exact, see :meth:`tighten`), the last two sample times and the last value: enough for the
    rules to tell, without computing an aggregate, that no aggregate can reach a threshold
    (``index.WindowGroup``).

    A series of a device fed through :class:`DeviceSeries` may have samples still waiting
    there (``_log``): whatever reads the series takes them first (``catch_up``).
    """

    __slots__ = (
        "_absmax",
        "_cum",
        "_end",
        "_log",
        "_loose",
        "_ncum",
        "_run_id",
        "_run_n",
        "_start",
        "_tail_ts",
        "_tail_val",
        "_ts",
        "_val",
        "bucket_ms",
        "hi",
        "horizon_ms",
        "lo",
        "max_samples",
        "mean_slack",
        "newest_ts",
        "quiet_for",
        "quiet_gap",
        "quiet_slack",
        "since_ms",
    )

    def __init__(
        self,
        horizon_ms: int,
        capacity: int = 64,
        max_samples: int = 200_000,
        bucket_ms: int = 0,
    ) -> None:
        self.horizon_ms = horizon_ms
        self.max_samples = max_samples
        self.bucket_ms = bucket_ms  # 0: every sample kept
        self._ts: _I64 = np.zeros(capacity, dtype=np.int64)
        self._val: _F64 = np.zeros(capacity, dtype=np.float64)
        # _cum[i] = sum of _val[0..i]; rebuilt whenever the arrays are compacted.
        self._cum: _F64 = np.zeros(capacity, dtype=np.float64)
        # _ncum[i] = how many samples _val[0..i] stand for; None while each stands for one.
        self._ncum: _F64 | None = None
        self._run_id: int | None = None  # the newest stored bucket, its samples kept
        self._run_n = 0
        self._start = 0
        self._end = 0
        self._tail_ts = array("q")
        self._tail_val = array("d")
        # Kept on append (no numpy scalar per sample).
        self.newest_ts: int | None = None  # the last sample's time (the newest)
        # The envelope: lo <= v <= hi for every kept sample (see tighten()).
        self.lo = math.inf
        self.hi = -math.inf
        self._loose = False
        self._absmax = 0.0  # >= |v| of every sample since the prefix sums were rebuilt
        # How far a mean computed from the prefix sums may be off (see _slack).
        self.mean_slack = 0.0
        # What add() answers for: see mark_quiet().
        self.quiet_for: object = None
        self.quiet_gap = 0.0
        self.quiet_slack = 0.0  # the largest mean_slack the quiet mark holds for
        self._log: DeviceSeries[Any] | None = None
        # The first sample this series ever held (never moves forward): whether a window
        # reaches back before the series began.
        self.since_ms: int | None = None

    def catch_up(self) -> None:
        """Take the samples still waiting in the device's log (see ``DeviceSeries``)."""
        log = self._log
        if log is not None and log.has_rows():
            log.catch_up()

    def _changed(self) -> None:
        """The bounds, the quiet mark or the newest time changed: the device's log must look
        again before it takes a reading without the series (``DeviceSeries.refresh``)."""
        self.quiet_for = None
        log = self._log
        if log is not None:
            log.stale()

    def __len__(self) -> int:
        self._flush()
        return self._end - self._start

    @property
    def last_ts(self) -> int | None:
        self.catch_up()
        return self.newest_ts

    # --- writing -------------------------------------------------------------------------------
    def append(self, ts: int, value: float) -> None:
        self.add(ts, value, None)

    def add(self, ts: int, value: float, quiet: object) -> bool:
        """Append a sample; True if ``quiet`` (a rules' window group) was found quiet for this
        series (``mark_quiet``) and still is with this sample: the bounds did not move and the
        sample came at least ``quiet_gap`` ms after the one before."""
        log = self._log
        if log is not None:  # the device's rows come first; its log must look again
            log.catch_up()
            log.stale()
        last = self.newest_ts
        if last is not None and ts < last:
            self._insert_late(ts, value)
            return False
        tail = self._tail_ts
        tail.append(ts)
        self._tail_val.append(value)
        self.newest_ts = ts
        if not self.lo <= value <= self.hi:  # False for NaN too
            self._widen(value)
        if len(tail) >= _TAIL:
            self._flush()
        return (
            quiet is not None
            and self.quiet_for is quiet
            and (last is None or ts - last > self.quiet_gap)
        )

    def mark_quiet(self, quiet: object, gap: float, slack: float = 0.0) -> None:
        """Remember that ``quiet`` holds for these bounds, for samples at least ``gap`` ms
        apart, while the mean's rounding allowance stays below ``slack``; forgotten as soon
        as the bounds (or that allowance beyond ``slack``) change."""
        self._changed()
        self.quiet_for = quiet
        self.quiet_gap = gap
        self.quiet_slack = slack

    def loosen(self, lo: float, hi: float) -> None:
        """Widen the envelope to at least ``lo..hi`` (it may be loose: see ``tighten``)."""
        if lo < self.lo or self.hi < hi:
            self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
            self._loose = True
            # A later sample anywhere within the envelope keeps |v| within this.
            self._absmax = max(self._absmax, abs(self.lo), abs(self.hi))
            self._slack()

    def _widen(self, value: float) -> None:
        self._changed()
        if value != value:  # NaN: no bound holds until it is dropped
            self.lo = self.hi = math.nan
            return
        if value < self.lo:
            self.lo = value
        if value > self.hi:
            self.hi = value
        a = abs(value)
        if a > self._absmax:
            self._absmax = a
            self._slack()

    def _slack(self, keep: bool = False) -> None:
        # A mean from the prefix sums of n samples is within (2n² + 2)·u·max|v| of the exact
        # mean of those samples (u = 2^-53, sequential sums); n: up to the next flush (the
        # tail and a device's log can hold up to _TAIL each, its kind's columns _DEPTH).
        # ``keep``: nothing else changed (a flush), the quiet mark stays if made for as much.
        ncum = self._ncum
        n = (self._end if ncum is None else int(ncum[self._end - 1])) + 2 * _TAIL + _DEPTH
        slack = (2.0 * n * n + 2.0) * 1.12e-16 * self._absmax
        if not (keep and slack < self.quiet_slack):
            self._changed()
        self.mean_slack = slack

    def _flush(self) -> None:
        """Move the tail into the arrays, then drop what is older than the horizon."""
        self.catch_up()
        tail_ts = self._tail_ts
        k = len(tail_ts)
        if not k:
            return
        if self.since_ms is None or tail_ts[0] < self.since_ms:
            self.since_ms = tail_ts[0]
        end = self._end
        moved = end + k > self._ts.shape[0]
        if moved:
            self._make_room(k)
            end = self._end
        stop = end + k
        # (No view of the tail buffers may outlive this: they could not be emptied then.)
        self._ts[end:stop] = np.frombuffer(tail_ts, dtype=np.int64)
        self._val[end:stop] = np.frombuffer(self._tail_val, dtype=np.float64)
        full = False
        if self.bucket_ms > 0:
            run = (self._run_id, self._run_n)
            times = self._ts[end:stop]
            full, self._run_id, self._run_n = bucket_runs(
                tail_ts, times, self.bucket_ms, run, _PER_BUCKET
            )
        del tail_ts[:]
        del self._tail_val[:]
        # The prefix sums continue one sample at a time (as np.cumsum does), from the last.
        acc = np.empty(k + 1, dtype=np.float64)
        acc[0] = self._cum[end - 1] if end > 0 else 0.0
        acc[1:] = self._val[end:stop]
        np.cumsum(acc, out=acc)
        self._cum[end:stop] = acc[1:]
        ncum = self._ncum
        if ncum is not None:
            ncum[end:stop] = np.arange(1, k + 1) + (ncum[end - 1] if end > 0 else 0.0)
        self._end = stop
        if full:
            self._summarise(max(self._start, end - _PER_BUCKET))
            self._recount()
            stop = self._end
        # (A rebuild of the prefix sums for room, ``moved``, leaves the envelope as it was:
        # it still covers every kept sample, as ``_absmax`` still bounds their |v|, and the
        # quiet mark stands; ``tighten`` makes it exact when a group needs it. Made exact
        # here, every rebuild sent the groups back to their quiet checks.)
        n = stop - self._start
        if n > self.max_samples:
            self._start += n - self.max_samples
            self._loose = True
            self._sync()
        self._drop_before(int(self._ts[stop - 1]) - self.horizon_ms)
        # (the bounds, times and quiet mark stand: the samples were inside the envelope)
        self._slack(keep=True)

    def _summarise(self, lo: int) -> None:
        """At most ``_PER_BUCKET`` samples a bucket from ``lo`` on (that many before the new
        ones: an earlier bucket is seen whole), the kept carrying the dropped's sums."""
        e = self._end
        ids = self._ts[lo:e] // self.bucket_ms
        edges = np.flatnonzero(ids[1:] != ids[:-1]) + 1
        starts = np.concatenate(([0], edges))
        ends = np.concatenate((edges, [e - lo]))
        long = np.flatnonzero(ends - starts > _PER_BUCKET)
        if not long.size:
            return
        if self._ncum is None:  # from now on samples may stand for more than one
            self._ncum = np.zeros(self._ts.shape[0], dtype=np.float64)
            self._ncum[:e] = np.arange(1, e + 1)
        vals = self._val[lo:e]
        keep = np.ones(e - lo, dtype=bool)
        for r in long.tolist():
            a, b = int(starts[r]), int(ends[r])
            run = vals[a:b]
            keep[a + 1 : b - 1] = False
            nan = np.isnan(run)
            if nan.all():
                continue
            if nan.any():
                keep[a + int(np.argmax(nan))] = True  # a NaN stays: no bound holds
            keep[a + int(np.nanargmin(run))] = True
            keep[a + int(np.nanargmax(run))] = True
        idx = np.flatnonzero(keep) + lo
        n = idx.shape[0]
        for arr in (self._ts, self._val, self._cum, self._ncum):
            arr[lo : lo + n] = arr[idx]
        self._end = lo + n

    def _recount(self) -> None:
        """The newest bucket's kept samples, from the arrays (the tail must be empty)."""
        s, e, b = self._start, self._end, self.bucket_ms
        self._run_id, self._run_n = None, 0
        if b <= 0 or e <= s:
            return
        last = int(self._ts[e - 1]) // b
        n = 0
        while e - n > s and n <= _PER_BUCKET and int(self._ts[e - 1 - n]) // b == last:
            n += 1
        self._run_id, self._run_n = last, n

    def _counts(self, i: int, j: int) -> float:  # how many samples i..j-1 stand for
        ncum = self._ncum
        if ncum is None or j <= i:
            return float(j - i)
        return float(ncum[j - 1] - (ncum[i - 1] if i > 0 else 0.0))

    def _insert_late(self, ts: int, value: float) -> None:
        # A replayed older sample (store-and-forward): rare, so rebuild the slice in order.
        self._flush()
        if self.since_ms is None or ts < self.since_ms:
            self.since_ms = ts
        s, e = self._start, self._end
        i = int(np.searchsorted(self._ts[s:e], ts, side="right"))
        ts_arr, val_arr, sums, counts = self._kept()
        ts_arr = np.insert(ts_arr, i, ts)
        val_arr = np.insert(val_arr, i, value)
        if sums is not None and counts is not None:
            sums, counts = np.insert(sums, i, value), np.insert(counts, i, 1.0)
        self._reset(ts_arr, val_arr, sums, counts)
        self._exact()
        if self._end - self._start > self.max_samples:
            self._start = self._end - self.max_samples
            self._loose = True
            self._sync()
        self._drop_before(int(self._ts[self._end - 1]) - self.horizon_ms)

    def _kept(self) -> tuple[_I64, _F64, _F64 | None, _F64 | None]:
        """Copies of the kept samples' times, values, and sums and counts each stands for
        (None: each its own value, once)."""
        s, e, ncum = self._start, self._end, self._ncum
        ts_arr, val_arr = self._ts[s:e].copy(), self._val[s:e].copy()
        sums, counts = (None, None) if ncum is None else self._merged(ncum)
        return ts_arr, val_arr, sums, counts

    def _merged(self, ncum: _F64) -> tuple[_F64, _F64]:
        """The sums and counts the kept samples stand for (``ncum``: ``_ncum``)."""
        s, e = self._start, self._end
        lo = max(s - 1, 0)  # (from the sample before the first kept)
        counts, sums = np.diff(ncum[lo:e], prepend=0.0), np.diff(self._cum[lo:e], prepend=0.0)
        if s:
            counts, sums = counts[1:], sums[1:]
        one = counts == 1.0
        sums[one] = self._val[s:e][one]  # a sample standing for itself: its value, exactly
        return sums, counts

    def _make_room(self, k: int) -> None:
        s, e = self._start, self._end
        n = e - s
        cap = self._ts.shape[0]
        need = n + k
        new_cap = cap if need <= cap // 2 else max(2 * need, 64)
        if new_cap == cap and self._ncum is None:  # (mostly) in place, as _reset would
            self._ts[:n] = self._ts[s:e]
            self._val[:n] = self._val[s:e]
            np.cumsum(self._val[:n], out=self._cum[:n])
            self._start, self._end = 0, n
            self._recount()
            return
        kept = self._kept()
        if new_cap != cap:
            self._ts = np.zeros(new_cap, dtype=np.int64)
            self._val = np.zeros(new_cap, dtype=np.float64)
            self._cum = np.zeros(new_cap, dtype=np.float64)
            self._ncum = None if self._ncum is None else np.zeros(new_cap, dtype=np.float64)
        self._reset(*kept)

    def _reset(
        self,
        ts_arr: _I64,
        val_arr: _F64,
        sums: _F64 | None = None,
        counts: _F64 | None = None,
    ) -> None:
        """The arrays hold exactly these samples (the tail must be empty), each standing for
        its sum and count if given; the caller makes the envelope exact (``_exact``) once the
        tail is in too."""
        n = ts_arr.shape[0]
        if n > self._ts.shape[0]:
            cap = max(n * 2, 64)
            self._ts = np.zeros(cap, dtype=np.int64)
            self._val = np.zeros(cap, dtype=np.float64)
            self._cum = np.zeros(cap, dtype=np.float64)
        self._ts[:n] = ts_arr
        self._val[:n] = val_arr
        np.cumsum(val_arr if sums is None else sums, out=self._cum[:n])
        if counts is None:
            self._ncum = None
        else:
            if self._ncum is None or self._ncum.shape[0] != self._ts.shape[0]:
                self._ncum = np.zeros(self._ts.shape[0], dtype=np.float64)
            np.cumsum(counts, out=self._ncum[:n])
        self._start, self._end = 0, n
        self._recount()

    def _drop_before(self, cutoff: int) -> None:
        s, e = self._start, self._end
        if e > s and self._ts[s] <= cutoff:
            self._start = s + int(np.searchsorted(self._ts[s:e], cutoff, side="right"))
            self._loose = True
            self._sync()

    def _sync(self) -> None:
        """The newest time from the arrays (after a rebuild or drops)."""
        s, e = self._start, self._end
        self.newest_ts = int(self._ts[e - 1]) if e > s else None

    @property
    def prev_ts(self) -> int | None:
        """The time of the sample before the newest (None: fewer than two)."""
        self.catch_up()
        tail = self._tail_ts
        if len(tail) >= 2:
            return tail[-2]
        i = self._end - 2 + len(tail)  # the index of the one before, in the arrays
        return int(self._ts[i]) if i >= self._start else None

    @property
    def last_val(self) -> float:
        """The newest sample's value (NaN: none)."""
        self.catch_up()
        if self._tail_val:
            return self._tail_val[-1]
        return float(self._val[self._end - 1]) if self._end > self._start else math.nan

    def _exact(self) -> None:
        s, e = self._start, self._end
        self._changed()
        self._sync()
        if e > s:
            vals = self._val[s:e]
            self.lo, self.hi = float(vals.min()), float(vals.max())
            self._absmax = float(np.abs(self._val[:e]).max())
        else:
            self.lo, self.hi = math.inf, -math.inf
            self._absmax = 0.0
        self._loose = False
        self._slack()

    def tighten(self) -> bool:
        """Make the envelope exact again (it may still cover samples dropped since it was
        last made exact); False if it was exact already, so nothing changed."""
        self._flush()
        if not self._loose:
            return False
        absmax = self._absmax  # covers the prefix sums' older part, which stays
        self._exact()
        if absmax > self._absmax:
            self._absmax = absmax
            self._slack()
        return True

    # --- reading -------------------------------------------------------------------------------
    def _bounds(self, lo_excl: int, hi_incl: int) -> tuple[int, int]:
        s, e = self._start, self._end
        ts = self._ts[s:e]
        i = s + int(np.searchsorted(ts, lo_excl, side="right"))
        j = s + int(np.searchsorted(ts, hi_incl, side="right"))
        return i, j

    def _sum(self, i: int, j: int) -> float:
        if j <= i:
            return 0.0
        before = self._cum[i - 1] if i > 0 else 0.0
        return float(self._cum[j - 1] - before)

    def aggregate(self, agg: Aggregate, now: int, whole: bool | None = None) -> float | None:
        """The aggregate over the samples with ``now - window < ts <= now``; None if there is
        nothing to aggregate (``sum`` and ``count`` are 0 then), or if the window must be
        whole and is not (``full``): ``whole`` True for every aggregate, False for none,
        None (the criteria's default) for rate and mean only."""
        self._flush()
        fn = agg.fn
        i, j = self._bounds(now - agg.window_ms, now)
        if whole is None:
            whole = fn == "rate" or fn == "mean"
        if whole and not self._whole(fn, i, j, agg.window_ms, now):
            return None
        if fn == "sum":
            return self._sum(i, j)
        if fn == "count":
            return self._counts(i, j)
        if fn == "min_fall":
            return self._min_fall(agg.window_ms, now)
        if j <= i:
            return None
        vals = self._val[i:j]
        if fn == "max":
            return float(vals.max())
        if fn == "min":
            return float(vals.min())
        if fn == "mean":
            return self._sum(i, j) / self._counts(i, j)
        # rate, per hour
        dt = int(self._ts[j - 1] - self._ts[i])
        if dt <= 0:
            return None
        return float(vals[-1] - vals[0]) * HOUR_MS / dt

    def _full(self, i: int, window_ms: int, now: int) -> bool:
        """The window holds enough samples to judge: the series began before the window did,
        and its first sample in the window lies in the window's first half (not just after a
        gap in the data)."""
        start = now - window_ms
        since = self.since_ms
        return since is not None and since <= start and int(self._ts[i]) - start <= window_ms // 2

    def _whole(self, fn: str, i: int, j: int, window_ms: int, now: int) -> bool:
        """Whether the window (samples i..j) is covered; min_fall compares the day ending a
        window ago with the day ending now, and both days must be (a part of the earlier
        day has a higher minimum: a fall too large)."""
        if fn != "min_fall":
            return j > i and self._full(i, window_ms, now)
        then = now - window_ms
        k, m = self._bounds(then - DAY_MS, then)
        i, j = self._bounds(now - DAY_MS, now)
        return m > k and j > i and self._full(k, DAY_MS, then) and self._full(i, DAY_MS, now)

    def full(self, agg: Aggregate, now: int) -> bool:
        """Whether ``agg`` over this series at ``now`` covers its whole window."""
        self._flush()
        i, j = self._bounds(now - agg.window_ms, now)
        return self._whole(agg.fn, i, j, agg.window_ms, now)

    def _min_fall(self, window_ms: int, now: int) -> float | None:
        i, j = self._bounds(now - DAY_MS, now)
        then = now - window_ms
        k, m = self._bounds(then - DAY_MS, then)
        if j <= i or m <= k:
            return None
        return float(self._val[k:m].min() - self._val[i:j].min())

    # --- persistence ---------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Horizon, count, times, values; then the bucket width, and when some samples stand
        for more than one, their sums and counts (older readers stop before those); then how
        many of the samples are the tail, not flushed (a reader flushes them; older readers keep
        them as they are): a flush per series and snapshot was most of the timer's cost."""
        self.catch_up()
        tail_ts, tail_val = self._tail_ts, self._tail_val
        s, e, k = self._start, self._end, len(tail_ts)
        parts = [struct.pack("<qq", self.horizon_ms, e - s + k), self._ts[s:e].tobytes()]
        parts += [tail_ts.tobytes(), self._val[s:e].tobytes(), tail_val.tobytes()]
        ncum = self._ncum
        parts.append(struct.pack("<qq", self.bucket_ms, ncum is not None))
        if ncum is not None:
            sums, counts = self._merged(ncum)
            ones = np.ones(k, dtype=np.float64)  # a tail sample stands for itself
            parts += [sums.tobytes(), tail_val.tobytes(), counts.tobytes(), ones.tobytes()]
        parts.append(struct.pack("<q", k))
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes, horizon_ms: int | None = None) -> SeriesWindow:
        stored_horizon, n = struct.unpack_from("<qq", data)
        w = cls(horizon_ms or stored_horizon, capacity=max(64, n * 2))
        merged = tail = 0
        if len(data) >= 32 + 16 * n:  # written with the bucket width
            w.bucket_ms, merged = struct.unpack_from("<qq", data, 16 + 16 * n)
            end = 32 + (32 if merged else 16) * n
            if len(data) >= end + 8:  # written with the tail's length
                (tail,) = struct.unpack_from("<q", data, end)

        def col(i: int, dtype: type[Any] = np.float64) -> Any:  # times, values, sums, counts
            return np.frombuffer(data, dtype, n, 16 + 8 * i * n + (16 if i > 1 else 0)).copy()

        ts_arr, val_arr, m = col(0, np.int64), col(1), n - tail
        sums, counts = (col(2)[:m], col(3)[:m]) if merged else (None, None)
        w._reset(ts_arr[:m], val_arr[:m], sums, counts)
        if tail:  # flushed as the series written would have
            w._tail_ts.frombytes(ts_arr[m:].tobytes())
            w._tail_val.frombytes(val_arr[m:].tobytes())
            w._flush()
        w._exact()
        if n:
            w.since_ms = int(ts_arr[0])
            w._drop_before(int(ts_arr[-1]) - w.horizon_ms)
        return w
