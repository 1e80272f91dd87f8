"""The alarm lifecycle: one open alarm per (rule, subject); pending → firing → acknowledged →
resolved; flapping alarms held."""

from __future__ import annotations

import pytest

from alerts.alarms import AlarmBook, AlarmState, FlapDetector, InvalidTransition
from alerts.rules.evaluate import Signal
from alerts.rules.loader import load_rules
from protocol.catalog import default_catalog

RULES = load_rules(default_catalog()).defaults
MIN = 60_000


def sig(rule: str, hit: bool, ts: int, subject: str = "d1") -> Signal:
    return Signal(RULES[rule], "e1", subject, "kind", "gw", hit, ts, {"ts": ts})


def test_for_keeps_it_pending_until_the_time_has_passed() -> None:
    book = AlarmBook()
    (start,) = book.apply(sig("hydrant-pressure-low", True, 0), 0)  # for: 5m
    alarm = start.alarm
    assert (start.action, alarm.state) == ("pending", AlarmState.PENDING)
    assert book.tick(5 * MIN - 1) == []
    (fired,) = book.tick(5 * MIN)
    assert (fired.action, alarm.state, alarm.fired_ms) == ("firing", AlarmState.FIRING, 5 * MIN)


def test_a_pending_alarm_that_clears_is_cancelled() -> None:
    book = AlarmBook()
    book.apply(sig("hydrant-pressure-low", True, 0), 0)
    (gone,) = book.apply(sig("hydrant-pressure-low", False, MIN), MIN)
    assert gone.action == "cancelled"
    assert book.open == {}


def test_one_open_alarm_per_rule_and_subject() -> None:
    book = AlarmBook()
    book.apply(sig("fire-pump-fault", True, 0), 0)
    assert book.apply(sig("fire-pump-fault", True, 1), 1) == []
    book.apply(sig("fire-pump-fault", True, 2, subject="d2"), 2)
    assert len(book.open) == 2


def test_event_repeats_are_counted_on_the_open_alarm() -> None:
    book = AlarmBook()
    (first,) = book.apply(sig("fire-alarm", True, 0), 0)
    (again,) = book.apply(sig("fire-alarm", True, MIN), MIN)
    assert again.action == "again" and not again.notify
    assert first.alarm is again.alarm and first.alarm.count == 2


def test_acknowledge_resolve_assign_note_with_who() -> None:
    book = AlarmBook()
    alarm = book.apply(sig("fire-pump-fault", True, 0), 0)[0].alarm
    ack = book.acknowledge(alarm, "王班长", MIN, "on my way")
    assert (alarm.state, alarm.acked_by, ack.entry.by) == (
        AlarmState.ACKNOWLEDGED,
        "王班长",
        "王班长",
    )
    with pytest.raises(InvalidTransition):
        book.acknowledge(alarm, "王班长", MIN, None)
    assert book.assign(alarm, "张工", "王班长", 2 * MIN).entry.detail == {"assignee": "张工"}
    assert book.note(alarm, "泵房已到", "张工", 3 * MIN).entry.action == "note"
    done = book.resolve(alarm, "张工", 4 * MIN, "replaced the contactor")
    assert (alarm.state, alarm.resolved_by, done.entry.detail["note"]) == (
        AlarmState.RESOLVED,
        "张工",
        "replaced the contactor",
    )
    with pytest.raises(InvalidTransition):
        book.resolve(alarm, "张工", 5 * MIN, None)


def test_an_acknowledged_alarm_resolves_when_its_condition_clears() -> None:
    book = AlarmBook()
    alarm = book.apply(sig("fire-pump-fault", True, 0), 0)[0].alarm
    book.acknowledge(alarm, "op", MIN, None)
    (done,) = book.apply(sig("fire-pump-fault", False, 2 * MIN), 2 * MIN)
    assert done.action == "resolved" and done.entry.by == "rules"


def test_a_flapping_alarm_is_held_and_marked_not_renotified() -> None:
    book = AlarmBook(FlapDetector(starts=3, window_ms=30 * MIN, hold_ms=15 * MIN))
    actions = []
    for i in range(3):
        actions += [c.action for c in book.apply(sig("fire-pump-fault", True, i * 4 * MIN), 0)]
        actions += [
            c.action for c in book.apply(sig("fire-pump-fault", False, i * 4 * MIN + MIN), 0)
        ]
    assert actions == ["firing", "resolved", "firing", "resolved", "firing", "flapping"]
    alarm = book.open[("fire-pump-fault", "e1", "d1")]
    assert alarm.flapping and alarm.state is AlarmState.FIRING
    # it keeps flapping: nothing more is said
    for i in range(3, 6):
        assert book.apply(sig("fire-pump-fault", True, i * 4 * MIN), 0) == []
        assert book.apply(sig("fire-pump-fault", False, i * 4 * MIN + MIN), 0) == []
    quiet_since = 5 * 4 * MIN + MIN
    assert book.tick(quiet_since + 15 * MIN - 1) == []
    (done,) = book.tick(quiet_since + 15 * MIN)
    assert done.action == "resolved" and done.alarm.flapping


def test_auto_resolve_of_event_alarms() -> None:
    book = AlarmBook()
    book.apply(sig("fire-fault", True, 0), 0)
    assert book.tick(59 * MIN, {"fire-fault": 60 * MIN}) == []
    (done,) = book.tick(60 * MIN, {"fire-fault": 60 * MIN})
    assert done.action == "resolved"
