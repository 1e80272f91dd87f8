"""Weather levels from what a simulated station reports, scenario by scenario (issue 11):
the criteria of cma.yaml over real windows of simulator readings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from alerts.weather import Hazard, WeatherLevel, load_criteria
from alerts.window_bank import WindowBank
from alerts.windows import Aggregate
from protocol.catalog import default_catalog
from protocol.messages import Reading
from simulators.estate import SimulatedEstate
from simulators.scenario import load_scenario
from simulators.spec import load_spec

CRITERIA = load_criteria()
CAT = default_catalog()
HOUR = 3_600_000
MIN = 60_000


@pytest.fixture
def station_spec(tmp_path: Path) -> Path:
    path = tmp_path / "ws.toml"
    path.write_text('[estate]\nid = "ws-estate"\n[plant]\nweather_station = 1\n')
    return path


def levels_over(readings: list[Reading], zone: str = "") -> dict[Hazard, list[WeatherLevel]]:
    """Each hazard's observed level at every station reading, in time order."""
    bank = WindowBank()
    bank.retrack(CRITERIA.window_needs())
    out: dict[Hazard, list[WeatherLevel]] = {h: [] for h in Hazard}
    for r in sorted(readings, key=lambda r: r.ts):
        bank.observe("e", r.dev, dict(r.metrics), r.ts, r.kind)

        def value_of(metric: str, agg: Aggregate, r: Reading = r) -> float | None:
            return bank.value("e", r.dev, metric, agg, r.ts)

        for h, obs in CRITERIA.levels(value_of, zone).items():
            out[h].append(obs.level)
    return out


def station_readings(spec: Path, scenario_name: str, hours: float | None = None) -> list[Reading]:
    scenario = replace(load_scenario(scenario_name), faults=())
    start = scenario.start_ms
    assert start is not None
    sim = SimulatedEstate(load_spec(spec), CAT, 1, start, scenario)
    end = start + int(hours * HOUR if hours else scenario.duration_ms or HOUR)
    return [r for r in sim.advance(end).readings if r.kind == "weather_station"]


def test_winter_storm_raises_no_sandstorm_level(station_spec: Path) -> None:
    """Snow brings visibility under 1,000 m: that is no sandstorm (humid air, precipitation)."""
    got = levels_over(station_readings(station_spec, "winter-storm"))
    assert max(got[Hazard.SANDSTORM]) is WeatherLevel.NONE
    assert max(got[Hazard.SNOWSTORM]) is WeatherLevel.ORANGE


def test_a_spring_sandstorm_is_still_one(station_spec: Path) -> None:
    got = levels_over(station_readings(station_spec, "spring-sandstorm"))
    assert max(got[Hazard.SANDSTORM]) is WeatherLevel.ORANGE


def test_one_gust_gives_no_day_of_blue() -> None:
    """A single force-7 gust, then calm: blue for the look-back (3 h), not 24 h."""
    t0 = 1_768_003_200_000
    readings = [
        Reading(
            "ws-1",
            "weather_station",
            t0 + i * MIN,
            {"wind_speed_ms": 3.0, "wind_gust_ms": 15.0 if i == 10 else 5.0, "temp_c": -5.0},
        )
        for i in range(24 * 60)
    ]
    wind = levels_over(readings)[Hazard.STRONG_WIND]
    blue = [i for i, lv in enumerate(wind) if lv is WeatherLevel.BLUE]
    assert blue[0] == 10
    assert len(blue) == 3 * 60  # the gust lies in the 3 h window, then it is over
    assert max(wind[13 * 60 :]) is WeatherLevel.NONE
