"""A store that falls behind: the queue stays within its bound, the broker holds the rest, and
nothing is lost."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from estatewatch.broker import ManagedMosquitto
from ingest.consumer import Ingest
from ingest.state import StateStore
from ingest.telemetry import TelemetryWriter, WriteResult
from protocol.catalog import default_catalog

pytestmark = pytest.mark.integration


class SlowWriter(TelemetryWriter):
    """A disk that cannot keep up: every commit takes 30 ms more."""

    def write(self, *args: Any, **kwargs: Any) -> WriteResult:  # the writer's own arguments
        time.sleep(0.03)
        return super().write(*args, **kwargs)


# Each message below is ~250 bytes of payload, plus the per-message overhead counted.
BYTE_BOUND = 3000


@pytest.mark.parametrize("bound", ["messages", "bytes"])
def test_slow_store_bounded_queue_nothing_lost(
    mosquitto: ManagedMosquitto, tmp_path: Path, bound: str
) -> None:
    """Either bound holds: 5 messages, or BYTE_BOUND bytes of undecoded payloads."""
    state = StateStore.open(f"sqlite:///{tmp_path / 's.db'}")
    state.add_estate("bp", "背压")
    state.add_gateway("bp", "gw-01")
    writer = SlowWriter(tmp_path / "t.db")
    ingest = Ingest(
        mosquitto.endpoint,
        state,
        writer,
        default_catalog(),
        queue_size=5 if bound == "messages" else 10_000,
        queue_bytes=BYTE_BOUND if bound == "bytes" else 8 << 20,
        linger_s=0.0,
        max_batch_readings=10,
    )
    depths: list[int] = []
    stop = threading.Event()
    limit = 5 if bound == "messages" else BYTE_BOUND

    def watch() -> None:
        while not stop.is_set():
            # the telemetry lane's bytes: the events lane is idle here
            depths.append(
                ingest.queue_depth if bound == "messages" else ingest.telemetry_lane.budget.used
            )
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    ingest.start()
    watcher.start()
    creds = mosquitto.issue_gateway_credentials("bp", "gw-01", "estates")
    assert creds is not None
    pub = mqtt.Client(CallbackAPIVersion.VERSION2)
    pub.username_pw_set(creds.username, creds.password)
    pub.max_inflight_messages_set(50)
    pub.connect(creds.host, creds.port)
    pub.loop_start()
    now = int(time.time() * 1000)
    try:
        infos = [
            pub.publish(
                "estates/bp/gw/gw-01/telemetry",
                orjson.dumps(
                    {
                        "v": 1,
                        "gw": "gw-01",
                        "seq": seq,
                        "sent": now,
                        "readings": [
                            {
                                "dev": "p-1",
                                "kind": "water_pressure",
                                "ts": now + seq,
                                "m": {"pressure_mpa": 0.3},
                            }
                        ],
                    }
                ),
                1,
            )
            for seq in range(1, 301)
        ]
        for info in infos:
            info.wait_for_publish(30)  # the broker took all 300 while the store lagged
        deadline = time.monotonic() + 60
        while ingest.stats.readings < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ingest.stats.readings == 300
        assert max(depths) <= limit
        assert max(depths) > limit * 0.8  # it did fill: the store really was the bottleneck
        assert writer.conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 300
    finally:
        stop.set()
        watcher.join()
        pub.disconnect()
        pub.loop_stop()
        ingest.stop()
        state.close()


def test_maintenance_left_at_stop_is_cancelled_not_waited_for(
    mosquitto: ManagedMosquitto, tmp_path: Path
) -> None:
    """A rollup handed to the writer just as the service stops must not hang its caller (the
    scheduler thread) for the task's whole timeout."""
    from concurrent.futures import CancelledError

    state = StateStore.open(f"sqlite:///{tmp_path / 's.db'}")
    writer = TelemetryWriter(tmp_path / "t.db")
    ingest = Ingest(mosquitto.endpoint, state, writer, default_catalog())
    ingest.start()
    assert ingest.run_maintenance(lambda: 7).result(timeout=10) == 7
    gate = threading.Event()
    blocked = ingest.run_maintenance(gate.wait)  # holds the writer thread
    deadline = time.monotonic() + 10
    while not blocked.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    queued = ingest.run_maintenance(lambda: 8)  # behind it: run or cancelled, never left
    stopper = threading.Thread(target=ingest.stop)
    stopper.start()
    time.sleep(0.2)
    gate.set()
    stopper.join(30)
    assert blocked.result(timeout=1) is True
    assert queued.done()  # the writer ran it on its way out, or stop() cancelled it
    with pytest.raises(CancelledError):  # after the stop: at once
        ingest.run_maintenance(lambda: 9).result(timeout=1)
    writer.close()
    state.close()


def test_a_message_larger_than_the_byte_bound_passes_an_empty_lane() -> None:
    """Bounded, yet never stuck: an oversized message waits only for the lane to empty."""
    from ingest.consumer import ByteBudget

    budget = ByteBudget(1000)
    never = threading.Event()
    assert budget.acquire(400, never)
    passed = threading.Event()

    def big() -> None:
        assert budget.acquire(5000, never)
        passed.set()

    t = threading.Thread(target=big)
    t.start()
    assert not passed.wait(0.2)  # 400 + 5000 > 1000: it waits
    budget.release(400)
    assert passed.wait(5)  # alone in the lane, it goes
    t.join()
    assert budget.used == 5000


def test_a_wait_for_room_gives_up_when_told() -> None:
    """stop() must not hang on a network thread waiting for a writer that is gone: the wait
    ends, nothing is taken, and the message stays unacknowledged with the broker."""
    from ingest.consumer import ByteBudget

    budget = ByteBudget(1000)
    closing = threading.Event()
    assert budget.acquire(900, closing)
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(budget.acquire(500, closing)))
    t.start()
    t.join(0.3)
    assert t.is_alive()  # full: it waits
    closing.set()
    t.join(2)
    assert result == [False]
    assert budget.used == 900
