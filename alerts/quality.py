"""Alarm-management figures of ISA-18.2 / EEMUA 191 over a list of alarms. Pure.

The same function serves the scorer (``scoring/``), the "alarm quality" page of the dashboard
and the yearly report, so the three can never disagree on what a flood or a chattering alarm is:

- alarms per control-room hour: new alarms ÷ hours of the period (EEMUA 191: ≤ 6 acceptable,
  ≤ 1 a steady state a room can live with; our target is ≤ 1 per 10 min per estate);
- flood: a 10-minute window (aligned on the period's start) with more than 10 new alarms;
- chattering: the same alarm (rule, subject) raised 3 or more times within 60 s;
- stale (standing): an alarm active for more than 24 h (open at the period's end counts up to
  the end);
- bad actors: the ten most frequent alarms and their share of all alarms;
- time to acknowledge: median and 90th percentile of raised → acknowledged; and how many alarms
  were closed with nobody's acknowledgement (the equipment's reset, a timer).

An alarm is counted when it was *raised* (fired: a pending alarm that never fired is no alarm),
inside ``[start_ms, end_ms)``. Emergencies (declared plan activations) are intervals whose
alarms the "outside emergencies" rate leaves out, as EEMUA 191 judges floods apart.

Two clocks, named (issue 11). The **load** figures (alarms per control-room hour, per 10 min
outside emergencies, floods and the 10-minute peak) are about the operator: an alarm counts in
the window it *reached the control room* (``reached_ms``, wall time; a late alarm from a
gateway's backlog counts when the backlog arrived, where it added to the operator's work, not
hours earlier when its condition began). The **condition** figures stay on data time (when it
was measured): chattering (the same alarm's condition 3+ times in 60 s), stale (how long the
condition stood), bad actors and the month an alarm belongs to (``alarms``). Time to
acknowledge runs from reaching the room to the person (wall time).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from alerts.alarms.model import SYSTEM, alarm_durations

__all__ = [
    "CHATTER_COUNT",
    "CHATTER_WINDOW_MS",
    "CLOCKS",
    "FLOOD_ABOVE",
    "FLOOD_WINDOW_MS",
    "STALE_MS",
    "AlarmQuality",
    "RaisedAlarm",
    "alarm_quality",
    "percentile",
    "raised_alarms",
]

FLOOD_WINDOW_MS = 10 * 60_000
FLOOD_ABOVE = 10  # more than 10 new alarms in 10 minutes
CHATTER_WINDOW_MS = 60_000
CHATTER_COUNT = 3
STALE_MS = 24 * 3_600_000
TOP = 10
HOUR_MS = 3_600_000
# Which clock each figure counts on (see the module's docstring); the page and the report say so.
CLOCKS = {
    "alarms": "data",
    "per_hour": "wall",
    "per_10min_outside_emergencies": "wall",
    "floods": "wall",
    "peak_10min": "wall",
    "chattering": "data",
    "stale": "data",
    "top": "data",
    "ack": "wall",
}


@dataclass(frozen=True, slots=True)
class RaisedAlarm:
    """What the figures need of one alarm."""

    rule: str
    subject: str
    raised_ms: int
    cleared_ms: int | None = None  # None: still open
    acked_ms: int | None = None
    estate: str = ""
    id: str = ""
    # When it reached the control room (wall clock); acknowledgement is timed from here, as
    # everywhere (alarm_durations). None: rows from before that field, the data time stands in.
    reached_ms: int | None = None

    resolved_by: str | None = (
        None  # who closed it: SYSTEM (the rules: equipment, timers) or a person
    )
    closed_ms: int | None = None  # when it was closed here (wall clock)

    @property
    def cleared_unacked(self) -> bool:
        """Closed by the rules (the equipment's reset or restore, a timer) before any person
        acknowledged it: never acknowledged, or only afterwards (a latched, cleared alarm's
        acknowledgement, ISA-18.2 "RTN unacknowledged")."""
        if self.cleared_ms is None or self.resolved_by not in (None, SYSTEM):
            return False
        if self.acked_ms is None:
            return True
        return self.closed_ms is not None and self.acked_ms >= self.closed_ms

    @property
    def reached(self) -> int:
        """When it reached the control room (wall time); the data time for old rows."""
        return self.raised_ms if self.reached_ms is None else self.reached_ms


def raised_alarms(items: Iterable[Mapping[str, Any]]) -> list[RaisedAlarm]:
    """Alarms as the API and the store give them (``Alarm.as_dict``); pending ones are left
    out (they never reached anyone)."""
    out = []
    for a in items:
        fired = a.get("fired_ms")
        if fired is None:
            continue
        out.append(
            RaisedAlarm(
                rule=str(a["rule"]),
                subject=str(a.get("subject", "")),
                raised_ms=int(fired),
                cleared_ms=a.get("resolved_ms"),
                acked_ms=a.get("acked_ms"),
                estate=str(a.get("estate", "")),
                id=str(a.get("id", "")),
                reached_ms=a.get("raised_ms"),
                resolved_by=a.get("resolved_by"),
                closed_ms=a.get("closed_ms"),
            )
        )
    return out


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of the values; None when there are none. Nearest
    rank, not interpolated, so a figure is always one of the measured values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


@dataclass(frozen=True)
class AlarmQuality:
    start_ms: int
    end_ms: int
    alarms: int  # raised in the period (data time)
    hours: float
    per_hour: float  # alarms that reached the control room in the period, per hour (wall time)
    windows: int  # 10-minute windows in the period
    flood_windows: int
    flood_share: float
    peak_10min: int  # most new alarms in one 10-minute window
    floods: list[dict[str, Any]] = field(default_factory=list)  # each flood window: start, count
    # outside declared emergencies
    alarms_outside_emergencies: int = 0
    per_10min_outside_emergencies: float = 0.0
    chattering: list[dict[str, Any]] = field(default_factory=list)
    stale: list[dict[str, Any]] = field(default_factory=list)
    top: list[dict[str, Any]] = field(default_factory=list)
    acked: int = 0
    ack_p50_s: float | None = None
    ack_p90_s: float | None = None
    # closed by the rules (the equipment's reset or restore, a timer) before any person's
    # acknowledgement: a fire alarm the panel's reset ended before anyone here took it on
    # (latched ones are acknowledged afterwards, and still count: RaisedAlarm.cleared_unacked)
    closed_unacked: int = 0
    reached: int = 0  # alarms that reached the control room in the period (wall time)
    late: int = 0  # of those, how many reached it 10 min or more after their condition began

    def as_dict(self) -> dict[str, Any]:
        return {
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "alarms": self.alarms,
            "reached": self.reached,
            "late": self.late,
            "closed_unacked": self.closed_unacked,
            "clocks": CLOCKS,
            "hours": round(self.hours, 3),
            "per_hour": round(self.per_hour, 4),
            "windows": self.windows,
            "flood_windows": self.flood_windows,
            "flood_share": round(self.flood_share, 6),
            "peak_10min": self.peak_10min,
            "floods": self.floods,
            "alarms_outside_emergencies": self.alarms_outside_emergencies,
            "per_10min_outside_emergencies": round(self.per_10min_outside_emergencies, 4),
            "chattering": self.chattering,
            "stale": self.stale,
            "top": self.top,
            "acked": self.acked,
            "ack_p50_s": self.ack_p50_s,
            "ack_p90_s": self.ack_p90_s,
        }


def _overlap(a0: int, a1: int, spans: Sequence[tuple[int, int]]) -> int:
    """Milliseconds of [a0, a1) covered by the (merged) spans."""
    return sum(max(0, min(a1, s1) - max(a0, s0)) for s0, s1 in spans)


def _merge(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s0, s1 in sorted(spans):
        if out and s0 <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], s1))
        elif s1 > s0:
            out.append((s0, s1))
    return out


def alarm_quality(
    alarms: Iterable[RaisedAlarm],
    start_ms: int,
    end_ms: int,
    emergencies: Iterable[tuple[int, int]] = (),
) -> AlarmQuality:
    """The figures of the alarms raised in ``[start_ms, end_ms)``; ``emergencies`` are
    ``(start, end)`` intervals of declared emergencies (plan activations)."""
    if end_ms <= start_ms:
        raise ValueError(f"empty period: start {start_ms} is not before end {end_ms}")
    alarms = list(alarms)  # read twice: by data time and by when they reached the room
    inside = sorted(
        (a for a in alarms if start_ms <= a.raised_ms < end_ms), key=lambda a: a.raised_ms
    )
    n = len(inside)
    hours = (end_ms - start_ms) / HOUR_MS
    windows = math.ceil((end_ms - start_ms) / FLOOD_WINDOW_MS)
    # the operator's load: by when each alarm reached the control room (wall time)
    came = sorted((a for a in alarms if start_ms <= a.reached < end_ms), key=lambda a: a.reached)
    per_window = Counter((a.reached - start_ms) // FLOOD_WINDOW_MS for a in came)
    late = sum(a.reached - a.raised_ms >= FLOOD_WINDOW_MS for a in came)
    floods = [
        {"start_ms": start_ms + int(w) * FLOOD_WINDOW_MS, "alarms": c}
        for w, c in sorted(per_window.items())
        if c > FLOOD_ABOVE
    ]

    spans = _merge((max(s, start_ms), min(e, end_ms)) for s, e in emergencies)
    outside = [a for a in came if not any(s <= a.reached < e for s, e in spans)]
    quiet_ms = (end_ms - start_ms) - _overlap(start_ms, end_ms, spans)
    per_10min = len(outside) / (quiet_ms / FLOOD_WINDOW_MS) if quiet_ms > 0 else 0.0

    by_key: dict[tuple[str, str], list[RaisedAlarm]] = defaultdict(list)
    for a in inside:
        by_key[(a.rule, a.subject)].append(a)
    chattering = []
    for (rule, subject), group in sorted(by_key.items()):
        times = [a.raised_ms for a in group]
        most = 0
        lo = 0
        for hi, t in enumerate(times):  # most raises within any 60 s (sliding, inclusive)
            while t - times[lo] > CHATTER_WINDOW_MS:
                lo += 1
            most = max(most, hi - lo + 1)
        if most >= CHATTER_COUNT:
            chattering.append(
                {"rule": rule, "subject": subject, "in_60s": most, "alarms": len(group)}
            )

    stale = []
    for a in inside:
        active = (a.cleared_ms if a.cleared_ms is not None else end_ms) - a.raised_ms
        if active > STALE_MS:
            stale.append(
                {
                    "id": a.id,
                    "rule": a.rule,
                    "subject": a.subject,
                    "raised_ms": a.raised_ms,
                    "active_h": round(active / HOUR_MS, 2),
                    "open": a.cleared_ms is None,
                }
            )

    counts = Counter({k: len(v) for k, v in by_key.items()})
    top = [
        {"rule": rule, "subject": subject, "alarms": c, "share": round(c / n, 6)}
        for (rule, subject), c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP]
    ]
    to_ack = (alarm_durations(a.reached_ms or a.raised_ms, a.acked_ms, None) for a in inside)
    ack_s = [d["to_ack_ms"] / 1000 for d in to_ack if d["to_ack_ms"] is not None]
    return AlarmQuality(
        start_ms=start_ms,
        end_ms=end_ms,
        alarms=n,
        hours=hours,
        per_hour=len(came) / hours,
        windows=windows,
        flood_windows=len(floods),
        flood_share=len(floods) / windows,
        peak_10min=max(per_window.values(), default=0),
        floods=floods,
        alarms_outside_emergencies=len(outside),
        per_10min_outside_emergencies=per_10min,
        chattering=chattering,
        stale=stale,
        top=top,
        acked=len(ack_s),
        ack_p50_s=percentile(ack_s, 50),
        ack_p90_s=percentile(ack_s, 90),
        reached=len(came),
        late=late,
        closed_unacked=sum(a.cleared_unacked for a in inside),
    )
