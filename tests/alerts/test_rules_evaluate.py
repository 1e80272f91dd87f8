"""Rules on the stream: a signal when a condition starts or clears, none while it stays."""

from __future__ import annotations

import pytest

from alerts.rules.evaluate import Evaluator, Signal
from protocol.messages import Event, Reading, Value
from tests.alerts.bundled_rules import INDEX, MIN, evaluator


@pytest.fixture
def ev() -> Evaluator:
    return evaluator()


def read(ev: Evaluator, ts: int, dev: str, kind: str, **m: Value) -> list[tuple[str, bool]]:
    out: list[Signal] = []
    ev.observe_readings(INDEX, "e1", "gw", [Reading(dev, kind, ts, dict(m))], out)
    return [(s.rule.id, s.hit) for s in out]


def event(ev: Evaluator, ts: int, dev: str, kind: str, type_: str) -> list[tuple[str, bool]]:
    out: list[Signal] = []
    ev.observe_events(INDEX, "e1", "gw", [Event(dev, kind, ts, type_, {})], out)
    return [(s.rule.id, s.hit) for s in out]


def test_edges_only_with_hysteresis(ev: Evaluator) -> None:
    seq = [0.3, 0.06, 0.05, 0.075, 0.069, 0.08, 0.3, 0.06]
    got = [read(ev, i * MIN, "h1", "fire_hydrant", pressure_mpa=v) for i, v in enumerate(seq)]
    assert got == [
        [],
        [("hydrant-pressure-low", True)],
        [],  # still low: nothing new
        [],  # 0.075 is between 0.07 and the clear level 0.08
        [],
        [("hydrant-pressure-low", False)],
        [],
        [("hydrant-pressure-low", True)],
    ]


def test_equals_and_outside_a_band(ev: Evaluator) -> None:
    assert read(ev, 0, "p1", "fire_pump", fault=True) == [("fire-pump-fault", True)]
    assert read(ev, MIN, "p1", "fire_pump", fault=False) == [("fire-pump-fault", False)]
    assert read(ev, 0, "l1", "elevator", machine_room_temp_c=41.0) == [
        ("elevator-machine-room-temp", True)
    ]
    assert read(ev, MIN, "l1", "elevator", machine_room_temp_c=39.5) == []  # clears at 39
    assert read(ev, 2 * MIN, "l1", "elevator", machine_room_temp_c=20.0) == [
        ("elevator-machine-room-temp", False)
    ]


def test_status_word_bit(ev: Evaluator) -> None:
    disabled = 1 << 3
    assert ("fire-panel-disabled-bit", True) in read(
        ev, 0, "fap", "fire_panel", status_word=disabled
    )
    assert ("fire-panel-disabled-bit", False) in read(ev, MIN, "fap", "fire_panel", status_word=0)


def test_window_sum_over_12_hours(ev: Evaluator) -> None:
    got = []
    for i in range(10):  # 0.5 mm every 10 minutes
        got += read(ev, i * 10 * MIN, "ws", "weather_station", snow_mm=0.5)
    assert got == [("weather-snow-12h", True)]  # at the 8th reading: 4.0 mm
    # twelve hours later the window has emptied: it clears with the next reading
    assert read(ev, 13 * 60 * MIN, "ws", "weather_station", snow_mm=0.0) == [
        ("weather-snow-12h", False)
    ]


def test_gusts_raise_one_alarm_while_they_keep_coming(ev: Evaluator) -> None:
    """Force-9 gusts every other minute for two hours: one alarm, not one per gust; it clears
    an hour after the last gust of force 8 or more."""
    got = []
    for m in range(120):
        got += read(ev, m * MIN, "ws", "weather_station", wind_gust_ms=21.0 if m % 2 else 15.0)
    assert [g for g in got if g[0] == "weather-gust-force-9"] == [("weather-gust-force-9", True)]
    calm = [
        read(ev, (120 + m) * MIN, "ws", "weather_station", wind_gust_ms=12.0) for m in range(62)
    ]
    cleared = [m for m, g in enumerate(calm) if ("weather-gust-force-9", False) in g]
    assert cleared and 58 <= cleared[0] <= 61


def test_window_conditions_clear_by_time_alone(ev: Evaluator) -> None:
    for i in range(8):
        read(ev, i * 10 * MIN, "ws", "weather_station", snow_mm=0.5)
    out: list[Signal] = []
    ev.check_time(lambda _e: INDEX, 13 * 60 * MIN, out)
    assert ("weather-snow-12h", False) in [(s.rule.id, s.hit) for s in out]


def test_rate_of_change(ev: Evaluator) -> None:
    # (changed with issue 11: a rate needs its full 10-minute window first)
    for m in range(11):
        assert read(ev, m * MIN, "wp", "water_pressure", pressure_mpa=0.30) == []
    # 0.15 MPa lost in 5 minutes: a burst main
    assert read(ev, 15 * MIN, "wp", "water_pressure", pressure_mpa=0.15) == [
        ("water-pressure-falling", True)
    ]


def test_a_rate_is_not_judged_on_a_new_devices_first_samples(ev: Evaluator) -> None:
    """Issue 11: a rate from the first two samples fired on every new estate."""
    assert read(ev, 0, "wp", "water_pressure", pressure_mpa=0.30) == []
    assert read(ev, 5 * MIN, "wp", "water_pressure", pressure_mpa=0.15) == []
    assert read(ev, 0, "hs", "heating_station", supply_temp_c=62.0) == []
    assert read(ev, MIN, "hs", "heating_station", supply_temp_c=61.2) == []  # -48 °C/h


def test_all_of_two_conditions(ev: Evaluator) -> None:
    assert read(ev, 0, "s1", "ebike_charger", state="full", power_w=2.0) == []
    assert read(ev, MIN, "s1", "ebike_charger", power_w=60.0) == [("ebike-power-after-full", True)]
    assert read(ev, 2 * MIN, "s1", "ebike_charger", state="idle", power_w=0.0) == [
        ("ebike-power-after-full", False)
    ]


def test_events_and_their_clear_event(ev: Evaluator) -> None:
    assert event(ev, 0, "lift", "elevator", "elevator.trapped") == [("elevator-trapped", True)]
    assert event(ev, MIN, "lift", "elevator", "elevator.trapped") == [("elevator-trapped", True)]
    assert event(ev, 2 * MIN, "lift", "elevator", "elevator.released") == [
        ("elevator-trapped", False)
    ]
    assert event(ev, 3 * MIN, "lift", "elevator", "elevator.released") == []


def test_more_than_five_fire_alarms_a_day_from_one_panel(ev: Evaluator) -> None:
    got = []
    for i in range(6):
        got += event(ev, i * 60 * MIN, "fap", "fire_panel", "fire.alarm")
    assert got.count(("fire-alarm-frequent", True)) == 1
    assert got[-1] == ("fire-alarm-frequent", True)  # the sixth
    out: list[Signal] = []
    ev.check_time(lambda _e: INDEX, 30 * 60 * MIN, out)  # the day has slid past them
    assert ("fire-alarm-frequent", False) in [(s.rule.id, s.hit) for s in out]


def test_no_data_after_three_intervals_and_back(ev: Evaluator) -> None:
    read(ev, 0, "h1", "fire_hydrant", pressure_mpa=0.3)  # interval 300 s
    out: list[Signal] = []
    ev.check_time(lambda _e: INDEX, 15 * MIN, out)
    assert out == []
    ev.check_time(lambda _e: INDEX, 15 * MIN + 1, out)
    assert [(s.rule.id, s.subject, s.hit) for s in out] == [("no-data", "h1", True)]
    ev.check_time(lambda _e: INDEX, 20 * MIN, out)
    assert len(out) == 1  # held: not again
    assert read(ev, 21 * MIN, "h1", "fire_hydrant", pressure_mpa=0.3) == [("no-data", False)]


def test_gateway_offline_and_online(ev: Evaluator) -> None:
    out: list[Signal] = []
    ev.observe_status(INDEX, "e1", "gw", False, 0, out)
    ev.observe_status(INDEX, "e1", "gw", False, 1, out)
    ev.observe_status(INDEX, "e1", "gw", True, 2, out)
    assert [(s.rule.id, s.subject, s.hit) for s in out] == [
        ("gateway-offline", "gw", True),
        ("gateway-offline", "gw", False),
    ]


def test_a_forgotten_condition_is_raised_again(ev: Evaluator) -> None:
    read(ev, 0, "p1", "fire_pump", fault=True)
    assert read(ev, MIN, "p1", "fire_pump", fault=True) == []
    ev.forget("fire-pump-fault", "e1", "p1")
    assert read(ev, 2 * MIN, "p1", "fire_pump", fault=True) == [("fire-pump-fault", True)]


def test_rules_are_indexed_by_kind_and_metric() -> None:
    lift = INDEX.kinds["elevator"]
    assert [(m, [r.id for _, r in g.tests]) for m, g in lift.groups] == [
        ("mode", ["elevator-out-of-service"]),  # issue 11: GB/T 24476-2023 modes
        ("machine_room_temp_c", ["elevator-machine-room-temp"]),
    ]
    assert set(lift.events) >= {"elevator.trapped", "elevator.overspeed", "ebike.in_elevator"}
    assert "weather_station" not in {k for k, kr in INDEX.kinds.items() if kr.events}


def test_a_quiet_value_skips_every_test_of_its_group() -> None:
    ((_, hydrant),) = INDEX.kinds["fire_hydrant"].groups
    assert hydrant.quiet is not None
    assert hydrant.quiet(0.3)  # between "below 0.07" and "above 1.0" (issue 11: was 0.5)
    assert not hydrant.quiet(0.07) and not hydrant.quiet(1.1)
    (_, pump_fault), *_ = INDEX.kinds["fire_pump"].groups
    assert pump_fault.quiet is not None and pump_fault.quiet(False) and not pump_fault.quiet(True)
    bits = dict(INDEX.kinds["fire_panel"].groups)["status_word"]
    assert bits.quiet is not None and bits.quiet(1 << 11) and not bits.quiet(1 << 2)


def test_a_held_device_is_still_cleared_through_a_quiet_value(ev: Evaluator) -> None:
    assert read(ev, 0, "h1", "fire_hydrant", pressure_mpa=0.01) == [("hydrant-pressure-low", True)]
    assert ev.held_count == {("e1", "h1"): 1}
    assert read(ev, MIN, "h1", "fire_hydrant", pressure_mpa=0.3) == [
        ("hydrant-pressure-low", False)
    ]
    assert ev.held_count == {}
