"""Weather levels by the CMA table of REFERENCE.md §1: every row, at and just past each
boundary, and the wind-force scale (GB/T 28591-2012)."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerts.datafile import DataFileError
from alerts.weather import (
    BUNDLED_CRITERIA,
    Hazard,
    OfficialWarning,
    WeatherBoard,
    WeatherLevel,
    load_criteria,
)
from alerts.weather.levels import Criteria, check_criteria
from alerts.windows import Aggregate
from protocol.catalog import default_catalog

B, Y, O, R, N = (  # noqa: E741 - blue, yellow, orange, red, none
    WeatherLevel.BLUE,
    WeatherLevel.YELLOW,
    WeatherLevel.ORANGE,
    WeatherLevel.RED,
    WeatherLevel.NONE,
)

CRITERIA = load_criteria()

# The lower bound (m/s) of each wind force from 5 to 17, as REFERENCE.md gives them.
WIND_FORCE_FLOORS = (8.0, 10.8, 13.9, 17.2, 20.8, 24.5, 28.5, 32.7, 37.0, 41.5, 46.2, 51.0, 56.1)
# (speed m/s, force): each lower bound, and the speed just under it.
WIND_SCALE = [
    (0.0, 0),
    *((floor, force) for force, floor in enumerate(WIND_FORCE_FLOORS, start=5)),
    *(
        (round(floor - 0.01, 2), force - 1)
        for force, floor in enumerate(WIND_FORCE_FLOORS, start=5)
    ),
    (75.0, 17),
]


@pytest.mark.parametrize(("speed", "force"), WIND_SCALE)
def test_wind_force_scale(speed: float, force: int) -> None:
    assert CRITERIA.wind_force(speed) == force


def level(criteria: Criteria, hazard: Hazard, zone: str = "", **values: float) -> WeatherLevel:
    """The level of one hazard given aggregates named like ``snow_mm__sum__12h``."""
    table = {k.replace("__", "."): v for k, v in values.items()}

    def value_of(metric: str, agg: Aggregate) -> float | None:
        return table.get(agg.key(metric))

    return criteria.hazards[hazard].level(value_of, zone).level


def snow(s6: float, s12: float, s1: float = 0.1) -> dict[str, float]:
    """Sums over 6 h and 12 h; ``s1``: fallen in the last hour (0: the snow has stopped)."""
    return {"snow_mm__sum__6h": s6, "snow_mm__sum__12h": s12, "snow_mm__sum__1h": s1}


SNOWSTORM = [
    (snow(0, 4.0), B), (snow(0, 3.99), N),
    (snow(0, 6.0), Y), (snow(0, 5.99), B),
    (snow(10.0, 10.0), O), (snow(9.99, 9.99), Y),
    (snow(15.0, 15.0), R), (snow(14.99, 14.99), O),
    # (issue 11) observed, the level lasts while it snows: none an hour after the last flake
    (snow(15.0, 15.0, s1=0.0), N), (snow(0, 6.0, s1=0.0), N),
]  # fmt: skip


def rain(r3: float, r6: float, r12: float, r1: float = 0.1) -> dict[str, float]:
    return {
        "rain_mm__sum__3h": r3,
        "rain_mm__sum__6h": r6,
        "rain_mm__sum__12h": r12,
        "rain_mm__sum__1h": r1,
    }


RAINSTORM = [
    (rain(0, 0, 50.0), B), (rain(0, 0, 49.99), N),
    (rain(0, 50.0, 50.0), Y), (rain(0, 49.99, 50.0), B),
    (rain(50.0, 50.0, 50.0), O), (rain(49.99, 50.0, 50.0), Y),
    (rain(100.0, 100.0, 100.0), R), (rain(99.99, 100.0, 100.0), O),
    (rain(100.0, 100.0, 100.0, r1=0.0), N),  # (issue 11) the rain has stopped
]  # fmt: skip


def wind(within_h: int, mean: float, gust: float) -> dict[str, float]:
    """Winds observed within the last ``within_h`` hours (so in every longer window too)."""
    return {
        f"wind_{m}_ms__max__{h}h": v
        for h in (1, 3)
        if h >= within_h
        for m, v in (("speed", mean), ("gust", gust))
    }


STRONG_WIND = [
    (wind(3, 10.8, 0), B), (wind(3, 10.79, 0), N),  # mean force 6
    (wind(3, 0, 13.9), B), (wind(3, 0, 13.89), N),  # gust force 7
    (wind(3, 17.2, 0), Y), (wind(3, 17.19, 0), B),  # mean 8
    (wind(3, 0, 20.8), Y), (wind(3, 0, 20.79), B),  # gust 9
    (wind(1, 24.5, 0), O), (wind(1, 24.49, 0), Y),  # mean 10
    (wind(1, 0, 28.5), O), (wind(1, 0, 28.49), Y),  # gust 11
    (wind(1, 32.7, 0), R), (wind(1, 32.69, 0), O),  # mean 12
    (wind(1, 0, 37.0), R), (wind(1, 0, 36.99), O),  # gust 13
    (wind(3, 32.7, 37.0), Y),  # a storm 2 h ago is yellow now: orange and red look back 1 h
    # (issue 11) a gust 4 h ago is over: it gives no 24 h of blue
    (wind(4, 32.7, 37.0), N),
]  # fmt: skip


def cold(fall24: float, fall48: float, tmin: float, wind_ms: float) -> dict[str, float]:
    return {
        "temp_c__min_fall__24h": fall24,
        "temp_c__min_fall__48h": fall48,
        "temp_c__min__24h": tmin,
        "wind_speed_ms__max__24h": wind_ms,
        "wind_speed_ms__max__48h": wind_ms,
    }


COLD_WAVE = [
    # blue: Tmin falls ≥ 8 °C in 48 h, Tmin ≤ 4 °C, mean wind force ≥ 5 (8.0 m/s)
    (cold(0, 8.0, 4.0, 8.0), B), (cold(0, 7.99, 4.0, 8.0), N),
    (cold(0, 8.0, 4.01, 8.0), N), (cold(0, 8.0, 4.0, 7.99), N),
    # yellow: falls ≥ 10 °C in 24 h, Tmin ≤ 4 °C, wind ≥ 6 (10.8 m/s)
    (cold(10.0, 10.0, 4.0, 10.8), Y), (cold(9.99, 9.99, 4.0, 10.8), B),
    (cold(10.0, 10.0, 4.0, 10.79), B),
    # orange: falls ≥ 12 °C in 24 h, Tmin ≤ 0 °C, wind ≥ 6
    (cold(12.0, 12.0, 0.0, 10.8), O), (cold(11.99, 11.99, 0.0, 10.8), Y),
    (cold(12.0, 12.0, 0.01, 10.8), Y),
    # red: falls ≥ 16 °C in 24 h, Tmin ≤ 0 °C, wind ≥ 6
    (cold(16.0, 16.0, 0.0, 10.8), R), (cold(15.99, 15.99, 0.0, 10.8), O),
    (cold(16.0, 16.0, 0.0, 10.79), B),  # the wind decides: force 5 only reaches blue
]  # fmt: skip


def vis(
    v1: float,
    v3: float,
    rh: float = 20.0,
    wind_ms: float = 12.0,
    snow: float = 0.0,
    rain: float = 0.0,
    pm10: float | None = None,
) -> dict[str, float]:
    """Visibility over the last 1 h and 3 h, with the air it came with (the same in both
    windows): dry, windy and without precipitation unless told otherwise."""
    out = {"visibility_m__min__1h": v1, "visibility_m__min__3h": v3}
    for h in (1, 3):
        out[f"humidity_pct__max__{h}h"] = rh
        out[f"wind_speed_ms__max__{h}h"] = wind_ms
        out[f"snow_mm__sum__{h}h"] = snow
        out[f"rain_mm__sum__{h}h"] = rain
        if pm10 is not None:
            out[f"pm10_ugm3__max__{h}h"] = pm10
    return out


SANDSTORM = [
    (vis(10_000, 999.9), Y), (vis(10_000, 1000.0), N),  # no blue signal for sandstorms
    (vis(499.9, 499.9), O), (vis(500.0, 500.0), Y),
    (vis(49.9, 49.9), R), (vis(50.0, 50.0), O),
    # (issue 11) dust, not low visibility: fog, snow and blowing snow are no sandstorm
    (vis(300, 300, rh=95.0, wind_ms=2.0), N),  # fog
    (vis(300, 300, rh=69.9), O), (vis(300, 300, rh=70.0), N),  # dry air: RH below 70 %
    (vis(300, 300, snow=0.2), N),  # snow
    (vis(300, 300, rain=0.1), N),
    (vis(300, 300, wind_ms=7.99), N), (vis(300, 300, wind_ms=8.0), O),  # wind force 5
    # a PM10 reading settles it whatever the air
    (vis(300, 300, rh=95.0, wind_ms=2.0, pm10=1000.0), O),
    (vis(300, 300, rh=95.0, wind_ms=2.0, pm10=999.0), N),
]  # fmt: skip


def icing(
    within_h: int, road: float, precip: str = "snow", amount: float = 0.2
) -> dict[str, float]:
    out: dict[str, float] = {}
    for h in (2, 6, 12):
        seen = h >= within_h
        out[f"road_temp_c__min__{h}h"] = road if seen else 5.0
        out[f"snow_mm__sum__{h}h"] = amount if seen and precip == "snow" else 0.0
        out[f"rain_mm__sum__{h}h"] = amount if seen and precip == "rain" else 0.0
    return out


ROAD_ICING = [
    (icing(12, -0.1, "rain"), Y), (icing(12, 0.0, "rain"), N),
    (icing(12, -0.1, "rain", amount=0.0), N),
    (icing(6, -0.1, "rain"), O), (icing(2, -3.0, "rain"), O),
    (icing(2, 0.0, "rain"), N),
    # (issue 11) snow on a frozen road counts, but a station's level stops at yellow for snow
    # and orange for freezing rain (red comes from an official warning only)
    (icing(12, -0.1), Y), (icing(2, -5.0), Y), (icing(2, -5.0, amount=0.05), N),
]  # fmt: skip


def tmin(v: float) -> dict[str, float]:
    return {"temp_c__min__24h": v}


LOW_TEMPERATURE = [
    # (issue 11) by the zone the estate names; none named, no level (no Henan default)
    ("", tmin(-40.0), N), ("内蒙古自治区呼伦贝尔市海拉尔区", tmin(-40.0), N),
    ("hulunbuir", tmin(-30.0), B), ("hulunbuir", tmin(-29.99), N),
    ("hulunbuir", tmin(-35.0), Y), ("hulunbuir", tmin(-40.0), O),
    ("hohhot", tmin(-20.0), B), ("hohhot", tmin(-19.99), N), ("hohhot", tmin(-30.0), O),
    ("baotou", tmin(-25.0), Y), ("xilingol", tmin(-25.0), B), ("xilingol", tmin(-35.0), O),
]  # fmt: skip


@pytest.mark.parametrize(
    ("hazard", "values", "expected"),
    [
        *((Hazard.SNOWSTORM, v, e) for v, e in SNOWSTORM),
        *((Hazard.RAINSTORM, v, e) for v, e in RAINSTORM),
        *((Hazard.STRONG_WIND, v, e) for v, e in STRONG_WIND),
        *((Hazard.COLD_WAVE, v, e) for v, e in COLD_WAVE),
        *((Hazard.SANDSTORM, v, e) for v, e in SANDSTORM),
        *((Hazard.ROAD_ICING, v, e) for v, e in ROAD_ICING),
    ],
)
def test_cma_table(hazard: Hazard, values: dict[str, float], expected: WeatherLevel) -> None:
    assert level(CRITERIA, hazard, **values) is expected


@pytest.mark.parametrize(("zone", "values", "expected"), LOW_TEMPERATURE)
def test_low_temperature_thresholds_per_zone(
    zone: str, values: dict[str, float], expected: WeatherLevel
) -> None:
    assert level(CRITERIA, Hazard.LOW_TEMPERATURE, zone, **values) is expected


def test_unknown_aggregates_give_no_level() -> None:
    assert level(CRITERIA, Hazard.SNOWSTORM) is N
    assert level(CRITERIA, Hazard.COLD_WAVE, temp_c__min__24h=-30.0) is N


def test_evidence_names_the_aggregate_and_its_value() -> None:
    table = {"snow_mm.sum.12h": 6.5, "snow_mm.sum.6h": 2.0, "snow_mm.sum.1h": 0.5}
    obs = CRITERIA.hazards[Hazard.SNOWSTORM].level(lambda m, a: table.get(a.key(m)))
    assert obs.level is Y
    assert obs.evidence == (
        {
            "metric": "snow_mm",
            "aggregate": "sum",
            "window": "12h",
            "value": 6.5,
            "test": "sum(snow_mm, 12h) ≥ 6",
        },
        {  # (issue 11) and it is still snowing
            "metric": "snow_mm",
            "aggregate": "sum",
            "window": "1h",
            "value": 0.5,
            "test": "sum(snow_mm, 1h) > 0",
        },
    )


def test_warning_levels_parse_in_colours_chinese_and_roman() -> None:
    assert WeatherLevel.parse("blue") is B
    assert WeatherLevel.parse("橙色") is O
    assert WeatherLevel.parse("Ⅰ") is R
    assert WeatherLevel.parse("iii") is Y
    with pytest.raises(ValueError, match="unknown warning level"):
        WeatherLevel.parse("purple")


def test_estate_level_is_the_higher_of_observed_and_official() -> None:
    board = WeatherBoard(CRITERIA)
    table = {"snow_mm.sum.12h": 4.5, "snow_mm.sum.1h": 0.3}  # still snowing
    board.observe_station("e1", "ws-01", lambda m, a: table.get(a.key(m)), "")
    board.add_warning(
        OfficialWarning(
            "w1", Hazard.SNOWSTORM, O, issued_ms=1000, expires_ms=5000, region="呼和浩特"
        )
    )
    during = board.estate_levels("e1", "内蒙古呼和浩特市", now=2000)[Hazard.SNOWSTORM]
    assert (during.observed, during.official, during.level) == (B, O, O)
    assert during.warning == "w1" and during.station == "ws-01"
    after = board.estate_levels("e1", "内蒙古呼和浩特市", now=5000)[Hazard.SNOWSTORM]
    assert (after.official, after.level) == (N, B)
    elsewhere = board.estate_levels("e2", "包头市", now=2000)[Hazard.SNOWSTORM]
    assert elsewhere.level is N


def test_a_warning_must_cover_something_and_end_after_it_starts() -> None:
    with pytest.raises(ValueError, match="estates or a region"):
        OfficialWarning("w", Hazard.SANDSTORM, Y, 1, 2)
    with pytest.raises(ValueError, match="expire after"):
        OfficialWarning("w", Hazard.SANDSTORM, Y, 2, 2, estates=("e1",))


def test_criteria_must_use_metrics_the_station_reports(tmp_path: Path) -> None:
    text = BUNDLED_CRITERIA.read_text(encoding="utf-8").replace(
        "metric: snow_mm,", "metric: snow_cm,"
    )
    path = tmp_path / "cma.yaml"
    path.write_text(text, encoding="utf-8")
    kinds = {k: list(v.metrics) for k, v in default_catalog().kinds.items()}
    check_criteria(CRITERIA, kinds, "bundled")
    with pytest.raises(DataFileError, match="reports no snow_cm"):
        check_criteria(load_criteria(path), kinds, str(path))
