"""An alarm: one rule firing for one subject (a device or a gateway), with its timeline."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from alerts.rules.spec import Severity

__all__ = [
    "LATCHING",
    "LIVE_STATES",
    "SYSTEM",
    "Alarm",
    "AlarmChange",
    "AlarmKey",
    "AlarmState",
    "InvalidTransition",
    "TimelineEntry",
    "alarm_durations",
    "new_id",
]

# Who made a change the rules made.
SYSTEM = "rules"

AlarmKey = tuple[str, str, str]  # (rule, estate, subject)


class AlarmState(StrEnum):
    PENDING = "pending"  # the condition holds, not yet for long enough ('for')
    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"  # a person has taken it on
    # Returned to normal before anyone acknowledged it (ISA-18.2 "RTN unacknowledged"): the
    # equipment or the rules ended it, but it stays in the live list until a person
    # acknowledges it, which closes it. A fire panel reset at 3 am must not hide the alarm.
    CLEARED = "cleared"
    RESOLVED = "resolved"

    @property
    def open(self) -> bool:
        """Its condition's alarm: at most one per (rule, subject), watched by the rules."""
        return self not in (AlarmState.CLEARED, AlarmState.RESOLVED)

    @property
    def live(self) -> bool:
        """In the control room's alarm list: open, or cleared and waiting for a person."""
        return self is not AlarmState.RESOLVED


LIVE_STATES = tuple(s for s in AlarmState if s.live)

# Severities whose alarms latch (stay listed after clearing until acknowledged). ISA-18.2
# lets low-priority alarms be non-latching; minor and warning ones close with their
# condition, so a season of small threshold wobbles does not bury the list.
LATCHING = frozenset({Severity.CRITICAL, Severity.MAJOR})


class InvalidTransition(ValueError):
    """A change an alarm in its state cannot make (acknowledging a resolved alarm)."""


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    alarm_id: str
    ts: int
    action: str  # pending, firing, again, acknowledged, assigned, note, escalated, ...
    by: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"ts": self.ts, "action": self.action, "by": self.by, "detail": self.detail}


@dataclass(slots=True)
class Alarm:
    id: str
    rule: str
    estate: str
    subject: str
    kind: str  # device kind, or "gateway"
    gateway: str | None
    severity: Severity
    state: AlarmState
    summary_zh: str
    summary_en: str
    started_ms: int  # when the condition started holding
    updated_ms: int
    fired_ms: int | None = None
    acked_ms: int | None = None
    acked_by: str | None = None
    resolved_ms: int | None = None
    resolved_by: str | None = None
    assignee: str | None = None
    tags: tuple[str, ...] = ()
    detail: dict[str, Any] = field(default_factory=dict)  # the reading or event that started it
    last_ms: int = 0  # the latest reading or event that met the condition
    count: int = 1  # times the condition started (events: how many came)
    for_ms: int = 0
    flapping: bool = False
    clear_since_ms: int | None = None  # a held (flapping) alarm's condition cleared at
    silenced_by: str | None = None
    escalated: int = 0  # bit i: step i of the escalation chain was carried out
    deadline_ms: int | None = None
    deadline_breached: bool = False
    # Wall-clock times, the service's own: when the alarm reached the control room (fired
    # here) and when it was closed. started/fired/resolved are the data's times.
    raised_ms: int | None = None
    closed_ms: int | None = None
    # Raised from data that arrived long after it was taken (a backlog, a replay): recorded,
    # not paged, escalated or published as new.
    late: bool = False

    @property
    def key(self) -> AlarmKey:
        return (self.rule, self.estate, self.subject)

    @property
    def device(self) -> str | None:
        return None if self.kind == "gateway" else self.subject

    def caused_at(self, ts: int) -> bool:
        """Whether a condition that began holding at ``ts`` (data time) is this alarm's own
        fault: it started then, or the rules closed it after (data time: a person's close is
        wall time, and after it a reading that still holds is a new alarm)."""
        if ts == self.started_ms:
            return True
        return (
            not self.state.open
            and self.resolved_by == SYSTEM
            and self.resolved_ms is not None
            and self.started_ms <= ts <= self.resolved_ms
        )

    def labels(self) -> dict[str, str]:
        """What silences match on."""
        out = {
            "rule": self.rule,
            "estate": self.estate,
            "subject": self.subject,
            "kind": self.kind,
            "severity": self.severity.value,
            "gateway": self.gateway or "",
        }
        if self.kind != "gateway":
            out["device"] = self.subject
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule": self.rule,
            "estate": self.estate,
            "subject": self.subject,
            "device": self.device,
            "kind": self.kind,
            "gateway": self.gateway,
            "severity": self.severity.value,
            "state": self.state.value,
            "summary": {"zh": self.summary_zh, "en": self.summary_en},
            "started_ms": self.started_ms,
            "fired_ms": self.fired_ms,
            "acked_ms": self.acked_ms,
            "acked_by": self.acked_by,
            "resolved_ms": self.resolved_ms,
            "resolved_by": self.resolved_by,
            "assignee": self.assignee,
            "tags": list(self.tags),
            "detail": self.detail,
            "last_ms": self.last_ms,
            "count": self.count,
            "flapping": self.flapping,
            "silenced_by": self.silenced_by,
            "deadline_ms": self.deadline_ms,
            "deadline_breached": self.deadline_breached,
            "updated_ms": self.updated_ms,
            "raised_ms": self.raised_ms,
            "closed_ms": self.closed_ms,
            "late": self.late,
            **alarm_durations(self.raised_ms, self.acked_ms, self.closed_ms),
        }


def alarm_durations(
    raised_ms: int | None, acked_ms: int | None, closed_ms: int | None
) -> dict[str, int | None]:
    """The one definition of an alarm's durations, used by the API, the dashboard (which only
    formats them) and the yearly report: from when the alarm reached the control room to a
    person's acknowledgement, and to its close, in wall-clock time. Never negative (rows from
    before the wall-clock fields carry data times, which could run ahead)."""

    def since_raised(t: int | None) -> int | None:
        if raised_ms is None or t is None:
            return None
        return max(0, t - raised_ms)

    return {"to_ack_ms": since_raised(acked_ms), "to_resolve_ms": since_raised(closed_ms)}


@dataclass(frozen=True, slots=True)
class AlarmChange:
    alarm: Alarm
    entry: TimelineEntry
    notify: bool = True  # False: recorded, but nobody is told (e.g. repeats while held)

    @property
    def action(self) -> str:
        return self.entry.action
