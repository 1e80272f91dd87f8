"""The recorder's typed tasks: the service's rollup merge and retention run on the writer
thread between commits, against the real SQLite telemetry file; once stopping, a task is
cancelled rather than left waiting."""

from __future__ import annotations

import time
from concurrent.futures import CancelledError
from pathlib import Path

import pytest

from ingest.consumer import ApplyRollupTask, Ingest, PurgeTask, Received
from ingest.state import StateStore
from ingest.telemetry import TelemetryReader, TelemetryWriter
from protocol.catalog import default_catalog
from protocol.endpoint import MqttEndpoint
from protocol.messages import Reading, encode_telemetry


def test_rollup_and_retention_run_as_tasks_on_the_writer_thread(tmp_path: Path) -> None:
    state = StateStore.open(f"sqlite:///{tmp_path / 's.db'}")
    state.add_estate("e1", "e1")
    state.add_gateway("e1", "gw-01")
    writer = TelemetryWriter(tmp_path / "t.db")
    # port 1: nothing listens; messages are put on the lane as the network thread would
    ingest = Ingest(MqttEndpoint("127.0.0.1", 1), state, writer, default_catalog(), linger_s=0)
    ingest.start(wait_s=0)
    try:
        now = int(time.time() * 1000)
        lane = ingest.telemetry_lane
        for seq in (1, 2, 3):
            readings = [Reading("h-1", "fire_hydrant", now - 1000 * seq, {"pressure_mpa": 0.3})]
            payload = encode_telemetry("gw-01", seq, now, readings)
            lane.budget.used += len(payload)
            lane.queue.put(
                Received("estates/e1/gw/gw-01/telemetry", payload, now, seq, 1, 0, lane,
                         len(payload))
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while ingest.stats.readings < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ingest.stats.readings == 3
        plan = writer.prepare_rollup()
        assert plan is not None
        assert ingest.run_task(ApplyRollupTask(plan)).result(timeout=10) == 3
        assert ingest.run_task(ApplyRollupTask(plan)).result(timeout=10) == 0  # folded once
        # everything was committed before this cutoff, and all of it is rolled up
        deleted = ingest.run_task(PurgeTask(now + 120_000, 0)).result(timeout=10)
        assert deleted == 3
        assert TelemetryReader(tmp_path / "t.db").count_readings("e1") == 0
    finally:
        ingest.stop()
    with pytest.raises(CancelledError):
        ingest.run_task(PurgeTask(0, 0)).result(timeout=1)
    writer.close()
    state.close()
