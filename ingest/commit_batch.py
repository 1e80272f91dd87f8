"""The recorder's bookkeeping of one commit: its messages as the commit's steps see them, its
telemetry write while in flight (pipelined: answered later by the store process), and what the
answer made of each message and of the counters. No I/O: the recorder's steps do the writing."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prometheus_client import Histogram

from ingest.lanes import Outcome, Received
from ingest.model import EstateBatch
from ingest.stats import IngestStats
from ingest.telemetry_store import PendingWrite, PreparedRows, WriteResult
from protocol.clock import now_ms


@dataclass
class CommitBatch:
    """One store call's messages, as the steps of ``Recorder._store`` see them."""

    items: list[Received]
    with_batch: list[Received] = field(default_factory=list)  # those carrying readings/events
    batches: list[EstateBatch] = field(default_factory=list)  # theirs, index for index
    prepared: list[PreparedRows | None] = field(default_factory=list)  # ditto
    duplicates: set[int] = field(default_factory=set)  # indexes into batches, when asked first
    started: float = field(default_factory=time.perf_counter)
    urgent: bool = False  # events
    write: PendingWrite | None = None  # its telemetry write, once handed to the store
    written_before: list[bool] = field(default_factory=list)  # with_batch's, before the write
    error: Exception | None = None  # a step before the write failed

    @classmethod
    def gather(cls, items: list[Received]) -> CommitBatch:
        b = cls(items)
        for p in items:
            if p.delivery is not None and p.delivery.batch is not None:
                b.with_batch.append(p)
                b.batches.append(p.delivery.batch)
                b.prepared.append(p.rows)
        return b

    def answered(self) -> bool:
        return self.error is not None or self.write is None or self.write.answer.done()

    def failure(self) -> BaseException | None:
        if self.error is not None:
            return self.error
        return self.write.answer.exception() if self.write is not None else None

    def mark_written(self) -> None:
        """After a failed write: if its outcome is unknown (the store process died, perhaps
        after its COMMIT), the messages it judged new may be committed; ``written`` tells the
        retry that finds them stored that they are this batch's, not the broker's repeats."""
        judged = self.write.judged if self.write is not None else None
        if judged is not None:
            for i, p in enumerate(self.with_batch):
                p.written = p.written or i not in judged


def count_written(b: CommitBatch, result: WriteResult, s: IngestStats) -> None:
    """What the commit of readings, events and seqs made of each message, and the counts."""
    # committed by a write whose answer was lost (its process died): stored, and the
    # listeners get it; a message repeated by the broker is a duplicate
    # (or committed by the session's previous holder, which never gave it to its rules)
    recovered = {i for i in result.duplicates if b.written_before[i] or b.with_batch[i].redelivered}
    for i, p in enumerate(b.with_batch):
        dup = i in result.duplicates and i not in recovered
        p.outcome = Outcome.DUPLICATE if dup else Outcome.STORED
    s.committed_messages += len(b.with_batch)
    s.readings += result.readings + sum(len(b.batches[i].readings) for i in recovered)
    s.events += result.events + sum(len(b.batches[i].events) for i in recovered)
    s.duplicates += len(result.duplicates) - len(recovered)
    for batch in b.batches:
        if batch.readings and (
            s.newest_reading_ts is None or batch.readings[-1].ts > s.newest_reading_ts
        ):
            s.newest_reading_ts = batch.readings[-1].ts


def count_commit(
    items: list[Received], started: float, s: IngestStats, seconds: Histogram | None
) -> None:
    """A landed commit in the counters: its duration (wall time, also to ``seconds``), the
    throughput samples, and when each of its gateways was last heard from."""
    s.commits += 1
    s.last_commit_ms = now_ms()
    s.last_commit_duration_s = time.perf_counter() - started
    if seconds is not None:
        seconds.observe(s.last_commit_duration_s)
    seen: dict[tuple[str, str], int] = {}
    for p in items:
        d = p.delivery
        if d and d.estate and d.gateway and (d.batch is not None or d.status is not None):
            seen[(d.estate, d.gateway)] = d.received_ms
    with s.lock:
        s.samples.append((time.monotonic(), s.committed_messages, s.readings))
        s.gateway_last_seen.update(seen)
