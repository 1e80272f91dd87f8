"""What else runs on the recorder's thread, between two commits (SQLite has one writer): typed
tasks, as Home Assistant's recorder has (homeassistant/components/recorder/tasks.py)."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from ingest.retention import RollupPlan

if TYPE_CHECKING:  # for the annotation only: the recorder runs the tasks
    from ingest.recorder import Recorder

T = TypeVar("T")


class RecorderTask(abc.ABC, Generic[T]):
    """A piece of work for the recorder's thread (a write: SQLite has one writer); its answer
    goes to the caller's Future."""

    @abc.abstractmethod
    def run(self, recorder: Recorder) -> T: ...


@dataclass(frozen=True)
class ApplyRollupTask(RecorderTask[int]):
    """Merge a fold the scheduler prepared on its own read-only connection; raw rows covered."""

    plan: RollupPlan

    def run(self, recorder: Recorder) -> int:
        return recorder.telemetry.apply_rollup(self.plan)


@dataclass(frozen=True)
class PurgeTask(RecorderTask[int]):
    """Delete telemetry past retention; raw rows deleted."""

    raw_before_ms: int
    minute_rollups_before_ms: int

    def run(self, recorder: Recorder) -> int:
        return recorder.telemetry.purge(self.raw_before_ms, self.minute_rollups_before_ms)


@dataclass(frozen=True)
class CallTask(RecorderTask[T]):
    """A one-off callable (tests holding the thread, a tool's one-time write); the service's
    own upkeep has a task type of its own."""

    fn: Callable[[], T]

    def run(self, recorder: Recorder) -> T:
        return self.fn()
