"""What a telemetry store is, to ingest: the calls its decoder, recorder and the service's
upkeep make (``TelemetryStore``), the values they pass (``PreparedRows``, ``WriteResult``), a
raw-readings sink (``RawSink``), and a write handed over now and answered later
(``PendingWrite``, ``PipelinedStore``, ``submit_write``). Implemented by
``telemetry.TelemetryWriter`` (SQLite, in this process), ``store_process.StoreProcess`` (the
same in a child process) and ``net_telemetry.NetworkTelemetryStore`` (PostgreSQL and
VictoriaMetrics)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

from ingest.model import EstateBatch
from ingest.retention import RollupPlan


class PreparedRows(NamedTuple):
    """A batch's readings as the JSON rows of ``readings``, encoded ahead of its commit."""

    json: bytes
    values: int
    epoch: int = 0  # TelemetryWriter.series_epoch when the series ids were looked up


@dataclass
class WriteResult:
    values: int = 0  # metric values appended
    readings: int = 0
    events: int = 0
    duplicates: set[int] = field(default_factory=set)  # indexes of batches already stored


class RawSink(Protocol):
    """Where raw readings go instead of the local ``readings`` table (InfluxDB)."""

    def write(self, batches: Sequence[EstateBatch]) -> int: ...


class TelemetryStore(Protocol):
    """What ingest's decoder, recorder and the service's upkeep call on the telemetry writer:
    ``TelemetryWriter`` in this process, or ``store_process.StoreProcess`` in a child."""

    def prepare_rows(self, batch: EstateBatch) -> PreparedRows | None: ...
    def find_duplicates(self, batches: Sequence[EstateBatch]) -> set[int]: ...
    def write(
        self,
        batches: Sequence[EstateBatch],
        duplicates: set[int] | None = None,
        prepared: Sequence[PreparedRows | None] | None = None,
    ) -> WriteResult: ...
    def gateway_lost(self) -> dict[tuple[str, str], int]: ...
    def flush_latest_if_due(self) -> None: ...
    def apply_rollup(self, plan: RollupPlan) -> int: ...
    def purge(self, raw_before_ms: int, minute_rollups_before_ms: int) -> int: ...
    def prepare_rollup(
        self, max_rows: int = 1_000_000, conn: sqlite3.Connection | None = None
    ) -> RollupPlan | None: ...
    def close(self) -> None: ...


@dataclass(eq=False)
class PendingWrite:
    """One commit's write handed to a telemetry store; its answer may come later (the store
    process answers while the recorder prepares the next commit)."""

    answer: Future[WriteResult] = field(default_factory=Future)
    # The store's dedup verdict (indexes of duplicate batches) once it has judged, before its
    # COMMIT; None while unknown or when the write is known to have rolled back. After a
    # failure whose outcome is unknown (the store process died), the batches judged new may
    # have been committed by this write: a retry that finds them stored counts them as its.
    judged: set[int] | None = None


@runtime_checkable
class PipelinedStore(Protocol):
    """A telemetry store that takes a write and answers later, finding duplicates inside the
    write's own transaction (one round trip a commit): ``store_process.StoreProcess``."""

    def submit_write(
        self,
        batches: Sequence[EstateBatch],
        prepared: Sequence[PreparedRows | None] | None,
        urgent: bool = False,
    ) -> PendingWrite: ...


def submit_write(
    store: TelemetryStore,
    batches: Sequence[EstateBatch],
    prepared: Sequence[PreparedRows | None] | None,
    urgent: bool = False,
) -> PendingWrite:
    """One commit's write, de-duplicated in its transaction. A ``PipelinedStore`` answers
    later (``urgent``: events, which go before telemetry writes still waiting); any other
    ``TelemetryStore`` (the writer in this process, a networked one) is asked
    ``find_duplicates`` and then ``write`` now, and the answer is ready on return."""
    if isinstance(store, PipelinedStore):
        return store.submit_write(batches, prepared, urgent)
    pending = PendingWrite()
    try:
        pending.judged = store.find_duplicates(batches)
        pending.answer.set_result(store.write(batches, pending.judged, prepared))
    except Exception as exc:
        pending.answer.set_exception(exc)
    return pending
