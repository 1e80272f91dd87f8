import pickle
from pathlib import Path

import orjson
import pytest

from protocol import messages
from protocol.catalog import (
    BUNDLED_CATALOG,
    Catalog,
    CatalogError,
    Kind,
    ValueType,
    default_catalog,
    load_catalog,
)

CAT = default_catalog()

# The contract: kind -> exact metric names (CONTRACT.md + the catalog brief).
EXPECTED_METRICS: dict[str, set[str]] = {
    "fire_panel": {"status_word"},
    "smoke_detector": {"smoke_obscuration_pct", "status_word"},
    "fire_hydrant": {"pressure_mpa"},
    "sprinkler": {"pressure_mpa"},
    "fire_pump": {"running", "auto", "fault"},
    "fire_water_tank": {"level_m", "temp_c"},
    "fire_door": {"open"},
    "fire_lane_monitor": {"blocked"},
    "ebike_charger": {"power_w", "current_a", "temp_c", "state"},
    "ebike_camera": {"online"},
    "elevator": {
        "floor",
        "direction",
        "door",
        "running",
        "people",
        "mode",
        "speed_ms",
        "machine_room_temp_c",
    },
    "water_pressure": {"pressure_mpa"},
    "water_tank": {"level_pct"},
    "power_meter": {"voltage_v", "current_a", "power_kw", "energy_kwh"},
    "gas_detector": {"lel_pct", "valve_open"},  # valve_open: issue 11, additive
    "heating_station": {
        "supply_temp_c",
        "return_temp_c",
        "supply_pressure_mpa",
        "return_pressure_mpa",
        "supply_return_diff_c",  # issue 11, additive
    },
    # issue 11, additive: the unit of a floor-heated building
    "floor_heating": {
        "supply_temp_c",
        "return_temp_c",
        "supply_pressure_mpa",
        "return_pressure_mpa",
        "supply_return_diff_c",
    },
    "room_temp": {"temp_c"},
    "pipe_temp": {"temp_c"},
    "telecom_cabinet": {"temp_c", "door_open", "power_ok", "link_up"},
    "weather_station": {
        "wind_speed_ms",
        "wind_gust_ms",
        "temp_c",
        "snow_mm",
        "rain_mm",
        "visibility_m",
        "humidity_pct",
        "road_temp_c",
        "pm10_ugm3",  # issue 11, additive: dust tells a sandstorm from fog or snow
    },
}

FIRE_PANEL_EVENTS = {
    "fire.alarm",
    "fire.fault",
    "fire.disabled",
    "fire.supervisory",
    "fire.start",
    "fire.feedback",
    "fire.reset",
    "fire.power_fault",
}

EXPECTED_EVENT_TYPES = {
    *FIRE_PANEL_EVENTS,
    "fire_lane.blocked",
    "ebike.over_temperature",
    "ebike.short_circuit",
    "ebike.corridor_charging",
    "ebike.in_elevator",
    "elevator.trapped",
    "elevator.released",
    "elevator.overrun_top",
    "elevator.overrun_bottom",
    "elevator.door_open_running",
    "elevator.stopped_outside_zone",
    "elevator.power_off",
    "elevator.alarm_button",
    "elevator.overspeed",
    "gas.leak",
    # issue 11, additive: GB/T 24476-2023 faults, the technician's arrival, confirming signals
    "elevator.safety_circuit_open",
    "elevator.door_lock_circuit_open",
    "elevator.door_open_fault",
    "elevator.door_close_fault",
    "elevator.door_open_while_running",
    "elevator.technician_arrived",
    "gas.valve_closed",
    "fire.manual_call",
    "fire.water_flow",
    "fire.pressure_switch",
}

# CONTRACT.md "Telemetry batch": metric names end in their unit.
CONTRACT_SUFFIXES = {
    "°C": "_c",
    "MPa": "_mpa",
    "kPa": "_kpa",
    "m/s": "_ms",
    "mm": "_mm",
    "m": "_m",
    "%": "_pct",
    "%LEL": "_lel_pct",
    "W": "_w",
    "kW": "_kw",
    "kWh": "_kwh",
    "V": "_v",
    "A": "_a",
    # issue 11, additive (pm10_ugm3); CONTRACT.md's suffix list should gain it too
    "µg/m³": "_ugm3",
}


def test_bundled_catalog_loads() -> None:
    assert isinstance(CAT, Catalog)
    assert CAT.version == 1
    assert BUNDLED_CATALOG.name == "catalog_v1.toml"
    assert BUNDLED_CATALOG.is_file()


def test_default_catalog_is_cached() -> None:
    assert default_catalog() is default_catalog()
    fresh = load_catalog()
    assert fresh is not CAT
    assert set(fresh.kinds) == set(CAT.kinds)


@pytest.mark.parametrize("kind", sorted(EXPECTED_METRICS))
def test_kind_has_exact_metrics(kind: str) -> None:
    assert kind in CAT.kinds
    k = CAT.kinds[kind]
    assert isinstance(k, Kind)
    assert k.name == kind
    assert set(k.metrics) == EXPECTED_METRICS[kind]
    for name, metric in k.metrics.items():
        assert metric.name == name


def test_no_unexpected_kinds() -> None:
    assert set(CAT.kinds) == set(EXPECTED_METRICS)


def test_listed_event_types_exist() -> None:
    assert set(CAT.event_types) >= EXPECTED_EVENT_TYPES
    for name, et in CAT.event_types.items():
        assert et.type == name
        assert name.split(".")[0] == et.family
        assert et.family in CAT.families


@pytest.mark.parametrize(
    ("kind", "events"),
    [
        ("fire_panel", FIRE_PANEL_EVENTS),
        ("fire_lane_monitor", {"fire_lane.blocked"}),
        ("ebike_charger", {"ebike.over_temperature", "ebike.short_circuit"}),
        ("ebike_camera", {"ebike.corridor_charging", "ebike.in_elevator"}),
        ("elevator", {e for e in EXPECTED_EVENT_TYPES if e.startswith("elevator.")}),
        ("elevator", {"ebike.in_elevator"}),
        ("gas_detector", {"gas.leak"}),
    ],
)
def test_kinds_may_emit(kind: str, events: set[str]) -> None:
    assert events <= CAT.kinds[kind].events


def test_kind_events_are_defined_event_types() -> None:
    for kind in CAT.kinds.values():
        assert kind.events <= set(CAT.event_types), kind.name
        assert isinstance(kind.events, frozenset)


def test_every_listed_event_type_is_emitted_by_some_kind() -> None:
    emitted = set().union(*(k.events for k in CAT.kinds.values()))
    assert emitted >= EXPECTED_EVENT_TYPES


def test_families() -> None:
    expected = {"fire", "ebike", "elevator", "water", "power", "gas", "heating", "telecom"}
    assert set(CAT.families) >= expected | {"weather"}
    for family, (zh, en) in CAT.families.items():
        assert zh and en, family
    for kind in CAT.kinds.values():
        assert kind.family in CAT.families
    assert CAT.kinds["fire_hydrant"].family == "fire"
    assert CAT.kinds["elevator"].family == "elevator"
    assert CAT.kinds["weather_station"].family == "weather"
    assert CAT.kinds["gas_detector"].family == "gas"


def test_labels_are_bilingual() -> None:
    for kind in CAT.kinds.values():
        assert kind.label_zh and kind.label_en
        for metric in kind.metrics.values():
            assert metric.label_zh and metric.label_en, (kind.name, metric.name)
    for et in CAT.event_types.values():
        assert et.label_zh and et.label_en
    assert CAT.event_types["fire.alarm"].label_zh == "火警"


def test_numeric_metrics_with_unit_end_in_unit_suffix() -> None:
    checked = 0
    for kind in CAT.kinds.values():
        for metric in kind.metrics.values():
            if metric.unit is None:
                continue
            assert metric.type in (ValueType.NUMBER, ValueType.INTEGER)
            suffix = CONTRACT_SUFFIXES[metric.unit]
            assert metric.name.endswith(suffix) or metric.name == suffix[1:], (
                kind.name,
                metric.name,
                metric.unit,
            )
            checked += 1
    assert checked > 30


def test_metric_value_types() -> None:
    fp = CAT.kinds["fire_panel"].metrics["status_word"]
    assert (fp.type, fp.min, fp.max, fp.unit) == (ValueType.INTEGER, 0, 65535, None)
    floor = CAT.kinds["elevator"].metrics["floor"]
    assert (floor.type, floor.min, floor.max) == (ValueType.INTEGER, -10, 200)
    el = CAT.kinds["elevator"].metrics
    assert el["direction"].values == ("stopped", "up", "down")
    assert el["door"].values == ("closed", "open", "closing", "opening")
    assert el["mode"].values == (
        "normal",
        "inspection",
        "maintenance",
        "fire",
        "emergency_power",
        # issue 11, additive (GB/T 24476-2023): 停止服务, 消防员运行, 地震
        "out_of_service",
        "firefighter",
        "earthquake",
    )
    assert el["running"].type is ValueType.BOOLEAN
    assert el["people"].type is ValueType.BOOLEAN
    assert el["speed_ms"].unit == "m/s"
    state = CAT.kinds["ebike_charger"].metrics["state"]
    assert state.type is ValueType.ENUM
    assert state.values == ("idle", "charging", "full", "fault")
    for name in ("running", "auto", "fault"):
        assert CAT.kinds["fire_pump"].metrics[name].type is ValueType.BOOLEAN
    for name in ("door_open", "power_ok", "link_up"):
        assert CAT.kinds["telecom_cabinet"].metrics[name].type is ValueType.BOOLEAN
    assert CAT.kinds["fire_door"].metrics["open"].type is ValueType.BOOLEAN
    assert CAT.kinds["fire_lane_monitor"].metrics["blocked"].type is ValueType.BOOLEAN
    assert CAT.kinds["ebike_camera"].metrics["online"].type is ValueType.BOOLEAN
    assert CAT.kinds["gas_detector"].metrics["lel_pct"].unit == "%LEL"


def test_metric_shapes_are_consistent() -> None:
    for kind in CAT.kinds.values():
        for m in kind.metrics.values():
            if m.type in (ValueType.NUMBER, ValueType.INTEGER):
                assert m.min is not None and m.max is not None
                assert m.min < m.max
                assert m.values == ()
            else:
                assert (m.min, m.max, m.unit) == (None, None, None)
            if m.type is ValueType.ENUM:
                assert m.values and len(set(m.values)) == len(m.values)
                assert all(len(v) <= messages.MAX_TEXT_LEN for v in m.values)


def _range(kind: str, metric: str) -> tuple[float | None, float | None]:
    m = CAT.kinds[kind].metrics[metric]
    return m.min, m.max


def test_physical_ranges() -> None:
    assert _range("weather_station", "temp_c") == (-60, 60)
    assert _range("weather_station", "wind_speed_ms") == (0, 80)
    assert _range("weather_station", "wind_gust_ms") == (0, 80)
    assert _range("weather_station", "visibility_m") == (0, 100000)
    assert _range("weather_station", "humidity_pct") == (0, 100)
    assert _range("fire_hydrant", "pressure_mpa") == (0, 4)
    assert _range("sprinkler", "pressure_mpa") == (0, 4)
    assert _range("water_pressure", "pressure_mpa") == (0, 4)
    assert _range("power_meter", "voltage_v") == (0, 500)
    assert _range("water_tank", "level_pct") == (0, 100)
    assert _range("gas_detector", "lel_pct") == (0, 100)
    assert _range("room_temp", "temp_c") == (-60, 120)


def test_ranges_are_physical_not_alarm_thresholds() -> None:
    # Hailar winters reach -45 °C; anything a real sensor reports must be storable.
    for kind in CAT.kinds.values():
        for m in kind.metrics.values():
            if m.unit == "°C":
                assert m.min is not None and m.max is not None
                assert m.min <= -45 and m.max >= 60, (kind.name, m.name)
            if m.unit == "%":
                assert (m.min, m.max) == (0, 100), (kind.name, m.name)
            if m.unit == "MPa":
                assert m.min == 0 and m.max is not None and m.max >= 1.6, (kind.name, m.name)
    # a heating primary loop at 130 °C and a hydrant at 0 MPa (empty pipe) are real readings
    hs_max = CAT.kinds["heating_station"].metrics["supply_temp_c"].max
    assert hs_max is not None and hs_max >= 130


def test_reporting_intervals() -> None:
    assert CAT.kinds["weather_station"].interval_s == 60
    assert CAT.kinds["fire_hydrant"].interval_s == 300
    assert CAT.kinds["elevator"].interval_s == 10
    assert CAT.kinds["ebike_charger"].interval_s == 30
    for kind in CAT.kinds.values():
        assert 1 <= kind.interval_s <= 3600, kind.name


def test_status_word_bits() -> None:
    bits = CAT.status_word_bits
    assert sorted(bits) == list(range(14))
    names = [bits[i].name for i in range(14)]
    assert names == [
        "normal",  # (issue 11) bit 0: 1 = normal operation, 0 = test (GB/T 26875.3 §8.2.1.1)
        "fire_alarm",
        "fault",
        "disabled",
        "supervisory",
        "started",
        "feedback",
        "delay",
        "main_power_fault",
        "backup_power_fault",
        "bus_fault",
        "manual",
        "config_changed",
        "reset",
    ]
    assert bits[1].label_zh == "火警"
    assert bits[0].label_zh.startswith("正常运行")


def test_components_have_their_own_status_word_table() -> None:
    """GB/T 26875.3 §8.2.1.2: a component's bits 0-7 are the system's, bit 8 is power fault and
    9-15 are reserved (the system's bit 8 is main power, 9 backup power, ...)."""
    comp = CAT.status_bits_of("smoke_detector")
    assert sorted(comp) == list(range(9))
    assert comp[8].name == "power_fault" and comp[0].name == "normal"
    assert CAT.status_bits_of("fire_panel")[8].name == "main_power_fault"
    assert CAT.kinds["smoke_detector"].status_word == "component"


def test_catalog_pickles_for_worker_processes() -> None:
    clone = pickle.loads(pickle.dumps(CAT))
    assert clone == CAT
    assert clone.kinds["elevator"].metrics["floor"].max == 200
    # the precompiled checks survive too, so a worker can decode with the clone
    reading = {"dev": "l-1", "kind": "elevator", "ts": 1, "m": {"floor": 3}}
    payload = orjson.dumps({"v": 1, "gw": "g", "seq": 1, "sent": 1, "readings": [reading]})
    assert len(messages.decode_telemetry(payload, "g", 1, clone).readings) == 1


# ---------------------------------------------------------------------------------------------
# Broken catalog files
# ---------------------------------------------------------------------------------------------

MINIMAL = """
version = 1
[units]
"MPa" = "_mpa"
[families]
fire = { zh = "消防", en = "Fire" }
[event_types."fire.alarm"]
family = "fire"
zh = "火警"
en = "Fire alarm"
fields = ["zone"]
[kinds.fire_hydrant]
family = "fire"
zh = "消火栓"
en = "Hydrant"
interval_s = 300
events = ["fire.alarm"]
[kinds.fire_hydrant.metrics]
"""
METRIC_LINE = (
    'pressure_mpa = { type = "number", unit = "MPa", min = 0, max = 4, zh = "压", en = "P" }'
)
MINIMAL += METRIC_LINE + "\n"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "broken_catalog.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_minimal_catalog_loads(tmp_path: Path) -> None:
    cat = load_catalog(_write(tmp_path, MINIMAL))
    assert set(cat.kinds) == {"fire_hydrant"}
    assert cat.event_types["fire.alarm"].fields == ("zone",)
    assert cat.families["fire"] == ("消防", "Fire")
    assert cat.kinds["fire_hydrant"].metrics["pressure_mpa"].max == 4
    assert cat.status_word_bits == {}
    # str paths work too
    assert set(load_catalog(str(_write(tmp_path, MINIMAL))).kinds) == {"fire_hydrant"}


def _metric(line: str) -> str:
    """MINIMAL with its one metric replaced by ``line``."""
    assert METRIC_LINE in MINIMAL
    return MINIMAL.replace(METRIC_LINE, line)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version = 1\n[kinds\n", "not valid TOML"),
        (
            _metric('pressure_mpa = { type = "float", min = 0, max = 4, zh = "a", en = "b" }'),
            "unknown type 'float'",
        ),
        (
            _metric(
                'pressure_mpa = { type = "number", unit = "MPa", min = 5, max = 4, '
                'zh = "a", en = "b" }'
            ),
            "min 5 > max 4",
        ),
        (_metric('state = { type = "enum", zh = "a", en = "b" }'), "enum without 'values'"),
        (
            _metric('state = { type = "enum", values = [], zh = "a", en = "b" }'),
            "enum without 'values'",
        ),
        (MINIMAL.replace('events = ["fire.alarm"]', 'events = ["fire.nope"]'), "'fire.nope'"),
        (
            _metric(
                'pressure_mpa = { type = "number", unit = "bar", min = 0, max = 4, '
                'zh = "a", en = "b" }'
            ),
            "unknown unit 'bar'",
        ),
        (
            _metric(
                'pressure = { type = "number", unit = "MPa", min = 0, max = 4, zh = "a", en = "b" }'
            ),
            "end in '_mpa'",
        ),
        (
            _metric(
                'pressure_mpa = { type = "number", unit = "MPa", min = 0, mx = 4, '
                'zh = "a", en = "b" }'
            ),
            "unknown key",
        ),
        (
            _metric('pressure_mpa = { type = "number", min = 0, zh = "a", en = "b" }'),
            "'max' must be a finite number",
        ),
        (
            _metric('floor = { type = "integer", min = 0.5, max = 4, zh = "a", en = "b" }'),
            "'min' must be a finite integer",
        ),
        (
            _metric('ok = { type = "boolean", min = 0, zh = "a", en = "b" }'),
            "takes no 'min'",
        ),
        (_metric('ok = { type = "boolean", zh = "a" }'), "'en' must be a non-empty string"),
        (
            MINIMAL.replace('family = "fire"\nzh = "消火栓"', 'family = "lift"\nzh = "消火栓"'),
            "lift",
        ),
        (MINIMAL.replace("interval_s = 300", "interval_s = 0"), "interval_s"),
        (MINIMAL.replace("version = 1", 'version = "1"'), "version"),
        (MINIMAL.replace('[event_types."fire.alarm"]', '[event_types."alarm"]'), "alarm"),
    ],
)
def test_broken_catalog_raises_catalog_error_naming_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_event_type_family_must_match_prefix(tmp_path: Path) -> None:
    text = MINIMAL.replace('family = "fire"\nzh = "火警"', 'family = "gas"\nzh = "火警"')
    text = text.replace("[families]", '[families]\ngas = { zh = "燃气", en = "Gas" }')
    with pytest.raises(CatalogError, match="prefix 'fire' != family 'gas'"):
        load_catalog(_write(tmp_path, text))


def test_missing_catalog_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(CatalogError, match=r"nope\.toml"):
        load_catalog(path)


def test_catalog_error_is_value_error() -> None:
    assert issubclass(CatalogError, ValueError)
