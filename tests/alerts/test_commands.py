"""Remote commands (issue 13): the command book's state machine, pure; the desk's records on
SQLite and PostgreSQL (alerts schema v4), answers, time-outs, alarm timelines and the rule
action taken once per alarm. The MQTT side is tests/integration/test_socket_commands.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from alerts.alarms import SYSTEM, Alarm, AlarmState
from alerts.commands import (
    CommandBook,
    CommandRefused,
    CommandsBusy,
    CommandState,
    check_action,
)
from alerts.remote import CommandConflict, CommandDesk, CommandStore
from alerts.rules.loader import RuleFileError, load_rules
from alerts.rules.spec import Severity
from alerts.store import SCHEMA_VERSION, AlertStore, StoreBatch, schema_version
from ingest.pipeline import Delivery
from ingest.state import NotFound, StateStore
from protocol.catalog import default_catalog
from protocol.messages import CommandAck, Reading, decode_command
from tests.alerts.conftest import MINUTE, Site

T0 = 1_767_225_600_000


# --- the book, pure ------------------------------------------------------------------------------


def test_a_command_is_acknowledged_or_refused_once_and_only_by_its_gateway() -> None:
    book = CommandBook(timeout_ms=30_000)
    cmd = book.open("e1", "gw-01", "ebc-1", "socket.power_off", "hot", "ops", T0)
    assert cmd.state is CommandState.SENT and cmd.deadline_ms == T0 + 30_000
    book.sent(cmd)
    # another gateway (or estate) cannot answer it
    assert book.answer(cmd.id, "e1", "gw-02", True, None, T0 + 1) is None
    assert book.answer(cmd.id, "e2", "gw-01", True, None, T0 + 1) is None
    change = book.answer(cmd.id, "e1", "gw-01", True, None, T0 + 500)
    assert change is not None and change.state is CommandState.ACKNOWLEDGED
    assert cmd.answered_ms == T0 + 500 and cmd.error is None
    # a final state never changes: a repeated answer, a time-out
    assert book.answer(cmd.id, "e1", "gw-01", False, "late", T0 + 600) is None
    assert book.expire(T0 + 60_000) == []
    assert cmd.state is CommandState.ACKNOWLEDGED

    refused = book.open("e1", "gw-01", "ebc-2", "socket.power_off", "", "ops", T0)
    book.sent(refused)
    change = book.answer(refused.id, "e1", "gw-01", False, "no such socket", T0 + 10)
    assert change is not None and change.state is CommandState.FAILED
    assert refused.error == "no such socket"


def test_an_unanswered_command_times_out_at_its_deadline_and_a_late_answer_is_ignored() -> None:
    book = CommandBook(timeout_ms=30_000)
    cmd = book.sent(book.open("e1", "gw-01", "ebc-1", "socket.power_off", "", "ops", T0)).command
    assert book.expire(T0 + 29_999) == []
    (change,) = book.expire(T0 + 30_000)
    assert change.state is CommandState.TIMED_OUT and cmd.answered_ms == T0 + 30_000
    assert cmd.error is not None and "gw-01" in cmd.error and "30 s" in cmd.error
    assert book.answer(cmd.id, "e1", "gw-01", True, None, T0 + 31_000) is None
    assert cmd.state is CommandState.TIMED_OUT


def test_the_book_is_bounded_and_actions_fit_their_device_kind() -> None:
    book = CommandBook(timeout_ms=1000, max_waiting=2)
    for dev in ("a", "b"):
        book.sent(book.open("e1", "gw", dev, "socket.power_off", "", "ops", T0))
    with pytest.raises(CommandsBusy, match="waiting"):
        book.open("e1", "gw", "c", "socket.power_off", "", "ops", T0)
    book.expire(T0 + 1000)
    book.open("e1", "gw", "c", "socket.power_off", "", "ops", T0)  # room again
    check_action("socket.power_on", "ebike_charger")
    with pytest.raises(CommandRefused, match="unknown action"):
        check_action("socket.explode", "ebike_charger")
    with pytest.raises(CommandRefused, match="is a fire_hydrant"):
        check_action("socket.power_off", "fire_hydrant")
    with pytest.raises(ValueError):
        CommandBook(timeout_ms=0)


def test_a_rule_action_must_fit_the_rules_kinds(tmp_path: Any) -> None:
    catalog = default_catalog()
    rules = load_rules(catalog)
    assert rules.defaults["ebike-socket-hot"].action == "socket.power_off"
    assert rules.defaults["ebike-socket-overpower"].action is None
    bad = tmp_path / "rules"
    bad.mkdir()
    (bad / "x.yaml").write_text(
        "rules:\n"
        "  - id: hydrant-cut\n"
        "    kinds: [fire_hydrant]\n"
        "    when: {metric: pressure_mpa, below: 0.07}\n"
        "    severity: major\n"
        "    summary: low\n"
        "    action: socket.power_off\n",
        encoding="utf-8",
    )
    with pytest.raises(RuleFileError, match=r"x\.yaml:7.*rule's kinds must be"):
        load_rules(catalog, bad)
    (bad / "x.yaml").write_text(
        (bad / "x.yaml").read_text().replace("socket.power_off", "socket.dance"),
        encoding="utf-8",
    )
    with pytest.raises(RuleFileError, match=r"unknown action 'socket\.dance'"):
        load_rules(catalog, bad)


# --- the desk, on a real database -----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def state(database_url: str) -> Iterator[StateStore]:
    st = StateStore.open(database_url)
    AlertStore(st.engine).migrate(T0)
    st.add_estate("e1", "东苑")
    st.add_estate("e2", "西苑")
    st.add_gateway("e1", "gw-01")
    st.add_gateway("e2", "gw-01")
    st.add_devices(
        [
            ("e1", "ebc-1", "ebike_charger", "gw-01", T0),
            ("e1", "ebc-2", "ebike_charger", "gw-01", T0),
            ("e1", "hyd-1", "fire_hydrant", "gw-01", T0),
            ("e2", "ebc-1", "ebike_charger", "gw-01", T0),
        ]
    )
    yield st
    st.close()


def hot_alarm(alarm_id: str = "al-hot", dev: str = "ebc-1", late: bool = False) -> Alarm:
    return Alarm(
        alarm_id,
        "ebike-socket-hot",
        "e1",
        dev,
        "ebike_charger",
        "gw-01",
        Severity.CRITICAL,
        AlarmState.FIRING,
        "充电插座温度超过 60℃",
        "Charging socket over 60 °C",
        T0,
        T0,
        fired_ms=T0,
        raised_ms=T0,
        late=late,
    )


def ack(estate: str, gw: str, command_id: str, ok: bool, error: str | None = None) -> Delivery:
    topic = f"estates/{estate}/gw/{gw}/cmd/ack"
    return Delivery(topic, T0, estate, gw, command_ack=CommandAck(command_id, ok, T0, error))


def make_desk(
    state: StateStore, clock: Clock, auto: bool = False
) -> tuple[CommandDesk, list[tuple[str, bytes]], list[dict[str, Any]]]:
    sent: list[tuple[str, bytes]] = []
    told: list[dict[str, Any]] = []
    desk = CommandDesk(
        state,
        lambda topic, payload, retain: sent.append((topic, payload)),
        timeout_ms=30_000,
        auto_action=(lambda e, r: "socket.power_off" if auto and r == "ebike-socket-hot" else None),
        clock=clock,
    )
    desk.add_listener(told.append)
    return desk, sent, told


def test_the_desk_sends_to_the_devices_gateway_and_records_every_state_in_the_alarm(
    state: StateStore,
) -> None:
    clock = Clock()
    alerts = AlertStore(state.engine)
    alerts.write(StoreBatch(alarms={"al-hot": hot_alarm()}))
    desk, sent, told = make_desk(state, clock)
    cmd = desk.send("e1", "ebc-1", "socket.power_off", "插座 68℃", "zhang", "al-hot")
    assert cmd["state"] == "sent" and cmd["gateway"] == "gw-01" and cmd["sent_ms"] == T0
    assert cmd["alarm_id"] == "al-hot" and cmd["answered_ms"] is None and cmd["error"] is None
    ((topic, payload),) = sent
    assert topic == "estates/e1/gw/gw-01/cmd"
    wire = decode_command(payload)  # CONTRACT.md "Commands", as a gateway decodes it
    assert (wire.id, wire.dev, wire.action, wire.ts) == (cmd["id"], "ebc-1", "socket.power_off", T0)
    assert wire.params == {"reason": "插座 68℃", "expires": T0 + 30_000}
    # the same action for the alarm while the first still waits: refused
    with pytest.raises(CommandConflict, match="waits"):
        desk.send("e1", "ebc-1", "socket.power_off", "", "li", "al-hot")

    clock.now = T0 + 800
    desk.on_committed([ack("e1", "gw-01", cmd["id"], True)])
    got = desk.get(cmd["id"])
    assert got["state"] == "acknowledged" and got["answered_ms"] == T0 + 800
    timeline = alerts.alarm_timeline("al-hot")
    assert [(e["action"], e["by"]) for e in timeline] == [
        ("command_sent", "zhang"),
        ("command_acknowledged", "gateway"),
    ]
    assert timeline[0]["detail"]["command"] == cmd["id"]
    assert timeline[0]["detail"]["command_action"] == "socket.power_off"
    assert [(t["type"], t["action"], t["estate"]) for t in told] == [
        ("command", "sent", "e1"),
        ("command", "acknowledged", "e1"),
    ]
    assert told[1]["command"]["id"] == cmd["id"] and told[1]["entry"]["action"] == (
        "command_acknowledged"
    )


def test_refusals_time_outs_and_what_cannot_be_sent(state: StateStore) -> None:
    clock = Clock()
    desk, sent, _ = make_desk(state, clock)
    refused = desk.send("e1", "ebc-2", "socket.power_off", "", "zhang")
    desk.on_committed([ack("e1", "gw-01", refused["id"], False, "the socket has not started yet")])
    got = desk.get(refused["id"])
    assert got["state"] == "failed" and got["error"] == "the socket has not started yet"

    silent = desk.send("e1", "ebc-1", "socket.power_on", "", "zhang")
    clock.now = T0 + 29_999
    desk.tick()
    assert desk.get(silent["id"])["state"] == "sent"
    clock.now = T0 + 30_000
    desk.tick()
    got = desk.get(silent["id"])
    assert got["state"] == "timed_out" and got["answered_ms"] == T0 + 30_000
    desk.on_committed([ack("e1", "gw-01", silent["id"], True)])  # too late: stays timed out
    assert desk.get(silent["id"])["state"] == "timed_out"
    # an answer from another estate's gateway of the same name does not count
    other = desk.send("e1", "ebc-1", "socket.power_off", "", "zhang")
    desk.on_committed([ack("e2", "gw-01", other["id"], True)])
    assert desk.get(other["id"])["state"] == "sent"

    with pytest.raises(NotFound):
        desk.send("e1", "nope", "socket.power_off", "", "zhang")
    with pytest.raises(CommandRefused, match="fire_hydrant"):
        desk.send("e1", "hyd-1", "socket.power_off", "", "zhang")
    with pytest.raises(CommandRefused, match="unknown action"):
        desk.send("e1", "ebc-1", "socket.melt", "", "zhang")
    with pytest.raises(NotFound, match="alarm"):
        desk.send("e1", "ebc-1", "socket.power_off", "", "zhang", alarm_id="al-nope")
    AlertStore(state.engine).write(StoreBatch(alarms={"al-2": hot_alarm("al-2", dev="ebc-2")}))
    with pytest.raises(CommandRefused, match="about ebc-2"):
        desk.send("e1", "ebc-1", "socket.power_off", "", "zhang", alarm_id="al-2")
    state.set_gateway_access("e1", "gw-01", "disabled")
    with pytest.raises(CommandConflict, match="disabled"):
        desk.send("e1", "ebc-1", "socket.power_off", "", "zhang")
    assert len(sent) == 3


def test_a_broker_that_is_away_fails_the_command_at_once(state: StateStore) -> None:
    def away(_t: str, _p: bytes, _r: bool) -> None:
        raise ConnectionError("not connected")

    AlertStore(state.engine).write(StoreBatch(alarms={"al-hot": hot_alarm()}))
    desk = CommandDesk(state, away, clock=Clock())
    cmd = desk.send("e1", "ebc-1", "socket.power_off", "", "zhang", "al-hot")
    assert cmd["state"] == "failed" and "broker" in cmd["error"]
    assert desk.book.waiting == {}
    steps = [(e["action"], e["by"]) for e in AlertStore(state.engine).alarm_timeline("al-hot")]
    assert steps == [("command_sent", "zhang"), ("command_failed", "system")]


def test_waiting_commands_survive_a_restart_and_time_out_after_it(state: StateStore) -> None:
    clock = Clock()
    desk, _, _ = make_desk(state, clock)
    cmd = desk.send("e1", "ebc-1", "socket.power_off", "", "zhang")
    answered = desk.send("e1", "ebc-2", "socket.power_off", "", "zhang")
    again, _, told = make_desk(state, clock)  # a new process over the same database
    again.start()
    assert set(again.book.waiting) == {cmd["id"], answered["id"]}
    again.on_committed([ack("e1", "gw-01", answered["id"], True)])
    clock.now = T0 + 31_000
    again.tick()
    assert again.get(cmd["id"])["state"] == "timed_out"
    assert again.get(answered["id"])["state"] == "acknowledged"
    # the first process's book still holds both; the database settles each once
    desk.tick()
    assert [t["action"] for t in told] == ["acknowledged", "timed_out"]
    assert again.get(answered["id"])["state"] == "acknowledged"


def test_a_worker_adopting_an_estate_takes_up_its_waiting_commands(state: StateStore) -> None:
    clock = Clock()
    first, _, _ = make_desk(state, clock)
    cmd = first.send("e1", "ebc-1", "socket.power_off", "", "zhang")
    successor, _, told = make_desk(state, clock)  # started owning nothing of e1
    assert successor.book.waiting == {}
    successor.adopt({"e1"})
    successor.adopt({"e1"})
    assert set(successor.book.waiting) == {cmd["id"]}
    successor.release({"e1"})  # and given up again: forgotten, nothing written
    assert successor.book.waiting == {} and successor.get(cmd["id"])["state"] == "sent"
    successor.adopt({"e1"})
    clock.now = T0 + 30_000
    successor.tick()  # its deadline stands on the new owner
    assert successor.get(cmd["id"])["state"] == "timed_out"
    assert [t["action"] for t in told] == ["timed_out"]


def test_an_answer_reaches_a_process_that_did_not_send_the_command(state: StateStore) -> None:
    clock = Clock()
    sender, _, _ = make_desk(state, clock)
    cmd = sender.send("e1", "ebc-1", "socket.power_off", "", "zhang")
    receiver, _, told = make_desk(state, clock)  # not started: it never saw the command
    receiver.on_committed([ack("e1", "gw-01", cmd["id"], True)])
    assert receiver.get(cmd["id"])["state"] == "acknowledged"
    assert [t["action"] for t in told] == ["acknowledged"]


def test_a_rule_action_is_sent_once_per_alarm_never_for_late_alarms_or_when_off(
    state: StateStore,
) -> None:
    clock = Clock()
    alerts = AlertStore(state.engine)
    for a in (hot_alarm("al-1"), hot_alarm("al-late", dev="ebc-2", late=True)):
        alerts.write(StoreBatch(alarms={a.id: a}))

    def firing(alarm: Alarm, action: str = "firing") -> dict[str, Any]:
        return {"type": "alarm", "estate": "e1", "action": action, "alarm": alarm.as_dict()}

    off, off_sent, _ = make_desk(state, clock, auto=False)
    off.on_alarm_change(firing(hot_alarm("al-1")))
    assert off_sent == []

    desk, sent, _ = make_desk(state, clock, auto=True)
    desk.on_alarm_change(firing(hot_alarm("al-late", dev="ebc-2", late=True)))
    assert sent == []  # history replayed from a backlog switches nothing
    desk.on_alarm_change(firing(hot_alarm("al-1"), action="acknowledged"))
    assert sent == []
    desk.on_alarm_change(firing(hot_alarm("al-1")))
    desk.on_alarm_change(firing(hot_alarm("al-1")))  # told twice: sent once
    assert len(sent) == 1
    (cmd,) = desk.for_device("e1", "ebc-1")
    assert cmd["by"] == SYSTEM and cmd["rule"] == "ebike-socket-hot"
    assert cmd["alarm_id"] == "al-1" and cmd["reason"] == "ebike-socket-hot"
    # timed out, then the alarm is told again (another process, a restart): not repeated
    clock.now = T0 + 60_000
    desk.tick()
    again, again_sent, _ = make_desk(state, clock, auto=True)
    again.on_alarm_change(firing(hot_alarm("al-1")))
    assert again_sent == []
    assert [e["action"] for e in alerts.alarm_timeline("al-1")] == [
        "command_sent",
        "command_timed_out",
    ]


def test_an_automatic_cut_off_that_cannot_go_says_so_in_the_alarm(state: StateStore) -> None:
    alerts = AlertStore(state.engine)
    alerts.write(StoreBatch(alarms={"al-1": hot_alarm("al-1")}))
    state.set_gateway_access("e1", "gw-01", "disabled")
    desk, sent, _ = make_desk(state, Clock(), auto=True)
    desk.on_alarm_change(
        {"type": "alarm", "action": "firing", "alarm": hot_alarm("al-1").as_dict()}
    )
    assert sent == []
    (entry,) = alerts.alarm_timeline("al-1")
    assert entry["action"] == "command_failed" and entry["by"] == "system"
    assert "disabled" in entry["detail"]["error"]
    assert entry["detail"]["command_action"] == "socket.power_off"


def test_a_device_keeps_its_newest_commands(state: StateStore) -> None:
    clock = Clock()
    desk, _, _ = make_desk(state, clock)
    desk.store = CommandStore(state.engine, per_device=3)
    ids = []
    for i in range(5):
        clock.now = T0 + i
        cmd = desk.send("e1", "ebc-1", "socket.power_on", "", "zhang")
        desk.on_committed([ack("e1", "gw-01", cmd["id"], True)])
        ids.append(cmd["id"])
    assert [c["id"] for c in desk.for_device("e1", "ebc-1", 10)] == ids[::-1][:3]


def test_alerts_schema_v3_gains_the_commands_table(database_url: str) -> None:
    st = StateStore.open(database_url)
    alerts = AlertStore(st.engine)
    alerts.migrate(T0)
    with st.engine.begin() as conn:  # as a v3 database was
        conn.execute(sa.text("DROP TABLE alert_commands"))
        conn.execute(sa.update(schema_version).values(version=3))
    assert alerts.migrate(T0) == 3 and SCHEMA_VERSION == 6
    st.add_estate("e1", "东苑")
    st.add_gateway("e1", "gw-01")
    st.add_devices([("e1", "ebc-1", "ebike_charger", "gw-01", T0)])
    desk = CommandDesk(st, lambda *_: None, clock=Clock())
    cmd = desk.send("e1", "ebc-1", "socket.power_off", "", "zhang")
    assert desk.get(cmd["id"])["state"] == "sent"
    st.close()


def test_every_command_state_and_action_has_its_words_in_both_languages() -> None:
    from alerts.commands import ACTIONS
    from alerts.labels import Labels
    from alerts.remote import GATEWAY, TIMELINE_ACTION, TIMEOUT

    labels = Labels(default_catalog())
    keys = [f"alarm.action.{a}" for a in TIMELINE_ACTION.values()]
    keys += [f"command.state.{s.value}" for s in CommandState]
    keys += [f"command.action.{a}" for a in ACTIONS]
    keys += [f"actor.{GATEWAY}", f"actor.{TIMEOUT}", f"actor.{SYSTEM}"]
    for key in keys:
        zh, en = labels.text(key), labels.text(key, "en")
        assert zh != key and en != key and zh != en, key
    assert labels.text("alarm.action.command_timed_out") == "远程指令超时未回复"


def test_with_the_engine_a_late_hot_socket_cuts_nothing_until_its_data_is_current(
    make_engine: Any, sqlite_url: str, clock: Any
) -> None:
    """The real engine as the desk's source: a replayed day-old over-temperature raises a
    late alarm and sends nothing; once the socket's current data still says hot, the alarm is
    raised anew (caught up) and the cut-off goes, once."""
    state = StateStore.open(sqlite_url)
    state.add_estate("e1", "东苑")
    state.add_gateway("e1", "gw-01")
    state.add_devices([("e1", "ebc-1", "ebike_charger", "gw-01", T0)])
    engine = make_engine(sqlite_url)
    sent: list[tuple[str, bytes]] = []

    def auto(estate: str, rule_id: str) -> str | None:
        rule = engine.rules.defaults.get(rule_id)
        return rule.action if rule is not None else None

    desk = CommandDesk(state, lambda t, p, r: sent.append((t, p)), auto_action=auto, clock=clock)
    engine.add_listener(desk.on_alarm_change)
    site = Site(engine, clock)
    clock.advance(2 * MINUTE)
    site.deliver(
        readings=[Reading("ebc-1", "ebike_charger", clock.now - 86_400_000, {"temp_c": 70.0})]
    )
    (late,) = site.open_alarms("ebike-socket-hot")
    assert late["late"] is True
    assert sent == []
    clock.advance(MINUTE)
    site.reading("ebc-1", "ebike_charger", temp_c=71.0)
    engine.tick()
    clock.advance(MINUTE)
    site.reading("ebc-1", "ebike_charger", temp_c=72.0)
    engine.tick()
    (alarm,) = site.open_alarms("ebike-socket-hot")
    assert alarm["late"] is False and alarm["id"] == late["id"]
    assert len(sent) == 1 and sent[0][0] == "estates/e1/gw/gw-01/cmd"
    wire = decode_command(sent[0][1])
    assert (wire.dev, wire.action) == ("ebc-1", "socket.power_off")
    state.close()
