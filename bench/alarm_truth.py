"""Bench 7: alarms against the truth. A simulated season (``--full``: year) per bundled climate,
played through a real Mosquitto into the real service as fast as it goes, then scored.

Per climate (Hohhot: the ``small`` spec; Hailar: ``hailar-small``) the whole service runs in
this process (its own Mosquitto, SQLite, ingest, alert engine, API) on a clock of its own: the
alert engine's time is the simulated time up to which everything published has been
evaluated. The driver publishes a step of simulated time (readings as one gateway would, QoS 1),
waits until the engine has evaluated it, then moves the engine's clock through the step a
minute at a time with ``tick()``, so ``for`` timers, deadman clocks and stand-downs see the
same minutes they would live. Timestamps are in the past (the year ends now).

The ledger (``scoring.ledger``): the simulator's faults, and the weather episodes of the
station's readings by the service's own CMA criteria. The scorer reads alarms and activations
through the API. Targets (issue 11): recall 100 % per fault kind and hazard level; no plan
activation without a cause; ≤ 1 alarm without a cause per estate-month; 0 chattering; 0 stale
without a cause; ≤ 1 alarm per 10 min per estate outside declared emergencies.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import report, verdict
from estatewatch.broker import ManagedMosquitto, free_port
from estatewatch.service import Service
from estatewatch.settings import Settings
from ingest.pipeline import Delivery
from protocol.messages import Event, Reading, encode_events, encode_status, encode_telemetry
from protocol.topics import Channel, gateway_topic
from scoring.ledger import (
    Cause,
    StationLevels,
    episodes_to_causes,
    fault_causes,
    read_ledger,
    write_ledger,
)
from scoring.score import Score, fetch, format_score, score
from scoring.year import period, season, year_scenario
from simulators.estate import SimulatedEstate
from simulators.scenario import SHANGHAI, Scenario
from simulators.spec import EstateSpec, load_spec

MIN = 60_000
CLIMATES = (("Hohhot", "small"), ("Hailar", "hailar-small"))
TOKEN = "bench-admin-token-0123456789"
PER_MESSAGE = 1000
# Kinds reporting faster than once a minute report every 2nd catalog interval in the replay
# (elevator 20 s, charging socket 60 s): still inside the service's deadman allowance of 3
# intervals; they are most of the readings and of the simulator's time.
EVERY = {"elevator": 2, "ebike_charger": 2}
# The simulated step: every device's reports of 15 minutes modelled together (per kind, one
# call; a round per interval for kinds with state, see simulators.models.SEQUENTIAL).
STEP_MS = 15 * MIN
# ... and published and evaluated 5 minutes at a time: the engine's clock then runs at most
# 5 minutes ahead of a reading it judges, inside its 10 minutes of "late" (a later one stamps
# a plan step with the time it arrived, not the reading's: a 15-minute batch delayed the
# snowstorm's orange beyond its 10-minute deadline).
SEGMENT_MS = 5 * MIN
# each climate's ledger and what the service showed, to score again without replaying
KEEP = Path(tempfile.gettempdir()) / "estatewatch-alarm-truth"


class SimTime:
    """The alert engine's clock: simulated ms, moved by the driver only."""

    def __init__(self, start_ms: int) -> None:
        self.ms = start_ms

    def __call__(self) -> int:
        return self.ms


class DataTime:
    """A commit listener before the alert engine's: the engine's clock reaches the newest
    reading or event it is about to evaluate, so an alarm, a plan step or a rescue is stamped
    at the simulated time it happened, not at the end of the previous step."""

    def __init__(self, clock: SimTime) -> None:
        self.clock = clock

    def __call__(self, deliveries: Sequence[Delivery]) -> None:
        newest = self.clock.ms
        for d in deliveries:
            b = d.batch
            if b is None:
                continue
            if b.readings:
                newest = max(newest, b.readings[-1].ts)
            for e in b.events:
                newest = max(newest, e.ts)
        self.clock.ms = newest


def _next_due(service: Service) -> int | None:
    """The next time the engine's timers need the clock: a pending alarm's ``for`` running out,
    a plan's stand-down after its hold time, a plan's task falling overdue."""
    engine = service.alerts
    assert engine is not None
    dues = [
        a.started_ms + a.for_ms for a in engine.alarms.open.values() if a.state.value == "pending"
    ]
    for act in engine.plan_book.active.values():
        if act.below_since_ms is not None:
            dues.append(act.below_since_ms + act.hold_ms)
        dues += [
            task.due_ms + 1
            for task in act.tasks.values()
            if task.done_ms is None and task.overdue_ms is None
        ]
    return min(dues, default=None)


def _tick_through(service: Service, clock: SimTime, t0: int, t1: int) -> None:
    """Move the engine's clock through (t0, t1]: a tick at each minute a timer falls due in it
    (a pending alarm's ``for``, a plan's hold time or task), and one at the end (deadman clocks
    allow three reporting intervals, minutes at least; escalations and auto-resolves are
    judged there, up to a step late). A tick every minute while any alarm was pending or any
    plan active (an 8-hour ``for`` on a charging socket is pending most of the day) cost a
    third of a replayed year's time."""
    engine = service.alerts
    assert engine is not None
    m = t0 + MIN
    while m < t1:
        due = _next_due(service)
        if due is None or due >= t1:
            break
        m = max(m, t0 + -(-(due - t0) // MIN) * MIN)  # the minute it falls due
        if m >= t1:
            break
        clock.ms = m
        engine.tick()
        m = clock.ms + MIN
    clock.ms = max(clock.ms, t1)
    engine.tick()


class Evaluated:
    """A commit listener after the alert engine's: counts what the engine has been given."""

    def __init__(self) -> None:
        self.readings = 0
        self.events = 0
        self.statuses = 0
        self.cond = threading.Condition()

    def __call__(self, deliveries: Sequence[Delivery]) -> None:
        r = e = st = 0
        for d in deliveries:
            st += d.status is not None
            if d.batch is not None:
                r += len(d.batch.readings)
                e += len(d.batch.events)
        with self.cond:
            self.readings += r
            self.events += e
            self.statuses += st
            self.cond.notify_all()

    def wait(self, readings: int, events: int, statuses: int = 0, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.readings < readings or self.events < events or self.statuses < statuses:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"the service evaluated {self.readings}/{readings} readings and "
                        f"{self.events}/{events} events and {self.statuses}/{statuses} "
                        f"statuses within {timeout:.0f} s"
                    )
                self.cond.wait(min(left, 1.0))


@dataclass
class Played:
    causes: list[Cause]
    readings: int
    events: int
    seconds: float
    end_ms: int  # simulated time played up to (the period's end, or where a stop cut it)


def play(
    service: Service,
    clock: SimTime,
    spec: EstateSpec,
    scenario: Scenario,
    start_ms: int,
    end_ms: int,
    seed: int = 7,
    step_ms: int = STEP_MS,
    progress: Callable[[str], None] | None = None,
    stop_wall: float | None = None,
) -> Played:
    """Play the estate from start to end through the service's broker; the ledger."""
    assert service.ingest is not None and service.alerts is not None
    broker = service.broker
    assert isinstance(broker, ManagedMosquitto)
    with contextlib.suppress(Exception):
        service.state.add_estate(spec.estate, spec.name, spec.region, zone=spec.zone)
    with contextlib.suppress(Exception):
        service.state.add_gateway(spec.estate, spec.gateway)
    service.ingest.registry.reload()
    evaluated = Evaluated()
    service.ingest.add_listener(evaluated)  # after the alert engine's: it has seen them
    # before the alert engine's (the list is read as each commit is handed on)
    service.ingest._listeners.insert(0, DataTime(clock))
    # The driver alone ticks the engine, between steps: a tick of the scheduler's while a
    # step is being evaluated would judge deadman clocks at the time of an event that
    # overtook the step's telemetry, and call every device silent.
    service.scheduler.pause_job("alerts-tick")
    creds = broker.issue_gateway_credentials(spec.estate, spec.gateway, "estates")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"truth-{spec.estate}")
    client.username_pw_set(creds.username, creds.password)
    client.max_inflight_messages_set(1000)
    client.connect(creds.host, creds.port)
    client.loop_start()
    gw, estate_id = spec.gateway, spec.estate
    topics = {c: gateway_topic(estate_id, gw, c) for c in Channel}
    estate = SimulatedEstate(spec, service.catalog, seed, start_ms, scenario, step_ms, EVERY)
    station = next((d.id for d in spec.devices if d.kind == "weather_station"), None)
    # the ledger's weather episodes, judged as the station's readings are played (the
    # driver's thread is otherwise waiting for the service)
    levels = StationLevels(estate_id, station, spec.zone) if station else None
    # The gateway's lost connections: the broker announces each (its Last Will: offline), the
    # gateway keeps what its devices said meanwhile and sends it after it is back, late.
    outages = sorted((f.t0, f.t1) for f in estate.faults if f.fault.type == "gateway_offline")
    edges = sorted({x for o in outages for x in o})
    held_r: list[Reading] = []
    held_e: list[Event] = []
    seq = 0
    sent_r = sent_e = sent_s = 0
    infos: list[mqtt.MQTTMessageInfo] = []
    clock.ms = start_ms
    began = time.monotonic()
    last_line = began

    def down(at: int) -> bool:
        return any(o0 <= at < o1 for o0, o1 in outages)

    def send(readings: list[Reading], events: list[Event], at: int) -> None:
        nonlocal seq, sent_r, sent_e
        if events:
            seq += 1
            infos.append(
                client.publish(topics[Channel.EVENTS], encode_events(gw, seq, at, events), 1)
            )
            sent_e += len(events)
        for i in range(0, len(readings), PER_MESSAGE):
            part = readings[i : i + PER_MESSAGE]
            seq += 1
            infos.append(
                client.publish(topics[Channel.TELEMETRY], encode_telemetry(gw, seq, at, part), 1)
            )
        sent_r += len(readings)

    def status(state: str, at: int) -> None:
        nonlocal sent_s
        clock.ms = at  # the engine stamps a status with its own clock: when it arrived
        client.publish(topics[Channel.STATUS], encode_status(gw, state, at), 1, True)
        sent_s += 1
        evaluated.wait(sent_r, sent_e, sent_s)

    try:
        t = start_ms
        status("online", start_ms)
        while t < end_ms:
            if stop_wall is not None and time.time() >= stop_wall:
                break  # out of wall time: score what was played
            t_next = min(t + step_ms, end_ms)
            got = estate.advance(t_next)
            if levels is not None:
                for r in sorted((r for r in got.readings if r.dev == station), key=lambda r: r.ts):
                    levels.observe(r.ts, r.metrics)
            a = t
            cuts = {x for x in edges if t < x < t_next}
            cuts |= set(range(t + SEGMENT_MS, t_next, SEGMENT_MS))
            for b in [*sorted(cuts), t_next]:
                readings = [r for r in got.readings if a <= r.ts < b]
                events = [e for e in got.events if a <= e.ts < b]
                if down(a):
                    held_r += readings
                    held_e += events
                else:
                    send(readings, events, b)
                evaluated.wait(sent_r, sent_e, sent_s)
                _tick_through(service, clock, a, b)
                clock.ms = b
                if b in edges and down(b) and not down(a):
                    status("offline", b)
                elif b in edges and down(a) and not down(b):
                    status("online", b)
                    send(held_r, held_e, b)  # the backlog, late
                    held_r, held_e = [], []
                    evaluated.wait(sent_r, sent_e, sent_s)
                a = b
            infos = [i for i in infos if not i.is_published()]
            t = t_next
            if progress and time.monotonic() - last_line >= 15:
                last_line = time.monotonic()
                when = datetime.fromtimestamp(t / 1000, SHANGHAI)
                progress(f"    sim {when:%Y-%m-%d %H:%M} · {sent_r:,} readings · {sent_e} events")
    finally:
        client.disconnect()
        client.loop_stop()
    causes = fault_causes(estate.fault_ledger())
    if levels is not None and station:
        causes += episodes_to_causes(estate_id, station, levels.finish())
    if t < end_ms:  # cut short: only the causes whose deadline fell inside what was played
        causes = [c for c in causes if c.deadline_ms <= t]
    return Played(causes, sent_r, sent_e, time.monotonic() - began, t)


def run_climate(
    spec_name: str,
    start_ms: int,
    end_ms: int,
    seed: int,
    faults_per_kind: int,
    out_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
    step_ms: int = STEP_MS,
    stop_wall: float | None = None,
) -> tuple[Score, Played]:
    """One estate through its own service: played, then scored through the API."""
    spec = load_spec(spec_name)
    scenario = year_scenario(spec, start_ms, end_ms, seed, faults_per_kind)
    clock = SimTime(start_ms)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=str(Path(tmp) / "data"),
            broker_port=free_port(),
            api_port=free_port(),
            admin_token=TOKEN,
            log_level="WARNING",
            commit_interval_ms=10,
        )
        service = Service(settings, clock=clock)
        service.start()
        try:
            played = play(
                service, clock, spec, scenario, start_ms, end_ms, seed, step_ms, progress, stop_wall
            )
            end_ms = played.end_ms
            alarms, activations = fetch(service.url, TOKEN, spec.estate)
            if out_dir is not None:  # to score again later: estatewatch score, or score()
                out_dir.mkdir(parents=True, exist_ok=True)
                write_ledger(out_dir / f"truth-{spec.estate}.jsonl", played.causes)
                seen = {"start_ms": start_ms, "end_ms": end_ms, "alarms": alarms}
                seen["activations"] = activations
                (out_dir / f"seen-{spec.estate}.json").write_bytes(orjson.dumps(seen))
            return score(played.causes, alarms, activations, start_ms, end_ms), played
        finally:
            service.stop()


def _climate(
    climate: str,
    spec_name: str,
    start_ms: int,
    end_ms: int,
    seed: int,
    per_kind: int,
    stop_wall: float | None = None,
) -> tuple[dict[str, Any], str]:
    """One climate, in a process of its own: its figures and its printed table."""
    s, played = run_climate(
        spec_name,
        start_ms,
        end_ms,
        seed,
        per_kind,
        out_dir=KEEP / ("year" if end_ms - start_ms > 180 * 86_400_000 else "season"),
        progress=lambda line: print(f"  {climate}{line}", flush=True),
        stop_wall=stop_wall,
    )
    days = (played.end_ms - start_ms) / 86_400_000
    whole = (end_ms - start_ms) / 86_400_000
    cut = "" if played.end_ms >= end_ms else f" of {whole:.0f} (stopped at --stop-at)"
    text = (
        f"  {climate} ({spec_name}, ledger and alarms in {KEEP}): played {days:.1f} simulated "
        f"days{cut}, {played.readings:,} readings and {played.events} events in "
        f"{played.seconds:.0f} s ({played.readings / max(played.seconds, 1e-9):,.0f}/s, "
        f"{days / max(played.seconds / 60, 1e-9):.2f} simulated days a wall minute)\n"
        + "\n".join("    " + line for line in format_score(s).splitlines())
    )
    figures = {
        **s.as_dict(),
        "readings": played.readings,
        "events": played.events,
        "seconds": round(played.seconds, 1),
        "played_end_ms": played.end_ms,
        "sim_days_per_wall_min": round(days / max(played.seconds / 60, 1e-9), 3),
    }
    return figures, text


def run(
    full: bool = False,
    seed: int = 11,
    faults_per_kind: int | None = None,
    stop_wall: float | None = None,
) -> dict[str, Any]:
    now = int(time.time() * 1000)
    spans = {spec: period(True, now) if full else season(spec, now) for _, spec in CLIMATES}
    per_kind = faults_per_kind or (8 if full else 2)
    figures: dict[str, Any] = {"full": full, "periods": spans}
    # The climates are independent services: one process each, side by side.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(CLIMATES), mp_context=ctx) as pool:
        futures = {
            climate: pool.submit(_climate, climate, spec, *spans[spec], seed, per_kind, stop_wall)
            for climate, spec in CLIMATES
        }
        for climate, fut in futures.items():
            f, text = fut.result()
            print(text, flush=True)
            figures[climate] = f
    return figures


def targets(f: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows = []
    for climate, _ in CLIMATES:
        c = f.get(climate)
        if not c:
            continue
        worst = min(
            ((k, r["recall"]) for k, r in c["causes"].items() if r["causes"]),
            key=lambda kv: kv[1],
            default=("–", 1.0),
        )
        missed = sum(r["missed"] for r in c["causes"].values())
        rows.append(
            (
                f"7 {climate}: recall, worst cause kind",
                f"{worst[1]:.0%} ({worst[0]}; {missed} missed)",
                "100 % every fault kind and hazard level",
                verdict(missed == 0),
            )
        )
        no_plan = len(c["plans_no_cause"])
        rows.append(
            (
                f"7 {climate}: plan activations without cause",
                str(no_plan),
                "0",
                verdict(no_plan == 0),
            )
        )
        rows.append(
            (
                f"7 {climate}: alarms without cause",
                f"{len(c['no_cause'])} ({c['no_cause_per_estate_month']:.2f}/estate-month)",
                "≤ 1 per estate-month",
                verdict(c["no_cause_per_estate_month"] <= 1),
            )
        )
        q = c["quality"]
        no_cause_ids = {a["id"] for a in c["no_cause"]}
        stale_no_cause = [s for s in q["stale"] if s["id"] in no_cause_ids]
        rows.append(
            (
                f"7 {climate}: chattering / stale without cause",
                f"{len(q['chattering'])} / {len(stale_no_cause)}",
                "0 / 0",
                verdict(not q["chattering"] and not stale_no_cause),
            )
        )
        rows.append(
            (
                f"7 {climate}: alarms per 10 min outside emergencies",
                f"{q['per_10min_outside_emergencies']:.3f} (flood windows {q['flood_windows']})",
                "≤ 1",
                verdict(q["per_10min_outside_emergencies"] <= 1),
            )
        )
    return rows


def rescore(folder: Path) -> None:
    """Score again what a run kept (its ledgers and what the service showed), no replay."""
    for truth in sorted(folder.glob("truth-*.jsonl")):
        estate = truth.stem.removeprefix("truth-")
        seen = orjson.loads((folder / f"seen-{estate}.json").read_bytes())
        s = score(
            read_ledger(truth),
            seen["alarms"],
            seen["activations"],
            seen["start_ms"],
            seen["end_ms"],
        )
        print(f"  {estate}:\n" + "\n".join("    " + x for x in format_score(s).splitlines()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="the whole year, not one season")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--faults-per-kind", type=int, default=None)
    p.add_argument(
        "--stop-at",
        help="a UTC wall time (HH:MM) to stop playing at and score what was played so far",
    )
    p.add_argument("--rescore", type=Path, help=f"score a kept run again (e.g. {KEEP})")
    args = p.parse_args()
    if args.rescore:
        rescore(args.rescore)
        return
    print("bench 7: alarms against the truth", flush=True)
    stop_wall = None
    if args.stop_at:
        hh, mm = (int(x) for x in args.stop_at.split(":"))
        today = datetime.now(UTC).replace(hour=hh, minute=mm, second=0, microsecond=0)
        stop_wall = today.timestamp() + (86_400 if today < datetime.now(UTC) else 0)
    f = run(args.full, args.seed, args.faults_per_kind, stop_wall)
    report("alarm-truth", f, vars(args), targets(f))


if __name__ == "__main__":
    main()
