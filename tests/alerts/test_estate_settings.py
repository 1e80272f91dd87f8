"""Each estate's own settings in the engine (issue 11): the heating season of its zone (or its
own), floor heating's thresholds, heating pressure and supply–return difference."""

from __future__ import annotations

import datetime as dt

import pytest

from alerts.zones import EstateProfile, load_zones, parse_season
from ingest.state import StateStore
from tests.alerts.conftest import HOUR, MINUTE, EngineFactory, SimClock, Site

ZONES = load_zones()


def at(date: str) -> int:
    return int(dt.datetime.fromisoformat(date + "T12:00:00+08:00").timestamp() * 1000)


def test_seasons_of_the_bundled_zones() -> None:
    hohhot, hailar = ZONES["hohhot"].heating_season, ZONES["hulunbuir"].heating_season
    assert not hohhot.contains(at("2026-10-14")) and hohhot.contains(at("2026-10-15"))
    assert hohhot.contains(at("2027-04-15")) and not hohhot.contains(at("2027-04-16"))
    assert hailar.contains(at("2026-09-20")) and hailar.contains(at("2027-05-10"))
    assert not hailar.contains(at("2026-07-01"))
    # an estate's own season wins over its zone's; none known: heating rules always apply
    own = EstateProfile.of(ZONES, "hohhot", "11-01/03-31")
    assert not own.in_heating_season(at("2026-10-20"))
    assert EstateProfile().in_heating_season(at("2026-07-01"))
    with pytest.raises(ValueError, match="MM-DD/MM-DD"):
        parse_season("October to April")
    with pytest.raises(ValueError, match="no date"):
        parse_season("02-30/04-15")


@pytest.fixture
def estates(sqlite_url: str) -> StateStore:
    state = StateStore.open(sqlite_url)
    state.add_estate("e1", "新华", "呼和浩特市", zone="hohhot")
    state.add_estate("e2", "北苑", "呼伦贝尔市", zone="hulunbuir")
    return state


def cold_rooms(engine_site: Site, hours: int) -> None:
    for _ in range(hours * 12):
        engine_site.reading("room-1", "room_temp", temp_c=15.0)
        engine_site.engine.tick()
        engine_site.clock.advance(5 * MINUTE)


def test_room_temperature_rule_only_inside_the_heating_season(
    make_engine: EngineFactory, sqlite_url: str, clock: SimClock, estates: StateStore
) -> None:
    """15 °C in a room in July is summer, not a heating failure; on 20 September it is one in
    Hailar (season from 15 September) and still not in Hohhot (from 15 October)."""
    clock.now = at("2026-07-01")
    engine = make_engine(sqlite_url)
    hohhot, hailar = Site(engine, clock, "e1"), Site(engine, clock, "e2")
    for site in (hohhot, hailar):
        cold_rooms(site, 3)
        assert site.open_alarms("room-temp-low") == []
    clock.now = at("2026-09-20")
    cold_rooms(hohhot, 3)
    cold_rooms(hailar, 3)
    assert hohhot.open_alarms("room-temp-low") == []
    (alarm,) = hailar.open_alarms("room-temp-low")
    assert alarm["state"] == "firing"
    plans = {(a["estate"], a["plan"]) for a in engine.list_activations()}
    assert ("e2", "heating_failure") in plans and ("e1", "heating_failure") not in plans


def test_floor_heating_has_its_own_band_and_the_loop_is_watched(
    make_engine: EngineFactory, sqlite_url: str, clock: SimClock, estates: StateStore
) -> None:
    clock.now = at("2027-01-10")
    site = Site(make_engine(sqlite_url), clock, "e1")
    normal = {"return_temp_c": 34.0, "supply_pressure_mpa": 0.4, "return_pressure_mpa": 0.3}
    # 40 °C is a normal floor-heating supply, but a radiator supply of 40 °C would be low-ish
    for _ in range(40):
        site.reading(
            "fh-1", "floor_heating", supply_temp_c=40.0, supply_return_diff_c=6.0, **normal
        )
        clock.advance(MINUTE)
        site.engine.tick()
    assert site.open_alarms() == []
    for _ in range(40):
        site.reading(
            "fh-1", "floor_heating", supply_temp_c=48.0, supply_return_diff_c=6.0, **normal
        )
        clock.advance(MINUTE)
        site.engine.tick()
    assert [a["rule"] for a in site.open_alarms()] == ["floor-heating-supply-hot"]
    # a radiator loop whose supply and return are the same: the water does not circulate
    for _ in range(70):
        site.reading(
            "hs-1",
            "heating_station",
            supply_temp_c=60.0,
            return_temp_c=59.0,
            supply_return_diff_c=1.0,
            supply_pressure_mpa=0.6,
            return_pressure_mpa=0.35,
        )
        clock.advance(MINUTE)
        site.engine.tick()
    assert "heating-delta-t-small" in [a["rule"] for a in site.open_alarms()]
    # the loop loses its pressure: a leak
    for _ in range(10):
        site.reading("hs-1", "heating_station", supply_pressure_mpa=0.1)
        clock.advance(MINUTE)
        site.engine.tick()
    assert "heating-supply-pressure-low" in [a["rule"] for a in site.open_alarms()]
    assert clock.now - at("2027-01-10") < 3 * HOUR


def test_heating_alarms_open_at_the_seasons_end_are_resolved(
    make_engine: EngineFactory, sqlite_url: str, clock: SimClock, estates: StateStore
) -> None:
    """A room below 18 °C on 15 April stays cold once the heating is off on the 16th: the
    alarm is resolved by the season's end, not left standing all summer."""
    clock.now = at("2027-04-15") + 6 * HOUR  # 18:00 on the last day
    site = Site(make_engine(sqlite_url), clock, "e1")
    cold_rooms(site, 3)
    (alarm,) = site.open_alarms("room-temp-low")
    cold_rooms(site, 4)  # past midnight: 16 April, out of season
    assert site.open_alarms("room-temp-low") == []
    timeline = site.engine.get_alarm(alarm["id"])["timeline"]
    assert timeline[-1]["action"] == "resolved" and "heating season over" in str(timeline[-1])
