"""What a rule is: a condition on readings or events of some device kinds, and what follows.

Rules are data (YAML files, see ``loader``); these are their compiled forms. A condition holds
or not for one subject (a device, or a gateway); a rule turns the moment it starts holding into
an alarm of its severity, after ``for`` if it must hold that long, and resolves the alarm when
the condition clears (for thresholds, with hysteresis: the clear test is separate).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from alerts.windows import Aggregate
from protocol.messages import Value

__all__ = [
    "Composite",
    "Condition",
    "EventCount",
    "EventMatch",
    "GatewayOffline",
    "NoData",
    "Quiet",
    "Rule",
    "Severity",
    "ValueTest",
]


class Severity(StrEnum):
    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"
    WARNING = "warning"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {
    Severity.CRITICAL: 4,
    Severity.MAJOR: 3,
    Severity.MINOR: 2,
    Severity.WARNING: 1,
}


@dataclass(frozen=True, slots=True)
class Quiet:
    """Values for which a test surely does not hit: strictly inside (lo, hi), not one of
    ``values``, or with none of ``mask``'s bits set. Lets a reading skip a kind's rules in
    one comparison when nothing is held for its device (see ``index.ValueGroup``)."""

    lo: float = -math.inf
    hi: float = math.inf
    values: frozenset[object] | None = None
    mask: int = 0

    @property
    def shape(self) -> str:
        return "values" if self.values is not None else ("mask" if self.mask else "range")


@dataclass(frozen=True, slots=True)
class ValueTest:
    """A test of one metric: its value in the reading, or an aggregate over a window.

    ``hit`` says the condition starts holding; once it holds, only ``clear`` ends it, which
    is how hysteresis is expressed (below 0.07 MPa starts, at or above 0.08 MPa clears).
    """

    metric: str
    hit: Callable[[Value], bool]
    clear: Callable[[Value], bool]
    text: str  # for people: "pressure_mpa < 0.07"
    agg: Aggregate | None = None
    quiet: Quiet | None = None


@dataclass(frozen=True, slots=True)
class Composite:
    """All (or any) of several value tests on the same device's latest values."""

    parts: tuple[ValueTest, ...]
    all: bool

    @property
    def text(self) -> str:
        joiner = " and " if self.all else " or "
        return joiner.join(p.text for p in self.parts)


@dataclass(frozen=True, slots=True)
class NoData:
    """The device sent nothing for ``after_ms`` (None: a multiple of its kind's interval)."""

    after_ms: int | None


@dataclass(frozen=True, slots=True)
class GatewayOffline:
    """The gateway announced itself offline (its Last Will, or a clean shutdown)."""


@dataclass(frozen=True, slots=True)
class EventMatch:
    """An event of one of ``types``, optionally with ``data`` fields equal to given values; a
    tuple of values is "one of them", where None stands for the field being absent (a lift
    trapped *not* at a landing: ``door_zone: [false, null]``)."""

    types: frozenset[str]
    data: tuple[tuple[str, Any], ...] = ()

    def matches(self, data: dict[str, Any]) -> bool:
        return all(
            any(_same(data.get(k), one) for one in v)
            if isinstance(v, tuple)
            else _same(data.get(k), v)
            for k, v in self.data
        )


def _same(got: Any, want: Any) -> bool:
    """Equal, and a flag only to a flag: ``true`` is not the number 1 (nor ``false`` 0)."""
    return isinstance(got, bool) is isinstance(want, bool) and bool(got == want)


@dataclass(frozen=True, slots=True)
class EventCount:
    """More events of ``type`` from one device within a window than a limit."""

    type: str
    window_ms: int
    test: ValueTest  # on the count


Condition = ValueTest | Composite | NoData | GatewayOffline | EventMatch | EventCount


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    condition: Condition
    severity: Severity
    summary_zh: str
    summary_en: str
    kinds: frozenset[str] | None = None  # None: every kind (no-data rules)
    for_ms: int = 0
    tags: frozenset[str] = frozenset()
    escalation: str | None = None  # chain id; None: the default chain
    clear_events: frozenset[str] = frozenset()  # event types that resolve an event alarm
    auto_resolve_ms: int | None = None  # event alarms: resolve after this long without events
    deadline_ms: int | None = None  # e.g. the rescue deadline of a trapped-passenger alarm
    rescue: bool = False  # record trapped → released times
    source: str = ""  # "file:line", for people reading an alarm
    estate: str | None = None  # None: a default rule; else an estate's own or override
    enabled: bool = True
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    # A remote command to send to the subject when the alarm fires (``socket.power_off``),
    # if automatic actions are on for the estate (``auto_cutoff``); see alerts/remote.py.
    action: str | None = None

    @property
    def on_gateway(self) -> bool:
        return isinstance(self.condition, GatewayOffline)

    @property
    def condition_text(self) -> str:
        c = self.condition
        if isinstance(c, ValueTest | Composite):
            return c.text
        if isinstance(c, NoData):
            return "no data"
        if isinstance(c, GatewayOffline):
            return "gateway offline"
        if isinstance(c, EventMatch):
            return " or ".join(sorted(c.types))
        return f"count of {c.type} {c.test.text}"
