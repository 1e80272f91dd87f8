"""Simulated climate against REFERENCE.md §6 (issue 11): the daily minimum near sunrise, cold
spells below the seasonal cycle, heating seasons per climate, a winter storm that fits its
month and the Hailar extreme cold."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from protocol.catalog import default_catalog
from simulators.estate import SimulatedEstate
from simulators.models import DAY, HOUR, Context
from simulators.scenario import load_scenario
from simulators.spec import load_spec

CAT = default_catalog()
SHANGHAI = dt.timezone(dt.timedelta(hours=8))


def ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=SHANGHAI).timestamp() * 1000)


def context(spec: str, start: str, scenario: str = "quiet-day") -> Context:
    return Context(
        np.random.default_rng(1), load_spec(spec).climate, load_scenario(scenario), ms(start), []
    )


def test_a_winter_night_is_coldest_about_0730() -> None:
    ctx = context("small", "2027-01-20T00:00")
    t = np.arange(ms("2027-01-20T00:00"), ms("2027-01-21T00:00"), 60_000, dtype=np.int64)
    coldest = ctx.hour(t[np.argmin(ctx.outdoor(t))])
    assert 7.0 <= float(coldest) <= 8.0
    # and the afternoon the warmest, as before
    assert 14.0 <= float(ctx.hour(t[np.argmax(ctx.outdoor(t))])) <= 16.0


@pytest.mark.parametrize(("spec", "low"), [("small", -30.0), ("hailar-small", -42.0)])
def test_a_cold_winter_reaches_the_regions_extremes(spec: str, low: float) -> None:
    """Below the sinusoid: Hohhot to −30 °C, Hailar to −42 °C (REFERENCE.md §6)."""
    ctx = context(spec, "2026-11-01T00:00")
    t = np.arange(ms("2026-11-01T00:00"), ms("2027-03-31T00:00"), 10 * 60_000, dtype=np.int64)
    out = ctx.outdoor(t)
    climate = load_spec(spec).climate
    cycle_low = climate.january_mean_c - 0.5 * climate.diurnal_range_c
    assert out.min() == pytest.approx(low, abs=1.0)
    assert out.min() < cycle_low - 8  # well below what the seasonal cycle alone gives
    # spells are winter's: a July with no spell in it
    summer = np.arange(ms("2027-07-01T00:00"), ms("2027-07-31T00:00"), HOUR, dtype=np.int64)
    assert np.all(ctx.cold_spells(summer) == 0.0)


def test_heating_follows_each_climates_season(tmp_path: Path) -> None:
    """20 September: Hailar's heating runs (from 15 September), Hohhot's not yet (15 October)."""
    got = {}
    for spec in ("small", "hailar-small"):
        sim = SimulatedEstate(
            load_spec(spec), CAT, 1, ms("2026-09-20T10:00"), load_scenario("quiet-day")
        )
        out = sim.advance(ms("2026-09-20T10:00") + 10 * 60_000)
        got[spec] = max(
            float(r.metrics["supply_temp_c"]) for r in out.readings if r.kind == "heating_station"
        )
    assert got["hailar-small"] >= 40.0
    assert got["small"] < 30.0


def test_floor_heated_buildings_get_their_unit() -> None:
    spec = load_spec("hohhot-typical")
    units = [d for d in spec.devices if d.kind == "floor_heating"]
    assert len(units) == 5 and all(d.building > 0 for d in units)
    assert spec.zone == "hohhot"


def test_winter_storm_fits_its_month() -> None:
    """Heavy snow in spring, at a few degrees below zero (a Hohhot January is dry)."""
    scenario = replace(load_scenario("winter-storm"), faults=())
    assert scenario.start_ms is not None
    start = dt.datetime.fromtimestamp(scenario.start_ms / 1000, SHANGHAI)
    assert start.month in (3, 4, 10, 11)
    ctx = Context(
        np.random.default_rng(1), load_spec("small").climate, scenario, scenario.start_ms, []
    )
    t = np.arange(scenario.start_ms, scenario.start_ms + 12 * HOUR, 10 * 60_000, dtype=np.int64)
    snowing = ctx.weather("snow_mm_h", t) > 0
    temps = ctx.outdoor(t)[snowing]
    assert temps.min() >= -12.0 and temps.max() <= 0.5


def test_hailar_extreme_cold_scenario(tmp_path: Path) -> None:
    path = tmp_path / "ws.toml"
    path.write_text(
        '[estate]\nid = "ws"\nzone = "hulunbuir"\n[climate]\njanuary_mean_c = -25.0\n'
        "july_mean_c = 20.5\n[plant]\nweather_station = 1\nfire_water_tank = 1\n"
    )
    scenario = load_scenario("hailar-extreme-cold")
    assert scenario.start_ms is not None and scenario.duration_ms == 3 * DAY
    sim = SimulatedEstate(load_spec(path), CAT, 1, scenario.start_ms, scenario)
    out = sim.advance(scenario.start_ms + 3 * int(DAY))
    air = [float(r.metrics["temp_c"]) for r in out.readings if r.kind == "weather_station"]
    assert -43.5 <= min(air) <= -40.0  # 极寒 in Hulunbuir
    assert (
        max(float(r.metrics["wind_speed_ms"]) for r in out.readings if r.kind == "weather_station")
        < 8.0
    )
    tank = [float(r.metrics["temp_c"]) for r in out.readings if r.kind == "fire_water_tank"]
    assert min(tank) > 5.0  # a heated pump room holds, so no false freeze alarm


def test_the_heating_curve_stops_below_the_supply_alarm() -> None:
    """A −40 °C Hailar night: the curve's top (80 °C) with its sensor noise stays clear of the
    85 °C `heating-supply-hot` limit (it was clipped at exactly 85 °C and crossed it)."""
    spec = load_spec("hailar-small")
    scenario = load_scenario("hailar-extreme-cold")
    assert scenario.start_ms is not None
    sim = SimulatedEstate(spec, CAT, 3, scenario.start_ms, scenario)
    out = sim.advance(scenario.start_ms + int(DAY))
    supply = [
        float(r.metrics["supply_temp_c"]) for r in out.readings if r.kind == "heating_station"
    ]
    assert max(supply) > 78.0  # the coldest night runs the curve at its top
    assert max(supply) < 83.0
