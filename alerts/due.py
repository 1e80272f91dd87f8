"""What falls due with time alone, besides 'for' timers and deadman clocks (the evaluator's):
late alarms caught up, heating alarms at the season's end, weather levels falling, drills.
Functions over the records, called by the engine's tick under its lock."""

from __future__ import annotations

from alerts.alarms import SYSTEM, AlarmState
from alerts.alarms.model import new_id
from alerts.changes import Changes
from alerts.drills import Drill, DrillStatus, next_drill
from alerts.followups import alarm_changed
from alerts.records import Records
from alerts.weather_plans import estates_covered, observe_station, weather_plans

__all__ = ["DrillClocks", "drills_due", "promote_late", "season_over", "weather_due"]


def promote_late(rec: Records, now: int, ch: Changes) -> None:
    """A late alarm whose condition still holds once its subject's data is current again
    (the backlog drained) is an emergency now: raised as new, paged and escalated."""
    ev = rec.evaluator
    for alarm in list(rec.alarms.open.values()):
        if not alarm.late or alarm.state is not AlarmState.FIRING:
            continue
        clock = ev.clocks.get((alarm.estate, alarm.subject))
        if clock is None or clock.data_ms < 0 or now - clock.data_ms > rec.late_after_ms:
            continue
        if clock.last_ms - clock.data_ms > rec.late_after_ms:
            continue  # still arriving late
        if ev.holds(alarm.rule, alarm.estate, alarm.subject):
            alarm_changed(rec, rec.alarms.promote(alarm, now), now, ch)


def season_over(rec: Records, now: int, ch: Changes) -> None:
    """Heating alarms still open when the estate's heating season has ended are over: the
    heating is off on purpose, so they are resolved, not left standing all summer."""
    tags = {r.hides_tag for r in rec.inhibitor.rules if r.outside_heating_season}
    if not tags:
        return
    for alarm in list(rec.alarms.open.values()):
        if alarm.state is AlarmState.PENDING or not alarm.state.open:
            continue
        rule = rec.rule(alarm.estate, alarm.rule)
        if rule is None or not tags & rule.tags:
            continue
        if rec.estates.profile(alarm.estate).in_heating_season(now):
            continue
        rec.evaluator.forget(alarm.rule, alarm.estate, alarm.subject)
        change = rec.alarms.resolve(alarm, SYSTEM, now, "供暖季结束 heating season over")
        alarm_changed(rec, change, now, ch)


def weather_due(rec: Records, now: int, every_ms: int, ch: Changes) -> None:
    """Levels fall as windows slide past old readings, and warnings expire."""
    for estate, station in rec.weather.stations():
        observe_station(rec, estate, station, now)
    estates = {e for e, _ in rec.weather.stations()}
    estates |= {e for e, _ in rec.plan_book.active}
    for w in rec.weather.warnings.values():
        if w.issued_ms <= now < w.expires_ms + every_ms * 2:
            estates |= estates_covered(rec, w)
    for estate in sorted(estates):
        weather_plans(rec, estate, now, ch)


class DrillClocks:
    """Per (estate, plan): when its drill schedule was last counted from (stored), and the
    next cron time (cached)."""

    def __init__(self, last: dict[tuple[str, str], int]) -> None:
        self.last = last
        self.due: dict[tuple[str, str], int] = {}


def drills_due(rec: Records, clocks: DrillClocks, now: int, ch: Changes) -> None:
    """A drill whose cron time has come is scheduled, and the control room told."""
    for estate in sorted(e for e in rec.known_estates() if rec.owns(e)):
        for plan in rec.plans.values():
            if plan.drill_cron is None:
                continue
            key = (estate, plan.id)
            if key not in clocks.last:
                clocks.last[key] = now  # schedules count from when we first knew
                ch.batch.drill_clocks[key] = now
                continue
            due = clocks.due.get(key)
            if due is None:
                due = clocks.due[key] = next_drill(plan.drill_cron, clocks.last[key]) or 2**62
            if due > now:
                continue
            clocks.due.pop(key, None)
            drill = Drill(
                new_id("dr"), estate, plan.id, DrillStatus.SCHEDULED, now, scheduled_ms=due
            )
            ch.batch.drills[drill.id] = drill
            clocks.last[key] = ch.batch.drill_clocks[key] = now
            rec.notices.drill_due(drill, plan, ch, now)
