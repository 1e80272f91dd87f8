"""Rules by column give the signals and the state that reading by reading gives.

The evaluator screens a kind's readings of a delivery by column (``alerts.rules.columns``)
and handles those that change nothing a rule reads in bulk; here it is fed random streams and
rule sets beside one that goes reading by reading (``column_run`` beyond any delivery), with
time checks and forgotten conditions in between: same signals in the same order, details
included, and the same clocks, held conditions, latest values and window aggregates.
"""

from __future__ import annotations

import math
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts import windows
from alerts.rules.columns import _Columns, _quiet
from alerts.rules.evaluate import Evaluator, Signal
from alerts.rules.index import RuleIndex, ValueGroup
from alerts.rules.loader import BUNDLED_RULES, load_rules
from alerts.window_bank import DeviceSeries, LogColumns, WindowBank
from alerts.windows import Aggregate, SeriesWindow
from protocol.catalog import default_catalog
from protocol.messages import Reading, Value
from tests.alerts.test_rules_fast_path import (
    ENUMS,
    MIN,
    NUMERIC,
    START,
    random_readings,
    random_rules,
)

CATALOG = default_catalog()


def calm_readings(rng: random.Random, minutes: int, per_kind: int) -> list[list[Reading]]:
    """Per simulated minute, ``per_kind`` devices a kind near their typical values (the
    columns' case), with now and then an excursion, a NaN, a late or repeated time, a
    missing metric or a device silent for a while."""
    devices = [(kind, f"{kind[:3]}-{i}") for kind in sorted(NUMERIC) for i in range(per_kind)]
    offset = {dev: rng.randrange(0, MIN // 2, 1000) for _kind, dev in devices}
    out = []
    for minute in range(minutes):
        chunk = []
        for kind, dev in devices:
            if rng.random() < 0.03:
                continue
            for k in range(1 if rng.random() < 0.97 else 2):
                ts = START + minute * MIN + offset[dev] + k * rng.randrange(0, MIN // 2, 1000)
                if rng.random() < 0.01:
                    ts -= rng.randrange(1, 10) * MIN
                metrics: dict[str, Value] = {}
                for metric, (center, spread) in NUMERIC[kind].items():
                    if rng.random() < 0.01:
                        continue
                    x = center + rng.gauss(0, spread * 0.01)
                    if rng.random() < 0.005:
                        x += rng.choice((-1, 1)) * spread * rng.uniform(2, 5)
                    metrics[metric] = x if rng.random() > 0.0002 else math.nan
                for metric, values in ENUMS.get(kind, {}).items():
                    metrics[metric] = values[0] if rng.random() < 0.99 else rng.choice(values)
                chunk.append(Reading(dev, kind, ts, metrics))
        out.append(chunk)
    return out


def _evaluators(rules_dir: Path, run: int) -> list[tuple[RuleIndex, Evaluator]]:
    """By column (from runs of ``run``) and reading by reading, each with its own index (an
    index caches its kinds' window plans for one bank)."""
    rules = load_rules(CATALOG, rules_dir)
    intervals = {k.name: k.interval_s * 1000 for k in CATALOG.kinds.values()}
    made = []
    for column_run in (run, 10**9):
        index = RuleIndex(rules.defaults.values(), CATALOG)
        bank = WindowBank()
        bank.retrack(index.window_needs())
        ev = Evaluator(bank, intervals)
        ev.column_run = column_run
        made.append((index, ev))
    return made


def _key(s: Signal) -> tuple[Any, ...]:
    return (s.rule.id, s.estate, s.subject, s.hit, s.ts, repr(s.detail))


def _state(ev: Evaluator, now: int) -> tuple[Any, ...]:
    clocks = {k: (c.kind, c.gateway, c.last_ms, c.data_ms) for k, c in ev.clocks.items()}
    series = {}
    for (e, d, metric), w in ev.windows.series.items():
        # (a sum to 12 digits: prefix sums rebuilt at other moments round differently)
        aggs = tuple(
            None if a is None else float(f"{a:.12g}")
            for a in (
                w.aggregate(Aggregate(fn, 600_000), now, False) for fn in ("count", "sum", "max")
            )
        )
        series[(e, d, metric)] = (len(w), w.newest_ts, aggs)
    return clocks, ev.held_count, ev.latest, repr(series)


def _screenable(rule: dict[str, Any]) -> bool:
    """Not a composite that every reading must test (a kind with one is not screened), nor
    a window test that must run at every reading (sum, count, a set: the device's log
    never takes a row, see ``DeviceSeries``)."""
    when = rule["when"]
    if when.get("agg") in ("sum", "count") or "in" in when:
        return False
    plain = ["agg" not in p for p in when.get("all", when.get("any", ()))]
    return not plain or ("all" in when and any(plain)) or ("any" in when and all(plain))


def _compare(
    seed: int,
    folder: Path,
    run: int,
    per_delivery: int,
    minutes: int,
    every: bool = False,
    per_kind: int = 0,
) -> int:
    """Feed both evaluators; returns how many readings went by column. ``every``: rules
    that keep a kind from being screened too; ``per_kind``: calm streams of so many devices
    a kind (0: the fast path test's restless ones)."""
    rng = random.Random(seed)
    shutil.copy(BUNDLED_RULES / "00-escalation.yaml", folder)
    rules = [r for r in random_rules(rng, 40) if every or _screenable(r)]
    (folder / "random.yaml").write_text(
        yaml.safe_dump({"rules": rules}, allow_unicode=True), encoding="utf-8"
    )
    (index, cols), (index_each, each) = _evaluators(folder, run)
    heard: int | None = None
    stream = calm_readings(rng, minutes, per_kind) if per_kind else random_readings(rng, minutes)
    for minute, chunk in enumerate(stream):
        if minute % 5 == 2:
            heard = START + (minute + 1) * MIN  # arrivals on the service's clock, or not
        elif minute % 5 == 4:
            heard = None
        for i in range(0, len(chunk), per_delivery):
            part: list[Reading] = chunk[i : i + per_delivery]
            got: list[Signal] = []
            want: list[Signal] = []
            cols.observe_readings(index, "e1", "gw", part, got, heard)
            each.observe_readings(index_each, "e1", "gw", part, want, heard)
            assert [_key(s) for s in got] == [_key(s) for s in want], f"minute {minute}"
        now = START + (minute + 1) * MIN
        if minute % 7 == 3:  # windows slide by time alone
            got, want = [], []
            cols.check_time(lambda _e: index, now, got)
            each.check_time(lambda _e: index_each, now, want)
            assert [_key(s) for s in got] == [_key(s) for s in want], f"tick {minute}"
        if minute % 11 == 5:  # a person resolves some alarms: their conditions are forgotten
            held = sorted((rid, e, d) for rid, keys in each.asserted.items() for e, d in keys)
            for rid, e, d in rng.sample(held, min(3, len(held))):
                cols.forget(rid, e, d)
                each.forget(rid, e, d)
        if minute % 4 == 3:  # (the series read, as the timer's snapshots do: logs keep going)
            assert _state(cols, now) == _state(each, now), f"minute {minute}"
    assert each.by_column == 0
    return cols.by_column


@pytest.mark.parametrize("seed", range(6))
def test_same_signals_and_state_by_column(
    seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(windows, "_TAIL", 3 if seed % 2 else 128)
    monkeypatch.setattr(windows, "_DEPTH", 2 if seed % 3 == 1 else 32)
    by_column = _compare(seed, tmp_path, run=4, per_delivery=1000, minutes=120, per_kind=10)
    assert by_column > 150  # the columns did part of the work (a short tail: less)


def test_same_signals_with_rules_that_see_every_reading(tmp_path: Path) -> None:
    _compare(6, tmp_path, run=1, per_delivery=1000, minutes=120, every=True)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**31),
    run=st.integers(1, 6),
    per_delivery=st.integers(1, 40),
    tail=st.sampled_from((2, 3, 128)),
    depth=st.sampled_from((1, 2, 5, 32)),
)
def test_columns_agree_on_random_streams(
    seed: int,
    run: int,
    per_delivery: int,
    tail: int,
    depth: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    folder = tmp_path_factory.mktemp("rules")
    old = windows._TAIL, windows._DEPTH
    windows._TAIL, windows._DEPTH = tail, depth
    try:
        _compare(
            seed, folder, run, per_delivery, minutes=40, every=seed % 4 == 0, per_kind=seed % 3
        )
    finally:
        windows._TAIL, windows._DEPTH = old


def test_columns_grow_with_the_devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 80 devices a kind: the columns (made for 64) grow while rows wait in them.
    monkeypatch.setattr(windows, "_DEPTH", 4)
    by_column = _compare(2, tmp_path, run=16, per_delivery=500, minutes=25, per_kind=80)
    assert by_column > 1000


def test_the_columns_keep_their_rows_as_they_grow() -> None:
    cols: LogColumns[Any] = LogColumns([(0, "a", None), (1, "b", None)])
    first = len(cols.fast)
    for i in range(first):
        slot = cols.slot(f"d{i}")
        cols.fast[slot], cols.last[slot], cols.gap[slot] = True, 1000 + i, 0.5 * i
        cols.lo[slot], cols.hi[slot], cols.member[slot] = (i, -i), (i + 1, i), (True, i % 2)
        cols.log_n[slot] = 1
        cols.log_ts[slot, 0], cols.log_val[slot, 0] = 2000 + i, (3.0 * i, 4.0 * i)
    grown = cols.slot("new")
    assert grown == first and len(cols.fast) > first and not cols.fast[grown]
    for i in range(first):
        slot = cols.slot_of[f"d{i}"]
        assert (cols.fast[slot], cols.last[slot], cols.gap[slot]) == (True, 1000 + i, 0.5 * i)
        assert list(cols.lo[slot]) == [i, -i] and list(cols.hi[slot]) == [i + 1, i]
        assert list(cols.member[slot]) == [True, bool(i % 2)]
        assert cols.log_n[slot] == 1 and cols.log_ts[slot, 0] == 2000 + i
        assert list(cols.log_val[slot, 0]) == [3.0 * i, 4.0 * i]


@pytest.mark.parametrize("absent_quiet", [True, False])
def test_a_set_screen_is_the_groups_own_answer(absent_quiet: bool) -> None:
    """A group quiet outside a set of values, screened by column (one C loop), answers as
    its quiet test does value by value; an absent value as asked."""
    hits: frozenset[Value] = frozenset({"fault", "alarm", 3.0})
    group = ValueGroup(quiet=lambda v: v not in hits, values=hits)
    objs: list[Value | None] = ["ok", "fault", None, 3.0, 3, 2.5, "alarm", None, True, math.nan]
    run = _Columns([{} if v is None else {"state": v} for v in objs])
    got = _quiet(run, "state", group, absent_quiet).tolist()
    assert got == [absent_quiet if v is None else v not in hits for v in objs]
    assert got[:3] == [True, False, absent_quiet]


def test_reading_a_series_leaves_its_log_taking_rows() -> None:
    # The timer's snapshot reads every series (its samples join it); the device's log takes
    # the next reading as a row without looking at its series again (no ``refresh``).
    device: DeviceSeries[Any] = DeviceSeries([(0, "a", None), (1, "b", None)])
    a, b = SeriesWindow(3_600_000), SeriesWindow(3_600_000)
    for i, w in enumerate((a, b)):
        w.add(START, 1.0, None)
        w.add(START + MIN, 2.0, None)
        device.attach(i, w)
    assert device.take({"a": 1.5, "b": 1.5}, START + 2 * MIN) == ()  # (looked once)
    assert device.fast and device.has_rows()
    assert a.last_ts == START + 2 * MIN and not device.has_rows()
    assert device.fast and device.fresh  # as it was
    assert device.take({"a": 1.2, "b": 1.8}, START + 3 * MIN) == ()
    assert b.last_ts == START + 3 * MIN and device.fast
    assert b.aggregate(Aggregate("max", 10 * MIN), START + 3 * MIN) == 2.0
    assert len(a) == len(b) == 4
    # A value outside the envelope widens it: the log looks again at its next reading.
    assert device.take({"a": 5.0, "b": 1.0}, START + 4 * MIN) == []
    assert not device.fast and a.hi == 5.0
