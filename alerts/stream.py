"""The stream, from what ingest committed to alarm changes: :func:`observe` feeds the
deliveries to the inhibitor and the evaluator (signals out, with weather-station readings and
technicians' arrivals gathered on the way); :func:`apply_signals` turns the signals into alarm
changes, unless the inhibitor holds a new one back. The engine (``AlertEngine.on_committed``
and its tick) runs both inside a step, under the records' lock."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alerts.changes import Changes
from alerts.followups import alarm_changed
from alerts.records import Records
from alerts.rules.evaluate import Signal
from alerts.weather_plans import Readings
from ingest.pipeline import Delivery

__all__ = ["apply_signals", "observe"]


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
            if reason is not None:
                # Not raised; forgotten, so it is raised if it still holds once uninhibited.
                rec.evaluator.forget(sig.rule.id, sig.estate, sig.subject)
                continue
        for change in rec.alarms.apply(sig, now):
            alarm_changed(rec, change, now, ch)
