"""People's actions (the API): on alarms (acknowledge, resolve, confirm, assign, notes, the
technician's arrival), silences, official warnings, plans (activate, stand down, tasks) and
drills. Each is one step of the engine's records: under its lock, written in one
transaction, then told."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from alerts.alarms import Alarm, AlarmChange, AlarmState, InvalidTransition, TimelineEntry
from alerts.alarms.model import new_id
from alerts.changes import Changes
from alerts.drills import Drill, DrillStatus
from alerts.followups import alarm_changed, plan_changed, record_arrival, refresh_silence
from alerts.plans import ActivationChange, PlanActivation, ResponseLevel, Source
from alerts.records import Records
from alerts.silences import Matcher, Silence
from alerts.weather import Hazard, OfficialWarning, WeatherLevel
from alerts.weather_plans import estates_covered, weather_plans
from ingest.state import NotFound

__all__ = ["PeopleActions"]


class PeopleActions:
    """Shares the engine's records (and so its lock); raises NotFound or InvalidTransition
    for what cannot be done, before anything changes."""

    def __init__(self, rec: Records) -> None:
        self.rec = rec

    # --- alarms --------------------------------------------------------------------------------
    def _open_alarm(self, alarm_id: str) -> Alarm:
        alarm = self.rec.alarms.by_id.get(alarm_id)
        if alarm is not None:
            return alarm
        if alarm_id in self.rec.alarms.cleared:
            raise InvalidTransition(f"alarm {alarm_id} has cleared; acknowledge it to close it")
        stored = self.rec.store.get_alarm(alarm_id)
        if stored is None:
            raise NotFound(f"alarm {alarm_id!r} not found")
        raise InvalidTransition(f"alarm {alarm_id} is {stored.state.value}")

    def _on_alarm(self, fn: Callable[[int], AlarmChange]) -> dict[str, Any]:
        def step(now: int, ch: Changes) -> dict[str, Any]:
            change = fn(now)
            alarm_changed(self.rec, change, now, ch)
            return change.alarm.as_dict()

        return self.rec.step(step)

    def acknowledge(self, alarm_id: str, by: str, note: str | None = None) -> dict[str, Any]:
        """Takes on a firing alarm; closes one that cleared before anyone acknowledged it."""
        book = self.rec.alarms

        def ack(now: int) -> AlarmChange:
            alarm = book.cleared.get(alarm_id) or self._open_alarm(alarm_id)
            return book.acknowledge(alarm, by, now, note)

        return self._on_alarm(ack)

    def resolve(self, alarm_id: str, by: str, note: str | None = None) -> dict[str, Any]:
        def resolve(now: int) -> AlarmChange:
            alarm = self._open_alarm(alarm_id)
            # A person says it is over: if the condition still holds, a new alarm follows.
            self.rec.evaluator.forget(alarm.rule, alarm.estate, alarm.subject)
            return self.rec.alarms.resolve(alarm, by, now, note)

        return self._on_alarm(resolve)

    def assign(self, alarm_id: str, assignee: str, by: str) -> dict[str, Any]:
        book = self.rec.alarms
        return self._on_alarm(
            lambda now: book.assign(self._open_alarm(alarm_id), assignee, by, now)
        )

    def add_note(self, alarm_id: str, text: str, by: str) -> dict[str, Any]:
        def note(now: int) -> AlarmChange:
            alarm = self.rec.alarms.live(alarm_id) or self.rec.store.get_alarm(alarm_id)
            if alarm is None:
                raise NotFound(f"alarm {alarm_id!r} not found")
            return self.rec.alarms.note(alarm, text, by, now)

        return self._on_alarm(note)

    def technician_arrived(
        self, alarm_id: str, by: str, note: str | None = None, at_ms: int | None = None
    ) -> dict[str, Any]:
        """The maintenance technician reached the trapped car (TSG T5002-2017: the deadline is
        the arrival); recorded apart from the release, which ends the alarm."""

        def arrived(now: int, ch: Changes) -> dict[str, Any]:
            alarm = self._open_alarm(alarm_id)
            record_arrival(self.rec, alarm, by, at_ms if at_ms is not None else now, note, ch)
            return alarm.as_dict()

        return self.rec.step(arrived)

    def confirm(self, alarm_id: str, by: str, note: str | None = None) -> dict[str, Any]:
        """A person confirms the alarm on site (a fire, GB 25201 §5.3): recorded on the alarm,
        and the plans it activates go to their confirmed level (fire: Ⅲ) and stay there
        until a person stands them down."""
        rec = self.rec

        def confirm(now: int, ch: Changes) -> dict[str, Any]:
            alarm = self._open_alarm(alarm_id)
            targets = [(p, p.level_for_confirmation(alarm.rule)) for p in rec.plans.values()]
            targets = [(p, lvl) for p, lvl in targets if lvl is not ResponseLevel.NONE]
            if not targets:
                raise InvalidTransition(f"alarm {alarm_id} ({alarm.rule}) is not one to confirm")
            detail: dict[str, Any] = {"plans": [p.id for p, _ in targets]}
            if note:
                detail["note"] = note
            entry = TimelineEntry(alarm.id, now, "confirmed", by, detail)
            alarm_changed(rec, AlarmChange(alarm, entry, notify=False), now, ch)
            for plan, level in targets:
                source = Source(f"confirmed:{alarm.id}", level, {"by": by, "alarm": alarm.id})
                change = rec.plan_book.set_source(alarm.estate, plan.id, source, now, by=by)
                plan_changed(rec, change, ch)
            return alarm.as_dict()

        return rec.step(confirm)

    # --- silences ------------------------------------------------------------------------------
    def add_silence(
        self,
        matchers: Sequence[Mapping[str, str]],
        ends_ms: int,
        by: str,
        comment: str,
        starts_ms: int | None = None,
    ) -> dict[str, Any]:
        """Matchers: ``[{"name": "device", "value": "lift-1", "op": "="}, ...]``."""
        parsed = tuple(Matcher.parse(m["name"], m["value"], m.get("op", "=")) for m in matchers)
        rec = self.rec

        def add(now: int, ch: Changes) -> dict[str, Any]:
            start = starts_ms if starts_ms is not None else now
            silence = Silence(new_id("si"), parsed, start, ends_ms, by, comment, now)
            ch.batch.silences[silence.id] = silence
            rec.silences.add(silence)
            for alarm in rec.alarms.open.values():
                if alarm.state is not AlarmState.PENDING:
                    refresh_silence(rec, alarm, now, ch)
            return silence.as_dict(now)

        return rec.step(add)

    def expire_silence(self, silence_id: str, by: str) -> dict[str, Any]:
        rec = self.rec

        def expire(now: int, ch: Changes) -> dict[str, Any]:
            found = rec.silences.silences.get(silence_id)
            if found is None:
                stored = [s for s in rec.store.silences() if s.id == silence_id]
                if not stored:
                    raise NotFound(f"silence {silence_id!r} not found")
                found = stored[0]
            if found.ends_ms <= now:
                return found.as_dict(now)
            ended = Silence(
                found.id, found.matchers, min(found.starts_ms, now - 1), now,
                found.created_by, f"{found.comment} (ended by {by})", found.created_ms,
            )  # fmt: skip
            ch.batch.silences[ended.id] = ended
            rec.silences.add(ended)
            return ended.as_dict(now)

        return rec.step(expire)

    # --- weather -------------------------------------------------------------------------------
    def post_warning(
        self,
        hazard: str,
        level: str,
        issued_ms: int,
        expires_ms: int,
        by: str,
        estates: Sequence[str] = (),
        region: str = "",
        text: str = "",
        source: str = "",
    ) -> dict[str, Any]:
        """An official warning; the plans of the estates it covers follow it at once."""
        rec = self.rec
        unknown = rec.estates.unregistered(estates)
        if unknown:
            raise NotFound(f"estate {', '.join(map(repr, unknown[:5]))} not found")
        hz, lvl = Hazard(hazard), WeatherLevel.parse(level)

        def post(now: int, ch: Changes) -> dict[str, Any]:
            warning = OfficialWarning(
                new_id("wa"), hz, lvl, issued_ms, expires_ms, tuple(estates), region, text,
                source, created_by=by, created_ms=now,
            )  # fmt: skip
            covered = self._warning_changed(warning, now, ch)
            return {**warning.as_dict(now), "estates_covered": covered}

        return rec.step(post)

    def cancel_warning(self, warning_id: str, by: str) -> dict[str, Any]:
        """The issuer lifts a warning early; plans it alone kept up stand down at once."""

        def cancel(now: int, ch: Changes) -> dict[str, Any]:
            found = [w for w in self.rec.store.warnings() if w.id == warning_id]
            if not found:
                raise NotFound(f"warning {warning_id!r} not found")
            w = found[0]
            if not w.active(now):
                raise InvalidTransition(f"warning {warning_id} is not in force")
            lifted = dataclasses.replace(w, cancelled_ms=now, text=f"{w.text} (lifted by {by})")
            self._warning_changed(lifted, now, ch)
            return lifted.as_dict(now)

        return self.rec.step(cancel)

    def _warning_changed(self, warning: OfficialWarning, now: int, ch: Changes) -> list[str]:
        """Store the warning; the plans of the estates it covers follow. Returns those."""
        ch.batch.warnings[warning.id] = warning
        self.rec.weather.add_warning(warning)
        covered = sorted(estates_covered(self.rec, warning))
        for estate in covered:
            weather_plans(self.rec, estate, now, ch)
        return covered

    # --- plans ---------------------------------------------------------------------------------
    def _active_activation(self, activation_id: str) -> PlanActivation:
        act = self.rec.plan_book.find(activation_id)
        if act is None:
            if self.rec.store.get_activation(activation_id) is None:
                raise NotFound(f"plan activation {activation_id!r} not found")
            raise InvalidTransition(f"plan activation {activation_id} has stood down")
        return act

    def _on_plan(self, fn: Callable[[int], ActivationChange | None]) -> dict[str, Any]:
        def step(now: int, ch: Changes) -> ActivationChange | None:
            done = fn(now)
            plan_changed(self.rec, done, ch)
            return done

        done = self.rec.step(step)
        if done is None:
            return {}
        with self.rec.lock:
            return done.activation.as_dict(self.rec.plans.get(done.activation.plan))

    def complete_task(
        self, activation_id: str, task_id: str, by: str, note: str | None = None
    ) -> dict[str, Any]:
        def done(now: int) -> ActivationChange:
            act = self._active_activation(activation_id)
            task = act.tasks.get(task_id)
            if task is None:
                raise NotFound(f"plan activation {activation_id} has no task {task_id!r}")
            if task.done_ms is not None:
                raise InvalidTransition(f"task {task_id!r} was done by {task.done_by} already")
            return self.rec.plan_book.complete_task(act, task_id, by, now, note)

        return self._on_plan(done)

    def activate_plan(
        self, estate: str, plan_id: str, level: str, by: str, reason: str
    ) -> dict[str, Any]:
        """A person activates (or re-levels) a plan; it stays up until a person stands it down."""
        if plan_id not in self.rec.plans:
            raise NotFound(f"plan {plan_id!r} not found")
        lvl = ResponseLevel.parse(level)
        if not self.rec.plans[plan_id].levels[lvl].person:
            raise InvalidTransition(f"level {lvl.roman} of {plan_id} is not activated by a person")
        source = Source("manual", lvl, {"by": by, "reason": reason})
        book = self.rec.plan_book
        return self._on_plan(lambda now: book.set_source(estate, plan_id, source, now, by=by))

    def stand_down(self, activation_id: str, by: str, reason: str) -> dict[str, Any]:
        book = self.rec.plan_book
        return self._on_plan(
            lambda now: book.stand_down(self._active_activation(activation_id), by, now, reason)
        )

    # --- drills --------------------------------------------------------------------------------
    def record_drill(
        self,
        estate: str,
        plan_id: str,
        held_ms: int,
        by: str,
        participants: Sequence[str] = (),
        findings: str = "",
        outcome: str = "",
        drill_id: str | None = None,
        status: str = "held",
    ) -> dict[str, Any]:
        if plan_id not in self.rec.plans:
            raise NotFound(f"plan {plan_id!r} not found")

        def record(now: int, ch: Changes) -> dict[str, Any]:
            drill = self._drill(estate, plan_id, drill_id, now)
            drill.status = DrillStatus(status)
            drill.held_ms = held_ms
            drill.participants = list(participants)
            drill.findings = findings
            drill.outcome = outcome
            drill.recorded_by = by
            ch.batch.drills[drill.id] = drill
            return drill.as_dict()

        return self.rec.step(record)

    def _drill(self, estate: str, plan_id: str, drill_id: str | None, now: int) -> Drill:
        """The scheduled drill being recorded, or a new one (a drill held unscheduled)."""
        if drill_id is None:
            return Drill(new_id("dr"), estate, plan_id, DrillStatus.SCHEDULED, now)
        drill = self.rec.store.get_drill(drill_id)
        if drill is None or (drill.estate, drill.plan) != (estate, plan_id):
            raise NotFound(f"drill {drill_id!r} of {plan_id} in {estate} not found")
        if drill.status is not DrillStatus.SCHEDULED:
            raise InvalidTransition(f"drill {drill_id} was recorded already")
        return drill
