"""Who is told what: notices of alarm, plan and drill changes, queued as notifications in the
step's batch (the outbox's log) for the receivers that want them.

The notifiers themselves are built by the composition root (``notifiers_for``) and handed to
the engine; this module only chooses receivers and writes the notices.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from alerts.alarms import Alarm
from alerts.changes import Changes
from alerts.drills import Drill
from alerts.notify import Notification, Notifier
from alerts.notify.mqtt import MqttNotifier, Publish
from alerts.plans import ActivationChange, Plan

__all__ = ["Notices", "Receivers", "notifiers_for"]


@dataclass(frozen=True)
class Receivers:
    """The notifiers by name, and the names of each role's (control_room, supervisor,
    authority)."""

    notifiers: dict[str, Notifier] = field(default_factory=dict)
    by_role: dict[str, list[str]] = field(default_factory=dict)


def notifiers_for(
    publish: Publish | None,
    root: str,
    receivers: Mapping[str, Sequence[Notifier]] | None,
) -> Receivers:
    """``mqtt`` (alarm notices on ``{root}/{estate}/alerts``) when there is a ``publish``, and
    the receivers of each role."""
    notifiers: dict[str, Notifier] = {}
    if publish is not None:
        notifiers["mqtt"] = MqttNotifier(publish, root)
    by_role: dict[str, list[str]] = {}
    for role, items in (receivers or {}).items():
        for n in items:
            notifiers[n.name] = n
            by_role.setdefault(role, []).append(n.name)
    return Receivers(notifiers, by_role)


class Notices:
    """``notifiers``: by name (the outbox's); ``receivers``: role → notifier names;
    ``estate_name``: what people read for an estate id."""

    def __init__(
        self,
        notifiers: Mapping[str, Notifier],
        receivers: Mapping[str, Sequence[str]],
        estate_name: Callable[[str], str],
    ) -> None:
        self.notifiers = notifiers
        self.receivers = {role: list(names) for role, names in receivers.items()}
        self._estate_name = estate_name

    def receivers_for(self, role: str, estate: str, severity: str | None = None) -> list[str]:
        """The role's receivers that take this estate's notices (and this severity's alarms)."""
        out = []
        for name in self.receivers.get(role, ()):
            wants = getattr(self.notifiers.get(name), "wants", None)
            if wants is None or wants(estate, severity):
                out.append(name)
        return out

    def alarm(
        self,
        alarm: Alarm,
        event: str,
        roles: Iterable[str],
        changes: Changes,
        now: int,
        step: int | None = None,
        mqtt: bool = True,
    ) -> None:
        """An alarm's change: on MQTT (for sirens and walls) and to the roles' receivers."""
        if alarm.silenced_by is not None:
            return  # muted: recorded, shown, not told
        tag = event if step is None else f"{event}.{step}"
        snapshot = alarm.as_dict()
        out = changes.batch.notifications
        if mqtt and "mqtt" in self.notifiers:
            payload: dict[str, Any] = {"alarm": snapshot}
            out.append(
                Notification(f"{alarm.id}:{tag}:mqtt", "mqtt", alarm.estate, event, payload, now)
            )
        roles = tuple(roles)
        estate_name = self._estate_name(alarm.estate) if roles else alarm.estate
        for role in roles:
            for name in self.receivers_for(role, alarm.estate, alarm.severity.value):
                payload = {"alarm": snapshot, "role": role, "estate_name": estate_name}
                key = f"{alarm.id}:{tag}:{name}"
                out.append(Notification(key, name, alarm.estate, event, payload, now))

    def plan(self, change: ActivationChange, snapshot: dict[str, Any], changes: Changes) -> None:
        """A plan raised, lowered, stood down or a task overdue: to the control room (and the
        supervisor for an overdue task)."""
        if change.event is None:
            return
        act = change.activation
        now = change.entries[-1].ts if change.entries else act.updated_ms
        payload: dict[str, Any] = {
            "activation": snapshot,
            "estate_name": self._estate_name(act.estate),
        }
        tag = f"{change.event}.{len(act.levels_reached)}"
        roles: tuple[str, ...] = ("control_room",)
        if change.event == "task_overdue":
            roles = ("control_room", "supervisor")
            if change.tasks:
                payload["task"] = change.tasks[0].as_dict()
                tag = f"task_overdue.{change.tasks[0].task_id}"
        for role in roles:
            for name in self.receivers_for(role, act.estate):
                changes.batch.notifications.append(
                    Notification(
                        f"{act.id}:{tag}:{name}", name, act.estate, change.event,
                        {**payload, "role": role}, now,
                    )
                )  # fmt: skip

    def drill_due(self, drill: Drill, plan: Plan, changes: Changes, now: int) -> None:
        payload = {
            "drill": {**drill.as_dict(), "plan_name": plan.name_zh},
            "estate_name": self._estate_name(drill.estate),
        }
        for name in self.receivers_for("control_room", drill.estate):
            changes.batch.notifications.append(
                Notification(
                    f"{drill.id}:drill_due:{name}", name, drill.estate, "drill_due", payload, now
                )
            )
