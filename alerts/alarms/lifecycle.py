"""The alarm lifecycle: pending → firing → acknowledged → resolved, one open alarm per
(rule, subject); a latching alarm the rules clear before anyone acknowledged it goes to
cleared (returned to normal, unacknowledged) and is closed by the acknowledgement. Pure:
signals and a time in, :class:`AlarmChange` records out; the engine stores them and tells
people.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from alerts.alarms.flapping import FlapDetector
from alerts.alarms.model import (
    LATCHING,
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

    def __init__(self, flaps: FlapDetector | None = None, late_after_ms: int = 10 * 60_000) -> None:
        self.open: dict[AlarmKey, Alarm] = {}
        self.by_id: dict[str, Alarm] = {}
        # cleared, waiting for a person's acknowledgement (not the rules' any more), by id
        self.cleared: dict[str, Alarm] = {}
        self.flaps = flaps or FlapDetector()
        # An alarm fired from data older than this on arrival is late (history).
        self.late_after_ms = late_after_ms

    def load(self, alarms: Iterable[Alarm]) -> None:
        for a in alarms:
            if a.state.open:
                self.open[a.key] = a
                self.by_id[a.id] = a
            elif a.state is AlarmState.CLEARED:
                self.cleared[a.id] = a

    def get(self, key: AlarmKey) -> Alarm | None:
        return self.open.get(key)

    def live(self, alarm_id: str) -> Alarm | None:
        """An open alarm, or a cleared one waiting for its acknowledgement."""
        return self.by_id.get(alarm_id) or self.cleared.get(alarm_id)

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
        if not pending:
            self._raised(alarm, sig.ts, now)
        self.open[alarm.key] = alarm
        self.by_id[alarm.id] = alarm
        self.flaps.started(alarm.key, sig.ts)
        return AlarmChange(
            alarm, TimelineEntry(alarm.id, sig.ts, alarm.state.value, SYSTEM, sig.detail)
        )

    def _raised(self, alarm: Alarm, fired_ms: int, now: int) -> None:
        """The alarm fires: at ``fired_ms`` in the data's time, reaching the control room
        ``now``. A live alarm's deadline runs from now; a late one's (history) from when it
        fired in the data, so its rescue time is measured as it happened."""
        alarm.fired_ms = fired_ms
        alarm.raised_ms = now
        alarm.late = now - fired_ms > self.late_after_ms
        if alarm.deadline_ms is not None:
            length = alarm.deadline_ms - alarm.started_ms
            alarm.deadline_ms = (fired_ms if alarm.late else now) + length

    def promote(self, alarm: Alarm, now: int) -> AlarmChange:
        """A late alarm whose condition still holds in current data: it is an emergency
        now, raised to the control room as if it had just fired."""
        base = alarm.fired_ms if alarm.fired_ms is not None else alarm.started_ms
        length = None if alarm.deadline_ms is None else alarm.deadline_ms - base
        alarm.late = False
        alarm.raised_ms = now
        alarm.updated_ms = now
        if length is not None:
            alarm.deadline_ms = now + length
        detail = {"late_since_ms": alarm.fired_ms, "caught_up": True}
        return AlarmChange(alarm, TimelineEntry(alarm.id, now, "firing", SYSTEM, detail))

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
            if sig.ts - alarm.started_ms >= alarm.for_ms:
                # It held for its 'for' in the data's time (a backlog committed at once,
                # before any tick): it fired then, and clears now.
                alarm.state = AlarmState.FIRING
                self._raised(alarm, alarm.started_ms + alarm.for_ms, now)
                detail = {"pending_since_ms": alarm.started_ms, "for_ms": alarm.for_ms}
                entry = TimelineEntry(
                    alarm.id, alarm.started_ms + alarm.for_ms, "firing", SYSTEM, detail
                )
                fired = AlarmChange(alarm, entry)
                return [fired, self._close(alarm, "resolved", sig.ts, SYSTEM, sig.detail, now)]
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
        latched = self._latches(alarm, action, by)
        alarm.state = AlarmState.CLEARED if latched else AlarmState.RESOLVED
        if latched:
            self.cleared[alarm.id] = alarm
        # Data out of order (lanes, backlogs) can clear an alarm with a time before it fired:
        # it ended no earlier than it began.
        alarm.resolved_ms = max(ts, alarm.started_ms, alarm.fired_ms or ts)
        alarm.resolved_by = by
        alarm.updated_ms = now
        alarm.closed_ms = now
        alarm.clear_since_ms = None
        self.open.pop(alarm.key, None)
        self.by_id.pop(alarm.id, None)
        return AlarmChange(alarm, TimelineEntry(alarm.id, ts, action, by, detail))

    @staticmethod
    def _latches(alarm: Alarm, action: str, by: str) -> bool:
        """Cleared by the rules (the equipment's reset or restore, a timer) while it reached
        the control room and nobody acknowledged it. A late alarm (history) never paged
        anyone, and a cancelled pending one never fired: neither waits for a person."""
        return (
            action == "resolved"
            and by == SYSTEM
            and alarm.state is AlarmState.FIRING
            and alarm.fired_ms is not None
            and not alarm.late
            and alarm.severity in LATCHING
        )

    # --- time ----------------------------------------------------------------------------------
    def tick(
        self,
        now: int,
        auto_resolve: dict[str, int] | None = None,
        subject_now: Callable[[Alarm], int] | None = None,
    ) -> list[AlarmChange]:
        """Pending alarms whose 'for' has passed fire; held flapping alarms that stayed clear,
        and event alarms past their auto-resolve time, resolve. ``subject_now``: the time of
        the alarm's subject's data (behind ``now`` while its gateway replays a backlog), which
        these timers run on, as they would have had the data come on time."""
        out = []
        hold = self.flaps.hold_ms
        for alarm in list(self.open.values()):
            t = now if subject_now is None else min(now, subject_now(alarm))
            if alarm.state is AlarmState.PENDING:
                if t >= alarm.started_ms + alarm.for_ms:
                    alarm.state = AlarmState.FIRING
                    self._raised(alarm, alarm.started_ms + alarm.for_ms, now)
                    alarm.updated_ms = now
                    detail = {"pending_since_ms": alarm.started_ms, "for_ms": alarm.for_ms}
                    entry = TimelineEntry(alarm.id, alarm.fired_ms or now, "firing", SYSTEM, detail)
                    out.append(AlarmChange(alarm, entry))
            elif alarm.clear_since_ms is not None and t - alarm.clear_since_ms >= hold:
                detail = {"stable_ms": t - alarm.clear_since_ms}
                out.append(self._close(alarm, "resolved", t, SYSTEM, detail, now))
            elif auto_resolve and t - alarm.last_ms >= auto_resolve.get(alarm.rule, t + 1):
                detail = {"quiet_ms": t - alarm.last_ms}
                out.append(self._close(alarm, "resolved", t, SYSTEM, detail, now))
        self.flaps.prune(now)
        return out

    # --- by people -----------------------------------------------------------------------------
    def acknowledge(self, alarm: Alarm, by: str, now: int, note: str | None) -> AlarmChange:
        """A firing alarm is taken on; a cleared one is closed (who and when are kept)."""
        if alarm.state not in (AlarmState.FIRING, AlarmState.CLEARED):
            raise InvalidTransition(
                f"alarm {alarm.id} is {alarm.state.value}; only a firing or cleared alarm "
                "can be acknowledged"
            )
        cleared = alarm.state is AlarmState.CLEARED
        alarm.state = AlarmState.RESOLVED if cleared else AlarmState.ACKNOWLEDGED
        self.cleared.pop(alarm.id, None)
        alarm.acked_ms = now
        alarm.acked_by = by
        alarm.updated_ms = now
        detail = {"note": note} if note else {}
        return AlarmChange(alarm, TimelineEntry(alarm.id, now, "acknowledged", by, detail))

    def resolve(self, alarm: Alarm, by: str, now: int, note: str | None) -> AlarmChange:
        if alarm.state is AlarmState.CLEARED:
            raise InvalidTransition(f"alarm {alarm.id} has cleared; acknowledge it to close it")
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
