"""The bundled rules' numbers against the standards (issue 11, "Domain corrections")."""

from __future__ import annotations

import pytest

from alerts.rules.evaluate import Evaluator, Signal
from protocol.messages import Reading, Value
from tests.alerts.bundled_rules import CATALOG, INDEX, MIN, evaluator


@pytest.fixture
def ev() -> Evaluator:
    return evaluator()


def fired(ev: Evaluator, kind: str, **m: Value) -> set[str]:
    out: list[Signal] = []
    ev.observe_readings(INDEX, "e1", "gw", [Reading("d1", kind, 0, dict(m))], out)
    return {s.rule.id for s in out if s.hit}


def test_hydrant_static_pressure_alarm_is_above_1_0_mpa(ev: Evaluator) -> None:
    # 0.6 MPa static is normal in a high-rise (0.5 MPa is an outlet's flowing limit)
    assert fired(ev, "fire_hydrant", pressure_mpa=0.6) == set()
    assert fired(ev, "fire_hydrant", pressure_mpa=1.05) == {"hydrant-pressure-high"}


def test_sprinkler_standby_static_pressure_at_least_0_10_mpa(ev: Evaluator) -> None:
    assert fired(ev, "sprinkler", pressure_mpa=0.08) == {"sprinkler-pressure-low"}


def test_sprinkler_standby_pressure_of_0_10_is_fine(ev: Evaluator) -> None:
    assert fired(ev, "sprinkler", pressure_mpa=0.10) == set()


def test_fire_tank_room_freeze_threshold_is_5_c(ev: Evaluator) -> None:
    assert fired(ev, "fire_water_tank", temp_c=4.5, level_m=4.0) == {"fire-tank-freeze"}


def test_fire_tank_level_is_watched(ev: Evaluator) -> None:
    assert fired(ev, "fire_water_tank", temp_c=10.0, level_m=0.5) == {"fire-tank-level-low"}


@pytest.mark.parametrize(
    ("volts", "abnormal"),
    [(236.0, True), (235.0, False), (197.0, True), (199.0, False)],
)
def test_220_v_band_is_plus_7_minus_10_percent(ev: Evaluator, volts: float, abnormal: bool) -> None:
    got = fired(ev, "power_meter", voltage_v=volts)
    assert ("power-voltage-abnormal" in got) is abnormal


def test_a_panels_normal_status_word_raises_nothing(ev: Evaluator) -> None:
    """GB/T 26875.3: bit 0 set is normal operation, so 0x0001 is a quiet panel."""
    assert fired(ev, "fire_panel", status_word=0x0001) == set()
    assert fired(ev, "smoke_detector", status_word=0x0001, smoke_obscuration_pct=0.3) == set()


def test_a_fault_bit_with_the_normal_bit_is_a_fault(ev: Evaluator) -> None:
    assert fired(ev, "fire_panel", status_word=0b101) == {"fire-panel-fault-bit"}


def test_the_simulated_words_say_normal_operation() -> None:
    from dataclasses import replace

    from simulators.estate import SimulatedEstate
    from simulators.scenario import load_scenario
    from simulators.spec import load_spec

    scenario = replace(load_scenario("quiet-day"), faults=())
    sim = SimulatedEstate(load_spec("small"), CATALOG, 1, 1_768_003_200_000, scenario)
    out = sim.advance(1_768_003_200_000 + 10 * MIN)
    words = [r.metrics["status_word"] for r in out.readings if "status_word" in r.metrics]
    assert words and all(w == 0b1 for w in words)
