"""The fast path gives the alarms full evaluation gives.

The evaluator skips what cannot hit on a device with nothing held: a window group whose
series' bounds keep every aggregate quiet, ``all`` composites whose gate part is quiet, and it
computes each window aggregate once for all the rules that test it. Here a reference evaluator
that tests every rule at every reading (the evaluator as it was before those shortcuts) and the
real one are fed the same random streams and rule sets, with time checks and forgotten
conditions in between, and must emit the same signals, details included.
"""

from __future__ import annotations

import math
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from alerts import windows
from alerts.rules.evaluate import DeviceClock, Evaluator, Signal, _value_detail
from alerts.rules.index import RuleIndex, WindowGroup
from alerts.rules.loader import BUNDLED_RULES, load_rules
from alerts.rules.spec import Quiet, ValueTest
from alerts.window_bank import WindowBank
from alerts.windows import HOUR_MS, Aggregate, SeriesWindow
from protocol.catalog import default_catalog
from protocol.messages import Reading, Value

CATALOG = default_catalog()
MIN = 60_000
START = 1_768_003_200_000

# kind -> numeric metrics with (typical value, spread), and enum metrics with their values
NUMERIC = {
    "ebike_charger": {"power_w": (300.0, 120.0), "temp_c": (35.0, 6.0), "current_a": (2.0, 1.0)},
    "water_pressure": {"pressure_mpa": (0.3, 0.05)},
    "elevator": {"speed_ms": (1.5, 0.6), "machine_room_temp_c": (25.0, 4.0)},
}
ENUMS = {
    "ebike_charger": {"state": ("idle", "charging", "full", "fault")},
    "elevator": {"mode": ("normal", "inspection", "maintenance", "fire")},
}
AGGS = ("mean", "max", "min", "rate", "sum", "count")
WINDOWS = ("5m", "10m", "30m")


class FullEvaluator(Evaluator):
    """Every rule on the reading's kind tested at every reading: the reference."""

    def observe_readings(
        self,
        index: RuleIndex,
        estate: str,
        gateway: str,
        readings: Sequence[Reading],
        out: list[Signal],
    ) -> None:
        for r in readings:
            key = (estate, r.dev)
            ts = r.ts
            clock = self.clocks.get(key)
            if clock is None:
                self.clocks[key] = DeviceClock(r.kind, gateway, ts)
            elif ts > clock.last_ms:
                clock.last_ms, clock.gateway = ts, gateway
            m = r.metrics
            if r.kind in self.windows.horizons:
                self.windows.observe(estate, r.dev, m, ts, r.kind)
            kr = index.kinds.get(r.kind)
            if kr is None:
                continue
            if kr.no_data and key in self.held_count:
                self._heard(kr, key, r.kind, gateway, ts, out)
            for metric, group in kr.groups:
                v = m.get(metric)
                if v is None:
                    continue
                for test, rule in group.tests:
                    if self.holds(rule.id, estate, r.dev):
                        if test.clear(v):
                            self._release(rule.id, key)
                            d = _value_detail(test, v, ts)
                            out.append(Signal(rule, estate, r.dev, r.kind, gateway, False, ts, d))
                    elif test.hit(v):
                        self._hold(rule, key)
                        d = _value_detail(test, v, ts)
                        out.append(Signal(rule, estate, r.dev, r.kind, gateway, True, ts, d))
            for metric, test, rule in kr.windowed:
                if metric in m:
                    self._window_test(rule, test, estate, r.dev, r.kind, gateway, ts, out)
            if kr.composites:
                latest = self.latest.setdefault(key, {})
                for metric in kr.composite_metrics:
                    if m.get(metric) is not None:
                        latest[metric] = m[metric]
                for comp, rule in kr.composites:
                    self._composite(rule, comp, estate, r.dev, r.kind, gateway, ts, out)


def _threshold(rng: random.Random, center: float, spread: float) -> dict[str, Any]:
    op = rng.choice(("above", "at_least", "below", "at_most", "outside"))
    k = rng.uniform(1.0, 3.0) * spread
    if op in ("above", "at_least"):
        x = round(center + k, 4)
        return {op: x, "clear": round(x - spread * rng.uniform(0, 0.5), 4)}
    if op in ("below", "at_most"):
        x = round(center - k, 4)
        return {op: x, "clear": round(x + spread * rng.uniform(0, 0.5), 4)}
    lo, hi = round(center - k, 4), round(center + k * rng.uniform(0.8, 1.5), 4)
    return {"outside": [lo, hi], "clear": [round(lo + spread * 0.1, 4), hi]}


def _part(rng: random.Random, kind: str, windowed: bool) -> dict[str, Any]:
    if not windowed and kind in ENUMS and rng.random() < 0.4:
        metric, values = rng.choice(sorted(ENUMS[kind].items()))
        return {"metric": metric, "equals": rng.choice(values)}
    metric, (center, spread) = rng.choice(sorted(NUMERIC[kind].items()))
    if not windowed:
        return {"metric": metric, **_threshold(rng, center, spread)}
    agg, window = rng.choice(AGGS), rng.choice(WINDOWS)
    test: dict[str, Any] = {"metric": metric, "agg": agg, "window": window}
    if agg == "rate":  # per hour: a spread within a few minutes
        x = round(spread * 60 / rng.uniform(2, 20), 4)
        return {**test, **rng.choice(({"above": x}, {"below": -x}, {"outside": [-x, x]}))}
    if agg == "count":
        return {**test, "above": rng.randint(3, 12)}
    if agg == "sum":
        n = rng.randint(3, 10)
        return {**test, **_threshold(rng, center * n, spread * n)}
    if rng.random() < 0.05:  # a quiet set that is not a range: always evaluated
        return {**test, "in": [round(center, 1)]}
    return {**test, **_threshold(rng, center, spread)}


def random_rules(rng: random.Random, n: int) -> list[dict[str, Any]]:
    rules = []
    for i in range(n):
        kind = rng.choice(sorted(NUMERIC))
        shape = rng.choice(("value", "window", "window", "composite"))
        if shape == "composite":
            parts = [_part(rng, kind, rng.random() < 0.3) for _ in range(rng.choice((2, 2, 3)))]
            when: dict[str, Any] = {rng.choice(("all", "all", "any")): parts}
        else:
            when = _part(rng, kind, shape == "window")
        rules.append(
            {
                "id": f"r{i:03d}",
                "kinds": [kind],
                "when": when,
                "severity": "minor",
                "summary": {"zh": f"规则 {i}", "en": f"rule {i}"},
            }
        )
    return rules


def random_readings(rng: random.Random, minutes: int) -> list[list[Reading]]:
    """Per simulated minute, a few devices per kind: mostly typical values, now and then an
    excursion, a NaN, a repeated or late timestamp, a missing metric."""
    devices = [(kind, f"{kind[:3]}-{i}") for kind in sorted(NUMERIC) for i in range(3)]
    level = {dev: {m: c for m, (c, _s) in NUMERIC[kind].items()} for kind, dev in devices}
    out = []
    for minute in range(minutes):
        chunk = []
        for kind, dev in devices:
            if rng.random() < 0.15:
                continue  # silent this minute
            for _ in range(rng.choice((1, 1, 1, 2))):
                ts = START + minute * MIN + rng.randrange(0, MIN, 1000)
                if rng.random() < 0.05:
                    ts -= rng.randrange(1, 10) * MIN  # replayed from a buffer
                metrics: dict[str, Value] = {}
                for metric, (center, spread) in NUMERIC[kind].items():
                    if rng.random() < 0.05:
                        continue
                    x = level[dev][metric] + rng.gauss(0, spread * 0.2)
                    x += (center - x) * 0.2
                    if rng.random() < 0.04:
                        x += rng.choice((-1, 1)) * spread * rng.uniform(2, 5)  # excursion
                    level[dev][metric] = x
                    metrics[metric] = x if rng.random() > 0.002 else math.nan
                for metric, values in ENUMS.get(kind, {}).items():
                    metrics[metric] = values[0] if rng.random() < 0.9 else rng.choice(values)
                chunk.append(Reading(dev, kind, ts, metrics))
        out.append(chunk)
    return out


def _evaluators(rules_dir: Path) -> tuple[RuleIndex, Evaluator, Evaluator]:
    rules = load_rules(CATALOG, rules_dir)
    index = RuleIndex(rules.defaults.values(), CATALOG)
    intervals = {k.name: k.interval_s * 1000 for k in CATALOG.kinds.values()}
    made = []
    for cls in (Evaluator, FullEvaluator):
        bank = WindowBank()
        bank.retrack(index.window_needs())
        made.append(cls(bank, intervals))
    return index, made[0], made[1]


def _key(s: Signal) -> tuple[Any, ...]:
    return (s.rule.id, s.estate, s.subject, s.hit, s.ts, repr(s.detail))


@pytest.mark.parametrize("seed", range(12))
def test_same_signals_as_full_evaluation(
    seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A short tail for half the seeds: flushes, compactions and drops all the time.
    monkeypatch.setattr(windows, "_TAIL", 3 if seed % 2 else 128)
    rng = random.Random(seed)
    folder = tmp_path / "rules"
    folder.mkdir()
    shutil.copy(BUNDLED_RULES / "00-escalation.yaml", folder)
    (folder / "random.yaml").write_text(
        yaml.safe_dump({"rules": random_rules(rng, 60)}, allow_unicode=True), encoding="utf-8"
    )
    index, fast, full = _evaluators(folder)
    total = 0
    for minute, chunk in enumerate(random_readings(rng, 150)):
        got: list[Signal] = []
        want: list[Signal] = []
        fast.observe_readings(index, "e1", "gw", chunk, got)
        full.observe_readings(index, "e1", "gw", chunk, want)
        assert [_key(s) for s in got] == [_key(s) for s in want], f"minute {minute}"
        total += len(got)
        if minute % 7 == 3:  # windows slide by time alone
            now = START + (minute + 1) * MIN
            got, want = [], []
            fast.check_time(lambda _e: index, now, got)
            full.check_time(lambda _e: index, now, want)
            assert [_key(s) for s in got] == [_key(s) for s in want], f"tick {minute}"
        if minute % 11 == 5:  # a person resolves some alarms: their conditions are forgotten
            held = sorted((rid, e, d) for rid, keys in full.asserted.items() for e, d in keys)
            for rid, e, d in rng.sample(held, min(3, len(held))):
                fast.forget(rid, e, d)
                full.forget(rid, e, d)
        assert fast.held_count == full.held_count
    assert total > 20  # the streams do cross thresholds: the comparison is not vacuous


def test_an_aggregate_is_computed_once_for_all_its_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "rules"
    folder.mkdir()
    shutil.copy(BUNDLED_RULES / "00-escalation.yaml", folder)
    rules = [
        {
            "id": f"hot-{i}",
            "kinds": ["ebike_charger"],
            "when": {"metric": "temp_c", "agg": "mean", "window": "10m", "above": 50 + i},
            "severity": "minor",
            "summary": {"zh": "热", "en": "hot"},
        }
        for i in range(20)
    ]
    (folder / "r.yaml").write_text(yaml.safe_dump({"rules": rules}), encoding="utf-8")
    index, ev, _ = _evaluators(folder)
    calls = []
    real = SeriesWindow.aggregate

    def counting(
        self: SeriesWindow, agg: Aggregate, now: int, whole: bool | None = None
    ) -> float | None:
        calls.append(agg)
        return real(self, agg, now, whole)

    monkeypatch.setattr(SeriesWindow, "aggregate", counting)
    out: list[Signal] = []

    def feed(minute: int, temp: float) -> list[str]:
        out.clear()
        r = Reading("c1", "ebike_charger", START + minute * MIN, {"temp_c": temp})
        ev.observe_readings(index, "e1", "gw", [r], out)
        return [s.rule.id for s in out]

    # (a mean needs its full window since issue 11: ten quiet minutes first)
    for minute in range(11):
        assert feed(minute, 30.0) == [] and calls == []  # quiet: no aggregate at all
    # mean of minutes 2..11 = (9 × 30 + 255) / 10 = 52.5: above 50, 51, 52
    assert feed(11, 255.0) == [f"hot-{i}" for i in range(3)]
    assert len(calls) == 1  # one aggregate for the twenty rules
    calls.clear()
    feed(12, 30.0)  # a held device: every rule is tested, on one shared aggregate
    assert len(calls) == 1


def _group(*tests: tuple[str, Quiet]) -> WindowGroup:
    g = WindowGroup()
    for i, (fn, q) in enumerate(tests):
        t = ValueTest("x", lambda v: False, lambda v: True, "t", Aggregate(fn, 10 * MIN), q)
        g.tests.append((i, t, None))  # type: ignore[arg-type]
    g.seal()
    return g


def test_a_window_group_is_quiet_while_its_series_stays_inside_the_range() -> None:
    g = _group(("max", Quiet(hi=10.0)), ("min", Quiet(lo=-10.0)), ("mean", Quiet(hi=8.0)))
    assert (g.within, g.mean, g.rate, g.always) == ((-10.0, 8.0), True, None, [])
    w = SeriesWindow(horizon_ms=10 * MIN)
    for i in range(10):
        w.append(i * MIN, 5.0)
        assert g.quiet(w, i * MIN)
    w.append(10 * MIN, 9.0)  # beyond the mean's range: the aggregate must be computed
    assert not g.quiet(w, 10 * MIN)
    for i in range(11, 21):
        w.append(i * MIN, 5.0)
    assert not g.quiet(w, 20 * MIN)  # the envelope still covers the dropped 9.0 ...
    assert w.tighten() and g.quiet(w, 20 * MIN)  # ... until made exact
    # Marked quiet, the envelope is loosened half the way to the thresholds (mean < 8 and
    # min > -10), so the next samples seldom leave it.
    assert (w.lo, w.hi) == (-2.5, 6.5)
    assert w.tighten() and (w.lo, w.hi) == (5.0, 5.0)
    assert not w.tighten()  # exact already


def test_a_rate_is_bounded_by_the_envelope_and_the_last_gap() -> None:
    g = _group(("rate", Quiet(lo=-6.0, hi=6.0)))  # per hour
    w = SeriesWindow(horizon_ms=HOUR_MS)
    w.append(0, 1.0)
    assert g.quiet(w, 0)  # one sample: no rate
    w.append(30 * MIN, 2.0)  # within 1..2, 30 min apart: |rate| <= 2 per hour
    assert g.quiet(w, 30 * MIN)
    w.append(35 * MIN, 2.4)  # 1.4 over 5 min could be 16.8 per hour
    assert not g.quiet(w, 35 * MIN)
    # (issue 11) the series began 35 min ago: an hour's rate is not judged yet
    assert w.aggregate(Aggregate("rate", HOUR_MS), 35 * MIN) is None
    w.append(35 * MIN, 2.4)  # the same time again: no bound
    assert not g.quiet(w, 35 * MIN)
    assert not g.quiet(w, 34 * MIN)  # a late reading: evaluated in full


def test_a_rate_on_a_whole_window_is_bounded_by_half_the_window() -> None:
    """A rate is judged only on a whole window (its first sample in the window's first
    half): at the newest sample's time it spans at least half the window, so bounds 0.1 wide
    keep a 10-minute rate under 6 per hour at any gap, where the last gap (1 minute) alone
    would allow 6."""
    g = _group(("rate", Quiet(lo=-6.0, hi=6.0)))  # per hour, over 10 minutes
    assert g.rate_span == pytest.approx(6.0 * 5 * MIN / HOUR_MS)
    w = SeriesWindow(horizon_ms=HOUR_MS)
    rate = Aggregate("rate", 10 * MIN)
    for i in range(20):
        w.append(i * MIN, 1.0 + 0.1 * (i % 2))
    assert not g.quiet(w, 20 * MIN)  # a reading without a sample: only the last gap counts
    assert g.quiet(w, 19 * MIN)
    assert w.quiet_for is g and w.quiet_gap < 0  # quiet for later samples at any gap ...
    assert (w.lo, w.hi) == pytest.approx((0.925, 1.175))  # ... within bounds loosened halfway
    assert w.add(19 * MIN + 1, 1.17, g)  # a second later, inside: still quiet
    for now in (19 * MIN, 19 * MIN + 1):
        got = w.aggregate(rate, now)
        assert got is not None and abs(got) < 6.0
    assert not w.add(20 * MIN, 1.45, g)  # outside: the group must look again
    assert not g.quiet(w, 20 * MIN)  # 0.525 wide: up to 6.3 per hour over 5 minutes, but
    assert w.tighten() and g.quiet(w, 20 * MIN)  # exact bounds (1.0..1.45) allow 5.4


def test_a_rebuild_for_room_keeps_the_bounds_and_the_quiet_mark() -> None:
    g = _group(("max", Quiet(hi=10.0)))
    w = SeriesWindow(horizon_ms=5 * MIN, capacity=4)
    for i in range(3):
        w.append(i * MIN, 1.0)
    assert g.quiet(w, 2 * MIN)
    bounds = (w.lo, w.hi)
    for i in range(3, 40):  # the arrays fill and are rebuilt, older samples dropped
        assert w.add(i * MIN, 1.0, g)
        w._flush()
    assert w.quiet_for is g and (w.lo, w.hi) == bounds
    assert w.aggregate(Aggregate("max", 5 * MIN), 39 * MIN) == 1.0


def test_nan_keeps_a_group_from_being_skipped() -> None:
    g = _group(("max", Quiet(hi=10.0)))
    w = SeriesWindow(horizon_ms=5 * MIN)
    w.append(0, 1.0)
    w.append(MIN, math.nan)
    w.append(2 * MIN, 1.0)
    assert not g.quiet(w, 2 * MIN)
    for i in range(3, 10):
        w.append(i * MIN, 1.0)
    w.tighten()
    assert g.quiet(w, 9 * MIN)  # dropped: bounds hold again


class NaiveWindow:
    """Kept samples as a list: the aggregates by their definition."""

    def __init__(self, horizon_ms: int, max_samples: int) -> None:
        self.horizon_ms, self.max_samples = horizon_ms, max_samples
        self.samples: list[tuple[int, float]] = []
        self.since: int | None = None  # the first sample ever

    def append(self, ts: int, v: float) -> None:
        self.since = ts if self.since is None else min(self.since, ts)
        self.samples.append((ts, v))
        self.samples.sort(key=lambda s: s[0])
        cutoff = self.samples[-1][0] - self.horizon_ms
        self.samples = [s for s in self.samples if s[0] > cutoff][-self.max_samples :]

    def aggregate(self, agg: Aggregate, now: int) -> float | None:
        vals = [v for ts, v in self.samples if now - agg.window_ms < ts <= now]
        times = [ts for ts, _ in self.samples if now - agg.window_ms < ts <= now]
        if agg.fn == "count":
            return float(len(vals))
        if agg.fn == "sum":
            return float(sum(vals))
        if not vals:
            return None
        start = now - agg.window_ms
        full = (
            self.since is not None
            and self.since <= start
            and times[0] - start <= agg.window_ms // 2
        )
        if agg.fn in ("rate", "mean") and not full:  # issue 11: a full window only
            return None
        if agg.fn == "rate":
            dt = times[-1] - times[0]
            return (vals[-1] - vals[0]) * HOUR_MS / dt if dt > 0 else None
        return {"max": max, "min": min, "mean": lambda x: sum(x) / len(x)}[agg.fn](vals)


@pytest.mark.parametrize("seed", range(6))
def test_series_window_agrees_with_the_definition(seed: int) -> None:
    rng = random.Random(seed)
    horizon = 30 * MIN
    w, naive = SeriesWindow(horizon, capacity=4, max_samples=500), NaiveWindow(horizon, 500)
    ts = 0
    for step in range(1500):
        ts += rng.choice((0, 1000, 20_000, 60_000, 600_000))
        t = ts - rng.randrange(0, 5 * MIN) if rng.random() < 0.03 else ts
        v = rng.uniform(-50, 50)
        w.append(t, v)
        naive.append(t, v)
        # (read from the short tail or from the arrays, whichever holds them now)
        assert w.prev_ts == (naive.samples[-2][0] if len(naive.samples) > 1 else None)
        assert w.last_val == naive.samples[-1][1]
        if step % 37 == 0 or rng.random() < 0.05:
            now = ts - rng.choice((0, 0, MIN))
            for fn in ("max", "min", "mean", "sum", "count", "rate"):
                agg = Aggregate(fn, rng.choice((5 * MIN, 10 * MIN, 30 * MIN)))
                assert w.aggregate(agg, now) == pytest.approx(naive.aggregate(agg, now))
            kept = [v for _, v in naive.samples]
            assert len(w) == len(kept)
            assert w.lo <= min(kept) and w.hi >= max(kept)
            assert w.last_ts == naive.samples[-1][0]
            assert w.last_val == naive.samples[-1][1]
            assert w.prev_ts == (naive.samples[-2][0] if len(naive.samples) > 1 else None)
            w.tighten()
            assert (w.lo, w.hi) == (min(kept), max(kept))
            data = SeriesWindow.from_bytes(w.to_bytes())
            assert np.array_equal(data._ts[data._start : data._end], [t for t, _ in naive.samples])
