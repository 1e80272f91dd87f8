"""Estates moving between alert engines (issue 16): a worker dies without a word, another
adopts its estates from the shared store and continues their 'for' timers, deadman clocks,
escalation steps and plans' overdue tasks as if nothing had happened; a worker whose lease is
gone commits nothing for those estates and tells nobody.

Each takeover is checked against a reference run of the same inputs on one engine that never
stopped (on a database of its own): the histories (alarms, timelines, plans, notifications,
with their times) must be the same. Simulated time, no sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from typing import Any

import pytest
import sqlalchemy as sa

from alerts.engine import AlertEngine
from alerts.tables import alarm_timeline, alarms, notifications
from cluster.partitions import partition_of
from cluster.pg import LeaseLost, LeaseStore, lease_engine
from cluster.pg import fence as pg_fence
from ingest.model import NotOwner
from ingest.pipeline import Delivery
from ingest.telemetry import EstateBatch
from protocol.messages import Reading
from tests.alerts.conftest import (
    MINUTE,
    SECOND,
    START,
    EngineFactory,
    RecordingNotifier,
    SimClock,
    Site,
    roles,
)

Inputs = dict[int, Callable[[Site], None]]  # ms after the start -> what the estate sends


def _always_owner(_conn: Any, _estates: Collection[str]) -> None:
    """A lease that holds (a worker's fence while it owns its partitions)."""


class Play:
    """Run inputs through engines on one database, ticking every ``tick_ms``; optionally the
    engine is killed at ``kill_at`` (dropped: no stop, no snapshot) and a new one, which owned
    nothing, adopts the estate at ``adopt_at``."""

    def __init__(
        self,
        make_engine: EngineFactory,
        url: str,
        clock: SimClock,
        receivers: dict[str, RecordingNotifier],
    ) -> None:
        self.make_engine, self.url, self.clock = make_engine, url, clock
        self.receivers = receivers

    def _engine(self, owns_all: bool) -> AlertEngine:
        return self.make_engine(
            self.url,
            receivers=roles(self.receivers),
            fence=_always_owner,
            owns=None if owns_all else (lambda _estate: False),
        )

    def run(
        self,
        inputs: Inputs,
        until_ms: int,
        tick_ms: int,
        kill_at: int | None = None,
        adopt_at: int | None = None,
    ) -> AlertEngine:
        start = self.clock.now
        last = self._engine(owns_all=True)
        engine: AlertEngine | None = last
        for t in range(0, until_ms + 1, tick_ms):
            self.clock.now = start + t
            if t == kill_at:
                engine = None  # killed: its memory is gone, it writes nothing more
            if t == adopt_at:
                engine = last = self._engine(owns_all=False)
                engine.adopt({"e1"})
            if engine is None:
                assert t not in inputs, "inputs while nobody owns the estate: see the broker"
                continue
            if t in inputs:
                inputs[t](Site(engine, self.clock))
            engine.tick()
        return last


def history(engine: AlertEngine, receivers: dict[str, RecordingNotifier]) -> dict[str, Any]:
    """What happened to estate e1, with the times, without the random ids."""
    out: dict[str, Any] = {"alarms": [], "plans": [], "told": {}}
    for a in sorted(engine.list_alarms(estate="e1"), key=lambda a: (a["started_ms"], a["rule"])):
        timeline = engine.get_alarm(a["id"])["timeline"]
        out["alarms"].append(
            {
                **{k: a[k] for k in ("rule", "subject", "state", "started_ms", "fired_ms")},
                **{k: a[k] for k in ("resolved_ms", "acked_ms", "deadline_breached", "count")},
                "timeline": [(e["ts"], e["action"], e["by"]) for e in timeline],
            }
        )
    for act in engine.list_activations(estate="e1"):
        timeline = engine.get_activation(act["id"])["timeline"]
        out["plans"].append(
            {
                "plan": act["plan"],
                "active": act["active"],
                "timeline": [(e["ts"], e["action"], e["level"]) for e in timeline],
                "tasks": sorted((t["id"], t["due_ms"], t["done_ms"]) for t in act["tasks"]),
            }
        )
    for role, r in receivers.items():
        out["told"][role] = [(n.event, n.created_ms) for n in r.sent]
    return out


def _receivers() -> dict[str, RecordingNotifier]:
    return {role: RecordingNotifier(role) for role in ("control_room", "supervisor", "authority")}


def _compare(
    make_engine: EngineFactory,
    sqlite_url: str,
    database_url: str,
    clock: SimClock,
    inputs: Inputs,
    until_ms: int,
    tick_ms: int,
    kill_at: int,
    adopt_at: int,
) -> tuple[dict[str, Any], AlertEngine]:
    """The history with a takeover (on ``database_url``) against the reference (one engine
    on a database of its own); returns the takeover's history and its successor."""
    start = clock.now
    ref_told = _receivers()
    ref = Play(make_engine, sqlite_url, clock, ref_told).run(inputs, until_ms, tick_ms)
    expected = history(ref, ref_told)
    clock.now = start
    told = _receivers()
    successor = Play(make_engine, database_url, clock, told).run(
        inputs, until_ms, tick_ms, kill_at, adopt_at
    )
    got = history(successor, told)
    assert got == expected
    return got, successor


@pytest.mark.parametrize("database_url", ["postgresql", "sqlite"], indirect=True)
def test_a_pending_for_alarm_fires_on_its_successor_on_time_once(
    database_url: str, make_engine: EngineFactory, sqlite_url: str, clock: SimClock
) -> None:
    def low(site: Site) -> None:
        site.reading("h1", "fire_hydrant", pressure_mpa=0.05)  # below 0.07 MPa, for: 5m

    inputs: Inputs = {0: low, 7 * MINUTE: low, 9 * MINUTE: low}
    inputs[11 * MINUTE] = lambda s: s.reading("h1", "fire_hydrant", pressure_mpa=0.3)
    got, successor = _compare(
        make_engine, sqlite_url, database_url, clock, inputs, 12 * MINUTE, SECOND,
        kill_at=2 * MINUTE, adopt_at=2 * MINUTE + 30 * SECOND,
    )  # fmt: skip
    (alarm,) = got["alarms"]  # B's later readings continued the same alarm
    assert alarm["rule"] == "hydrant-pressure-low"
    assert alarm["fired_ms"] == alarm["started_ms"] + 5 * MINUTE  # fired on B, on time
    assert [a for _, a, _ in alarm["timeline"]][:3] == ["pending", "firing", "notified"]
    assert got["told"]["control_room"][0] == ("firing", alarm["fired_ms"])
    assert [e for e, _ in got["told"]["control_room"]].count("firing") == 1
    with successor.store.engine.connect() as conn:
        rows = conn.execute(sa.select(sa.func.count()).select_from(alarms)).scalar_one()
    assert rows == 1  # no second pending row


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_backlogged_devices_timer_runs_on_its_data_time_on_the_successor(
    database_url: str, make_engine: EngineFactory, sqlite_url: str, clock: SimClock
) -> None:
    def low_behind(site: Site) -> None:  # a gateway replaying its buffer, 3 minutes behind
        ts = clock.now - 3 * MINUTE
        site.deliver(readings=[Reading("h1", "fire_hydrant", ts, {"pressure_mpa": 0.05})])

    got, _ = _compare(
        make_engine, sqlite_url, database_url, clock, {0: low_behind}, 8 * MINUTE, SECOND,
        kill_at=MINUTE, adopt_at=MINUTE + 30 * SECOND,
    )  # fmt: skip
    (alarm,) = got["alarms"]
    # 5 minutes of the device's own time after it started: reached 5 minutes after it was
    # heard, not 2 (as the wall clock alone would have it)
    assert got["told"]["control_room"] == [("firing", START + 5 * MINUTE)]
    assert alarm["fired_ms"] == START + 2 * MINUTE


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_silent_devices_deadman_clock_runs_on_on_its_successor(
    database_url: str, make_engine: EngineFactory, sqlite_url: str, clock: SimClock
) -> None:
    def ok(site: Site) -> None:
        site.reading("h1", "fire_hydrant", pressure_mpa=0.3)

    # Every 5 minutes (its interval) off the 5-minute snapshot's beat, then silent: the last
    # clock is in no snapshot, only in the step's own write.
    inputs: Inputs = {MINUTE: ok, 6 * MINUTE: ok, 11 * MINUTE: ok}
    got, _ = _compare(
        make_engine, sqlite_url, database_url, clock, inputs, 30 * MINUTE, 5 * SECOND,
        kill_at=14 * MINUTE, adopt_at=14 * MINUTE + 20 * SECOND,
    )  # fmt: skip
    (silent,) = got["alarms"]
    assert silent["rule"] == "no-data"
    # three intervals after it was last heard (11 min), at the first deadman check after
    assert 26 * MINUTE < silent["fired_ms"] - START <= 26 * MINUTE + 5 * SECOND


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_weather_plan_goes_on_with_its_stations_levels_on_the_successor(
    database_url: str, make_engine: EngineFactory, sqlite_url: str, clock: SimClock
) -> None:
    def snow(mm: float) -> Callable[[Site], None]:
        return lambda s: s.reading("ws-01", "weather_station", snow_mm=mm, temp_c=-8.0)

    # 0.5 mm every 10 minutes for 200 minutes: the snowstorm plan steps up to orange (Ⅱ)
    inputs: Inputs = {i * 10 * MINUTE: snow(0.5) for i in range(20)}
    inputs |= {i * 10 * MINUTE: snow(0.0) for i in range(20, 30)}
    got, _ = _compare(
        make_engine, sqlite_url, database_url, clock, inputs, 300 * MINUTE, 10 * SECOND,
        kill_at=125 * MINUTE, adopt_at=126 * MINUTE,
    )  # fmt: skip
    (plan,) = got["plans"]
    steps = [(action, level) for _, action, level in plan["timeline"] if action != "task_overdue"]
    assert steps == [("activated", "Ⅳ"), ("raised", "Ⅲ"), ("raised", "Ⅱ"), ("below", "Ⅱ")]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_escalation_steps_and_overdue_tasks_continue_on_the_successor(
    database_url: str, make_engine: EngineFactory, sqlite_url: str, clock: SimClock
) -> None:
    inputs: Inputs = {
        0: lambda s: s.event("lift-1", "elevator", "elevator.trapped", floor=3, people=True)
    }
    # Killed after the supervisor's step (5 min) and the first overdue task (5 min), before
    # the second task (10 min) and the rescue deadline (30 min).
    got, _ = _compare(
        make_engine, sqlite_url, database_url, clock, inputs, 35 * MINUTE, 5 * SECOND,
        kill_at=6 * MINUTE, adopt_at=7 * MINUTE,
    )  # fmt: skip
    trapped = next(a for a in got["alarms"] if a["rule"] == "elevator-trapped")
    assert trapped["deadline_breached"]
    steps = [(ts - START, action) for ts, action, _ in trapped["timeline"]]
    assert steps == [
        (0, "firing"), (0, "notified"),
        (5 * MINUTE, "escalated"),  # by A: the supervisor, 5 min unacknowledged
        (30 * MINUTE, "deadline_breached"), (30 * MINUTE, "escalated"),  # by B
    ]  # fmt: skip
    assert [e for e, _ in got["told"]["supervisor"]].count("escalated") == 1
    assert [e for e, _ in got["told"]["authority"]] == ["deadline_breached"]
    (plan,) = got["plans"]
    overdue = [ts for ts, action, _ in plan["timeline"] if action == "task_overdue"]
    # each task once, at the first tick after it fell due: two by A, two by B
    assert overdue == sorted(due + 5 * SECOND for _, due, _ in plan["tasks"])
    assert len([t for t in overdue if t - START > 7 * MINUTE]) == 2


class Lease:
    """A fence whose lease on some estates is gone (another worker owns them now)."""

    def __init__(self) -> None:
        self.lost: set[str] = set()
        self.checked: list[set[str]] = []

    def __call__(self, conn: sa.Connection, estates: Collection[str]) -> None:
        # run inside the commit's own transaction, before anything of it is written
        assert conn.in_transaction()
        self.checked.append(set(estates))
        if self.lost & set(estates):
            raise NotOwner(self.lost & set(estates), "the lease moved")


def _faults(estates: list[str], clock: SimClock) -> list[Delivery]:
    """One commit of ingest's: a fire pump fault (fires at once) in each estate."""
    out = []
    for estate in estates:
        d = Delivery(f"estates/{estate}/gw/gw-01/telemetry", clock.now, estate, "gw-01")
        reading = Reading("p1", "fire_pump", clock.now, {"fault": True, "running": False})
        d.batch = EstateBatch(estate, "gw-01", [reading], [])
        out.append(d)
    return out


def _rows(engine: AlertEngine, table: sa.Table, estate: str | None = None) -> int:
    q = sa.select(sa.func.count()).select_from(table)
    if estate is not None and "estate" in table.c:
        q = q.where(table.c.estate == estate)
    with engine.store.engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


@pytest.mark.parametrize("database_url", ["postgresql", "sqlite"], indirect=True)
def test_a_fenced_estate_commits_nothing_and_tells_nobody_the_others_go_on(
    database_url: str, make_engine: EngineFactory, clock: SimClock
) -> None:
    lease = Lease()
    cr = RecordingNotifier("cr")
    engine = make_engine(database_url, receivers={"control_room": [cr]}, fence=lease)
    news: list[dict[str, Any]] = []
    engine.add_listener(news.append)
    lease.lost = {"x"}
    engine.on_committed(_faults(["e1", "x"], clock))  # one step for both
    engine.tick()

    assert {"e1", "x"} in lease.checked  # the step's one transaction, fenced for both
    assert [(a["estate"], a["rule"]) for a in engine.list_alarms()] == [("e1", "fire-pump-fault")]
    assert _rows(engine, alarm_timeline) == len(
        engine.get_alarm(news[0]["alarm"]["id"])["timeline"]
    )
    assert _rows(engine, notifications, "x") == 0 and _rows(engine, notifications, "e1") > 0
    assert {n["estate"] for n in news} == {"e1"}
    assert {n.estate for n in cr.sent} == {"e1"}
    # x is released: nothing of it in memory, and what ingest still hands over is ignored
    assert all(a.estate == "e1" for a in engine.alarms.open.values())
    assert not [k for k in engine.evaluator.clocks if k[0] == "x"]
    engine.on_committed(_faults(["x"], clock))
    assert _rows(engine, alarms, "x") == 0

    # the lease comes back: adopted again, x alarms as any estate does
    lease.lost = set()
    engine.adopt({"x"})
    clock.advance(SECOND)
    engine.on_committed(_faults(["x"], clock))
    engine.tick()
    assert [a["rule"] for a in engine.list_alarms(estate="x")] == ["fire-pump-fault"]
    assert {n.estate for n in cr.sent} == {"e1", "x"}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_persons_action_on_a_fenced_estate_is_refused_and_rolled_back(
    database_url: str, make_engine: EngineFactory, clock: SimClock
) -> None:
    lease = Lease()
    engine = make_engine(database_url, fence=lease)
    engine.on_committed(_faults(["x"], clock))
    (alarm,) = engine.list_alarms(estate="x")
    lease.lost = {"x"}
    with pytest.raises(NotOwner):
        engine.acknowledge(alarm["id"], "王班长", None)
    assert engine.store.get_alarm(alarm["id"]).state.value == "firing"  # type: ignore[union-attr]
    assert not engine.alarms.by_id  # released, for its owner to take on


def test_release_drops_an_estate_and_adopt_takes_it_back_as_it_was(
    make_engine: EngineFactory, sqlite_url: str, clock: SimClock
) -> None:
    engine = make_engine(sqlite_url, fence=_always_owner)
    site, other = Site(engine, clock), Site(engine, clock, estate="e2")
    clock.advance(SECOND)  # after the start's snapshot time
    site.event("lift-1", "elevator", "elevator.trapped", floor=3, people=True)  # plan III
    site.reading("ws-01", "weather_station", snow_mm=0.5, temp_c=-8.0)  # windows
    other.reading("p1", "fire_pump", fault=True, running=False, auto=True)
    clock.advance(5 * MINUTE)
    site.reading("h1", "fire_hydrant", pressure_mpa=0.05)  # pending, for: 5m
    engine.tick()  # and the 5-minute snapshot of windows

    def memory(estate: str) -> dict[str, Any]:
        return {
            "open": sorted(a.id for a in engine.alarms.open.values() if a.estate == estate),
            "held": sorted(
                (rule, s) for rule, held in engine.evaluator.asserted.items()
                for e, s in held if e == estate
            ),
            "clocks": sorted(
                (k, c.last_ms) for k, c in engine.evaluator.clocks.items() if k[0] == estate
            ),
            "windows": sorted(k for k in engine.windows.series if k[0] == estate),
            "plans": sorted(a.id for (e, _), a in engine.plan_book.active.items() if e == estate),
        }  # fmt: skip

    before, e2 = memory("e1"), memory("e2")
    assert all(before.values())
    rows = _rows(engine, alarms), _rows(engine, alarm_timeline), _rows(engine, notifications)
    engine.release({"e1"})
    engine.release({"e1"})
    assert not any(memory("e1").values())
    assert memory("e2") == e2
    assert (
        _rows(engine, alarms),
        _rows(engine, alarm_timeline),
        _rows(engine, notifications),
    ) == rows
    engine.adopt({"e1"})
    engine.adopt({"e1"})
    assert memory("e1") == before
    clock.advance(5 * MINUTE)
    engine.tick()
    fired = [a for a in site.open_alarms() if a["rule"] == "hydrant-pressure-low"]
    assert [(a["state"], a["fired_ms"]) for a in fired] == [("firing", clock.now)]


def test_an_adoption_the_database_refuses_leaves_nothing_half_loaded(
    make_engine: EngineFactory, sqlite_url: str, clock: SimClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_engine(sqlite_url, fence=_always_owner)
    Site(first, clock).reading("p1", "fire_pump", fault=True, running=False, auto=True)
    Site(first, clock, estate="e2").reading("p1", "fire_pump", fault=True, running=False)
    successor = make_engine(sqlite_url, fence=_always_owner, owns=lambda _e: False)
    successor.adopt({"e2"})

    def away(*_args: Any) -> list[Any]:
        raise sa.exc.OperationalError("SELECT", {}, Exception("the database is away"))

    monkeypatch.setattr(successor.store, "active_activations", away)
    with pytest.raises(sa.exc.SQLAlchemyError):
        successor.adopt({"e1", "e2"})
    # e1 (new) is not half there; e2 (held already) stays
    assert {a.estate for a in successor.alarms.open.values()} == {"e2"}
    assert not successor.owns("e1") and successor.owns("e2")
    monkeypatch.undo()
    successor.adopt({"e1"})
    assert {a.estate for a in successor.alarms.open.values()} == {"e1", "e2"}


class Worker:
    """A worker's lease on the partition of its estates, as the service's ``_fence_commit``
    checks it: ``cluster.pg.fence`` in the commit's transaction, LeaseLost → NotOwner."""

    def __init__(self, leases: LeaseStore, name: str) -> None:
        self.leases, self.name = leases, name
        self.epochs: dict[int, int] = {}

    def claim(self, estate: str) -> None:
        self.epochs |= self.leases.claim(self.name, [partition_of(estate, PARTITIONS)])

    def fence(self, conn: sa.Connection, estates: Collection[str]) -> None:
        for estate in sorted(estates):
            p = partition_of(estate, PARTITIONS)
            try:
                pg_fence(conn, p, self.name, self.epochs.get(p, 0))
            except LeaseLost as exc:
                raise NotOwner([estate], str(exc)) from exc


PARTITIONS = 8


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_worker_whose_lease_moved_never_lands_an_alarm_change_its_successor_does(
    database_url: str, make_engine: EngineFactory, clock: SimClock
) -> None:
    lease_db = lease_engine(database_url, 60_000)
    try:
        leases = LeaseStore(lease_db, PARTITIONS, 60_000)
        leases.migrate()
        a, b = Worker(leases, "w1"), Worker(leases, "w2")
        a.claim("e1")
        told = _receivers()
        first = make_engine(database_url, receivers=roles(told), fence=a.fence)
        Site(first, clock).reading("p1", "fire_pump", fault=True, running=False, auto=True)
        first.tick()
        (alarm,) = first.list_alarms(estate="e1")

        # w1 pauses; its lease goes to w2, whose engine adopts the estate
        p = partition_of("e1", PARTITIONS)
        assert leases.release("w1", p, a.epochs[p])
        b.claim("e1")
        successor = make_engine(
            database_url, receivers=roles(told), fence=b.fence, owns=lambda _e: False
        )
        successor.adopt({"e1"})

        # both get the pump's restore (w1 wakes with it still in hand): only w2's lands
        clock.advance(MINUTE)
        for engine in (first, successor):
            Site(engine, clock).reading("p1", "fire_pump", fault=False, running=False, auto=True)
            engine.tick()
        assert not first.alarms.by_id and not first.alarms.cleared  # w1 released e1
        done = successor.get_alarm(alarm["id"])
        assert done["state"] == "cleared"  # critical: waits for a person's acknowledgement
        actions = [e["action"] for e in done["timeline"]]
        assert actions.count("resolved") == 1  # the successor's, once
        assert [n.event for n in told["control_room"].sent].count("resolved") == 1
    finally:
        lease_db.dispose()


def test_adopt_and_release_interleave_safely_with_commits_and_ticks(
    make_engine: EngineFactory, sqlite_url: str, clock: SimClock
) -> None:
    engine = make_engine(sqlite_url, fence=_always_owner)
    errors: list[BaseException] = []
    stop = threading.Event()

    def commits() -> None:
        try:
            for i in range(300):
                fault = i % 7 < 4  # the pump faults and recovers, so alarms open and close
                for estate in ("e1", "e2"):
                    Site(engine, clock, estate=estate).reading(
                        "p1", "fire_pump", fault=fault, running=False, auto=True
                    )
                engine.tick()
                clock.advance(SECOND)
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    worker = threading.Thread(target=commits)
    worker.start()
    rounds = 0
    while not stop.is_set():  # the partition hooks, on their own thread
        engine.release({"e1"})
        engine.adopt({"e1"})
        rounds += 1
    worker.join()
    assert errors == [] and rounds > 1
    assert engine.rec._unwritten is None  # every change was written, none refused
    engine.adopt({"e1"})
    with engine.store.engine.connect() as conn:
        open_rows = conn.execute(
            sa.select(alarms.c.estate, sa.func.count())
            .where(alarms.c.is_open)
            .group_by(alarms.c.estate)
        ).all()
    assert all(n <= 1 for _, n in open_rows)  # one open alarm per (rule, subject), ever
    in_memory = sorted(a.id for a in engine.alarms.open.values())
    assert in_memory == sorted(a.id for a in engine.store.open_alarms())


def _socket(temp_c: float, clock: SimClock, ts: int | None = None) -> Delivery:
    """One commit of ingest's: a charging socket's temperature taken at ``ts`` (now)."""
    d = Delivery("estates/e1/gw/gw-01/telemetry", clock.now, "e1", "gw-01")
    reading = Reading("s1", "ebike_charger", clock.now if ts is None else ts, {"temp_c": temp_c})
    d.batch = EstateBatch("e1", "gw-01", [reading], [])
    return d


def _alarm_rows(engine: AlertEngine) -> list[tuple[Any, ...]]:
    """Every alarm of e1 as stored, with its timeline and its notifications."""
    out = []
    with engine.store.engine.connect() as conn:
        for a in conn.execute(sa.select(alarms).order_by(alarms.c.started_ms)).mappings():
            q = sa.select(alarm_timeline.c.ts, alarm_timeline.c.action, alarm_timeline.c.actor)
            timeline = conn.execute(q.where(alarm_timeline.c.alarm_id == a["id"])).all()
            out.append((a["id"], a["state"], a["started_ms"], a["resolved_ms"], tuple(timeline)))
    return out


@pytest.mark.parametrize("cleared", [True, False], ids=["cleared", "open"])
@pytest.mark.parametrize("database_url", ["postgresql", "sqlite"], indirect=True)
def test_a_replayed_fault_its_predecessor_judged_is_not_alarmed_again(
    database_url: str, make_engine: EngineFactory, clock: SimClock, cleared: bool
) -> None:
    """Worker A committed and judged a hot socket's readings, then died before the broker had
    their acknowledgements: the broker sends them again (DUP) and they go to the rules of B,
    which adopted the estate with A's alarm. The same fault is not alarmed twice."""
    told = _receivers()
    first = make_engine(database_url, receivers=roles(told), fence=_always_owner)
    sent: list[Delivery] = []
    for temp in (70.0, 72.0, 50.0) if cleared else (70.0, 72.0):  # over 60 °C, cleared at 55
        sent.append(_socket(temp, clock))
        first.on_committed([sent[-1]])
        first.tick()
        clock.advance(10 * SECOND)
    (alarm,) = first.list_alarms(estate="e1")
    assert alarm["state"] == ("cleared" if cleared else "firing")
    before, notices = _alarm_rows(first), _rows(first, notifications)
    pages = [(n.event, n.created_ms) for n in told["control_room"].sent]
    assert ("firing", alarm["fired_ms"]) in pages
    del first  # killed: no stop, no snapshot

    clock.advance(20 * SECOND)
    successor = make_engine(
        database_url, receivers=roles(told), fence=_always_owner, owns=lambda _e: False
    )
    news: list[dict[str, Any]] = []
    successor.add_listener(news.append)
    successor.adopt({"e1"})
    for d in sent:  # redelivered, in the order first sent, one commit each
        successor.on_committed([d])
        successor.tick()
    successor.on_committed(sent)  # and all at once
    successor.tick()
    assert _alarm_rows(successor) == before
    assert _rows(successor, notifications) == notices
    assert [(n.event, n.created_ms) for n in told["control_room"].sent] == pages
    assert news == []

    # a genuinely new fault after the socket cooled: a new alarm, told
    clock.advance(MINUTE)
    if not cleared:
        successor.on_committed([_socket(50.0, clock)])
        clock.advance(10 * SECOND)
    successor.on_committed([_socket(75.0, clock)])
    successor.tick()
    rows = _alarm_rows(successor)
    assert len(rows) == 2 and rows[0][0] == alarm["id"]
    assert rows[1][1] == "firing" and rows[1][2] == clock.now
    assert [n.event for n in told["control_room"].sent].count("firing") == 2


def test_a_late_reading_inside_a_fault_the_rules_closed_is_that_fault_a_persons_close_ends_it(
    make_engine: EngineFactory, sqlite_url: str, clock: SimClock
) -> None:
    """One engine, out-of-order data: the same rule by data time as a replay's."""
    engine = make_engine(sqlite_url, fence=_always_owner)

    def socket(temp_c: float, ts: int) -> None:
        engine.on_committed([_socket(temp_c, clock, ts)])

    t0 = clock.now
    socket(70.0, t0)
    socket(50.0, t0 + 20 * SECOND)  # cleared by the rules: [t0, t0 + 20 s]
    clock.advance(30 * SECOND)
    socket(71.0, t0 + 10 * SECOND)  # a lane's late reading inside that span
    (first,) = engine.list_alarms(estate="e1")
    assert first["state"] == "cleared"

    socket(72.0, t0 + 25 * SECOND)  # after the span: a new fault
    (second,) = [a for a in engine.list_alarms(estate="e1") if a["id"] != first["id"]]
    assert second["started_ms"] == t0 + 25 * SECOND
    clock.advance(10 * SECOND)
    engine.resolve(second["id"], "王班长", None)  # a person's close: wall time, no span
    socket(72.0, t0 + 25 * SECOND)  # its own first reading again: the same alarm
    assert len(engine.list_alarms(estate="e1")) == 2
    socket(73.0, t0 + 30 * SECOND)  # still hot after the person closed it: a new alarm
    started = sorted(a["started_ms"] for a in engine.list_alarms(estate="e1"))
    assert started == [t0, t0 + 25 * SECOND, t0 + 30 * SECOND]
