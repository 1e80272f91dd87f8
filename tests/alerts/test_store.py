"""The alerts' tables on SQLite and on PostgreSQL: the same tests, both databases."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
import sqlalchemy as sa

from alerts.alarms import Alarm, AlarmState, TimelineEntry
from alerts.drills import Drill, DrillStatus
from alerts.escalation import Rescue
from alerts.notify import Notification
from alerts.plans import ActivationEntry, ActivationTask, PlanActivation, ResponseLevel, Source
from alerts.rules.spec import Severity
from alerts.silences import Matcher, Silence
from alerts.store import SCHEMA_VERSION, AlertStore, StoreBatch, schema_version
from alerts.weather import Hazard, OfficialWarning, WeatherLevel
from ingest.state import StateStore, create_engine
from tests.alerts.conftest import START


@pytest.fixture
def store(database_url: str) -> Iterator[AlertStore]:
    engine = create_engine(database_url)
    s = AlertStore(engine)
    s.migrate(START)
    yield s
    engine.dispose()


def alarm(aid: str, state: AlarmState = AlarmState.PENDING) -> Alarm:
    return Alarm(
        id=aid,
        rule="hydrant-pressure-low",
        estate="e1",
        subject="h1",
        kind="fire_hydrant",
        gateway="gw-01",
        severity=Severity.MAJOR,
        state=state,
        summary_zh="消火栓静压低于 0.07 MPa",
        summary_en="Hydrant static pressure below 0.07 MPa",
        started_ms=START,
        updated_ms=START,
        tags=("fire",),
        detail={"metric": "pressure_mpa", "value": 0.05},
        for_ms=300_000,
    )


def test_alarms_and_their_timelines_round_trip(store: AlertStore) -> None:
    a = alarm("al-1")
    store.write(
        StoreBatch(
            alarms={a.id: a},
            alarm_entries=[TimelineEntry(a.id, START, "pending", "rules", {"value": 0.05})],
        )
    )
    (back,) = store.open_alarms()
    assert back == a
    a.state, a.fired_ms, a.acked_by = AlarmState.ACKNOWLEDGED, START + 1, "王班长"
    store.write(
        StoreBatch(
            alarms={a.id: a},
            alarm_entries=[TimelineEntry(a.id, START + 2, "acknowledged", "王班长")],
        )
    )
    got = store.get_alarm("al-1")
    assert got is not None and (got.state, got.acked_by) == (AlarmState.ACKNOWLEDGED, "王班长")
    assert [e["action"] for e in store.alarm_timeline("al-1")] == ["pending", "acknowledged"]
    assert [x.id for x in store.list_alarms(estate="e1", state=["acknowledged"])] == ["al-1"]
    assert store.list_alarms(estates=["e2"]) == []


def test_one_open_alarm_per_rule_and_subject_in_the_database_too(store: AlertStore) -> None:
    store.write(StoreBatch(alarms={"al-1": alarm("al-1")}))
    with pytest.raises(sa.exc.IntegrityError):
        store.write(StoreBatch(alarms={"al-2": alarm("al-2")}))
    done = alarm("al-1", AlarmState.RESOLVED)
    store.write(StoreBatch(alarms={"al-1": done, "al-2": alarm("al-2")}))  # resolve, then anew
    assert [a.id for a in store.open_alarms()] == ["al-2"]


def test_a_pending_alarm_that_never_fired_leaves_nothing(store: AlertStore) -> None:
    a = alarm("al-1")
    store.write(
        StoreBatch(alarms={a.id: a}, alarm_entries=[TimelineEntry(a.id, START, "pending", "rules")])
    )
    store.write(StoreBatch(alarms={a.id: a}, forget_alarms={a.id}))
    assert store.get_alarm("al-1") is None and store.alarm_timeline("al-1") == []


def test_silences_warnings_clocks_and_windows(store: AlertStore) -> None:
    s = Silence(
        "si-1",
        (Matcher.parse("device", "lift-.*", "=~"),),
        START,
        START + 10,
        "王工",
        "年检",
        START,
    )
    store.save_silence(s)
    assert store.silences(ending_after_ms=START) == [s]
    assert store.silences(ending_after_ms=START + 10) == []
    w = OfficialWarning(
        "wa-1", Hazard.SNOWSTORM, WeatherLevel.ORANGE, START, START + 5, region="呼和浩特"
    )
    store.save_warning(w)
    assert store.warnings() == [w]
    store.save_clocks([("e1", "h1", "fire_hydrant", "gw-01", START, START - 9)])
    store.save_clocks([("e1", "h1", "fire_hydrant", "gw-01", START + 5, START - 4)])
    store.save_clocks([("e1", "h1", "fire_hydrant", "gw-01", START + 1, START)])  # older
    assert store.clocks() == [("e1", "h1", "fire_hydrant", "gw-01", START + 5, START - 4)]
    store.save_windows([("e1", "ws-01", "snow_mm", b"\x00\x01")], START)
    assert store.windows() == [("e1", "ws-01", "snow_mm", b"\x00\x01")]


def test_a_snapshots_many_windows_and_clocks_are_written_and_rewritten(store: AlertStore) -> None:
    """Through the driver's executemany (``tables.run_many``): every row, the newest kept."""
    rows = [("e1", f"d{i}", "t", bytes([i % 256]) * (i % 7)) for i in range(500)]
    store.save_windows(rows, START)
    store.save_windows([(e, d, m, b + b"\xff") for e, d, m, b in rows[::2]], START + 1)
    got = {(e, d, m): b for e, d, m, b in store.windows()}
    assert len(got) == 500
    assert all(
        got[(e, d, m)] == b + (b"\xff" if i % 2 == 0 else b"")
        for i, (e, d, m, b) in enumerate(rows)
    )
    clocks = [("e1", f"d{i}", "meter", "gw-01", START + i, START - i) for i in range(300)]
    store.save_clocks(clocks)
    store.save_clocks([(e, d, k, g, last - 1, data) for e, d, k, g, last, data in clocks])  # older
    assert sorted(store.clocks()) == sorted(clocks)


def test_activations_with_tasks_and_timeline(store: AlertStore) -> None:
    act = PlanActivation(
        id="pa-1",
        estate="e1",
        plan="snowstorm",
        level=ResponseLevel.III,
        started_ms=START,
        updated_ms=START,
        hold_ms=7_200_000,
        max_level=ResponseLevel.III,
        levels_reached=[1, 2],
        sources={"observed:snowstorm": Source("observed:snowstorm", ResponseLevel.III, {"v": 6.0})},
    )
    task = ActivationTask(
        "duty-patrol",
        ResponseLevel.IV,
        "增加值班人员",
        "More duty",
        "duty_manager",
        START,
        START + 1,
    )
    store.write(
        StoreBatch(
            activations={act.id: act},
            activation_entries=[
                ActivationEntry(act.id, START, "activated", "weather", ResponseLevel.IV)
            ],
            tasks={(act.id, task.task_id): task},
        )
    )
    (back,) = store.active_activations()
    assert (back.level, back.levels_reached, back.tasks["duty-patrol"].text_zh) == (
        ResponseLevel.III,
        [1, 2],
        "增加值班人员",
    )
    assert back.sources["observed:snowstorm"].detail == {"v": 6.0}
    assert [e["level"] for e in store.activation_timeline("pa-1")] == ["Ⅳ"]
    assert store.list_activations(estates=["e2"]) == []


def test_schema_is_stamped_and_lives_beside_the_state_store(database_url: str) -> None:
    state = StateStore.open(database_url)  # the same database, its own schema_version table
    alerts = AlertStore(state.engine)
    assert alerts.migrate(START) == 0
    assert alerts.migrate(START) == SCHEMA_VERSION
    with state.engine.begin() as conn:
        conn.execute(schema_version.insert().values(version=SCHEMA_VERSION + 1, applied_ms=START))
    with pytest.raises(RuntimeError, match="newer than this program"):
        alerts.migrate(START)
    state.add_estate("e1", "E1")  # the state store is untouched
    state.close()


def test_a_version_1_rescue_table_gains_the_arrival(database_url: str) -> None:
    """(issue 11) v2 records the technician's arrival beside the release."""
    import sqlalchemy as sa

    from alerts.escalation import Rescue

    state = StateStore.open(database_url)
    alerts = AlertStore(state.engine)
    alerts.migrate(START)
    with state.engine.begin() as conn:  # back to v1: no arrival columns
        conn.execute(sa.text("ALTER TABLE alert_rescues DROP COLUMN arrived_ms"))
        conn.execute(sa.text("ALTER TABLE alert_rescues DROP COLUMN arrived_by"))
        for column in ("raised_ms", "closed_ms", "late"):  # and no v3 wall times
            conn.execute(sa.text(f"ALTER TABLE alert_alarms DROP COLUMN {column}"))
        conn.execute(sa.update(schema_version).values(version=1))
    assert alerts.migrate(START) == 1
    rescue = Rescue(
        "al-1", "e1", "lift-1", START, START + 30, arrived_ms=START + 20, arrived_by="张"
    )
    alerts.write(StoreBatch(rescues={"al-1": (rescue, False)}))
    assert alerts.arrivals() == {"al-1": (START + 20, "张")}
    state.close()


def test_a_successor_opens_in_the_same_batch_its_predecessor_closes(store: AlertStore) -> None:
    """A pending alarm forgotten, or an alarm resolved, and a new one for the same rule and
    subject in one write: the database's one-open-alarm index must not refuse it."""
    first = alarm("al-1")
    store.write(StoreBatch(alarms={first.id: first}))
    second = alarm("al-2")
    store.write(StoreBatch(alarms={second.id: second}, forget_alarms={first.id}))
    second.state = AlarmState.RESOLVED
    third = alarm("al-3", AlarmState.FIRING)
    # the successor comes first in the batch, as it can when both happen in one tick
    store.write(StoreBatch(alarms={third.id: third, second.id: second}))
    assert [a.id for a in store.open_alarms()] == ["al-3"]


def test_a_batch_names_its_estates_and_leaves_a_lost_estates_part_out() -> None:
    """What a fence is asked about, and what is written again once it refused some estates."""

    def of(estate: str) -> StoreBatch:
        a = replace(alarm(f"al-{estate}"), estate=estate, subject=f"h-{estate}")
        act = PlanActivation(f"pa-{estate}", estate, "fire", ResponseLevel.IV, START, START, 1)
        task = ActivationTask("verify", ResponseLevel.IV, "核实", "Verify", "cr", START, START + 1)
        return StoreBatch(
            alarms={a.id: a},
            alarm_entries=[TimelineEntry(a.id, START, "pending", "rules")],
            forget_alarms={a.id},
            activations={act.id: act},
            activation_entries=[ActivationEntry(act.id, START, "activated", "rules", act.level)],
            tasks={(act.id, task.task_id): task},
            rescues={a.id: (Rescue(a.id, estate, "lift-1", START, START + 1), False)},
            notifications=[Notification(f"n-{estate}", "cr", estate, "firing", {}, START)],
            drills={
                f"dr-{estate}": Drill(f"dr-{estate}", estate, "fire", DrillStatus.SCHEDULED, START)
            },
            drill_clocks={(estate, "fire"): START},
        )

    shared = StoreBatch(
        warnings={
            "wa-1": OfficialWarning(
                "wa-1", Hazard.SNOWSTORM, WeatherLevel.BLUE, START, START + 1, region="呼和浩特"
            )
        }
    )
    batch = StoreBatch()
    for part in (of("e1"), of("x"), shared):
        batch.merge(part)
    assert batch.estates() == {"e1", "x"}  # warnings are no one estate's
    kept = batch.without({"x"})
    expected = of("e1")
    expected.merge(shared)
    assert kept == expected
    assert kept.estates() == {"e1"}
    assert not StoreBatch(warnings=shared.warnings).without({"e1", "x"}).estates()
