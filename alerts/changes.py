"""What one step of the engine changed: a commit from ingest, a tick, or a person's action.

A step gathers its changes here under the engine's lock; they are written in one transaction
(``batch``) and only then told: ``news`` to the listeners (the live stream), the retained
plans of ``plan_estates`` to MQTT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from alerts.alarms import Alarm, TimelineEntry
from alerts.plans import ActivationChange, Plan
from alerts.store import StoreBatch

__all__ = ["Changes", "alarm_news"]


@dataclass
class Changes:
    batch: StoreBatch = field(default_factory=StoreBatch)
    news: list[dict[str, Any]] = field(default_factory=list)  # for listeners, in order
    plan_estates: set[str] = field(default_factory=set)  # whose retained plans to publish

    def alarm(self, alarm: Alarm, entry: TimelineEntry | None = None) -> None:
        """The alarm's new state (and a line of its timeline) is to be stored."""
        self.batch.alarms[alarm.id] = alarm
        if entry is not None:
            self.batch.alarm_entries.append(entry)

    def tell_alarm(self, alarm: Alarm, action: str, entry: dict[str, Any]) -> None:
        self.news.append(
            {
                "type": "alarm",
                "estate": alarm.estate,
                "action": action,
                "alarm": alarm.as_dict(),
                "entry": entry,
            }
        )

    def plan(self, change: ActivationChange, plan: Plan | None) -> dict[str, Any]:
        """Store a plan activation's change and tell each of its entries; returns its
        snapshot (what notices carry)."""
        act = change.activation
        self.batch.activations[act.id] = act
        self.batch.activation_entries.extend(change.entries)
        for t in change.tasks:
            self.batch.tasks[(act.id, t.task_id)] = t
        self.plan_estates.add(act.estate)
        snapshot = act.as_dict(plan)
        for entry in change.entries:
            self.news.append(
                {
                    "type": "plan",
                    "estate": act.estate,
                    "action": entry.action,
                    "activation": snapshot,
                    "entry": entry.as_dict(),
                }
            )
        return snapshot


def alarm_news(alarm: Alarm, action: str, entry: TimelineEntry) -> dict[str, Any]:
    """What the live feed and other screens are told of an alarm change."""
    return {
        "type": "alarm",
        "estate": alarm.estate,
        "action": action,
        "alarm": alarm.as_dict(),
        "entry": entry.as_dict(),
    }
