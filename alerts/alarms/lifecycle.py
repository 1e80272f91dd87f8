"""The alarm lifecycle: pending → firing → acknowledged → resolved, one open alarm per
(rule, subject). Pure: signals and a time in, :class:`AlarmChange` records out; the engine
stores them and tells people.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from alerts.alarms.flapping import FlapDetector
from alerts.alarms.model import (
    SYSTEM,
    Alarm,
    AlarmChange,
    AlarmKey,
    AlarmState,
    InvalidTransition,
    TimelineEntry,
    new_id,
)
from alerts.rules.evaluate import Signal
from alerts.rules.spec import EventMatch

__all__ = ["AlarmBook"]


class AlarmBook:
    """The open alarms, by key and by id."""

    def __init__(self, flaps: FlapDetector | None = None) -> None:
        self.open: dict[AlarmKey, Alarm] = {}
        self.by_id: dict[str, Alarm] = {}
        self.flaps = flaps or FlapDetector()

    def load(self, alarms: Iterable[Alarm]) -> None:
        for a in alarms:
            if a.state.open:
                self.open[a.key] = a
                self.by_id[a.id] = a

    def get(self, key: AlarmKey) -> Alarm | None:
        return self.open.get(key)

    # --- from the rules ------------------------------------------------------------------------
    def apply(self, sig: Signal, now: int) -> list[AlarmChange]:
        key = (sig.rule.id, sig.estate, sig.subject)
        alarm = self.open.get(key)
        if sig.hit:
            if alarm is None:
                return [self._start(sig, now)]
            return self._again(alarm, sig)
        if alarm is None:
            return []
        return self._clear(alarm, sig, now)

    def _start(self, sig: Signal, now: int) -> AlarmChange:
        rule = sig.rule
        pending = rule.for_ms > 0
        alarm = Alarm(
            id=new_id("al"),
            rule=rule.id,
            estate=sig.estate,
            subject=sig.subject,
            kind=sig.kind,
            gateway=sig.gateway,
            severity=rule.severity,
            state=AlarmState.PENDING if pending else AlarmState.FIRING,
            summary_zh=rule.summary_zh,
            summary_en=rule.summary_en,
            started_ms=sig.ts,
            updated_ms=now,
            fired_ms=None if pending else sig.ts,
            tags=tuple(sorted(rule.tags)),
            detail=sig.detail,
            last_ms=sig.ts,
            for_ms=rule.for_ms,
            deadline_ms=sig.ts + rule.deadline_ms if rule.deadline_ms is not None else None,
        )
        self.open[alarm.key] = alarm
        self.by_id[alarm.id] = alarm
        self.flaps.started(alarm.key, sig.ts)
        return AlarmChange(
            alarm, TimelineEntry(alarm.id, sig.ts, alarm.state.value, SYSTEM, sig.detail)
        )

    def _again(self, alarm: Alarm, sig: Signal) -> list[AlarmChange]:
        alarm.last_ms = max(alarm.last_ms, sig.ts)
        if alarm.clear_since_ms is not None:
            # A held (flapping) alarm's condition is back: still held, nobody told again.
            alarm.clear_since_ms = None
            self.flaps.started(alarm.key, sig.ts)
            return []
        if isinstance(sig.rule.condition, EventMatch):
            alarm.count += 1
            alarm.updated_ms = sig.ts
            entry = TimelineEntry(alarm.id, sig.ts, "again", SYSTEM, sig.detail)
            return [AlarmChange(alarm, entry, notify=False)]
        return []

    def _clear(self, alarm: Alarm, sig: Signal, now: int) -> list[AlarmChange]:
        if alarm.state is AlarmState.PENDING:
            # Never fired: it leaves no alarm behind.
            return [self._close(alarm, "cancelled", sig.ts, SYSTEM, sig.detail, now)]
        if alarm.flapping:
            alarm.clear_since_ms = sig.ts
            return []
        if self.flaps.flapping(alarm.key, sig.ts):
            alarm.flapping = True
            alarm.clear_since_ms = sig.ts
            alarm.updated_ms = now
            fl = self.flaps
            detail = {
                **sig.detail,
                "starts": fl.starts,
                "within_ms": fl.window_ms,
                "hold_ms": fl.hold_ms,
            }
            return [AlarmChange(alarm, TimelineEntry(alarm.id, sig.ts, "flapping", SYSTEM, detail))]
        return [self._close(alarm, "resolved", sig.ts, SYSTEM, sig.detail, now)]

    def _close(
        self, alarm: Alarm, action: str, ts: int, by: str, detail: dict[str, Any], now: int
    ) -> AlarmChange:
        alarm.state = AlarmState.RESOLVED
        alarm.resolved_ms = ts
        alarm.resolved_by = by
        alarm.updated_ms = now
        alarm.clear_since_ms = None
        self.open.pop(alarm.key, None)
        self.by_id.pop(alarm.id, None)
        return AlarmChange(alarm, TimelineEntry(alarm.id, ts, action, by, detail))

    # --- time ----------------------------------------------------------------------------------
    def tick(self, now: int, auto_resolve: dict[str, int] | None = None) -> list[AlarmChange]:
        """Pending alarms whose 'for' has passed fire; held flapping alarms that stayed clear,
        and event alarms past their auto-resolve time, resolve."""
        out = []
        hold = self.flaps.hold_ms
        for alarm in list(self.open.values()):
            if alarm.state is AlarmState.PENDING:
                if now >= alarm.started_ms + alarm.for_ms:
                    alarm.state = AlarmState.FIRING
                    alarm.fired_ms = now
                    alarm.updated_ms = now
                    detail = {"pending_since_ms": alarm.started_ms, "for_ms": alarm.for_ms}
                    out.append(
                        AlarmChange(alarm, TimelineEntry(alarm.id, now, "firing", SYSTEM, detail))
                    )
            elif alarm.clear_since_ms is not None and now - alarm.clear_since_ms >= hold:
                detail = {"stable_ms": now - alarm.clear_since_ms}
                out.append(self._close(alarm, "resolved", now, SYSTEM, detail, now))
            elif auto_resolve and now - alarm.last_ms >= auto_resolve.get(alarm.rule, now + 1):
                detail = {"quiet_ms": now - alarm.last_ms}
                out.append(self._close(alarm, "resolved", now, SYSTEM, detail, now))
        self.flaps.prune(now)
        return out

    # --- by people -----------------------------------------------------------------------------
    def acknowledge(self, alarm: Alarm, by: str, now: int, note: str | None) -> AlarmChange:
        if alarm.state is not AlarmState.FIRING:
            raise InvalidTransition(
                f"alarm {alarm.id} is {alarm.state.value}; only a firing alarm can be acknowledged"
            )
        alarm.state = AlarmState.ACKNOWLEDGED
        alarm.acked_ms = now
        alarm.acked_by = by
        alarm.updated_ms = now
        detail = {"note": note} if note else {}
        return AlarmChange(alarm, TimelineEntry(alarm.id, now, "acknowledged", by, detail))

    def resolve(self, alarm: Alarm, by: str, now: int, note: str | None) -> AlarmChange:
        if not alarm.state.open:
            raise InvalidTransition(f"alarm {alarm.id} is already resolved")
        return self._close(alarm, "resolved", now, by, {"note": note} if note else {}, now)

    def assign(self, alarm: Alarm, assignee: str, by: str, now: int) -> AlarmChange:
        if not alarm.state.open:
            raise InvalidTransition(f"alarm {alarm.id} is resolved; it cannot be assigned")
        alarm.assignee = assignee
        alarm.updated_ms = now
        entry = TimelineEntry(alarm.id, now, "assigned", by, {"assignee": assignee})
        return AlarmChange(alarm, entry, notify=False)

    def note(self, alarm: Alarm, text: str, by: str, now: int) -> AlarmChange:
        entry = TimelineEntry(alarm.id, now, "note", by, {"text": text})
        return AlarmChange(alarm, entry, notify=False)
