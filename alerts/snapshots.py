"""Deadman clocks and window samples, written apart from the engine's steps so a restart (or
an estate's next owner) resumes them: a snapshot of what changed every snapshot period and at
stop (not per reading) and, with a fence (a scaled-out worker), the deadman clocks heard since
the last flush every deadman period, so a successor's clocks are the predecessor's last ones,
not a snapshot minutes old. Periods are on the engine's clock (wall time in service)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from typing import Any

import sqlalchemy as sa

from alerts.records import Records
from alerts.store import ClockRow
from ingest.model import NotOwner
from ingest.pipeline import Delivery

__all__ = ["Snapshots"]

log = logging.getLogger(__name__)


class Snapshots:
    """``release``: the engine's (estates a fence refused); ``gone``: the engine's set of
    released estates (shared, read under the lock)."""

    def __init__(
        self,
        rec: Records,
        release: Callable[[Collection[str]], None],
        gone: set[str],
        fenced: bool,
        now: int,
        snapshot_ms: int,
        flush_ms: int,
    ) -> None:
        self.rec, self.release, self.gone = rec, release, gone
        self.snapshot_ms, self.flush_ms = snapshot_ms, flush_ms
        # With a fence, the deadman clocks heard since the last flush (estate, device).
        self.dirty: set[tuple[str, str]] | None = set() if fenced else None
        self.last_snapshot = self.last_flush = now
        # Each series' newest sample time when last written (or found unchanged): a series is
        # written when it differs, whatever the engine's clock says (a backlog's data time is
        # hours behind it).
        self.written: dict[tuple[str, str, str], int | None] = {}

    def heard(self, deliveries: Sequence[Delivery]) -> None:
        """The devices these deliveries moved the deadman clocks of (under the lock)."""
        dirty = self.dirty
        if dirty is None:
            return
        for d in deliveries:
            b = d.batch
            if b is not None:
                estate = b.estate
                dirty.update([(estate, r.dev) for r in b.readings])
                if b.events:
                    dirty.update([(estate, e.dev) for e in b.events])

    def forget(self, gone: set[str]) -> None:
        """Released estates' clocks are no longer this engine's to write."""
        if self.dirty:
            self.dirty -= {k for k in self.dirty if k[0] in gone}

    def due(self, now: int) -> list[ClockRow]:
        """Under the lock: the snapshot when its period is over (written now), else the
        clocks heard when the flush period is (returned, to write with :meth:`flush` outside
        the lock)."""
        if now - self.last_snapshot >= self.snapshot_ms:
            self.snapshot(now)
        elif self.dirty and now - self.last_flush >= self.flush_ms:
            self.last_flush = now
            return self._dirty_clocks()
        return []

    def _dirty_clocks(self) -> list[ClockRow]:
        """The deadman clocks heard since the last flush (under the lock), to write apart."""
        dirty, clocks = self.dirty, self.rec.evaluator.clocks
        if not dirty:
            return []
        rows = [
            (e, d, c.kind, c.gateway, c.last_ms, c.data_ms)
            for e, d in dirty
            if (c := clocks.get((e, d))) is not None
        ]
        dirty.clear()
        return rows

    def flush(self, rows: list[ClockRow]) -> None:
        """Write them (fenced; estates refused are released), outside the lock: one
        transaction per deadman period, not one per commit. The successor's clocks are at most
        that far behind, and it checks them at that period anyway."""
        try:
            self._save_owned(lambda: self.rec.store.save_clocks(rows), rows)
        except sa.exc.SQLAlchemyError:
            log.exception("alerts: could not write deadman clocks; will retry")
            with self.rec.lock:
                if self.dirty is not None:
                    self.dirty.update((r[0], r[1]) for r in rows if r[0] not in self.gone)

    def _save_owned(self, save: Callable[[], None], *rows: list[Any]) -> None:
        """Run a fenced write of rows (each starting with its estate); estates the fence refuses
        are released and the write runs again without them."""
        for _ in range(3):
            try:
                save()
                return
            except NotOwner as exc:
                self.release(exc.estates)
                for r in rows:
                    r[:] = [x for x in r if x[0] not in exc.estates]

    def snapshot(self, now: int, everything: bool = False) -> None:
        """Deadman clocks and window samples changed since the last one (all: ``everything``),
        so a restart resumes them (not per reading). Under the lock."""
        since = -1 if everything else self.last_snapshot
        clocks = [
            (e, d, c.kind, c.gateway, c.last_ms, c.data_ms)
            for (e, d), c in self.rec.evaluator.clocks.items()
            if c.last_ms > since
        ]
        written, newest = self.written, {}
        series: list[tuple[str, str, str, bytes]] = []
        for key, w in self.rec.windows.series.items():
            ts = newest[key] = w.last_ts
            if ts is not None and (everything or written.get(key) != ts):
                series.append((*key, w.to_bytes()))
        self.last_snapshot = now
        if self.dirty is not None:
            self.dirty.clear()  # every clock heard since the last flush is in this one
        store = self.rec.store
        try:
            self._save_owned(lambda: store.save_clocks(clocks), clocks)
            self._save_owned(lambda: store.save_windows(series, now), series)
            self.written = newest  # (series dropped from memory are forgotten here too)
        except sa.exc.SQLAlchemyError:
            log.exception("alerts: could not save deadman clocks and windows; will retry")
            self.written = {}  # every series again next time
