"""Bench 7's verdicts from the figures of a recorded season run (bench/results/): each target
of issue 11 judged as the README's table states it."""

from __future__ import annotations

from pathlib import Path

import orjson

from bench.alarm_truth import targets

RECORD = Path(__file__).parents[2] / "bench/results/20261205T231517Z-alarm-truth.json"
# the season before issue 11's domain corrections, for the verdicts it missed
BEFORE = Path(__file__).parents[2] / "bench/results/20261205T004308Z-alarm-truth.json"


def test_the_recorded_season_is_judged_as_the_readme_says() -> None:
    figures = orjson.loads(RECORD.read_bytes())["figures"]
    rows = {name: (measured, verdict) for name, measured, _target, verdict in targets(figures)}
    for climate in ("Hohhot", "Hailar"):
        assert rows[f"7 {climate}: recall, worst cause kind"][1] == "met"
        assert rows[f"7 {climate}: plan activations without cause"] == ("0", "met")
        assert rows[f"7 {climate}: alarms without cause"] == ("0 (0.00/estate-month)", "met")
        assert rows[f"7 {climate}: chattering / stale without cause"] == ("0 / 0", "met")
        assert rows[f"7 {climate}: alarms per 10 min outside emergencies"][1] == "met"
    # every fault kind, gateway outages included, in both climates
    for climate in ("Hohhot", "Hailar"):
        assert figures[climate]["causes"]["gateway_offline"]["recall"] == 1.0


def test_the_season_before_the_corrections_is_judged_missed() -> None:
    figures = orjson.loads(BEFORE.read_bytes())["figures"]
    rows = {name: (measured, verdict) for name, measured, _target, verdict in targets(figures)}
    assert rows["7 Hohhot: alarms without cause"] == ("1 (1.43/estate-month)", "MISSED")
    assert rows["7 Hailar: plan activations without cause"] == ("20", "MISSED")
    assert rows["7 Hailar: chattering / stale without cause"] == ("0 / 1", "MISSED")
    # a climate that did not run has no rows
    assert targets({"full": False}) == []
