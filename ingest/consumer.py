"""Ingest, composed: MQTT lanes → decoder → recorder → listeners, each on its own thread(s),
each hand-off bounded.

- ``lanes``: two MQTT sessions (telemetry, events), their paho network threads and bounded
  queues of received payloads; the subscriptions;
- ``decoder``: judges each message once and encodes its rows (thread ``ingest-decoder``);
- ``recorder``: commits, acknowledges once committed, runs the typed maintenance tasks between
  commits, tells a failing store from a message the store refuses (thread ``ingest-writer``);
- ``fanout``: hands what was stored to the listeners, in commit order (``ingest-listeners``).

A stop commits and acknowledges what was received, then disconnects; what was not committed
stays unacknowledged and the broker delivers it again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from prometheus_client import Histogram

from ingest.commit_failures import STORE_REFUSED, is_transient
from ingest.decoder import INCIDENT_BATCH_READINGS, INCIDENT_S, Decoder
from ingest.fanout import LISTEN_READINGS, CommitListener, Fanout
from ingest.handoff import ByteBudget, Handoff
from ingest.lanes import GatewayRegistry, Lane, Lanes, PartitionSessions, Received, ack_all
from ingest.recorder import Recorder
from ingest.recorder_tasks import ApplyRollupTask, CallTask, PurgeTask, RecorderTask
from ingest.state import StateStore
from ingest.stats import IngestStats
from ingest.telemetry_store import TelemetryStore
from protocol.catalog import Catalog
from protocol.clock import now_ms
from protocol.endpoint import MqttEndpoint
from protocol.messages import MAX_FUTURE_MS

# Names other packages import from here.
__all__ = [
    "DEFAULT_COMMIT_INTERVAL_MS",
    "DEFAULT_COMMIT_MAX_READINGS",
    "DEFAULT_QUEUE_MB",
    "DEFAULT_QUEUE_SIZE",
    "DEFAULT_STALL_S",
    "INCIDENT_BATCH_READINGS",
    "INCIDENT_S",
    "LISTEN_READINGS",
    "STORE_REFUSED",
    "ApplyRollupTask",
    "ByteBudget",
    "CallTask",
    "CommitListener",
    "GatewayRegistry",
    "Handoff",
    "Ingest",
    "IngestStats",
    "PartitionSessions",
    "PurgeTask",
    "Received",
    "RecorderTask",
    "ack_all",
    "is_transient",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

# The one source of ingest's defaults; estatewatch.settings takes its defaults from these.
DEFAULT_QUEUE_SIZE = 10_000  # messages a lane holds between its network thread and the decoder
DEFAULT_QUEUE_MB = 8  # MiB of payloads a lane holds (the memory bound)
DEFAULT_COMMIT_INTERVAL_MS = 500  # longest a telemetry batch lingers for more messages
DEFAULT_COMMIT_MAX_READINGS = 10_000  # readings that end a telemetry batch sooner
DEFAULT_STALL_S = 60  # health says "stalled" after a batch (or a message) takes this long


class Ingest:
    def __init__(
        self,
        endpoint: MqttEndpoint,
        state: StateStore,
        telemetry: TelemetryStore,
        catalog: Catalog,
        root: str = "estates",
        queue_size: int = DEFAULT_QUEUE_SIZE,
        queue_bytes: int = DEFAULT_QUEUE_MB << 20,
        linger_s: float = DEFAULT_COMMIT_INTERVAL_MS / 1000,
        max_batch_readings: int = DEFAULT_COMMIT_MAX_READINGS,
        client_id: str = "estatewatch-ingest",
        shard: tuple[int, int] | None = None,
        stall_s: float = DEFAULT_STALL_S,
        max_future_ms: int = MAX_FUTURE_MS,
        partitions: PartitionSessions | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.state = state
        self.telemetry = telemetry
        self.catalog = catalog
        self.root = root
        self.registry = GatewayRegistry(state)
        # (index, count): this process takes only the estates that hash to it, see shards.py
        self.shard = shard if shard and shard[1] > 1 else None
        self.stats = IngestStats()
        # the writer's health: not stuck in one batch (or its retries) for longer than this
        self.stall_s = stall_s
        self._closing = threading.Event()  # disconnecting on purpose
        # stopping while the store fails: the recorder gave up, and the decoder stops with it
        self._abandoned = threading.Event()
        # scaled out (issue 16): sessions per held partition instead of the lanes' own
        self.partitions = partitions
        self.lanes = Lanes(
            endpoint, self.registry, self.stats, self._closing, root, client_id, self.shard,
            queue_size, queue_bytes, partitions,
        )  # fmt: skip
        self.fanout = Fanout()
        # decoder → recorder: one telemetry batch ahead, events overtake it. SQLite's half of
        # a commit runs without the interpreter lock, so the decoder's work overlaps it.
        handoff: Handoff[list[Received]] = Handoff(1)
        self.recorder = Recorder(
            state, telemetry, self.stats, handoff, self.fanout, self._closing, self._abandoned
        )
        self.recorder.ack_after_listeners = partitions is not None
        self.decoder = Decoder(
            self.lanes, self.registry, catalog, telemetry, handoff, self.recorder.stopping,
            self._abandoned, root, max_future_ms, linger_s, max_batch_readings,
            self.recorder.waiting_for_work,
        )  # fmt: skip
        self.telemetry_lane: Lane = self.lanes.telemetry
        self.events_lane: Lane = self.lanes.events
        self.client: mqtt.Client = self.lanes.telemetry.client  # publishes (tests) go out on it

    # --- what the service, /healthz and /metrics read ----------------------------------------
    @property
    def commit_seconds(self) -> Histogram | None:
        return self.recorder.commit_seconds

    @commit_seconds.setter
    def commit_seconds(self, histogram: Histogram | None) -> None:
        self.recorder.commit_seconds = histogram

    @property
    def connected(self) -> bool:
        return self.lanes.connected

    @property
    def subscribed_estates(self) -> list[str]:
        return self.lanes.subscribed_estates

    def subscribe_new_estates(self) -> None:
        self.lanes.subscribe_new_estates()

    def open_partition(self, partition: int) -> None:
        """Start taking the partition's messages (its sessions; see ``Lanes``)."""
        self.lanes.open_partition(partition)

    def close_partition(self, partition: int, wait: bool = False) -> None:
        """Stop taking them at once; what of them is not committed is dropped, unacked
        (``wait``: until the sessions' network threads have ended)."""
        self.lanes.close_partition(partition, wait)

    def partition_sessions(self) -> dict[int, dict[str, object]]:
        return self.lanes.partition_sessions()

    @property
    def queue_depth(self) -> int:
        return sum(lane.queue.qsize() for lane in self.lanes.all)

    @property
    def queue_capacity(self) -> int:
        return sum(lane.queue.maxsize for lane in self.lanes.all)

    @property
    def queued_bytes(self) -> int:
        return sum(lane.budget.used for lane in self.lanes.all)

    @property
    def queued_bytes_capacity(self) -> int:
        return sum(lane.budget.capacity for lane in self.lanes.all)

    def add_listener(self, listener: CommitListener) -> None:
        """Register before start(); a listener that raises is logged and does not stop ingest."""
        self.fanout.add(listener)

    @property
    def _listeners(self) -> list[CommitListener]:
        """The listeners in the order they are called (the list itself: bench/alarm_truth.py
        puts one first)."""
        return self.fanout.listeners

    def run_task(self, task: RecorderTask[T]) -> Future[T]:
        """Run ``task`` on the writer thread between commits (SQLite has one writer, and
        rollups and purges are writes); cancelled once stopping."""
        return self.recorder.queue_task(task)

    def run_maintenance(self, fn: Callable[[], T]) -> Future[T]:
        """A one-off callable on the writer thread (``CallTask``)."""
        return self.recorder.queue_task(CallTask(fn))

    # --- life --------------------------------------------------------------------------------
    def start(self, wait_s: float = 10.0) -> None:
        with self.stats.lock:
            self.stats.samples.append((time.monotonic(), 0, 0))
        self.fanout.thread.start()
        self.recorder.thread.start()
        self.decoder.thread.start()
        self.lanes.connect(wait_s)

    def stop(self, timeout_s: float = 30.0, stuck_s: float = 5.0) -> bool:
        """Commit and acknowledge what was received, then disconnect. Messages arriving
        meanwhile stay unacknowledged, so the broker delivers them again next time. A store
        that fails meanwhile is not waited for (the writer gives up at its first failure),
        nor a writer that has finished no batch for ``stuck_s`` (one waiting on a locked
        database): what is not committed stays unacknowledged. False if the writer was left
        in its commit (then the caller must not close the stores under it)."""
        self._closing.set()
        self.lanes.close_sessions()
        self.recorder.stop_taking_tasks()
        writer = self.recorder.thread
        if writer.ident is None:  # a start that failed early never ran it
            self.recorder.cancel_tasks()
            self.lanes.disconnect()
            return True
        deadline = time.monotonic() + timeout_s
        while writer.is_alive() and time.monotonic() < deadline:
            writer.join(0.05)
            if time.monotonic() - self.recorder.progress > stuck_s:
                break
        stopped = not writer.is_alive()
        if not stopped:
            log.warning(
                "ingest: the writer is stuck in a commit; stopping without it (nothing of "
                "that commit is acknowledged: the broker delivers it again)"
            )
            self._abandoned.set()  # the decoder stops too
            self.fanout.end()  # and the listeners, after what they have
        for thread in (self.decoder.thread, self.fanout.thread):
            thread.join(max(0.0, deadline - time.monotonic()))
        self.recorder.cancel_tasks()
        self.lanes.disconnect()
        return stopped

    def writer_health(self) -> dict[str, Any]:
        """Whether the writer is committing: not "ok" while it retries a failing store, or has
        been in one batch (or the queue has not moved) for longer than ``stall_s``, or its
        thread is gone, or its store process is down (``store_down``, restarted within a
        second by its supervisor)."""
        now = time.monotonic()
        st = self.stats
        # the writer in one batch, or the decoder in one message (the lanes then fill)
        busy_s = now - min(self.recorder.progress, self.decoder.progress)
        # the telemetry writer's own process (StoreProcess), when it has one
        probe = getattr(self.telemetry, "health", None)
        store: dict[str, Any] | None = probe() if callable(probe) else None
        if not (self.recorder.thread.is_alive() and self.decoder.thread.is_alive()):
            state = "stopped"
        elif store is not None and not store["alive"]:
            state = "store_down"  # its supervisor is starting another
        elif st.failing_since is not None:
            state = "retrying"
        elif busy_s > self.stall_s:
            state = "stalled"
        else:
            state = "ok"
        extra = {"store_process": store} if store is not None else {}
        return extra | {
            "ok": state == "ok",
            "state": state,
            "busy_s": round(busy_s, 1),
            "stall_after_s": self.stall_s,
            "retrying_s": round(now - st.failing_since, 1) if st.failing_since else 0.0,
            "last_error": st.last_error,
            "last_commit_age_s": round(now_ms() / 1000 - st.last_commit_ms / 1000, 1)
            if st.last_commit_ms
            else None,
            "commit_failures": st.commit_failures,
            "poison_messages": st.poison_messages,
        }
