"""The simulated estate: specs, signals, determinism, faults and commands (no broker)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from protocol.catalog import default_catalog
from protocol.messages import (
    Command,
    Reading,
    decode_events,
    decode_telemetry,
    encode_events,
    encode_telemetry,
)
from simulators.adapter import SimulatorAdapter
from simulators.clock import SimClock
from simulators.estate import SimulatedEstate
from simulators.scenario import Scenario, load_scenario
from simulators.spec import SpecError, load_spec, small_estate

CAT = default_catalog()
T0 = 1_764_316_800_000  # 2025-11-28 16:00 Asia/Shanghai
HOUR = 3_600_000
FAMILIES = {"fire", "ebike", "elevator", "water", "power", "gas", "heating", "telecom", "weather"}


@pytest.fixture
def weather_only(tmp_path: Path) -> Path:
    """An estate of one weather station: weather scenarios play in a blink."""
    path = tmp_path / "ws.toml"
    path.write_text('[estate]\nid = "ws-estate"\n[plant]\nweather_station = 1\n')
    return path


def play(spec_name: str | Path, scenario: Scenario, seed: int = 1, hours: float | None = None):  # type: ignore[no-untyped-def]
    spec = load_spec(spec_name)
    start = scenario.start_ms or T0
    sim = SimulatedEstate(spec, CAT, seed, start, scenario)
    end = start + int((hours * HOUR) if hours else (scenario.duration_ms or HOUR))
    return sim, sim.advance(end)


@pytest.mark.parametrize(
    ("name", "lo", "hi", "elevators", "sockets"),
    [
        ("small", 40, 60, None, None),
        ("hailar-small", 40, 60, None, None),
        ("hohhot-typical", 450, 600, 30, 200),
        ("large", 4500, 5500, None, None),
    ],
)
def test_bundled_specs_have_the_promised_size_and_every_family(
    name: str, lo: int, hi: int, elevators: int | None, sockets: int | None
) -> None:
    spec = load_spec(name)
    assert lo <= len(spec.devices) <= hi
    assert len({d.id for d in spec.devices}) == len(spec.devices)
    assert {CAT.kinds[k].family for k in spec.kinds()} >= FAMILIES
    if elevators:
        assert spec.kinds()["elevator"] == elevators
        assert spec.kinds()["ebike_charger"] == sockets
        assert max(d.building for d in spec.devices) == 20


def test_readings_of_every_scenario_pass_the_contract() -> None:
    for name in ("quiet-day", "winter-storm", "cold-wave", "spring-sandstorm", "faults"):
        scenario = load_scenario(name)
        sim, got = play("small", scenario, hours=2)
        assert {r.dev for r in got.readings} == {d.id for d in sim.spec.devices}
        now = sim.now_ms + 1000
        for i in range(0, len(got.readings), 5000):
            payload = encode_telemetry("gw-01", 1, now, got.readings[i : i + 5000])
            assert decode_telemetry(payload, "gw-01", now, CAT).rejects == [], name
        if got.events:
            decoded = decode_events(encode_events("gw-01", 1, now, got.events), "gw-01", now, CAT)
            assert decoded.rejects == [] and len(decoded.events) == len(got.events), name


def test_devices_report_at_their_catalog_interval() -> None:
    spec = small_estate("e1", "E1", "r", -11.0, buildings=1)
    sim = SimulatedEstate(spec, CAT, seed=3, start_ms=T0)
    counts: dict[str, int] = {}
    for step in range(0, HOUR + 1, 1000):
        for r in sim.due(T0 + step):
            counts[r.kind] = counts.get(r.kind, 0) + 1
    assert set(counts) == set(spec.kinds())
    for kind, n in counts.items():
        per_device = n / spec.kinds()[kind]
        assert abs(per_device - 3600 / CAT.kinds[kind].interval_s) <= 1.5, kind


def test_same_seed_and_scenario_give_identical_readings_however_time_is_stepped() -> None:
    scenario = load_scenario("faults")
    spec = load_spec("small")
    start = scenario.start_ms
    assert start is not None

    def run(seed: int, steps_ms: list[int]) -> tuple[list[Reading], list[object]]:
        sim = SimulatedEstate(spec, CAT, seed, start, scenario)
        readings, events = [], []
        now = start
        for step in itertools.cycle(steps_ms):
            now = min(now + step, start + 3 * HOUR)
            got = sim.advance(now)
            readings += got.readings
            events += got.events
            if now == start + 3 * HOUR:
                return readings, events

    a = run(42, [1000])
    b = run(42, [7_300, 61_000, 250, 900_000])  # an uneven real-time rhythm, same sim time
    c = run(43, [60_000])
    assert a == b
    assert len(a[0]) > 5000 and len(a[1]) >= 6
    assert a[0] != c[0]


def window_sums(ts: np.ndarray, mm: np.ndarray, hours: int) -> np.ndarray:
    """At each reading: the amount that fell in the window of ``hours`` ending with it."""
    cum = np.cumsum(mm)
    first = np.searchsorted(ts, ts - hours * HOUR, side="right")
    before = np.where(first > 0, cum[np.maximum(first - 1, 0)], 0.0)
    return cum - before


def test_winter_storm_crosses_the_snowstorm_thresholds_when_its_file_says(
    weather_only: Path,
) -> None:
    """REFERENCE.md §1: blue ≥ 4 mm / 12 h, yellow ≥ 6 mm / 12 h, orange ≥ 10 mm / 6 h."""
    scenario = replace(load_scenario("winter-storm"), faults=())  # the weather alone
    assert scenario.start_ms is not None
    # Played as `--speed 60` does: a clock 60 times real time, polled at an uneven rhythm.
    real = [0.0]
    sim = SimulatedEstate(load_spec(weather_only), CAT, 7, scenario.start_ms, scenario)
    adapter = SimulatorAdapter(
        sim,
        SimClock(scenario.start_ms, 60.0, monotonic=lambda: real[0]),
        scenario.start_ms + 12 * HOUR,
    )
    station: list[Reading] = []
    while not adapter.finished:
        real[0] += 0.37
        station += [r for r in adapter.poll().readings if r.kind == "weather_station"]
    ts = np.array([r.ts for r in station])
    snow = np.array([r.metrics["snow_mm"] for r in station], dtype=float)
    assert np.all(np.diff(ts) == 60_000)
    criteria = {"blue": (12, 4.0), "yellow": (12, 6.0), "orange": (6, 10.0), "red": (6, 15.0)}
    crossed = {}
    for level, (hours, mm) in criteria.items():
        hit = np.flatnonzero(window_sums(ts, snow, hours) >= mm - 1e-9)
        crossed[level] = int(ts[hit[0]]) if len(hit) else None
    stated = {e.level: scenario.start_ms + e.at_ms for e in scenario.expect}
    assert set(stated) == {"blue", "yellow", "orange"}
    for level, at in stated.items():
        got = crossed[level]
        assert got is not None, level
        # The first station reading at or after the stated time (readings come every 60 s).
        assert 0 <= got - at < 60_000 + 3000, (level, (got - at) / 1000)
    assert crossed["red"] is None  # the file promises orange, not red
    gusts = max(r.metrics["wind_gust_ms"] for r in station)
    assert gusts >= 20.8  # force 9


def test_cold_wave_falls_12_degrees_below_zero_with_force_6_wind(weather_only: Path) -> None:
    scenario = replace(load_scenario("cold-wave"), faults=())
    _, got = play(weather_only, scenario)
    ws = [r for r in got.readings if r.kind == "weather_station"]
    start = scenario.start_ms
    assert start is not None
    day1 = min(float(r.metrics["temp_c"]) for r in ws if r.ts < start + 24 * HOUR)
    day2 = min(
        float(r.metrics["temp_c"]) for r in ws if start + 24 * HOUR <= r.ts < start + 48 * HOUR
    )
    assert day1 - day2 >= 12 and day2 <= 0
    assert max(float(r.metrics["wind_speed_ms"]) for r in ws) >= 10.8


def test_spring_sandstorm_takes_visibility_below_500_m(weather_only: Path) -> None:
    _, got = play(weather_only, load_scenario("spring-sandstorm"))
    vis = [float(r.metrics["visibility_m"]) for r in got.readings if r.kind == "weather_station"]
    assert min(vis) < 500 and max(vis) > 10_000


def test_every_fault_shows_in_readings_and_events() -> None:
    scenario = load_scenario("faults")
    sim, got = play("small", scenario)
    start = scenario.start_ms
    assert start is not None
    types = [e.type for e in got.events]
    for t in ("fire.fault", "fire.alarm", "fire.reset", "elevator.trapped", "elevator.released"):
        assert t in types
    assert {"ebike.over_temperature", "gas.leak", "fire.start"} <= set(types)
    trapped = next(e for e in got.events if e.type == "elevator.trapped")
    assert trapped.ts == start + 80 * 60_000 + 30_000  # 30 s detection timer

    def metric(dev: str, name: str, t0: float, t1: float) -> list[object]:
        return [
            r.metrics[name]
            for r in got.readings
            if r.dev == dev and start + t0 * HOUR <= r.ts < start + t1 * HOUR
        ]

    assert all(metric("fire-pump-1", "fault", 0.4, 0.95))
    assert min(metric("b1-hydrant-1", "pressure_mpa", 1.0, 1.6)) < 0.07  # type: ignore[type-var]
    assert max(metric("b1-ebc-s01", "temp_c", 1.85, 2.15)) >= 80  # type: ignore[type-var]
    assert set(metric("b1-ebc-s02", "state", 2.1, 3.9)) == {"full"}
    assert min(metric("b1-ebc-s02", "power_w", 2.1, 3.9)) > 100  # type: ignore[type-var]
    assert max(metric("gas-1", "lel_pct", 2.4, 2.6)) > 25  # type: ignore[type-var]
    assert metric("telecom-1", "link_up", 3.05, 3.45) == [False] * 24
    assert metric("b1-water-1", "pressure_mpa", 3.34, 4.0) == []  # silent for 40 min
    assert len(metric("b1-water-1", "pressure_mpa", 4.0, 4.5)) == 30
    before = np.mean(metric("b2-room-1", "temp_c", 2.0, 2.6))  # type: ignore[arg-type]
    cold = np.mean(metric("b2-room-1", "temp_c", 4.4, 4.66))  # type: ignore[arg-type]
    other = np.mean(metric("b1-room-1", "temp_c", 4.4, 4.66))  # type: ignore[arg-type]
    assert before - cold > 3 and other - cold > 3
    assert sim.network_down(start + 4 * HOUR + 60_000)
    assert not sim.network_down(start + 4 * HOUR + 11 * 60_000)


def test_power_off_stops_a_socket_drawing_power_and_power_on_restores_it() -> None:
    scenario = load_scenario("faults")  # b1-ebc-s02 keeps drawing 160 W after full from 2h
    sim, _ = play("small", scenario, hours=2.5)
    now = sim.now_ms
    cmd = Command("c-1", now, "b1-ebc-s02", "socket.power_off", {"reason": "drawing_after_full"})
    assert sim.command(cmd, now) is None
    after = [r for r in sim.advance(now + 10 * 60_000).readings if r.dev == "b1-ebc-s02"]
    assert len(after) == 20
    assert all(r.metrics["power_w"] == 0 and r.metrics["current_a"] == 0 for r in after)
    on = Command("c-2", now, "b1-ebc-s02", "socket.power_on", {})
    assert sim.command(on, sim.now_ms) is None
    again = [r for r in sim.advance(sim.now_ms + 60_000).readings if r.dev == "b1-ebc-s02"]
    assert all(float(r.metrics["power_w"]) > 100 for r in again)  # type: ignore[arg-type]
    bad = Command("c-3", now, "b1-lift-1", "socket.power_off", {})
    assert "no ebike_charger 'b1-lift-1'" in (sim.command(bad) or "")
    assert "unknown action" in (sim.command(Command("c-4", now, "b1-ebc-s02", "launch", {})) or "")


def test_clock_runs_fast_then_real_time() -> None:
    real = [100.0]
    clock = SimClock(T0, 60.0, fast_until_ms=T0 + HOUR, monotonic=lambda: real[0])
    real[0] += 30
    assert clock.now_ms() == T0 + 30 * 60_000
    real[0] += 30 + 10  # one simulated hour after 60 s, then 10 s at real speed
    assert clock.now_ms() == T0 + HOUR + 10_000


def test_a_spec_with_a_mistake_names_the_file_and_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "estate.toml"
    bad.write_text(
        '[estate]\nid = "e1"\n[[buildings]]\ncount = 2\ndevices = { elevatr = 2 }\n',
        encoding="utf-8",
    )
    with pytest.raises(SpecError) as err:
        load_spec(bad)
    assert str(bad) in str(err.value) and "elevatr" in str(err.value)
    with pytest.raises(SpecError, match=r"bundled: .*hohhot-typical"):
        load_spec("no-such-estate")
    bad.write_text('[scenario]\nname = "x"\n[[faults]]\nat = "1h"\ntype = "meteor"\n')
    with pytest.raises(SpecError) as err2:
        load_scenario(bad)
    assert str(bad) in str(err2.value) and "unknown fault 'meteor'" in str(err2.value)
    bad.write_text(
        '[scenario]\nname = "x"\n[[faults]]\nat = "1h"\ntype = "elevator_trapped"\nnth = 9\n'
    )
    with pytest.raises(SpecError, match=r"wants elevator number 9, estate spec .*small.toml has 3"):
        SimulatedEstate(load_spec("small"), CAT, 1, T0, load_scenario(bad))


def test_long_steps_give_every_report_in_time_order() -> None:
    """A replay's 15-minute steps (one model call per kind, a round per interval for kinds with
    state) give each device the reports 1-s steps give, at the same times, in time order;
    ``every`` stretches a kind's interval."""

    from protocol.catalog import default_catalog
    from simulators.spec import load_spec

    spec, cat, start = load_spec("small"), default_catalog(), 1_767_225_600_000
    fine = SimulatedEstate(spec, cat, 5, start).advance(start + 3_600_000).readings
    sim = SimulatedEstate(spec, cat, 5, start, step_ms=900_000, every={"elevator": 2})
    coarse = sim.advance(start + 3_600_000).readings
    times = [r.ts for r in coarse]
    assert times == sorted(times)

    def when(rs: list, kind: str) -> set[tuple[str, int]]:
        return {(r.dev, r.ts) for r in rs if r.kind == kind}

    for kind in ("ebike_charger", "fire_hydrant", "weather_station", "room_temp"):
        assert when(coarse, kind) == when(fine, kind)
    lifts = when(coarse, "elevator")
    assert (
        lifts and lifts < when(fine, "elevator") and len(lifts) * 2 == len(when(fine, "elevator"))
    )
