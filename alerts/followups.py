"""What follows an alarm's change: silence, rescue deadline, notices, escalation, and the
plans its rule activates. Functions over the records, called under the engine's lock with the
step's :class:`Changes`; the caller writes and tells."""

from __future__ import annotations

from typing import Any

from alerts.alarms import SYSTEM, Alarm, AlarmChange, AlarmState, InvalidTransition, TimelineEntry
from alerts.changes import Changes, alarm_news
from alerts.escalation import Rescue, due_steps
from alerts.plans import ActivationChange, ResponseLevel, Source
from alerts.records import Records

__all__ = [
    "alarm_changed",
    "alarm_plans",
    "escalate",
    "plan_changed",
    "record_arrival",
    "refresh_silence",
    "rescue_of",
]

_MINUTE = 60_000


def alarm_changed(rec: Records, change: AlarmChange, now: int, ch: Changes) -> None:
    alarm, action = change.alarm, change.action
    ch.alarm(alarm, change.entry)
    if action == "cancelled":
        ch.batch.forget_alarms.add(alarm.id)
    rule = rec.rule(alarm.estate, alarm.rule)
    rescue = rule is not None and rule.rescue
    if action in ("pending", "firing") and rescue:
        # The estate's own arrival deadline (1 h outside a city with districts).
        minutes = rec.estates.profile(alarm.estate).rescue_arrival_min
        if minutes is not None and alarm.deadline_ms is not None:
            alarm.deadline_ms = alarm.started_ms + minutes * _MINUTE
    rescue = rescue and alarm.deadline_ms is not None
    if alarm.late:
        # History: stored with its data's times (and a rescue's), shown in the list and
        # the report, but nobody is paged, nothing escalates, no plan starts, and the
        # live feed does not announce it as new.
        if rescue and action in ("firing", "resolved"):
            r = rescue_of(rec, alarm)
            ch.batch.rescues[alarm.id] = (r, r.breached(alarm.resolved_ms or now))
        if change.entry.by != SYSTEM:  # a person's action on it is news to other screens
            ch.news.append(alarm_news(alarm, action, change.entry))
        return
    _follow(rec, alarm, action, rescue, now, ch)
    ch.news.append(alarm_news(alarm, action, change.entry))


def _follow(rec: Records, alarm: Alarm, action: str, rescue: bool, now: int, ch: Changes) -> None:
    """What a current (not late) alarm's change sets off."""
    if action == "firing":
        refresh_silence(rec, alarm, now, ch)
        if rescue:
            ch.batch.rescues[alarm.id] = (rescue_of(rec, alarm), False)
        rec.notices.alarm(alarm, "firing", (), ch, now)
        escalate(rec, alarm, now, ch)
        alarm_plans(rec, alarm, now, ch)
    elif action == "acknowledged":
        # For sirens and LED walls; the people told are the ones who acknowledge.
        rec.notices.alarm(alarm, action, (), ch, now)
    elif action == "flapping":
        rec.notices.alarm(alarm, action, notified_roles(rec, alarm), ch, now)
    elif action == "resolved":
        if rescue:
            r = rescue_of(rec, alarm)
            ch.batch.rescues[alarm.id] = (r, alarm.deadline_breached or r.breached(now))
            rec.arrivals.pop(alarm.id, None)
        if alarm.fired_ms is not None:
            rec.notices.alarm(alarm, "resolved", notified_roles(rec, alarm), ch, now)
        alarm_plans(rec, alarm, now, ch)


def rescue_of(rec: Records, alarm: Alarm) -> Rescue:
    assert alarm.deadline_ms is not None
    arrived = rec.arrivals.get(alarm.id)
    return Rescue(
        alarm.id,
        alarm.estate,
        alarm.subject,
        alarm.started_ms,
        alarm.deadline_ms,
        alarm.resolved_ms,
        alarm.resolved_by,
        arrived[0] if arrived else None,
        arrived[1] if arrived else None,
    )


def refresh_silence(rec: Records, alarm: Alarm, now: int, ch: Changes) -> None:
    s = rec.silences.match(alarm.labels(), now)
    sid = s.id if s is not None else None
    if sid != alarm.silenced_by:
        alarm.silenced_by = sid
        action = "silenced" if s is not None else "unsilenced"
        detail = {"silence": s.id, "comment": s.comment} if s is not None else {}
        by = s.created_by if s is not None else SYSTEM
        ch.alarm(alarm, TimelineEntry(alarm.id, now, action, by, detail))


def notified_roles(rec: Records, alarm: Alarm) -> tuple[str, ...]:
    """The roles the alarm's escalation has told so far."""
    roles: list[str] = []
    for i, step in enumerate(rec.chain(alarm).steps):
        if alarm.escalated & (1 << i):
            roles.extend(r for r in step.notify if r not in roles)
    return tuple(roles)


def escalate(rec: Records, alarm: Alarm, now: int, ch: Changes) -> None:
    """Take the escalation steps now due (wall time from when the alarm was raised)."""
    if alarm.fired_ms is None or alarm.late or not alarm.state.open:
        return
    if alarm.state is AlarmState.PENDING:
        return
    chain = rec.chain(alarm)
    acked = alarm.state is AlarmState.ACKNOWLEDGED
    # A technician who arrived in time met the deadline: its steps are not due.
    deadline = None if alarm.id in rec.arrivals else alarm.deadline_ms
    raised = alarm.raised_ms if alarm.raised_ms is not None else alarm.fired_ms
    for i in due_steps(chain, alarm.escalated, raised, deadline, acked, now):
        step = chain.steps[i]
        if step.at_deadline and not alarm.deadline_breached:
            _deadline_breached(rec, alarm, now, ch)
        if alarm.silenced_by is not None:
            continue  # told once the silence ends, if still due
        alarm.escalated |= 1 << i
        action = "notified" if i == 0 else "escalated"
        detail = {"step": i, "notify": list(step.notify)}
        ch.alarm(alarm, TimelineEntry(alarm.id, now, action, SYSTEM, detail))
        event = "deadline_breached" if step.at_deadline else ("firing" if i == 0 else action)
        # Step 0 is the first notice of the firing, which MQTT already carried.
        rec.notices.alarm(alarm, event, step.notify, ch, now, step=i, mqtt=i > 0)
        if i > 0:
            entry = {"ts": now, "action": action, "by": SYSTEM, "detail": detail}
            ch.tell_alarm(alarm, action, entry)


def _deadline_breached(rec: Records, alarm: Alarm, now: int, ch: Changes) -> None:
    alarm.deadline_breached = True
    detail = {"deadline_ms": alarm.deadline_ms}
    entry = TimelineEntry(alarm.id, now, "deadline_breached", SYSTEM, detail)
    ch.alarm(alarm, entry)
    rule = rec.rule(alarm.estate, alarm.rule)
    if rule is not None and rule.rescue:
        ch.batch.rescues[alarm.id] = (rescue_of(rec, alarm), True)
    ch.tell_alarm(alarm, entry.action, entry.as_dict())


def record_arrival(
    rec: Records, alarm: Alarm, by: str, ts: int, note: str | None, ch: Changes
) -> None:
    """The technician reached the trapped car (TSG T5002-2017: the deadline is the arrival)."""
    rule = rec.rule(alarm.estate, alarm.rule)
    if rule is None or not rule.rescue or alarm.deadline_ms is None:
        raise InvalidTransition(f"alarm {alarm.id} ({alarm.rule}) is not a rescue")
    if alarm.id in rec.arrivals:
        _at, who = rec.arrivals[alarm.id]
        raise InvalidTransition(f"the technician's arrival was recorded already by {who}")
    rec.arrivals[alarm.id] = (ts, by)
    detail: dict[str, Any] = {"arrived_ms": ts, "late": ts > alarm.deadline_ms}
    if note:
        detail["note"] = note
    entry = TimelineEntry(alarm.id, ts, "arrived", by, detail)
    ch.alarm(alarm, entry)
    r = rescue_of(rec, alarm)
    ch.batch.rescues[alarm.id] = (r, alarm.deadline_breached or r.breached(ts))
    ch.tell_alarm(alarm, "arrived", entry.as_dict())


def arrival_event(rec: Records, estate: str, e: Any, ch: Changes) -> None:
    """A lift's own "technician arrived" signal (its maintenance check-in) for its open
    entrapment; none open, or recorded already: nothing to do."""
    for alarm in list(rec.alarms.open.values()):
        if alarm.estate != estate or alarm.subject != e.dev or not alarm.state.open:
            continue
        rule = rec.rule(estate, alarm.rule)
        if rule is None or not rule.rescue or alarm.id in rec.arrivals:
            continue
        who = str(e.data.get("technician") or "device")[:100]
        record_arrival(rec, alarm, who, e.ts, None, ch)


# --- plans ------------------------------------------------------------------------------------
def alarm_plans(rec: Records, alarm: Alarm, now: int, ch: Changes) -> None:
    """The plans the alarm's rule activates follow it (a source per alarm), and those whose
    independent signals together (a detector and a manual call point, ...) make a level."""
    for plan in rec.plans.values():
        level = plan.level_for_rule(alarm.rule)
        if level is ResponseLevel.NONE:
            continue
        if not alarm.state.open:
            level = ResponseLevel.NONE
        detail = {
            "alarm": alarm.id,
            "rule": alarm.rule,
            "subject": alarm.subject,
            "summary": alarm.summary_zh,
            "reading": alarm.detail,
        }
        source = Source(f"alarm:{alarm.id}", level, detail)
        plan_changed(rec, rec.plan_book.set_source(alarm.estate, plan.id, source, now), ch)
    for plan in rec.plans.values():
        if alarm.rule not in plan.together_rules:
            continue
        open_rules = {
            a.rule
            for a in rec.alarms.open.values()
            if a.estate == alarm.estate and a.state.open and a.rule in plan.together_rules
        }
        level = plan.level_for_together(open_rules)
        source = Source("together", level, {"rules": sorted(open_rules), "alarm": alarm.id})
        plan_changed(rec, rec.plan_book.set_source(alarm.estate, plan.id, source, now), ch)


def plan_changed(rec: Records, change: ActivationChange | None, ch: Changes) -> None:
    """Store a plan's change, tell its entries, and notify its event's receivers."""
    if change is None:
        return
    snapshot = ch.plan(change, rec.plans.get(change.activation.plan))
    rec.notices.plan(change, snapshot, ch)
