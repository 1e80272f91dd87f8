"""A simulated estate: every device of a spec reporting at its catalog interval, a scenario's
weather and faults, and commands that change what the devices do.

Time advances in fixed 1-second steps of simulated time, whatever the caller's rhythm, and the
random generator is drawn in a fixed order within a step: the same spec, scenario and seed give
the same readings however fast or unevenly :meth:`SimulatedEstate.advance` is called.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from gateway.adapter import Collected
from protocol.catalog import Catalog, ValueType
from protocol.messages import Command, Event, Reading, Value
from simulators.models import (
    GAS_PEAK_LEL,
    GAS_RAMP_MS,
    MIN,
    MODELS,
    SEQUENTIAL,
    ActiveFault,
    Context,
    Group,
)
from simulators.scenario import QUIET, Fault, Scenario, ScenarioError
from simulators.spec import EstateSpec, small_estate

__all__ = ["ACTIONS", "Collected", "EstateSpec", "SimulatedEstate", "small_estate"]

STEP_MS = 1000
# Commands a simulated device obeys: action -> kind.
ACTIONS = {"socket.power_off": "ebike_charger", "socket.power_on": "ebike_charger"}


class SimulatedEstate:
    """Which devices report when, what they say, and which events happen; seeded."""

    def __init__(
        self,
        spec: EstateSpec,
        catalog: Catalog,
        seed: int,
        start_ms: int,
        scenario: Scenario | None = None,
        step_ms: int = STEP_MS,
        every: Mapping[str, int] | None = None,
    ) -> None:
        """``step_ms``: the simulated step (devices due in one step are modelled together);
        ``every``: kind -> report every n-th catalog interval (a replay of a year reports its
        fast kinds less often; n below 3 keeps them inside the service's deadman allowance)."""
        unknown = sorted(
            {d.kind for d in spec.devices if d.kind not in catalog.kinds or d.kind not in MODELS}
        )
        if unknown:
            raise ValueError(f"estate {spec.estate}: kinds the simulator cannot play: {unknown}")
        self.spec = spec
        self.catalog = catalog
        self.scenario = scenario or QUIET
        self.start_ms = start_ms
        self.rng = np.random.default_rng(seed)
        self.step_ms = step_ms
        self.groups: dict[str, Group] = {}
        by_kind: dict[str, list[int]] = {}
        for i, d in enumerate(spec.devices):
            by_kind.setdefault(d.kind, []).append(i)
        for kind in sorted(by_kind):  # a fixed order keeps the random draws reproducible
            idx = by_kind[kind]
            interval = catalog.kinds[kind].interval_s * 1000 * (every or {}).get(kind, 1)
            # Spread first reports over a few seconds so a gateway doesn't burst at start.
            first = start_ms + self.rng.integers(0, 3000, size=len(idx))
            self.groups[kind] = Group(
                kind=kind,
                ids=[spec.devices[i].id for i in idx],
                building=np.array([spec.devices[i].building for i in idx], dtype=np.int64),
                floors=np.array([spec.devices[i].floors for i in idx], dtype=np.int64),
                interval_ms=interval,
                next_ms=first.astype(np.int64),
                last_ms=(first - interval).astype(np.int64),
            )
        self._kinds = list(self.groups)
        self._group_next = np.array([g.next_ms.min() for g in self.groups.values()], dtype=np.int64)
        self.faults = self._bind_faults()
        self.ctx = Context(self.rng, spec.climate, self.scenario, start_ms, self.faults)
        self._pending_events = sorted(self._fault_events(), key=lambda e: e.ts)
        self._step_end = start_ms  # everything before this is done
        self._limits = {
            kind: {
                m.name: (
                    -math.inf if m.min is None else m.min,
                    math.inf if m.max is None else m.max,
                    m.type,
                )
                for m in catalog.kinds[kind].metrics.values()
            }
            for kind in self.groups
        }

    @property
    def now_ms(self) -> int:
        """Simulated time up to which readings have been produced."""
        return self._step_end

    # -- faults -----------------------------------------------------------------------------

    def _bind_faults(self) -> list[ActiveFault]:
        out = []
        for f in self.scenario.faults:
            t0 = self.start_ms + f.at_ms
            kind = pos = dev = None
            if f.type == "heating_failure":
                buildings = {d.building for d in self.spec.devices}
                if f.building not in buildings:
                    raise ScenarioError(
                        f"scenario {self.scenario.source}: heating_failure names building "
                        f"{f.building}, but estate spec {self.spec.source} has buildings "
                        f"1..{max(buildings)}"
                    )
            elif f.type != "gateway_offline":
                kind, pos, dev = self._target(f)
            out.append(ActiveFault(f, t0, t0 + f.duration_ms, kind, pos, dev, f.building))
        return out

    def _target(self, f: Fault) -> tuple[str, int, str]:
        where = f"scenario {self.scenario.source}: fault {f.type} at {f.at_ms // MIN:.0f} min"
        if f.device:
            for kind, g in self.groups.items():
                if f.device in g.ids:
                    return kind, g.ids.index(f.device), f.device
            raise ScenarioError(
                f"{where}: device {f.device!r} is not in estate spec {self.spec.source}"
            )
        assert f.kind is not None
        group = self.groups.get(f.kind)
        if group is None or f.nth > len(group.ids):
            have = len(group.ids) if group else 0
            raise ScenarioError(
                f"{where}: wants {f.kind} number {f.nth}, estate spec {self.spec.source} has {have}"
            )
        return f.kind, f.nth - 1, group.ids[f.nth - 1]

    def _fault_events(self) -> list[Event]:
        """The discrete events a real device would send when these faults happen."""
        events: list[Event] = []
        panel = self.groups.get("fire_panel")
        pumps = self.groups.get("fire_pump")
        for f in self.faults:
            ft, dev = f.fault.type, f.dev
            if dev is None or f.kind is None:
                continue
            g = self.groups[f.kind]
            zone = f"b{int(g.building[f.pos])}" if f.pos is not None else "estate"
            if ft == "fire_alarm":
                # status words (GB/T 26875.3): bit 0 normal operation, 1 fire alarm, ...
                data = {"zone": zone, "point": dev, "status_word": 0b11}
                events.append(Event(dev, "smoke_detector", f.t0, "fire.alarm", data))
                # the alarm ends as a real one does: the panel is reset (复位), and the
                # detector, back to normal, says so (its word's fire-alarm bit clears)
                restored = {"point": dev, "status_word": 0b1, "by": "panel_reset"}
                events.append(Event(dev, "smoke_detector", f.t1, "fire.reset", restored))
                if panel:
                    events.append(Event(panel.ids[0], "fire_panel", f.t0 + 500, "fire.alarm", data))
                    events.append(
                        Event(panel.ids[0], "fire_panel", f.t1, "fire.reset", {"status_word": 0b1})
                    )
                if pumps:
                    events.append(
                        Event(
                            pumps.ids[0],
                            "fire_pump",
                            f.t0 + 2000,
                            "fire.start",
                            {"zone": zone, "point": pumps.ids[0], "status_word": 0b100001},
                        )
                    )
            elif ft == "fire_pump_failure":
                events.append(
                    Event(
                        dev,
                        "fire_pump",
                        f.t0,
                        "fire.fault",
                        {
                            "zone": "pump-room",
                            "point": dev,
                            "status_word": 0b101,  # normal + fault
                            "code": "pump_failure",
                        },
                    )
                )
            elif ft == "elevator_trapped":
                floor = max(1, int(g.floors[f.pos]) // 2) if f.pos is not None else 1
                detected = 30_000  # typical detection timer (REFERENCE.md §3)
                events.append(
                    Event(
                        dev,
                        "elevator",
                        f.t0 + detected,
                        "elevator.trapped",
                        {
                            "floor": floor,
                            "people": True,
                            # one in three stops at a landing (平层关人), the rest between floors
                            "door_zone": f.t0 // MIN % 3 == 0,
                            "duration_s": 30,
                        },
                    )
                )
                events.append(
                    Event(
                        dev,
                        "elevator",
                        f.t1,
                        "elevator.released",
                        {"floor": floor, "duration_s": f.fault.duration_ms // 1000},
                    )
                )
            elif ft == "charger_overheat":
                events.append(
                    Event(
                        dev,
                        "ebike_charger",
                        f.t0 + int(7 * MIN),
                        "ebike.over_temperature",
                        {"socket": dev, "temp_c": 65.0},
                    )
                )
            elif ft == "gas_leak":
                at = f.t0 + int(GAS_RAMP_MS * 25 / GAS_PEAK_LEL)
                events.append(
                    Event(dev, "gas_detector", at, "gas.leak", {"lel_pct": 25.0, "level": 1})
                )
        return events

    def fault_ledger(self) -> list[dict[str, Any]]:
        """What this estate was made to do wrong, one record per injected fault: its type, the
        device (or building, or gateway) it broke and when, in epoch ms. The ground truth a
        scorer compares the service's alarms with (``scoring/``); weather is not here: the
        scorer derives its episodes from the station's own readings."""
        out: list[dict[str, Any]] = []
        for f in self.faults:
            devices: list[str] = [f.dev] if f.dev else []
            if f.fault.type == "heating_failure":
                devices = [d.id for d in self.spec.devices if d.building == f.building]
                devices += [d.id for d in self.spec.devices if d.kind == "heating_station"]
            elif f.fault.type in ("fire_alarm", "fire_pump_failure"):
                # the panel and the pumps report it too (events, status words)
                plant = ("fire_panel", "fire_pump")
                devices += [i for k in plant if k in self.groups for i in self.groups[k].ids]
            out.append(
                {
                    "estate": self.spec.estate,
                    "gateway": self.spec.gateway,
                    "fault": f.fault.type,
                    "device": f.dev,
                    "kind": f.kind,
                    "building": f.building,
                    "devices": list(dict.fromkeys(devices)),
                    "start_ms": f.t0,
                    "end_ms": f.t1,
                }
            )
        return out

    def network_down(self, now_ms: int) -> bool:
        """True while the scenario has the gateway's network cut."""
        return self.scenario.network_down(now_ms - self.start_ms)

    # -- commands ---------------------------------------------------------------------------

    def command(self, cmd: Command, now_ms: int | None = None) -> str | None:
        """Carry out a command; None when done, else why not (for the ``cmd/ack`` error)."""
        kind = ACTIONS.get(cmd.action)
        if kind is None:
            return f"unknown action {cmd.action!r}; this gateway knows {', '.join(sorted(ACTIONS))}"
        g = self.groups.get(kind)
        if g is None or cmd.dev not in g.ids:
            return f"no {kind} {cmd.dev!r} behind this gateway"
        pos = g.ids.index(cmd.dev)
        st = g.state
        if "powered" not in st:  # the socket has not reported yet: run its model once
            return "the socket has not started yet; retry in a few seconds"
        on = cmd.action == "socket.power_on"
        if not on and st["powered"][pos]:
            st["t_cut"][pos] = float(now_ms if now_ms is not None else self._step_end)
            st["temp_cut"][pos] = st["temp"][pos]
        st["powered"][pos] = on
        return None

    # -- time -------------------------------------------------------------------------------

    def advance(self, now_ms: int) -> Collected:
        """Readings and events of every whole step up to ``now_ms``."""
        out = Collected()
        step = self.step_ms
        while self._step_end + step <= now_ms:
            t0 = self._step_end
            # Skip empty stretches: jump to the step holding the next report or event.
            nxt = int(self._group_next.min())
            if self._pending_events:
                nxt = min(nxt, self._pending_events[0].ts)
            if nxt >= t0 + step:
                skip_to = t0 + (nxt - t0) // step * step
                last_whole = t0 + (now_ms - t0) // step * step - step
                if skip_to > last_whole:
                    self._step_end = last_whole + step
                    break
                t0 = skip_to
            self._step(t0, t0 + step, out)
            self._step_end = t0 + step
        return out

    def due(self, now_ms: int) -> list[Reading]:
        """Readings due by ``now_ms`` (events of the scenario are dropped: use advance)."""
        return self.advance(now_ms).readings

    def _step(self, t0: int, t1: int, out: Collected) -> None:
        while self._pending_events and self._pending_events[0].ts < t1:
            out.events.append(self._pending_events.pop(0))
        got: list[Reading] = []
        rounds = 0
        for k in np.flatnonzero(self._group_next < t1):  # only kinds with a report due
            kind = self._kinds[k]
            g = self.groups[kind]
            # every report due in the step: one round per interval (one, in 1-s steps)
            due: list[tuple[np.ndarray, np.ndarray]] = []
            while (sel := np.flatnonzero(g.next_ms < t1)).size:
                due.append((sel, g.next_ms[sel].copy()))
                g.next_ms[sel] += g.interval_ms
            self._group_next[k] = g.next_ms.min()
            rounds = max(rounds, len(due))
            if len(due) > 1 and kind not in SEQUENTIAL:
                order = np.argsort(np.concatenate([t for _, t in due]), kind="stable")
                sel = np.concatenate([s for s, _ in due])[order]
                due = [(sel, np.concatenate([t for _, t in due])[order])]
            for sel, t in due:
                metrics = MODELS[kind](self.ctx, g, sel, t)
                g.last_ms[sel] = t  # a device twice in sel: its later time wins
                keep = self._reporting(g, sel, t)
                got += self._readings(
                    g, sel[keep], t[keep], {k: v[keep] for k, v in metrics.items()}
                )
        if rounds > 1:  # a device's readings in the order of their times, whatever its kind
            got.sort(key=lambda r: r.ts)
        out.readings += got

    def _reporting(self, g: Group, sel: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Devices not silenced by a ``device_silent`` fault at their report time."""
        keep = np.ones(len(sel), dtype=bool)
        for f in self.faults:
            if f.fault.type == "device_silent" and f.kind == g.kind:
                keep &= ~((sel == f.pos) & (t >= f.t0) & (t < f.t1))
        return keep

    def _readings(
        self, g: Group, sel: np.ndarray, t: np.ndarray, metrics: dict[str, np.ndarray]
    ) -> list[Reading]:
        columns: list[tuple[str, list[Value]]] = []
        for name, (lo, hi, vtype) in self._limits[g.kind].items():
            arr = metrics[name]
            if vtype is ValueType.INTEGER:
                arr = np.clip(arr, lo, hi).astype(np.int64)
            elif vtype is ValueType.NUMBER:
                arr = np.clip(arr.astype(np.float64), lo, hi)
            columns.append((name, arr.tolist()))
        names = [c[0] for c in columns]
        ids, kind = g.ids, g.kind
        return [
            Reading(ids[i], kind, ts, dict(zip(names, values, strict=True)))
            for i, ts, *values in zip(
                sel.tolist(), t.tolist(), *(c[1] for c in columns), strict=True
            )
        ]
