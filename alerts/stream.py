"""The stream, from what ingest committed to alarm changes: :func:`observe` feeds the
deliveries to the inhibitor and the evaluator (signals out, with weather-station readings and
technicians' arrivals gathered on the way); :func:`apply_signals` turns the signals into alarm
changes, unless the inhibitor holds a new one back or the alarm it would open was raised
already for the same fault (a replayed reading's: :func:`judged`). The engine
(``AlertEngine.on_committed`` and its tick) runs both inside a step, under the records' lock."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from alerts.changes import Changes
from alerts.followups import alarm_changed
from alerts.records import Records
from alerts.rules.evaluate import Signal
from alerts.weather_plans import Readings
from ingest.pipeline import Delivery

__all__ = ["apply_signals", "judged", "observe"]

log = logging.getLogger(__name__)


def observe(
    rec: Records,
    deliveries: Sequence[Delivery],
    arrived: int,
    signals: list[Signal],
    stations: Readings,
    arrivals: list[tuple[str, Any]],
) -> None:
    """Feed the deliveries to the inhibitor and the evaluator (its signals into
    ``signals``); gather weather-station readings and technicians' arrivals."""
    ev, inhibitor = rec.evaluator, rec.inhibitor
    station_kind, watched = rec.criteria.kind, inhibitor.watched
    for d in deliveries:
        if d.status is not None and d.estate and d.gateway:
            online = d.status.state == "online"
            inhibitor.observe_status(d.estate, d.gateway, online)
            idx = rec.index(d.estate)
            ev.observe_status(idx, d.estate, d.gateway, online, arrived, signals)
        b = d.batch
        if b is None:
            continue
        idx = rec.index(b.estate)
        if b.readings:
            for r in b.readings:
                if r.kind in watched:
                    inhibitor.observe_reading(b.estate, r.dev, r.kind, r.metrics)
                if r.kind == station_kind:
                    stations.setdefault((b.estate, r.dev), []).append((r.ts, dict(r.metrics)))
            ev.observe_readings(idx, b.estate, b.gateway, b.readings, signals, arrived)
        if b.events:
            ev.observe_events(idx, b.estate, b.gateway, b.events, signals, arrived)
            arrivals.extend(
                (b.estate, e) for e in b.events if e.type == "elevator.technician_arrived"
            )


def apply_signals(rec: Records, signals: Sequence[Signal], now: int, ch: Changes) -> None:
    """The alarms' changes the signals make; a new alarm the inhibitor holds back is not
    raised (and its condition forgotten)."""
    for sig in signals:
        key = (sig.rule.id, sig.estate, sig.subject)
        if sig.hit and rec.alarms.get(key) is None:
            reason = rec.inhibitor.reason(
                sig.rule.tags, sig.estate, sig.subject, sig.gateway, sig.ts
            )
            if reason is not None or judged(rec, sig, ch):
                # Not raised; forgotten, so it is raised if it still holds once uninhibited
                # (or, judged already, by the first reading after that alarm's span).
                rec.evaluator.forget(sig.rule.id, sig.estate, sig.subject)
                continue
        for change in rec.alarms.apply(sig, now):
            alarm_changed(rec, change, now, ch)


def judged(rec: Records, sig: Signal, ch: Changes) -> bool:
    """Whether the alarm a signal would open was raised already for the same fault: one of
    (rule, estate, subject) started at the signal's data time, or closed by the rules after it
    (:meth:`Alarm.caused_at`). A reading committed and judged by an engine that died before
    ingest acknowledged it comes again (the broker's DUP) to the estate's next engine, which
    adopted that alarm: it must not raise it twice. Only when an alarm would open (rare), so
    the store is asked then; if it cannot answer, the alarm is raised (twice over never)."""
    key = (sig.rule.id, sig.estate, sig.subject)
    unwritten = rec.unwritten_alarms()
    for pool in (ch.batch.alarms.values(), unwritten, rec.alarms.cleared.values()):
        if any(a.key == key and a.caused_at(sig.ts) for a in pool):
            return True
    try:
        found = rec.store.alarm_caused_at(sig.rule.id, sig.estate, sig.subject, sig.ts)
    except sa.exc.SQLAlchemyError:
        log.exception("alerts: could not look up %s of %s/%s", *key)
        return False
    if found is not None:
        log.info(
            "alerts: %s of %s/%s at %d is alarm %s's: not raised again", *key, sig.ts, found.id
        )
    return found is not None
