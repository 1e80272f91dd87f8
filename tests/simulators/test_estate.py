from __future__ import annotations

from protocol.catalog import default_catalog
from protocol.messages import decode_telemetry, encode_telemetry
from simulators.estate import SimulatedEstate, small_estate

CAT = default_catalog()
T0 = 1_764_316_800_000  # 2025-11-28 08:00 Asia/Shanghai


def test_every_family_is_present_and_readings_pass_the_contract() -> None:
    spec = small_estate("e1", "E1", "呼和浩特市", -11.0, buildings=2)
    families = {CAT.kinds[k].family for _, k in spec.devices}
    assert families >= {
        "fire",
        "ebike",
        "elevator",
        "water",
        "power",
        "gas",
        "heating",
        "telecom",
        "weather",
    }
    sim = SimulatedEstate(spec, CAT, seed=1, start_ms=T0)
    readings = []
    for step in range(0, 600_000, 10_000):  # ten simulated minutes
        readings += sim.due(T0 + step)
    assert {r.dev for r in readings} == {d for d, _ in spec.devices}
    batch = decode_telemetry(encode_telemetry("gw-01", 1, T0, readings), "gw-01", T0 + 700_000, CAT)
    assert batch.rejects == []
    assert len(batch.readings) == len(readings)


def test_devices_report_at_their_catalog_interval() -> None:
    spec = small_estate("e1", "E1", "r", -11.0, buildings=1)
    sim = SimulatedEstate(spec, CAT, seed=3, start_ms=T0)
    counts: dict[str, int] = {}
    for step in range(0, 3_600_000 + 1, 1000):
        for r in sim.due(T0 + step):
            counts[r.kind] = counts.get(r.kind, 0) + 1
    for kind, n in counts.items():
        per_device = n / sum(1 for _, k in spec.devices if k == kind)
        expected = 3600 / CAT.kinds[kind].interval_s
        assert abs(per_device - expected) <= 1.5, (kind, per_device, expected)


def test_same_seed_same_readings() -> None:
    spec = small_estate("e1", "E1", "r", -25.0)
    a = SimulatedEstate(spec, CAT, seed=42, start_ms=T0).due(T0 + 5000)
    b = SimulatedEstate(spec, CAT, seed=42, start_ms=T0).due(T0 + 5000)
    c = SimulatedEstate(spec, CAT, seed=43, start_ms=T0).due(T0 + 5000)
    assert a == b
    assert a != c


def test_colder_estate_is_colder() -> None:
    from simulators.estate import outdoor_temp_c

    jan = T0 + 50 * 86_400_000
    hohhot = small_estate("h", "H", "r", -11.0)
    hailar = small_estate("l", "L", "r", -25.0)
    assert outdoor_temp_c(hailar, jan) < outdoor_temp_c(hohhot, jan) - 10
