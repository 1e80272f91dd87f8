"""Signal models: what each device kind reports, vectorised over the devices due at once.

A model takes the devices of one kind that report in this step (``sel``, positions in their
:class:`Group`) and their report times ``t`` (epoch ms) and returns metric arrays. Weather and
building temperatures are pure functions of time (:class:`Context`); per-device state (charging
sessions, lift floors, meter registers, pressure drift) lives in ``Group.state``. All randomness
comes from one seeded generator drawn in a fixed order, so a seed gives the same readings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from simulators.scenario import Fault, Scenario
from simulators.spec import Climate

MIN = 60_000.0
HOUR = 3_600_000.0
DAY = 86_400_000.0

Metrics = dict[str, np.ndarray]


@dataclass
class Group:
    """All devices of one kind: ids, report schedule and model state."""

    kind: str
    ids: list[str]
    building: np.ndarray
    floors: np.ndarray
    interval_ms: int
    next_ms: np.ndarray
    last_ms: np.ndarray
    state: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class ActiveFault:
    """A scenario fault bound to a device of the spec and to absolute times."""

    fault: Fault
    t0: int
    t1: int
    kind: str | None  # group of the target device
    pos: int | None  # position of the target device in its group
    dev: str | None
    building: int | None


class Context:
    def __init__(
        self,
        rng: np.random.Generator,
        climate: Climate,
        scenario: Scenario,
        start_ms: int,
        faults: list[ActiveFault],
    ) -> None:
        self.rng = rng
        self.climate = climate
        self.scenario = scenario
        self.start_ms = start_ms
        self.faults = faults
        self._spells: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    # -- weather, a pure function of time ---------------------------------------------------

    def hour(self, t: np.ndarray) -> np.ndarray:
        return (t / HOUR + 8.0) % 24.0  # Asia/Shanghai

    def outdoor(self, t: np.ndarray) -> np.ndarray:
        """Seasonal cycle (coldest mid-January), a daily cycle with its minimum near sunrise
        (about 07:30 in winter, 05:00 in summer) and its maximum at 15:00, the climate's cold
        spells (below the cycle, in winter) and the scenario's offset."""
        c = self.climate
        day = (t / DAY) % 365.25
        seasonal = c.january_mean_c + (c.july_mean_c - c.january_mean_c) * 0.5 * (
            1.0 - np.cos(2.0 * np.pi * (day - 15.0) / 365.25)
        )
        h = self.hour(t)
        t_min = 6.25 + 1.25 * np.cos(2.0 * np.pi * (day - 15.0) / 365.25)  # 07:30 … 05:00
        t_max = 15.0
        rise = (h >= t_min) & (h < t_max)
        x = np.where(
            rise, (h - t_min) / (t_max - t_min), ((h - t_max) % 24.0) / (24.0 - t_max + t_min)
        )
        shape = np.where(rise, -np.cos(np.pi * x), np.cos(np.pi * x))
        daily = 0.5 * c.diurnal_range_c * shape
        out = seasonal + daily + self.weather("temp_offset_c", t) + self.cold_spells(t)
        return np.asarray(out, dtype=np.float64)

    def cold_spells(self, t: np.ndarray) -> np.ndarray:
        """Winter cold spells below the seasonal cycle: a few a winter, 2–5 days each; the
        deepest of each winter takes the coldest night to ``cold_spell_min_c`` (a cold year:
        Hohhot −30 °C, Hailar −42 °C). None while a scenario sets the temperature itself."""
        c = self.climate
        if c.cold_spell_min_c != c.cold_spell_min_c or "temp_offset_c" in self.scenario.keyframes:
            return np.zeros(np.shape(t))
        if self._spells is None:
            self._spells = self._draw_spells()
        centre, half, depth = self._spells
        days = np.asarray(t, dtype=np.float64)[..., None] / DAY
        x = np.clip(np.abs(days - centre) / half, 0.0, 1.0)
        return np.asarray((-depth * 0.5 * (1.0 + np.cos(np.pi * x))).sum(axis=-1))

    def _draw_spells(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Its own generator, from the start time: the readings' draws stay as they were.
        rng = np.random.default_rng(int(self.start_ms // DAY) + 1_000_003)
        c = self.climate
        coldest_night = c.january_mean_c - 0.5 * c.diurnal_range_c
        deepest = max(0.0, coldest_night - c.cold_spell_min_c)
        centres: list[float] = []
        halves: list[float] = []
        depths: list[float] = []
        year0 = int(self.start_ms // (365.25 * DAY))
        for year in range(year0 - 1, year0 + 3):
            n = 3
            # winters: from 1 December (day -31) to the end of February (day 58)
            at = year * 365.25 + rng.uniform(-31.0, 58.0, n)
            d = deepest * rng.uniform(0.4, 0.8, n)
            # the deepest spell sits near mid-January, where the cycle is coldest
            at[0] = year * 365.25 + 15.0 + rng.uniform(-6.0, 6.0)
            d[0] = deepest
            centres.extend(at)
            halves.extend(rng.uniform(1.0, 2.5, n))
            depths.extend(d)
        return np.array(centres), np.array(halves), np.array(depths)

    def weather(self, name: str, t: np.ndarray) -> np.ndarray:
        return self.scenario.value(name, (t - self.start_ms).astype(np.float64))

    def fallen_mm(self, name: str, t: np.ndarray) -> np.ndarray:
        """Precipitation from the scenario start to t, rounded so that per-reading amounts
        telescope: the sum of a station's readings over a window is exact to 0.01 mm."""
        offsets = (t - self.start_ms).astype(np.float64)
        return np.round(self.scenario.cumulative_mm(name, offsets), 2)

    def heating_season(self, t: np.ndarray) -> np.ndarray:
        """The climate's heating season (Hohhot 10-15/04-15, Hailar 09-15/05-15), by the
        Asia/Shanghai day of the year."""
        day = ((t / DAY + 8.0 / 24.0) % 365.25).astype(np.int64)
        first, last = self.climate.season_days()
        if first <= last:
            return (day >= first) & (day <= last)
        return (day >= first) | (day <= last)

    def indoor(self, building: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Indoor air of a building: heated to ~20.5 °C; after a heating failure it cools toward
        the outdoors (time constant 8 h) and recovers in about 3 h after the repair."""
        out = self.outdoor(t)
        heated = np.where(self.heating_season(t), 20.5, np.clip(out + 3.0, 14.0, 32.0))
        temp = heated.copy()
        for f in self.faults:
            if f.fault.type != "heating_failure":
                continue
            hit = (building == f.building) & (t >= f.t0)
            if not hit.any():
                continue
            cold = out + 6.0  # neighbours and the building's mass keep it above the outdoors
            during = cold + (heated - cold) * np.exp(-(np.minimum(t, f.t1) - f.t0) / (8 * HOUR))
            after = heated - (heated - during) * np.exp(-np.maximum(t - f.t1, 0) / (3 * HOUR))
            temp = np.where(hit, np.where(t < f.t1, during, after), temp)
        return temp

    def demand(self, t: np.ndarray) -> np.ndarray:
        """Residential demand 0..1: morning and evening peaks."""
        h = self.hour(t)
        return np.clip(
            0.15
            + 0.6 * np.exp(-(((h - 7.5) / 1.2) ** 2))
            + 0.85 * np.exp(-(((h - 20) / 1.8) ** 2)),
            0,
            1,
        )

    # -- faults -----------------------------------------------------------------------------

    def active(
        self, ftype: str, g: Group, sel: np.ndarray, t: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Which of these devices have this fault at their report time, and for how long (ms)."""
        mask = np.zeros(len(sel), dtype=bool)
        elapsed = np.zeros(len(sel))
        for f in self.faults:
            if f.fault.type != ftype or f.kind != g.kind:
                continue
            hit = (sel == f.pos) & (t >= f.t0) & (t < f.t1)
            mask |= hit
            elapsed = np.where(hit, t - f.t0, elapsed)
        return mask, elapsed

    def any_active(self, ftype: str, t: np.ndarray) -> np.ndarray:
        out = np.zeros(len(t), dtype=bool)
        for f in self.faults:
            if f.fault.type == ftype:
                out |= (t >= f.t0) & (t < f.t1)
        return out

    def noise(self, sd: float, n: int) -> np.ndarray:
        return self.rng.normal(0.0, sd, n)


# -- models, one per kind -------------------------------------------------------------------


def _pressure(
    base_lo: float, base_hi: float
) -> Callable[[Context, Group, np.ndarray, np.ndarray], Metrics]:
    """Static pressure: a per-device level, a slow random drift and sensor noise."""

    def model(ctx: Context, g: Group, sel: np.ndarray, t: np.ndarray) -> Metrics:
        st = g.state
        if "base" not in st:
            st["base"] = ctx.rng.uniform(base_lo, base_hi, len(g.ids))
            st["drift"] = np.zeros(len(g.ids))
        st["drift"][sel] = np.clip(st["drift"][sel] + ctx.noise(0.0008, len(sel)), -0.03, 0.03)
        p = st["base"][sel] + st["drift"][sel] + ctx.noise(0.004, len(sel))
        loss, el = ctx.active("hydrant_pressure_loss", g, sel, t)
        p = np.where(loss, np.maximum(0.02, st["base"][sel] * np.exp(-el / (8 * MIN))), p)
        return {"pressure_mpa": np.round(np.maximum(p, 0), 3)}

    return model


# GB/T 26875.3 status words: bit 0 set is normal operation (0 would be test mode).
NORMAL, FIRE_ALARM, FAULT = 0b1, 0b10, 0b100


def fire_panel(ctx: Context, g: Group, sel: np.ndarray, t: np.ndarray) -> Metrics:
    word = (
        NORMAL
        | np.where(ctx.any_active("fire_alarm", t), FIRE_ALARM, 0)
        | np.where(ctx.any_active("fire_pump_failure", t), FAULT, 0)
    )
    return {"status_word": word.astype(np.int64)}


def smoke_detector(ctx: Context, g: Group, sel: np.ndarray, t: np.ndarray) -> Metrics:
    alarm, _ = ctx.active("fire_alarm", g, sel, t)
    obscuration = np.abs(0.3 + ctx.noise(0.08, len(sel)))
    obscuration = np.where(alarm, 12.0 + ctx.noise(1.0, len(sel)), obscuration)
    return {
        "smoke_obscuration_pct": np.round(obscuration, 2),
        "status_word": (NORMAL | np.where(alarm, FIRE_ALARM, 0)).astype(np.int64),
    }


def fire_pump(ctx: Context, g: Group, sel: np.ndarray, t: np.ndarray) -> Metrics:
    failed, _ = ctx.active("fire_pump_failure", g, sel, t)
    started = ctx.any_active("fire_alarm", t)
    return {"running": started & ~failed, "auto": ~failed, "fault": failed}


def fire_water_tank(ctx: Context, g: Group, sel: np.ndarray, t: np.ndarray) -> Metrics:
    # The pump room is heated; it still follows the outdoors a little.
    temp = 8.0 + 0.05 * ctx.outdoor(t) + ctx.noise(0.2, len(sel))
    return {
        "level_m": np.round(4.2 + ctx.noise(0.01, len(sel)), 2),
        "temp_c": np.round(temp, 1),
    }


def fire_door(ctx: Context, g: Group, sel: np.ndarray, t: np.ndarray) -> Metrics:
    return {"open": ctx.rng.random(len(sel)) < 0.02}


def fire_lane_monitor(ctx: Context, g: Group, sel: np.ndarray, t: np.ndarray) -> Metrics:
    return {"blocked": np.zeros(len(sel), dtype=bool)}


CHARGER_STATES = np.array(["idle", "charging", "full", "fault"])


def ebike_charger(ctx: Context, g: Group, sel: np.ndarray, t: np.ndarray) -> Metrics:
    """Charging sessions: plug-in mostly in the evening; ramp, plateau, taper, full (trickle),
    unplug. A socket cut by ``socket.power_off`` draws nothing and cools down."""
    st, n, rng = g.state, len(sel), ctx.rng
    if "phase" not in st:
        size = len(g.ids)
        st["phase"] = np.zeros(size, dtype=np.int64)  # 0 idle, 1 charging, 2 full
        st["t_start"] = np.zeros(size)
        st["dur"] = np.zeros(size)
        st["unplug"] = np.zeros(size)
        st["p_max"] = np.zeros(size)
        st["powered"] = np.ones(size, dtype=bool)
        st["t_cut"] = np.zeros(size)
        st["temp_cut"] = np.zeros(size)
        st["temp"] = np.zeros(size)
    h = ctx.hour(t)
    rate = (
        0.02
        + 0.25 * ((h >= 18) & (h < 22.5))
        + 0.08 * (((h >= 7) & (h < 9)) | ((h >= 12) & (h < 13)))
    )
    arrive = rng.random(n) < 1 - np.exp(-rate * g.interval_ms / HOUR)
    dur = rng.uniform(3 * HOUR, 7 * HOUR, n)
    unplug = rng.uniform(0.5 * HOUR, 6 * HOUR, n)
    p_max = rng.uniform(150, 300, n)
    phase = st["phase"][sel]
    start = (phase == 0) & arrive
    st["t_start"][sel] = np.where(start, t, st["t_start"][sel])
    st["dur"][sel] = np.where(start, dur, st["dur"][sel])
    st["unplug"][sel] = np.where(start, unplug, st["unplug"][sel])
    st["p_max"][sel] = np.where(start, p_max, st["p_max"][sel])
    phase = np.where(start, 1, phase)
    el = t - st["t_start"][sel]
    d = st["dur"][sel]
    phase = np.where((phase == 1) & (el >= d), 2, phase)
    phase = np.where((phase == 2) & (el >= d + st["unplug"][sel]), 0, phase)

    overheat, oel = ctx.active("charger_overheat", g, sel, t)
    after_full, _ = ctx.active("charger_drawing_after_full", g, sel, t)
    phase = np.where(overheat, 1, np.where(after_full, 2, phase))
    st["phase"][sel] = phase

    pm = np.where(st["p_max"][sel] > 0, st["p_max"][sel], 220.0)
    frac = np.clip(el / np.maximum(d, 1), 0, 1)
    ramp = np.clip(el / (3 * MIN), 0, 1)
    taper = np.where(frac < 0.7, 1.0, 1.0 - (frac - 0.7) / 0.3 * 0.7)
    power = np.where(phase == 1, pm * ramp * taper, np.where(phase == 2, 3.0, 0.0))
    power = np.where(overheat, 280.0, power)
    power = np.where(after_full, 160.0, power)  # the charger never cut off
    power = np.maximum(power + np.where(power > 0, ctx.noise(2.0, n), 0.0), 0)

    ambient = np.maximum(ctx.outdoor(t), -15.0) + 3.0  # sheds are half sheltered
    temp = ambient + power * 0.04 + ctx.noise(0.3, n)
    # Over-temperature: 35 °C → 65 °C in 7 min, 85 °C at 10 min (the event fires at 65 °C).
    hot = np.where(
        oel < 7 * MIN,
        35 + 30 * oel / (7 * MIN),
        np.minimum(85, 65 + 20 * (oel - 7 * MIN) / (3 * MIN)),
    )
    temp = np.where(overheat, hot, temp)

    powered = st["powered"][sel]
    cooled = ambient + (st["temp_cut"][sel] - ambient) * np.exp(
        -(t - st["t_cut"][sel]) / (10 * MIN)
    )
    power = np.where(powered, power, 0.0)
    temp = np.where(powered, temp, np.maximum(cooled, ambient))
    st["temp"][sel] = temp
    state = np.where(powered, phase, 0)
    return {
        "power_w": np.round(power, 1),
        "current_a": np.round(power / 220.0, 2),
        "temp_c": np.round(temp, 1),
        "state": CHARGER_STATES[state],
    }


def ebike_camera(ctx: Context, g: Group, sel: np.ndarray, t: np.ndarray) -> Metrics:
    return {"online": np.ones(len(sel), dtype=bool)}


DIRECTIONS = np.array(["stopped", "up", "down"])
DOORS = np.array(["closed", "open"])


def elevator(ctx: Context, g: Group, sel: np.ndarray, t: np.ndarray) -> Metrics:
    """Trips by time of day; a trapped car stands between floors with its doors shut."""
    st, n, rng = g.state, len(sel), ctx.rng
    if "floor" not in st:
        st["floor"] = np.ones(len(g.ids), dtype=np.int64)
    floors = g.floors[sel]
    h = ctx.hour(t)
    p_run = (
        0.05
        + 0.45 * ((h >= 7) & (h < 9))
        + 0.2 * ((h >= 9) & (h < 17))
        + 0.45 * ((h >= 17) & (h < 20.5))
        + 0.1 * ((h >= 20.5) & (h < 23))
    )
    running = rng.random(n) < p_run
    target = rng.integers(1, floors + 1)
    floor = st["floor"][sel]
    passing = floor + np.round((target - floor) * rng.random(n)).astype(np.int64)
    direction = np.where(running & (target > floor), 1, np.where(running & (target < floor), 2, 0))
    running &= direction != 0
    rated = np.where(floors > 10, 1.75, 1.0)
    door_open = ~running & (rng.random(n) < 0.3)
    people = np.where(running, rng.random(n) < 0.8, door_open & (rng.random(n) < 0.5))
    trapped, _ = ctx.active("elevator_trapped", g, sel, t)
    trap_floor = np.maximum(1, floors // 2)
    running &= ~trapped
    direction = np.where(trapped, 0, direction)
    door_open &= ~trapped
    people |= trapped
    shown = np.where(trapped, trap_floor, np.where(running, passing, floor))
    st["floor"][sel] = np.where(trapped, trap_floor, np.where(running, target, floor))
    speed = np.where(running, rated * rng.uniform(0.6, 1.0, n), 0.0)
    # Heated machine rooms: they follow the outdoors only a little, and not below -35 °C's.
    out = np.maximum(ctx.outdoor(t), -35.0)
    machine_room = 12.0 + 0.2 * (out + 11.0) + running * 1.0 + ctx.noise(0.3, n)
    return {
        "floor": shown,
        "direction": DIRECTIONS[direction],
        "door": DOORS[door_open.astype(np.int64)],
        "running": running,
        "people": people,
        "mode": np.full(n, "normal"),
        "speed_ms": np.round(speed, 2),
        "machine_room_temp_c": np.round(machine_room, 1),
    }


def water_pressure(ctx: Context, g: Group, sel: np.ndarray, t: np.ndarray) -> Metrics:
    st = g.state
    if "base" not in st:
        st["base"] = ctx.rng.uniform(0.30, 0.36, len(g.ids))
    p = st["base"][sel] - 0.04 * ctx.demand(t) + ctx.noise(0.005, len(sel))
    return {"pressure_mpa": np.round(p, 3)}


def water_tank(ctx: Context, g: Group, sel: np.ndarray, t: np.ndarray) -> Metrics:
    return {"level_pct": np.round(82.0 - 15.0 * ctx.demand(t) + ctx.noise(0.5, len(sel)), 1)}


def pipe_temp(ctx: Context, g: Group, sel: np.ndarray, t: np.ndarray) -> Metrics:
    out = ctx.outdoor(t)
    inside = ctx.indoor(g.building[sel], t)
    # Pipes in stairwells and basements of heated buildings: much nearer the inside than the
    # outside (0.55 put a Hailar January night's pipes below 0 °C with the heating on).
    return {"temp_c": np.round(out + 0.8 * (inside - out) + ctx.noise(0.2, len(sel)), 1)}


def room_temp(ctx: Context, g: Group, sel: np.ndarray, t: np.ndarray) -> Metrics:
    st = g.state
    if "offset" not in st:
        st["offset"] = ctx.rng.normal(0.0, 0.8, len(g.ids))
    temp = ctx.indoor(g.building[sel], t) + st["offset"][sel] + ctx.noise(0.15, len(sel))
    return {"temp_c": np.round(temp, 1)}


SUPPLY_MAX_C = 80.0  # the radiator curve's top, below the 85 °C alarm


def heating_station(ctx: Context, g: Group, sel: np.ndarray, t: np.ndarray) -> Metrics:
    """Outdoor-reset curve: design 75/50 °C at about -17 °C (REFERENCE.md §5), capped at 80 °C:
    85 °C is the most a radiator system may be given (GB 50736 §5.3.1), the alarm's limit, so a
    controller's curve stops short of it, not on it (a curve clipped at 85 °C crossed the
    alarm with its sensor noise on every Hailar night below −27 °C). Outside the climate's
    heating season the loop stands still, filled, at the room's temperature."""
    n = len(sel)
    out = ctx.outdoor(t)
    supply = np.clip(40.0 + (18.0 - out), 40.0, SUPPLY_MAX_C)
    ret = supply - np.clip(25.0 * (18.0 - out) / 35.0, 5.0, 30.0)
    season = ctx.heating_season(t)
    supply = np.where(season, supply, 24.0) + ctx.noise(0.4, n)
    ret = np.where(season, ret, 23.0) + ctx.noise(0.4, n)
    return _loop(supply, ret, 0.6, 0.35, ctx, n)


def floor_heating(ctx: Context, g: Group, sel: np.ndarray, t: np.ndarray) -> Metrics:
    """A floor-heated building's unit: 36～44 °C supply by the outdoor temperature, 5～8 °C
    difference (REFERENCE.md §5: typically 35～50 °C)."""
    n = len(sel)
    out = ctx.outdoor(t)
    supply = np.clip(36.0 + 0.25 * (18.0 - out), 36.5, 43.5)
    ret = supply - np.clip(5.0 + 0.08 * (18.0 - out), 5.0, 8.0)
    season = ctx.heating_season(t)
    supply = np.where(season, supply, 24.0) + ctx.noise(0.3, n)
    ret = np.where(season, ret, 23.0) + ctx.noise(0.3, n)
    return _loop(supply, ret, 0.4, 0.3, ctx, n)


def _loop(
    supply: np.ndarray, ret: np.ndarray, p_supply: float, p_return: float, ctx: Context, n: int
) -> Metrics:
    supply, ret = np.round(supply, 1), np.round(ret, 1)
    return {
        "supply_temp_c": supply,
        "return_temp_c": ret,
        "supply_pressure_mpa": np.round(p_supply + ctx.noise(0.008, n), 3),
        "return_pressure_mpa": np.round(p_return + ctx.noise(0.008, n), 3),
        "supply_return_diff_c": np.round(supply - ret, 1),
    }


def power_meter(ctx: Context, g: Group, sel: np.ndarray, t: np.ndarray) -> Metrics:
    st, n = g.state, len(sel)
    if "base_kw" not in st:
        st["base_kw"] = ctx.rng.uniform(60, 150, len(g.ids))
        st["energy"] = ctx.rng.uniform(1e5, 5e5, len(g.ids))
    kw = st["base_kw"][sel] * (0.6 + 0.5 * ctx.demand(t)) + ctx.noise(3.0, n)
    st["energy"][sel] += kw * (t - g.last_ms[sel]) / HOUR
    return {
        "voltage_v": np.round(226.0 + ctx.noise(1.5, n), 1),  # within 198～235.4 V
        "current_a": np.round(kw * 1000 / (3 * 230.0), 1),
        "power_kw": np.round(kw, 1),
        "energy_kwh": np.round(st["energy"][sel], 1),
    }


GAS_PEAK_LEL = 38.0
GAS_RAMP_MS = 4 * MIN


def gas_detector(ctx: Context, g: Group, sel: np.ndarray, t: np.ndarray) -> Metrics:
    leak, el = ctx.active("gas_leak", g, sel, t)
    lel = np.abs(0.4 + ctx.noise(0.2, len(sel)))
    lel = np.where(leak, GAS_PEAK_LEL * np.minimum(1, el / GAS_RAMP_MS) + lel, lel)
    # The linked shut-off valve closes itself at the 20 %LEL alarm level.
    closed = leak & (lel >= 20.0)
    return {"lel_pct": np.round(lel, 1), "valve_open": ~closed}


def telecom_cabinet(ctx: Context, g: Group, sel: np.ndarray, t: np.ndarray) -> Metrics:
    n = len(sel)
    out = ctx.outdoor(t)
    down, el = ctx.active("telecom_down", g, sel, t)
    temp = 22.0 + 0.35 * np.maximum(out, -25.0) + ctx.noise(0.5, n)
    temp = np.where(down, out + (temp - out) * np.exp(-el / (40 * MIN)), temp)
    return {
        "temp_c": np.round(temp, 1),
        "door_open": np.zeros(n, dtype=bool),
        "power_ok": ~down,
        "link_up": ~down,
    }


def weather_station(ctx: Context, g: Group, sel: np.ndarray, t: np.ndarray) -> Metrics:
    """Snow and rain are what fell since the station's previous reading (CONTRACT.md)."""
    n = len(sel)
    out = ctx.outdoor(t)
    wind = np.maximum(0.0, ctx.weather("wind_ms", t) * (1 + ctx.noise(0.08, n)))
    gust = np.maximum(wind * 1.2, ctx.weather("gust_ms", t) * (1 + ctx.noise(0.08, n)))
    prev = g.last_ms[sel]
    snow = np.maximum(0.0, ctx.fallen_mm("snow_mm_h", t) - ctx.fallen_mm("snow_mm_h", prev))
    rain = np.maximum(0.0, ctx.fallen_mm("rain_mm_h", t) - ctx.fallen_mm("rain_mm_h", prev))
    sun = np.clip(np.cos(2 * np.pi * (ctx.hour(t) - 13.0) / 24.0), 0, None)
    return {
        "wind_speed_ms": np.round(wind, 1),
        "wind_gust_ms": np.round(gust, 1),
        "temp_c": np.round(out + ctx.noise(0.15, n), 1),
        "snow_mm": np.round(snow, 2),
        "rain_mm": np.round(rain, 2),
        "visibility_m": np.round(ctx.weather("visibility_m", t) * (1 + ctx.noise(0.02, n))),
        "humidity_pct": np.round(
            np.clip(ctx.weather("humidity_pct", t) + ctx.noise(2.0, n), 5, 100), 1
        ),
        "road_temp_c": np.round(out - 1.5 + 4.0 * sun + ctx.noise(0.3, n), 1),
        "pm10_ugm3": np.round(
            np.maximum(5.0, ctx.weather("pm10_ugm3", t) * (1 + ctx.noise(0.1, n)))
        ),
    }


Model = Callable[[Context, Group, np.ndarray, np.ndarray], Metrics]

MODELS: dict[str, Model] = {
    "fire_panel": fire_panel,
    "smoke_detector": smoke_detector,
    "fire_hydrant": _pressure(0.26, 0.42),
    "sprinkler": _pressure(0.18, 0.28),
    "fire_pump": fire_pump,
    "fire_water_tank": fire_water_tank,
    "fire_door": fire_door,
    "fire_lane_monitor": fire_lane_monitor,
    "ebike_charger": ebike_charger,
    "ebike_camera": ebike_camera,
    "elevator": elevator,
    "water_pressure": water_pressure,
    "water_tank": water_tank,
    "pipe_temp": pipe_temp,
    "power_meter": power_meter,
    "gas_detector": gas_detector,
    "heating_station": heating_station,
    "floor_heating": floor_heating,
    "room_temp": room_temp,
    "telecom_cabinet": telecom_cabinet,
    "weather_station": weather_station,
}

# Kinds whose model carries state from one report to the next (a random walk, a charging
# session, an energy counter, rain since the last report): a step holding several reports of
# one device plays them one round at a time. Every other kind is modelled in one call per step
# (an elevator's trips then all start from the floor it stood on at the step's start).
SEQUENTIAL = frozenset(
    {"fire_hydrant", "sprinkler", "ebike_charger", "power_meter", "weather_station"}
)
