"""The evaluator's window tests: which window tests of a group must run at a reading, the
kind's window plan, and whether a test needs its window whole (issue 11)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TypeVar

from alerts.rules.index import KindRules, WindowGroup
from alerts.rules.spec import Rule, ValueTest
from alerts.windows import SeriesWindow

__all__ = ["due_tests", "gather", "needs_whole", "window_plan"]

_T = TypeVar("_T")


def needs_whole(test: ValueTest) -> bool:
    """Whether the test's aggregate is judged only over a covered window (``SeriesWindow.
    full``). A test that can only stay true as the window fills may be judged on a part:
    max, sum or count above a level, min below one (more samples cannot undo it; a sum of
    values that are never negative). Anything else (mean, rate, min_fall, max below, min
    above, bands, sets) may be undone by the samples a part window lacks: a new series, or
    one back after a gap, would raise alarms on its first samples."""
    agg, q = test.agg, test.quiet
    if agg is None or q is None or q.shape != "range":
        return True
    fn = agg.fn
    if fn == "max" or fn == "sum" or fn == "count":
        return not (q.lo == -math.inf and q.hi < math.inf)  # hits only above a level
    if fn == "min":
        return not (q.hi == math.inf and q.lo > -math.inf)  # hits only below a level
    return True


def window_plan(
    kr: KindRules, tracked: dict[str, int] | None
) -> list[tuple[int, str, WindowGroup | None]] | None:
    """The kind's tracked metrics (in the bank's order) with their window group, cached on
    ``kr`` for this ``tracked`` (the bank replaces it on retrack; ``track`` only adds, which
    the caller sees by its size); None when some group's metric is not tracked (then the
    general path runs)."""
    plan: list[tuple[int, str, WindowGroup | None]] | None = None
    if tracked is not None:
        groups = dict(kr.window_groups)
        if groups.keys() <= tracked.keys():
            plan = [(i, metric, groups.get(metric)) for i, metric in enumerate(tracked)]
    kr.window_plan, kr.window_plan_for = plan, tracked
    return plan


def gather(todo: list[_T] | None, more: Iterable[_T]) -> list[_T]:
    """``todo`` and ``more``: a list is made only once something is due (the quiet path
    allocates none)."""
    if todo is None:
        return list(more)
    todo.extend(more)
    return todo


def due_tests(
    group: WindowGroup, w: SeriesWindow, now: int
) -> Sequence[tuple[int, ValueTest, Rule]]:
    """The group's tests to run on series ``w``: all of them, or only those that must always
    run when the series' bounds (tightened once if loose) keep every aggregate quiet."""
    if group.always is not group.tests and (
        group.quiet(w, now) or (w.tighten() and group.quiet(w, now))
    ):
        return group.always
    return group.tests
