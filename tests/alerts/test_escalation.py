"""Escalation steps: due after their delay, skipped once acknowledged (or resolved)."""

from __future__ import annotations

from alerts.escalation import Chain, Rescue, Step, Until, due_steps

MIN = 60_000
TRAPPED = Chain(
    "elevator-trapped",
    (
        Step(("control_room",)),
        Step(("supervisor",), after_ms=5 * MIN),
        Step(("authority",), at_deadline=True, until=Until.RESOLVED),
    ),
)


def test_steps_fall_due_in_order() -> None:
    deadline = 30 * MIN
    assert due_steps(TRAPPED, 0, 0, deadline, False, 0) == [0]
    assert due_steps(TRAPPED, 0b1, 0, deadline, False, 5 * MIN - 1) == []
    assert due_steps(TRAPPED, 0b1, 0, deadline, False, 5 * MIN) == [1]
    assert due_steps(TRAPPED, 0b11, 0, deadline, False, 30 * MIN) == [2]


def test_acknowledging_stops_only_the_steps_that_wait_for_it() -> None:
    assert due_steps(TRAPPED, 0b1, 0, 30 * MIN, True, 6 * MIN) == []
    assert due_steps(TRAPPED, 0b1, 0, 30 * MIN, True, 30 * MIN) == [2]


def test_rescue_time_and_breach() -> None:
    r = Rescue("a1", "e1", "lift-1", trapped_ms=0, deadline_ms=30 * MIN, released_ms=12 * MIN)
    assert r.duration_ms == 12 * MIN and not r.breached(now=60 * MIN)
    late = Rescue("a2", "e1", "lift-1", trapped_ms=0, deadline_ms=30 * MIN)
    assert late.duration_ms is None and late.breached(now=30 * MIN + 1)
