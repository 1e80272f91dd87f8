"""Estates taken on and given up (issue 16: a scaled-out worker's partitions move between
engines). :func:`load_estates` reads estates' state from the store into memory, as if this
engine had run them all along, leaving what is already in memory (it is as new as the store's
or newer); :func:`drop_estates` drops them from memory without writing anything, their next
owner continuing from the store. The engine (``AlertEngine.adopt``/``release``) calls both
under the records' lock."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from alerts.due import DrillClocks
from alerts.records import Records
from alerts.rules.evaluate import DeviceClock
from alerts.weather_plans import observe_station
from alerts.windows import SeriesWindow

__all__ = ["drop_estates", "load_estates", "refresh_shared"]

log = logging.getLogger(__name__)

_DAY = 86_400_000

Keep = Callable[[str], bool]


def refresh_shared(rec: Records, now: int) -> None:
    """Warnings and silences may be posted to another process (the API's, or another
    shard's): read them from the store now and then."""
    for w in rec.store.warnings(expiring_after_ms=now - _DAY):
        rec.weather.add_warning(w)
    for s in rec.store.silences(ending_after_ms=now):
        rec.silences.add(s)


def load_estates(
    rec: Records,
    estates: set[str] | None,
    now: int,
    drills: DrillClocks,
    offline_gateways: Callable[[], list[tuple[str, str]]],
) -> None:
    """Load the state of ``estates`` (None: every estate ``rec.owns`` accepts, at start) that
    is not in memory yet."""
    keep: Keep = rec.owns if estates is None else estates.__contains__
    _load_alarms(rec, estates, keep)
    stations = _load_clocks(rec, estates, keep)
    series = rec.windows.series
    for estate, dev, metric, blob in rec.store.windows(estates):
        if keep(estate) and (estate, dev, metric) not in series:
            series[(estate, dev, metric)] = SeriesWindow.from_bytes(blob)
    # The weather stations' levels from their windows, before the next weather period
    # judges the estates' plans (with none, it would lower them).
    clocks = rec.evaluator.clocks
    for estate, dev in stations:
        c = clocks[(estate, dev)]
        if dev not in rec.weather.observed.get(estate, {}):
            observe_station(rec, estate, dev, c.data_ms if c.data_ms >= 0 else now)
    refresh_shared(rec, now)
    plan_book = rec.plan_book
    plan_book.load(
        [
            a
            for a in rec.store.active_activations(estates)
            if keep(a.estate) and (a.estate, a.plan) not in plan_book.active
        ]
    )
    for key, last in rec.store.drill_clocks(estates).items():
        if keep(key[0]) and last > drills.last.get(key, -1):
            drills.last[key] = last
            drills.due.pop(key, None)
    try:
        offline = offline_gateways()
    except sa.exc.SQLAlchemyError:
        log.exception("alerts: could not read gateway states")
        offline = []
    for estate, gw in offline:
        if keep(estate):
            rec.inhibitor.observe_status(estate, gw, online=False)


def _load_alarms(rec: Records, estates: set[str] | None, keep: Keep) -> None:
    """Open and cleared alarms, rescues' arrivals, and the conditions behind open alarms."""
    book = rec.alarms
    open_alarms = [
        a
        for a in rec.store.open_alarms(estates)
        if keep(a.estate) and a.key not in book.open and a.id not in book.by_id
    ]
    book.load(open_alarms)
    book.load(
        a
        for a in rec.store.cleared_alarms(estates)
        if keep(a.estate) and a.id not in book.cleared and a.id not in book.by_id
    )
    arrivals = rec.store.arrivals(estates)
    rec.arrivals.update({a.id: arrivals[a.id] for a in open_alarms if a.id in arrivals})
    held = []
    for a in open_alarms:
        rule = rec.rule(a.estate, a.rule)
        if rule is not None:
            held.append((rule, a.estate, a.subject))
        if a.kind == "gateway" and a.gateway:
            rec.inhibitor.observe_status(a.estate, a.gateway, online=False)
    rec.evaluator.restore(held)


def _load_clocks(rec: Records, estates: set[str] | None, keep: Keep) -> list[tuple[str, str]]:
    """Deadman clocks (a stored one newer than memory's wins); the weather stations met."""
    clocks = rec.evaluator.clocks
    stations = []
    for estate, dev, kind, gw, last, data in rec.store.clocks(estates):
        known = clocks.get((estate, dev))
        if keep(estate) and (known is None or known.last_ms < last):
            clocks[(estate, dev)] = DeviceClock(kind, gw, last, data)
        if kind == rec.criteria.kind and keep(estate):
            stations.append((estate, dev))
    return stations


def drop_estates(
    rec: Records,
    gone: set[str],
    drills: DrillClocks,
    station_judged: dict[tuple[str, str], int],
) -> int:
    """Drop everything in memory of ``gone`` (alarms, held conditions, deadman clocks,
    windows, plans, inhibitions, weather, drill clocks, changes waiting for the database);
    how many alarms were dropped."""
    dropped = [a for a in rec.alarms.by_id.values() if a.estate in gone]
    dropped += [a for a in rec.alarms.cleared.values() if a.estate in gone]
    for a in dropped:
        rec.alarms.open.pop(a.key, None)
        rec.alarms.by_id.pop(a.id, None)
        rec.alarms.cleared.pop(a.id, None)
        rec.arrivals.pop(a.id, None)
    rec.alarms.flaps.drop(gone)
    ev = rec.evaluator
    for rule_id, held in list(ev.asserted.items()):
        for estate, subject in [k for k in held if k[0] in gone]:
            ev.forget(rule_id, estate, subject)
    for table in (ev.clocks, ev.latest, ev.event_counts, rec.windows.series):
        drop_keys(table, gone)
    rec.inhibitor.offline -= {k for k in rec.inhibitor.offline if k[0] in gone}
    drop_keys(rec.inhibitor.modes, gone)
    drop_keys(rec.plan_book.active, gone)
    for estate in gone:
        rec.weather.observed.pop(estate, None)
    drop_keys(station_judged, gone)
    drop_keys(drills.last, gone)
    drop_keys(drills.due, gone)
    rec.forget_unwritten(gone)
    return len(dropped)


def drop_keys(table: dict[Any, Any], estates: set[str]) -> None:
    """Drop the entries whose key (a tuple) starts with one of ``estates``."""
    for key in [k for k in table if k[0] in estates]:
        del table[key]
