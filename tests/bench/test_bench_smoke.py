"""Benches 4-6 still run: each ``run()`` at a tiny size gives every figure, positive.

No performance target is asserted here (that is ``make bench``'s job, on a quiet machine);
nothing is recorded to bench/results/.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench import backlog_drain, query_cost, rules_scaling


def positive(figures: dict[str, Any], *names: str) -> None:
    for name in names:
        assert name in figures, f"figure {name!r} missing from {sorted(figures)}"
        assert figures[name] > 0, f"{name} = {figures[name]!r}"


def test_rules_scaling_runs_at_a_tiny_size() -> None:
    f = rules_scaling.run(minutes=1, warmup=1, sizes=(5, 50))
    positive(f, "readings_fed", "ratio", "ratio_value_tests_only")
    for mix in ("mix", "value"):
        for n in (5, 50):
            positive(f, f"{mix}_{n}_readings_per_s", f"{mix}_{n}_coverage")
    # The thresholds are set beyond every fed value: no value test fires.
    assert f["value_5_alarms"] == f["value_50_alarms"] == 0
    assert len(rules_scaling.targets(f)) == 1


def test_query_cost_runs_at_a_tiny_size() -> None:
    f = query_cost.run(days=1, repeats=2, n_per=1)
    positive(
        f,
        "readings_written",
        "rollup_1h_rows",
        "write_values_per_s",
        "rollup_values_per_s",
        "query_1d_ms",
        "query_30d_ms",
        "points_1d",
        "points_30d",
        "ratio",
    )
    assert (f["resolution_1d"], f["resolution_30d"]) == ("1m", "1h")
    assert len(query_cost.targets(f)) == 1


@pytest.mark.integration
def test_backlog_drain_runs_at_a_tiny_size() -> None:
    f = backlog_drain.run(rounds=1, hour_ms=5 * 60_000)
    positive(
        f,
        "readings_per_hour",
        "backlog_messages",
        "live_readings_per_s",
        "drain_readings_per_s",
        "live_messages_per_s",
        "drain_messages_per_s",
        "ratio",
    )
    assert len(backlog_drain.targets(f)) == 1


def test_memory_rows_only_for_the_levels_that_ran() -> None:
    """A one-level diagnosis must not report a 150 % ÷ 80 % ratio it never measured."""
    from bench import memory

    level = {"rss_mb_max": 250.0, "slope_mb_per_min": 0.5}
    one = memory.targets({"load_80pct": level})
    assert [r[0] for r in one] == ["3: RSS at 80 % load (slope)"]
    assert one[0][3] == "met"
    both = memory.targets(
        {"load_80pct": level, "load_150pct": {**level, "rss_mb_max": 600.0}, "lost_readings": 0}
    )
    assert both[1][1:] == ("2.40", "≤ 2, no crash, none lost", "MISSED")


def test_memory_settled_fit_leaves_the_warm_up_out_and_keeps_a_leak() -> None:
    """Bench 3's settled slope: a 20-s warm-up then a plateau reads flat; a steady leak does
    not hide in it."""
    from bench import memory

    warm_then_flat = [(float(t), 140 + 6 * t if t < 20 else 260.0 + (t % 2)) for t in range(300)]
    settled = memory._settled(warm_then_flat, 300)
    assert settled[0][0] == 30  # a tenth into the level at the earliest
    assert abs(memory._slope(settled)) < 0.1
    assert memory._noise(settled) < 1.0
    leak = [(float(t), 200 + t / 30) for t in range(300)]  # +2 MB/min all along
    assert abs(memory._slope(memory._settled(leak, 300)) - 2.0) < 0.01
