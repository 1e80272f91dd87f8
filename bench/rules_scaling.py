"""Bench 4: rules scaling, the alert engine's throughput with 1,000 rules over with 10.

Both rule sets are generated as YAML rule files (the format of ``alerts/rules/defaults``) over
the large estate's kinds and metrics, with thresholds beyond every value in the fed stream, so
they almost never fire (a few enum and boolean tests on rare values may). The mix follows the
shipped defaults' rules on readings: plain value tests, window aggregates and ``all``
composites in the same proportions. Event, no-data and gateway rules are left out: the feed is
readings only, and such rules would cost nothing here, which would flatter the ratio.

The 10-rule set takes the busiest (kind, metric) pairs by reading volume (a small deployment
guards the e-bike chargers and lifts first; with pairs drawn at random, 10 rules would mostly
miss the readings and the ratio would measure coverage, not rule count); the 1,000-rule set
draws pairs uniformly, so it covers every kind. A second pair of sets, value tests only, shows
the path the quiet-value guards serve.

Four ``AlertEngine`` instances (each on its own SQLite database) are fed the same simulator
readings as ingest hands them over (``on_committed`` with deliveries of 500 readings, one
simulated minute per call), chunk by chunk in turn with the first one rotating, so machine
noise falls on all alike. The engines' clocks follow the data; the first ``--warmup`` minutes
are fed but not timed.

Each engine's timer runs as in the service (``AlertEngine.tick`` after each simulated minute,
on the data's clock): the deadman checks and the 5-minute snapshots, which hand the window
logs' rows to their series, so the logs are as deep as the service's, not deeper. The figure
is the stream's cost (``on_committed``, the service's rules thread, which limits its
throughput); the timer's CPU is timed apart and printed beside it: it is paid per period of
data time, not per reading, so at the service's capacity (hundreds of times an estate's own
rate) it is spread over far more readings than here. ``--no-timer``: the stream alone with
no timer, as before 2026-12-06's fourth session.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from alerts.engine import AlertEngine
from alerts.rules.loader import BUNDLED_RULES, load_rules
from alerts.rules.spec import Composite, ValueTest
from bench.common import parse_with_full, report, verdict
from estatewatch.cli import tune_interpreter
from ingest.pipeline import Delivery
from ingest.state import create_engine
from ingest.telemetry import EstateBatch
from protocol.catalog import Catalog, ValueType, default_catalog
from protocol.messages import Reading
from simulators.estate import SimulatedEstate
from simulators.spec import load_spec

ESTATE, GW = "bench-large", "gw-01"
START_MS = 1_768_003_200_000  # 2026-01-10 00:00 UTC, a winter's day
MINUTE = 60_000
PER_DELIVERY = 500  # readings per message, as bench 1's largest size
AGGS = ("mean", "max", "min", "rate")
WINDOWS = ("10m", "30m", "1h")
FORS = (None, "30s", "1m", "5m", "10m")


@dataclass
class Observed:
    """What the fed stream holds for one (kind, metric): the numeric range, or value counts."""

    lo: float = math.inf
    hi: float = -math.inf
    counts: Counter[object] | None = None
    readings: int = 0

    @property
    def span(self) -> float:
        return max(self.hi - self.lo, abs(self.hi) * 0.1, 0.1)


def minutes_of_readings(minutes: int, seed: int) -> list[list[Reading]]:
    """The large estate's readings, one list per simulated minute."""
    sim = SimulatedEstate(load_spec("large"), default_catalog(), seed=seed, start_ms=START_MS)
    return [sim.due(START_MS + (m + 1) * MINUTE) for m in range(minutes)]


def observe(chunks: list[list[Reading]], catalog: Catalog) -> dict[tuple[str, str], Observed]:
    seen: dict[tuple[str, str], Observed] = {}
    for chunk in chunks:
        for r in chunk:
            for metric, v in r.metrics.items():
                o = seen.get((r.kind, metric))
                if o is None:
                    o = seen[(r.kind, metric)] = Observed()
                o.readings += 1
                mtype = catalog.kinds[r.kind].metrics[metric].type
                if mtype in (ValueType.NUMBER, ValueType.INTEGER) and metric != "status_word":
                    fv = float(v)
                    o.lo, o.hi = min(o.lo, fv), max(o.hi, fv)
                else:
                    if o.counts is None:
                        o.counts = Counter()
                    o.counts[v] += 1
    return seen


def default_mix() -> dict[str, float]:
    """Shares of value tests, window aggregates and composites among the shipped default
    rules that read readings (the realistic mix; events and no-data are not per reading)."""
    rules = load_rules(default_catalog(), BUNDLED_RULES).defaults.values()
    shape = Counter(
        "windowed" if isinstance(r.condition, ValueTest) and r.condition.agg else
        "value" if isinstance(r.condition, ValueTest) else "composite"
        for r in rules
        if isinstance(r.condition, ValueTest | Composite)
    )  # fmt: skip
    total = sum(shape.values())
    return {k: shape[k] / total for k in ("value", "windowed", "composite")}


def _r(x: float) -> float:
    return float(f"{x:.4g}")


# An enum or boolean value seen in at most this share of a metric's readings counts as rare.
RARE = 0.001


class RuleMaker:
    """Rules that hold on no value of the fed stream, bar rare enum and boolean values.

    ``busiest``: take (kind, metric) pairs in order of reading volume (a small deployment's
    rules guard the devices that report most); else uniformly at random (a large one covers
    every kind)."""

    def __init__(
        self,
        catalog: Catalog,
        seen: dict[tuple[str, str], Observed],
        rng: random.Random,
        busiest: bool,
    ) -> None:
        self.catalog = catalog
        self.seen = seen
        self.rng = rng
        self.rare = {k: self._rare_values(*k) for k, o in seen.items() if o.counts is not None}
        # Metrics whose every value is common (an elevator's direction) get no test.
        eligible = [k for k, o in seen.items() if o.counts is None or self.rare[k]]
        by_volume = sorted(eligible, key=lambda k: (-seen[k].readings, k))
        self.pairs = by_volume if busiest else sorted(eligible)
        self.numeric = [k for k in self.pairs if seen[k].counts is None]
        per_kind = Counter(k for k, _ in self.pairs)
        self.multi = list(dict.fromkeys(k for k, _ in self.pairs if per_kind[k] >= 2))
        self.busiest = busiest
        self._next: Counter[str] = Counter()

    def _rare_values(self, kind: str, metric: str) -> list[object]:
        o = self.seen[(kind, metric)]
        m = self.catalog.kinds[kind].metrics[metric]
        counts = o.counts or Counter()
        limit = RARE * o.readings
        if metric == "status_word":
            # Bits no reading of the stream has set (the simulator's words are mostly 0x0001,
            # normal operation), from the kind's own table (a component's differs).
            return [
                b.name
                for b in self.catalog.status_bits_of(kind).values()
                if sum(n for v, n in counts.items() if type(v) is int and v >> b.bit & 1) <= limit
            ]
        values: tuple[object, ...] = (
            (True, False) if m.type is ValueType.BOOLEAN else tuple(m.values)
        )
        return [v for v in values if counts.get(v, 0) <= limit]

    def _pick(self, pool: list[Any], what: str) -> Any:
        if not self.busiest:
            return self.rng.choice(pool)
        i = self._next[what] % len(pool)
        self._next[what] += 1
        return pool[i]

    def _threshold(self, kind: str, metric: str) -> dict[str, Any]:
        o = self.seen[(kind, metric)]
        rng, span = self.rng, o.span
        m1, m2 = span * rng.uniform(0.05, 0.5), span * rng.uniform(0.05, 0.5)
        op = rng.choice(("above", "at_least", "below", "at_most", "outside"))
        if op in ("above", "at_least"):
            x = _r(o.hi + m1)
            return {"metric": metric, op: x, "clear": _r(x - span * 0.02)}
        if op in ("below", "at_most"):
            x = _r(o.lo - m1)
            return {"metric": metric, op: x, "clear": _r(x + span * 0.02)}
        lo, hi = _r(o.lo - m1), _r(o.hi + m2)
        return {"metric": metric, "outside": [lo, hi], "clear": [_r(lo + span * 0.01), hi]}

    def test(self, kind: str, metric: str) -> dict[str, Any]:
        if self.seen[(kind, metric)].counts is None:
            return self._threshold(kind, metric)
        rare = self.rare[(kind, metric)]
        if metric == "status_word":
            return {"metric": metric, "bit": self.rng.choice(rare)}
        pick = self.rng.sample(rare, min(len(rare), self.rng.choice((1, 1, 2))))
        if len(pick) == 1:
            return {"metric": metric, "equals": pick[0]}
        return {"metric": metric, "in": pick}

    def windowed(self, kind: str, metric: str) -> dict[str, Any]:
        o = self.seen[(kind, metric)]
        agg, window = self.rng.choice(AGGS), self.rng.choice(WINDOWS)
        if agg != "rate":
            return {**self._threshold(kind, metric), "agg": agg, "window": window}
        # Per hour, beyond any slope the stream can show: the span over one report interval.
        interval_h = self.catalog.kinds[kind].interval_s / 3600
        x = _r(o.span / interval_h * self.rng.uniform(1.5, 3))
        op = self.rng.choice(("above", "below"))
        return {"metric": metric, "agg": "rate", "window": window, op: x if op == "above" else -x}

    def rule(self, i: int, shape: str) -> dict[str, Any]:
        rng = self.rng
        if shape == "composite":
            kind = self._pick(self.multi, "composite")
            metrics = [m for k, m in self.pairs if k == kind]
            a, b = metrics[:2] if self.busiest else rng.sample(metrics, 2)
            when: dict[str, Any] = {"all": [self.test(kind, a), self.test(kind, b)]}
            what = f"{a}-{b}"
        elif shape == "windowed":
            kind, what = self._pick(self.numeric, "windowed")
            when = self.windowed(kind, what)
        else:
            kind, what = self._pick(self.pairs, "value")
            when = self.test(kind, what)
        rule: dict[str, Any] = {
            "id": f"gen-{i:04d}-{kind}-{what}",
            "kinds": [kind],
            "when": when,
            "severity": rng.choice(("minor", "major", "warning")),
            "summary": {"zh": f"生成规则 {i}", "en": f"generated rule {i}"},
        }
        hold = rng.choice(FORS)
        if hold:
            rule["for"] = hold
        return rule


def shapes_for(n: int, mix: dict[str, float]) -> list[str]:
    """n rule shapes in the mix's proportions; at least one of each shape the mix has."""
    counts = {k: max(1, round(n * share)) if share else 0 for k, share in mix.items()}
    counts["value"] = n - counts["windowed"] - counts["composite"]
    return [k for k, c in counts.items() for _ in range(c)]


def write_rules(
    folder: Path,
    n: int,
    seen: dict[tuple[str, str], Observed],
    mix: dict[str, float],
    seed: int,
    busiest: bool,
) -> list[dict[str, Any]]:
    """A rules folder: the shipped chains and inhibitions, plus n generated rules."""
    folder.mkdir(parents=True)
    # Chains and inhibitions as shipped (that file has no rules): the same inhibitor work.
    (folder / "00-escalation.yaml").write_text(
        (BUNDLED_RULES / "00-escalation.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    maker = RuleMaker(default_catalog(), seen, random.Random(seed), busiest)
    rules = [maker.rule(i, shape) for i, shape in enumerate(shapes_for(n, mix))]
    (folder / "generated.yaml").write_text(
        yaml.safe_dump({"rules": rules}, allow_unicode=True, sort_keys=False), encoding="utf-8"
    )
    return rules


class DataClock:
    """The engine's clock follows the data being replayed."""

    def __init__(self) -> None:
        self.now = START_MS

    def __call__(self) -> int:
        return self.now


def deliveries(chunk: list[Reading]) -> list[Delivery]:
    out = []
    for i in range(0, len(chunk), PER_DELIVERY):
        d = Delivery(
            topic=f"estates/{ESTATE}/gw/{GW}/telemetry",
            received_ms=chunk[-1].ts,
            estate=ESTATE,
            gateway=GW,
        )
        d.batch = EstateBatch(ESTATE, GW, chunk[i : i + PER_DELIVERY], seq=i // PER_DELIVERY)
        out.append(d)
    return out


@dataclass
class Fed:
    """One engine, its rule set, and what feeding it cost."""

    name: str
    engine: AlertEngine
    clock: DataClock
    coverage: float  # share of the fed readings whose kind has at least one rule
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # the feeding thread's CPU clock: other processes' load falls out
    tick_cpu_seconds: float = 0.0  # the timer's (AlertEngine.tick), on the same clock
    readings: int = 0

    @property
    def rate(self) -> float:
        return self.readings / max(self.seconds, 1e-9)

    @property
    def cpu_rate(self) -> float:
        return self.readings / max(self.cpu_seconds, 1e-9)

    @property
    def whole_cpu_rate(self) -> float:
        """Stream and timer: what the service pays a reading."""
        return self.readings / max(self.cpu_seconds + self.tick_cpu_seconds, 1e-9)


# (mix, size, busiest): the figure is mix 1,000 ÷ mix 10; the value-only pair shows what the
# plain value tests alone cost (the path the quiet-value guards serve).
VARIANTS = (
    ("mix", "small", True),
    ("mix", "big", False),
    ("value", "small", True),
    ("value", "big", False),
)


def run(
    minutes: int = 30,
    warmup: int = 5,
    sizes: tuple[int, int] = (10, 1000),
    seed: int = 7,
    timer: bool = True,
) -> dict[str, Any]:
    tune_interpreter()  # the service's process settings (the collector's thresholds)
    catalog = default_catalog()
    chunks = minutes_of_readings(warmup + minutes, seed)
    seen = observe(chunks, catalog)
    mixes = {"mix": default_mix(), "value": {"value": 1.0, "windowed": 0.0, "composite": 0.0}}
    volume = Counter(r.kind for chunk in chunks for r in chunk)
    figures: dict[str, Any] = {
        "readings_fed": sum(len(c) for c in chunks[warmup:]),
        "sizes": list(sizes),
        "mix": {k: round(v, 3) for k, v in mixes["mix"].items()},
    }
    # The warnings about plan rules the generated sets do not define are expected here.
    logging.getLogger("alerts").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fed: list[Fed] = []
        dbs = []
        for mix_name, size, busiest in VARIANTS:
            n = sizes[0] if size == "small" else sizes[1]
            name = f"{mix_name}_{n}"
            rules = write_rules(folder / name, n, seen, mixes[mix_name], seed + n, busiest)
            kinds = {k for r in rules for k in r["kinds"]}
            coverage = sum(volume[k] for k in kinds) / sum(volume.values())
            db = create_engine(f"sqlite:///{folder / f'{name}.db'}")
            dbs.append(db)
            clock = DataClock()
            engine = AlertEngine(
                db, catalog, clock, rules_dir=folder / name, estate_region=lambda _e: "呼和浩特市"
            )
            assert len(engine.rules.defaults) == n, f"{len(engine.rules.defaults)} of {n} loaded"
            fed.append(Fed(name, engine, clock, coverage))
        gc.freeze()  # as the service does once set up: the engines' start-up state
        try:
            for k, chunk in enumerate(chunks):
                ds = deliveries(chunk)
                # Rotate which engine goes first: machine noise and cache state fall on all.
                shift = k % len(fed)
                for f in fed[shift:] + fed[:shift]:
                    f.clock.now = chunk[-1].ts
                    t0, c0 = time.perf_counter(), time.thread_time()
                    f.engine.on_committed(ds)
                    dt, dc = time.perf_counter() - t0, time.thread_time() - c0
                    if k >= warmup:
                        f.seconds += dt
                        f.cpu_seconds += dc
                        f.readings += len(chunk)
                    if timer:
                        c0 = time.thread_time()
                        f.engine.tick()
                        if k >= warmup:
                            f.tick_cpu_seconds += time.thread_time() - c0
        finally:
            for f in fed:
                figures[f"{f.name}_alarms"] = len(f.engine.list_alarms())
                f.engine.stop()
            for db in dbs:
                db.dispose()
    for f in fed:
        figures[f"{f.name}_readings_per_s"] = round(f.rate)
        figures[f"{f.name}_readings_per_cpu_s"] = round(f.cpu_rate)
        figures[f"{f.name}_timer_cpu_s"] = round(f.tick_cpu_seconds, 4)
        figures[f"{f.name}_coverage"] = round(f.coverage, 3)
    by = {f.name: f for f in fed}
    small, big = sizes
    figures["ratio"] = round(by[f"mix_{big}"].rate / by[f"mix_{small}"].rate, 3)
    figures["ratio_cpu"] = round(by[f"mix_{big}"].cpu_rate / by[f"mix_{small}"].cpu_rate, 3)
    figures["ratio_cpu_with_timer"] = round(
        by[f"mix_{big}"].whole_cpu_rate / by[f"mix_{small}"].whole_cpu_rate, 3
    )
    figures["timer"] = timer
    figures["ratio_value_tests_only"] = round(
        by[f"value_{big}"].rate / by[f"value_{small}"].rate, 3
    )
    return figures


def targets(f: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    small, big = f["sizes"]
    return [
        (
            f"4: readings/s with {big:,} rules ÷ with {small}",
            f"{f['ratio']:.2f}",
            "≥ 0.8",
            verdict(f["ratio"] >= 0.8),
        )
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--minutes", type=int, default=30, help="simulated minutes timed")
    p.add_argument("--warmup", type=int, default=5, help="simulated minutes fed, not timed")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--no-timer",
        dest="timer",
        action="store_false",
        help="feed only, no AlertEngine.tick (the bench before 2026-12-06's 4th session)",
    )
    args = parse_with_full(p, "two simulated hours", minutes=120)
    print("bench 4: rules scaling", flush=True)
    f = run(args.minutes, args.warmup, seed=args.seed, timer=args.timer)
    settings = {
        **vars(args),
        "estate": "large",
        "per_delivery": PER_DELIVERY,
        "rule_mix": "the shipped defaults' reading rules (value / window / composite)",
        "small_set": "one rule per busiest (kind, metric), by reading volume",
        "big_set": "(kind, metric) drawn uniformly; thresholds beyond the fed values",
    }
    small, big = f["sizes"]
    print(f"  {f['readings_fed']:,} readings of the large estate; mix {f['mix']}")
    for mix in ("mix", "value"):
        for n in (small, big):
            name = f"{mix}_{n}"
            print(
                f"  {'default mix' if mix == 'mix' else 'value tests only':>16} {n:>5} rules: "
                f"{f[f'{name}_readings_per_s']:>10,} readings/s "
                f"(rules on {f[f'{name}_coverage']:.0%} of readings, {f[f'{name}_alarms']} alarms)"
            )
    print(
        f"  ratio {f['ratio']:.3f} (value tests only: {f['ratio_value_tests_only']:.3f}; "
        f"on the thread's CPU clock {f['ratio_cpu']:.3f}, "
        f"with the timer's CPU {f['ratio_cpu_with_timer']:.3f}; "
        f"timer {'on' if f['timer'] else 'off'})",
        flush=True,
    )
    report("rules-scaling", f, settings, targets(f))


if __name__ == "__main__":
    main()
