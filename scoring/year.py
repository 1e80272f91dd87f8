"""A simulated year (or a season of it) as one scenario: the quiet climate all year, the bundled
weather scenarios placed in their seasons, and seeded random faults of every kind.

Placement (Asia/Shanghai): cold wave mid-January, snowstorm early March and mid-November,
sandstorm mid-April, a rainstorm in late July (no bundled scenario has one, so it is written
here: :func:`rainstorm`). A placed scenario keeps its own faults. Between episodes every
weather value returns to the quiet default, so nothing of one episode leaks into the next.

Faults: ``faults_per_kind`` of each type in the period, each at a random time in its own slot
of the period (so two never overlap), on a random device of the kind, for a duration long
enough that its alarm can fire (a rule's ``for`` and the device model's lead). Heating
failures fall in the heating season's cold months (November–March), when a room really
cools below 18 °C; summer has no heating to fail.

``gateway_offline`` (10 minutes) is among them: the bench announces the lost connection as
the broker would (the gateway's Last Will, stamped by the service with its own clock, the
simulated one in a replay) and the gateway sends what it kept meanwhile after it is back, late.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np

from simulators.scenario import (
    CONTINUOUS,
    RATES,
    SHANGHAI,
    Fault,
    Scenario,
    load_scenario,
)
from simulators.spec import EstateSpec

HOUR = 3_600_000
MIN = 60_000

# (scenario, month, day) placements; a scenario may appear twice
PLACEMENTS: tuple[tuple[str, int, int], ...] = (
    ("cold-wave", 1, 14),
    ("winter-storm", 3, 4),
    ("spring-sandstorm", 4, 12),
    ("summer-rainstorm", 7, 24),
    ("winter-storm", 11, 18),
)

# fault type -> (duration, device kind or None)
RANDOM_FAULTS: dict[str, tuple[int, str | None]] = {
    "fire_alarm": (10 * MIN, "smoke_detector"),
    "fire_pump_failure": (40 * MIN, "fire_pump"),
    "hydrant_pressure_loss": (1 * HOUR, "fire_hydrant"),
    "elevator_trapped": (25 * MIN, "elevator"),
    "charger_overheat": (30 * MIN, "ebike_charger"),
    "charger_drawing_after_full": (2 * HOUR, "ebike_charger"),
    "gas_leak": (15 * MIN, "gas_detector"),
    "heating_failure": (6 * HOUR, None),
    "telecom_down": (30 * MIN, "telecom_cabinet"),
    "device_silent": (40 * MIN, "water_pressure"),
    "gateway_offline": (10 * MIN, None),
}


def rainstorm() -> Scenario:
    """A July rainstorm (REFERENCE.md §1, CMA: orange ≥ 50 mm in 3 h): an hour of light rain,
    3 h at 18 mm/h (54 mm in 3 h), then 2 h at 3 mm/h; humid, visibility down."""
    frames = {
        "rain_mm_h": [
            (0, 0.0),
            (1 * HOUR, 4.0),
            (2 * HOUR, 18.0),
            (5 * HOUR, 3.0),
            (7 * HOUR, 0.0),
        ],
        "humidity_pct": [(0, 60.0), (1 * HOUR, 90.0), (7 * HOUR, 92.0), (9 * HOUR, 70.0)],
        "visibility_m": [
            (0, 15_000.0),
            (2 * HOUR, 3000.0),
            (5 * HOUR, 4000.0),
            (9 * HOUR, 12_000.0),
        ],
        "wind_ms": [(0, 3.0), (2 * HOUR, 7.0), (6 * HOUR, 4.0)],
        "gust_ms": [(0, 6.0), (2 * HOUR, 13.0), (6 * HOUR, 8.0)],
    }
    keyframes = {
        k: (np.array([a for a, _ in v], dtype=np.float64), np.array([x for _, x in v]))
        for k, v in frames.items()
    }
    return Scenario(
        "summer-rainstorm", "暴雨 · 54 mm in 3 h", None, 12 * HOUR, keyframes, source="scoring/year"
    )


def _scenario(name: str) -> Scenario:
    return rainstorm() if name == "summer-rainstorm" else load_scenario(name)


def placed(start_ms: int, end_ms: int) -> list[tuple[int, Scenario]]:
    """The placements that fall wholly inside the period, as (absolute start, scenario)."""
    out = []
    first = datetime.fromtimestamp(start_ms / 1000, SHANGHAI).year
    last = datetime.fromtimestamp(end_ms / 1000, SHANGHAI).year
    for year in range(first, last + 1):
        for name, month, day in PLACEMENTS:
            sc = _scenario(name)
            at = int(datetime(year, month, day, 6, tzinfo=SHANGHAI).timestamp() * 1000)
            if start_ms <= at and at + (sc.duration_ms or 0) + 12 * HOUR <= end_ms:
                out.append((at, sc))
    return sorted(out, key=lambda x: x[0])


def _in_heating_months(ms: int) -> bool:
    return datetime.fromtimestamp(ms / 1000, SHANGHAI).month in (11, 12, 1, 2, 3)


def random_faults(
    spec: EstateSpec,
    start_ms: int,
    end_ms: int,
    seed: int,
    faults_per_kind: int,
    busy: list[tuple[int, int]],
) -> list[Fault]:
    """Seeded faults, one per slot of the period, away from the placed episodes (``busy``)."""
    rng = np.random.default_rng(seed)
    kinds = {d.kind for d in spec.devices}
    counts = {k: sum(1 for d in spec.devices if d.kind == k) for k in kinds}
    buildings = sorted({d.building for d in spec.devices if d.building})
    wanted = [t for t in RANDOM_FAULTS for _ in range(faults_per_kind)]
    rng.shuffle(wanted)
    slot = (end_ms - start_ms - 2 * HOUR) // max(len(wanted), 1)
    faults: list[Fault] = []
    for i, ftype in enumerate(wanted):
        duration, kind = RANDOM_FAULTS[ftype]
        if kind is not None and kind not in kinds:
            continue
        lo = start_ms + HOUR + i * slot
        for _ in range(200):  # a time in the slot, clear of episodes (and, for heating, cold)
            at = int(lo + rng.integers(0, max(slot - duration - 5 * HOUR, 1)))
            at -= at % MIN
            clear = all(at + duration + 5 * HOUR < s or at > e + 12 * HOUR for s, e in busy)
            if clear and (ftype != "heating_failure" or _in_heating_months(at)):
                break
        else:
            continue  # no room in this slot (e.g. a heating failure in summer)
        nth = int(rng.integers(1, counts[kind] + 1)) if kind else 1
        building = int(rng.choice(buildings)) if ftype == "heating_failure" else None
        faults.append(
            Fault(
                type=ftype,
                at_ms=at - start_ms,
                duration_ms=duration,
                kind=kind,
                nth=nth,
                building=building,
            )
        )
    return faults


def year_scenario(
    spec: EstateSpec, start_ms: int, end_ms: int, seed: int, faults_per_kind: int = 3
) -> Scenario:
    """One scenario for the whole period: placed episodes, their faults, random faults."""
    episodes = placed(start_ms, end_ms)
    points: dict[str, list[tuple[float, float]]] = {}
    faults: list[Fault] = []
    busy = []
    for at, sc in episodes:
        off = float(at - start_ms)
        dur = float(sc.duration_ms or 0)
        busy.append((at, at + int(dur)))
        for key, (ats, values) in sc.keyframes.items():
            quiet = 0.0 if key in RATES else CONTINUOUS[key]
            pts = points.setdefault(key, [])
            if key not in RATES:
                pts.append((off - 1.0, quiet))
            pts.extend((off + float(a), float(v)) for a, v in zip(ats, values, strict=True))
            pts.append((off + dur + 1.0, quiet))
        faults.extend(replace(f, at_ms=f.at_ms + int(off)) for f in sc.faults)
    faults += random_faults(spec, start_ms, end_ms, seed, faults_per_kind, busy)
    keyframes = {}
    for key, pts in points.items():
        if key in RATES and (not pts or pts[0][0] > 0):
            pts = [(0.0, 0.0), *pts]
        keyframes[key] = (
            np.array([a for a, _ in pts], dtype=np.float64),
            np.array([v for _, v in pts], dtype=np.float64),
        )
    names = ", ".join(
        f"{sc.name} {datetime.fromtimestamp(at / 1000, SHANGHAI):%m-%d}" for at, sc in episodes
    )
    return Scenario(
        name="simulated-year",
        description=f"quiet climate; {names}; {len(faults)} faults",
        start_ms=start_ms,
        duration_ms=end_ms - start_ms,
        keyframes=keyframes,
        faults=tuple(sorted(faults, key=lambda f: f.at_ms)),
        source="scoring/year",
    )


SEASON_DAYS = 21
# The default bench's season per climate (month, day, days): together they hold every placed
# scenario but July's rainstorm and November's snowstorm (in the year, ``--full``). Hailar:
# January's cold wave and its deepest cold (the nights that gave pipe-freeze and low-temperature
# alarms with no cause); Hohhot: March's snowstorm, April's sandstorm and the heating season's
# end (15 April).
SEASONS: dict[str, tuple[int, int, int]] = {
    "small": (3, 2, 45),
    "hailar-small": (1, 4, 35),
}


def period(
    full: bool, now_ms: int, days: int = SEASON_DAYS, month: int = 2, day: int = 22
) -> tuple[int, int]:
    """The whole year ending now (``full``), or a season of the last past year that holds it:
    ``days`` from ``month``/``day`` (by default the late winter: 22 February, the March
    snowstorm, the heating season's end in Hohhot)."""
    if full:
        return now_ms - 365 * 86_400_000, now_ms
    now = datetime.fromtimestamp(now_ms / 1000, SHANGHAI)
    year = now.year
    start = datetime(year, month, day, tzinfo=SHANGHAI)
    if int((start + timedelta(days=days)).timestamp() * 1000) > now_ms:
        start = datetime(year - 1, month, day, tzinfo=SHANGHAI)
    end = start + timedelta(days=days)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def season(spec: str, now_ms: int) -> tuple[int, int]:
    """The default bench's season for an estate spec (:data:`SEASONS`)."""
    month, day, days = SEASONS.get(spec, (2, 22, SEASON_DAYS))
    return period(False, now_ms, days, month, day)
