"""``estatewatch simulate --truth FILE`` through a real Mosquitto: the ledger has every fault
the scenario played, on the devices of the spec, and the winter storm's snowstorm levels at the
times the scenario states; and a simulated year places its weather in its seasons."""

from __future__ import annotations

import itertools
from datetime import datetime
from pathlib import Path

import pytest

from estatewatch.broker import ManagedMosquitto
from protocol.clock import SHANGHAI
from scoring.ledger import FAULT_EXPECT, read_ledger
from scoring.year import RANDOM_FAULTS, SEASONS, placed, season, year_scenario
from simulators.scenario import load_scenario
from simulators.spec import load_spec
from tests.gateway.test_simulate_cli import simulate

HOUR = 3_600_000
MIN = 60_000


@pytest.mark.integration
def test_simulate_writes_the_ground_truth(mosquitto: ManagedMosquitto, tmp_path: Path) -> None:
    truth = tmp_path / "truth.jsonl"
    run = simulate(
        mosquitto,
        tmp_path / "gw",
        *("--scenario", "winter-storm", "--speed", "7200", "--for", "9h"),
        *("--truth", str(truth)),
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "ground truth: " in run.stdout
    causes = read_ledger(truth)
    storm = load_scenario("winter-storm")
    assert storm.start_ms is not None
    faults = [c for c in causes if c.cause == "fault"]
    assert [(c.what, c.start_ms - storm.start_ms) for c in faults] == [
        (f.type, f.at_ms) for f in storm.faults
    ]
    devices = {d.id for d in load_spec("small").devices}
    for c in faults:
        assert c.device in devices and c.rules == FAULT_EXPECT[c.what][0]
        assert c.deadline_ms == c.start_ms + FAULT_EXPECT[c.what][1]
    snow = {c.level: c.start_ms - storm.start_ms for c in causes if c.what == "snowstorm"}
    for e in storm.expect:
        assert e.at_ms <= snow[e.level] <= e.at_ms + 2 * MIN, (e.level, snow)


def test_a_year_places_its_weather_in_season_and_faults_of_every_kind_apart() -> None:
    spec = load_spec("small")
    start = int(datetime(2025, 12, 5, tzinfo=SHANGHAI).timestamp() * 1000)
    end = start + 365 * 24 * HOUR
    year = year_scenario(spec, start, end, seed=3, faults_per_kind=2)
    snow_at = year.keyframes["snow_mm_h"][0]
    months = {datetime.fromtimestamp((start + a) / 1000, SHANGHAI).month for a in snow_at[1:]}
    assert months == {3, 11}  # the snowstorm in March and in November
    rain = year.cumulative_mm("rain_mm_h", year.keyframes["rain_mm_h"][0])
    assert rain.max() >= 50  # the July rainstorm: 54 mm in 3 h
    kinds = {f.type for f in year.faults}
    assert set(RANDOM_FAULTS) <= kinds
    assert "gateway_offline" in kinds  # replayed as the broker's Last Will and a late backlog
    ordered = sorted(year.faults, key=lambda f: f.at_ms)
    heating = [f for f in year.faults if f.type == "heating_failure"]
    for f in heating:
        month = datetime.fromtimestamp((start + f.at_ms) / 1000, SHANGHAI).month
        assert month in (11, 12, 1, 2, 3)
    assert all(f.at_ms > 0 and f.at_ms + f.duration_ms < end - start for f in ordered)
    # no two faults at once: each is scored on its own
    for a, b in itertools.pairwise(ordered):
        assert a.at_ms + a.duration_ms <= b.at_ms, (a, b)


def test_the_default_seasons_hold_januarys_cold_wave_and_aprils_sandstorm() -> None:
    """``make bench`` plays one season per climate; together they hold the cold wave, the
    March snowstorm and the April sandstorm (July's rainstorm and November's snowstorm are the
    year's)."""
    now = int(datetime(2026, 12, 5, tzinfo=SHANGHAI).timestamp() * 1000)
    held: dict[str, set[str]] = {}
    for name in SEASONS:
        start, end = season(name, now)
        assert end <= now and (end - start) / (24 * HOUR) <= 45
        held[name] = {sc.name for _, sc in placed(start, end)}
    assert "cold-wave" in held["hailar-small"]
    assert {"winter-storm", "spring-sandstorm"} <= held["small"]
