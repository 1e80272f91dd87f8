"""A batch of the alerts' changes, written in one transaction (``AlertStore.write``): the
alarms and their timelines, plans, rescues, notifications, silences, warnings and drills one
step of the engine changed, and which estates' owners they concern (what a fence checks)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from alerts.alarms.model import Alarm, TimelineEntry
from alerts.drills import Drill
from alerts.escalation import Rescue
from alerts.notify import Notification
from alerts.plans.activation import ActivationEntry, ActivationTask, PlanActivation
from alerts.silences import Silence
from alerts.weather.warnings import OfficialWarning

__all__ = ["StoreBatch"]


@dataclass
class StoreBatch:
    """Changes to write in one transaction."""

    alarms: dict[str, Alarm] = field(default_factory=dict)
    alarm_entries: list[TimelineEntry] = field(default_factory=list)
    forget_alarms: set[str] = field(default_factory=set)  # pending alarms that never fired
    activations: dict[str, PlanActivation] = field(default_factory=dict)
    activation_entries: list[ActivationEntry] = field(default_factory=list)
    tasks: dict[tuple[str, str], ActivationTask] = field(default_factory=dict)
    rescues: dict[str, tuple[Rescue, bool]] = field(default_factory=dict)
    notifications: list[Notification] = field(default_factory=list)
    # What people and the schedule change besides alarms and plans, in the same transaction.
    silences: dict[str, Silence] = field(default_factory=dict)
    warnings: dict[str, OfficialWarning] = field(default_factory=dict)
    drills: dict[str, Drill] = field(default_factory=dict)
    drill_clocks: dict[tuple[str, str], int] = field(default_factory=dict)  # -> last_ms

    def merge(self, later: StoreBatch) -> None:
        """Fold a later batch into this one (the later state of an object wins)."""
        self.alarms.update(later.alarms)
        self.alarm_entries.extend(later.alarm_entries)
        self.forget_alarms |= later.forget_alarms
        self.activations.update(later.activations)
        self.activation_entries.extend(later.activation_entries)
        self.tasks.update(later.tasks)
        self.rescues.update(later.rescues)
        self.notifications.extend(later.notifications)
        self.silences.update(later.silences)
        self.warnings.update(later.warnings)
        self.drills.update(later.drills)
        self.drill_clocks.update(later.drill_clocks)

    def estates(self) -> set[str]:
        """The estates whose state this batch writes (what a fence checks). Silences and
        warnings belong to no one estate's owner (people post them from any node)."""
        out = {a.estate for a in self.alarms.values()}
        out.update(a.estate for a in self.activations.values())
        out.update(r.estate for r, _ in self.rescues.values())
        out.update(n.estate for n in self.notifications)
        out.update(d.estate for d in self.drills.values())
        out.update(e for e, _ in self.drill_clocks)
        return out

    def without(self, estates: Collection[str]) -> StoreBatch:
        """This batch less everything of ``estates`` (their owner is another process now)."""
        gone = set(estates)
        alarm_ids = {i for i, a in self.alarms.items() if a.estate in gone}
        act_ids = {i for i, a in self.activations.items() if a.estate in gone}
        return StoreBatch(
            alarms={i: a for i, a in self.alarms.items() if i not in alarm_ids},
            alarm_entries=[e for e in self.alarm_entries if e.alarm_id not in alarm_ids],
            forget_alarms=self.forget_alarms - alarm_ids,
            activations={i: a for i, a in self.activations.items() if i not in act_ids},
            activation_entries=[
                e for e in self.activation_entries if e.activation_id not in act_ids
            ],
            tasks={k: t for k, t in self.tasks.items() if k[0] not in act_ids},
            rescues={k: v for k, v in self.rescues.items() if v[0].estate not in gone},
            notifications=[n for n in self.notifications if n.estate not in gone],
            silences=dict(self.silences),
            warnings=dict(self.warnings),
            drills={k: d for k, d in self.drills.items() if d.estate not in gone},
            drill_clocks={k: v for k, v in self.drill_clocks.items() if k[0] not in gone},
        )

    @property
    def size(self) -> int:
        return (
            len(self.alarms)
            + len(self.alarm_entries)
            + len(self.activations)
            + len(self.activation_entries)
            + len(self.notifications)
            + len(self.silences)
            + len(self.warnings)
            + len(self.drills)
        )

    def __bool__(self) -> bool:
        return bool(
            self.alarms
            or self.alarm_entries
            or self.forget_alarms
            or self.activations
            or self.activation_entries
            or self.tasks
            or self.rescues
            or self.notifications
            or self.silences
            or self.warnings
            or self.drills
            or self.drill_clocks
        )
