"""Escalation: who is told about an alarm, and when, while nobody acts on it.

A chain is a list of steps. Each step notifies a role (the control room, a supervisor, the
housing authority) a delay after the alarm fired, or when the alarm's deadline passes (the
30-minute rescue deadline of a trapped-passenger alarm). A step is skipped once the alarm is
acknowledged (``until: acknowledged``, the default) or only once it is resolved
(``until: resolved``: the authority must hear of a breached rescue deadline even if the control
room acknowledged the alarm). Pure: takes an alarm's times and returns the steps due.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "DEFAULT_CHAIN",
    "Chain",
    "Rescue",
    "Step",
    "Until",
    "due_steps",
]


class Until(StrEnum):
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Step:
    notify: tuple[str, ...]  # roles (receiver names)
    after_ms: int = 0  # after the alarm fired
    at_deadline: bool = False  # instead of after_ms: when the alarm's deadline passes
    until: Until = Until.ACKNOWLEDGED


@dataclass(frozen=True, slots=True)
class Chain:
    id: str
    steps: tuple[Step, ...]


DEFAULT_CHAIN = Chain("default", (Step(notify=("control_room",)),))


def due_steps(
    chain: Chain,
    done_mask: int,
    fired_ms: int,
    deadline_ms: int | None,
    acknowledged: bool,
    now: int,
) -> list[int]:
    """Indexes of the steps that are due now and not done yet (bit i of ``done_mask``)."""
    out = []
    for i, step in enumerate(chain.steps):
        if done_mask & (1 << i):
            continue
        if acknowledged and step.until is Until.ACKNOWLEDGED:
            continue
        if step.at_deadline:
            if deadline_ms is None or now < deadline_ms:
                continue
        elif now < fired_ms + step.after_ms:
            continue
        out.append(i)
    return out


@dataclass(frozen=True, slots=True)
class Rescue:
    """One entrapment: trapped → technician arrived → released. The deadline is about the
    arrival (TSG T5002-2017: 30 min in a city with districts, 1 h elsewhere); the release is
    recorded beside it."""

    alarm_id: str
    estate: str
    device: str
    trapped_ms: int
    deadline_ms: int
    released_ms: int | None = None
    released_by: str | None = None
    arrived_ms: int | None = None
    arrived_by: str | None = None

    @property
    def duration_ms(self) -> int | None:
        # never negative: a release a person records can be stamped before a trap time
        # from a device clock running (within the allowed skew) ahead
        return None if self.released_ms is None else max(0, self.released_ms - self.trapped_ms)

    def breached(self, now: int) -> bool:
        """Late arrival: arrived after the deadline, or not arrived by now. A release with no
        arrival recorded counts as the arrival (someone was there to release them)."""
        end = self.arrived_ms or self.released_ms or now
        return end > self.deadline_ms
