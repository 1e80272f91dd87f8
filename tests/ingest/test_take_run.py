"""The decoder takes one-reading messages off a lane a run at a time (ingest.decoder.take_run):
in order, bounded in messages and bytes, and a network thread waiting for room is let go."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, cast

from ingest.decoder import RUN_BYTES, RUN_MESSAGES, take_run
from ingest.lanes import Received

TOPIC = "estates/e1/gw/gw-01/telemetry"


def _item(n: int, weight: int) -> Received:
    return Received(TOPIC, b"{}", 0, n, 1, 1, cast(Any, None), weight)


def test_runs_come_in_order_bounded_in_messages_and_bytes() -> None:
    lane: queue.Queue[Received] = queue.Queue(maxsize=1000)
    small = [_item(i, 200) for i in range(100)]
    large = [_item(100 + i, RUN_BYTES - 1000) for i in range(3)]
    huge = _item(200, 4 * RUN_BYTES)
    for item in [*small, *large, huge]:
        lane.put(item)
    runs = []
    while run := take_run(lane):
        assert sum(r.weight for r in run[:-1]) < RUN_BYTES  # the last one may go over
        runs.append([r.mid for r in run])
    assert [len(r) for r in runs] == [RUN_MESSAGES, 37, 2, 1]
    assert [m for r in runs for m in r] == [*range(100), 100, 101, 102, 200]
    assert lane.qsize() == 0 and take_run(lane) == []


def test_a_network_thread_waiting_for_room_goes_on() -> None:
    lane: queue.Queue[Received] = queue.Queue(maxsize=3)
    for i in range(3):
        lane.put(_item(i, 200))
    put_at: list[float] = []

    def network_thread() -> None:
        lane.put(_item(3, 200), timeout=5)  # full: waits for room
        put_at.append(time.monotonic())

    t = threading.Thread(target=network_thread)
    t.start()
    time.sleep(0.2)
    assert not put_at  # still waiting
    taken_at = time.monotonic()
    assert [r.mid for r in take_run(lane)] == [0, 1, 2]
    t.join(5)
    assert put_at and put_at[0] - taken_at < 1.0  # woken, not timed out
    assert [r.mid for r in take_run(lane)] == [3]
