"""The telemetry writer's own process (issue 15): killed with SIGKILL under load, and the service
killed with SIGKILL (its process alone) under load. Every reading the broker took is stored
exactly once after recovery, the rules see every message once, /healthz says when the writer's
process is down, and no writer process outlives its service."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from estatewatch.broker import free_port
from estatewatch.service import Service
from ingest.model import EstateBatch
from ingest.store_process import StoreDown, StoreProcess
from protocol.messages import Reading
from tests.integration.test_durability import (
    ESTATE,
    GW,
    PER_MESSAGE,
    Publisher,
    expected_values,
    registered_publisher,
    stored,
)
from tests.support import SeqsSeen, managed_run_env, mosquittos_over, waiter

pytestmark = pytest.mark.integration

wait_for = waiter(every=0.05)


def store_processes(telemetry: Path) -> list[int]:
    """Pids of live writer processes of this telemetry file: the process list, by the path
    on their command line (the service's own has none)."""
    return mosquittos_over(telemetry)


def assert_each_once(telemetry: Path, messages: int) -> None:
    total = messages * PER_MESSAGE
    wait_for(lambda: stored(telemetry)[0] >= total, 60, "every reading", every=0.2)
    time.sleep(0.5)  # anything stored twice would show up now
    rows, distinct, values = stored(telemetry)
    assert (rows, distinct) == (total, total)
    assert values == expected_values(range(1, messages + 1))
    conn = sqlite3.connect(f"file:{telemetry}?mode=ro", uri=True)
    try:
        assert conn.execute("SELECT count(*) FROM message_seqs").fetchone()[0] == messages
        assert conn.execute("SELECT max_seq, missing FROM gateway_seqs").fetchone() == (
            messages,
            "[]",
        )
    finally:
        conn.close()


def test_writer_process_killed_under_load_loses_and_repeats_nothing(service: Service) -> None:
    """Kill -9 of the writer's process three times while 400 messages arrive: the commit in
    flight fails (nothing of it acknowledged), another process takes over, each reading is
    stored once and the listeners see each message once, also one whose commit the dead
    process finished but could not report."""
    writer = service.telemetry_writer
    assert isinstance(writer, StoreProcess)  # the default: `estatewatch run` splits
    telemetry = writer.path
    seen = SeqsSeen()
    service.ingest.add_listener(seen)
    pub = registered_publisher(service, "写入进程测试小区")
    kills = 0
    try:
        for phase in range(4):
            pub.publish(range(phase * 100 + 1, (phase + 1) * 100 + 1))
            if phase == 3:
                break
            floor = phase * 100 * PER_MESSAGE
            wait_for(lambda f=floor: stored(telemetry)[0] > f, 30, "the writer to store")
            pid = writer.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            kills += 1
            wait_for(lambda p=pid: writer.alive() and writer.pid != p, 20, "a new writer")
        assert_each_once(telemetry, 400)
        wait_for(lambda: len(seen) >= 400, 20, "the listeners")
        assert seen.sorted() == list(range(1, 401))
        assert kills == 3 and writer.restarts >= 3
        assert service.ingest.stats.duplicates == 0
        assert store_processes(telemetry) == [writer.pid]
    finally:
        pub.close()


def test_healthz_says_when_the_writer_process_is_down(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While no writer process can be started /healthz is 503 with ``store_down``; once one
    can, the supervisor starts it and /healthz is 200 again, with the restart counted."""
    writer = service.telemetry_writer
    assert isinstance(writer, StoreProcess)
    start = StoreProcess._start

    def cannot_start(self: StoreProcess) -> None:
        raise StoreDown("refused by the test")

    client = httpx.Client(base_url=service.url, timeout=5)
    assert client.get("/healthz").status_code == 200
    monkeypatch.setattr(StoreProcess, "_start", cannot_start)
    pid = writer.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: client.get("/healthz").status_code == 503, 10, "healthz to say degraded")
    body = client.get("/healthz").json()
    assert body["status"] == "degraded"
    assert body["writer"]["state"] == "store_down"
    assert body["writer"]["store_process"]["alive"] is False
    assert body["writer"]["store_process"]["last_exit"] == -signal.SIGKILL
    monkeypatch.setattr(StoreProcess, "_start", start)
    wait_for(lambda: client.get("/healthz").status_code == 200, 20, "the writer back")
    assert client.get("/healthz").json()["writer"]["store_process"]["restarts"] >= 1


def test_service_killed_under_load_leaves_no_writer_and_loses_nothing(tmp_path: Path) -> None:
    """`estatewatch run` with its own Mosquitto, SIGKILL to its process alone (not the group)
    while 300 messages arrive: its writer process ends by itself, the next start's writer takes
    over, and every reading is stored exactly once."""
    data = tmp_path / "data"
    token = "store-process-admin-token-0123456789"
    api_port = free_port()
    env = managed_run_env(data, api_port, token)
    env.pop("ESTATEWATCH_INGEST_STORE_PROCESS", None)
    telemetry = data / "telemetry.db"
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{api_port}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "estatewatch.cli", "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def up() -> bool:
        try:
            return api.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    service = start()
    pub: Publisher | None = None
    try:
        wait_for(up, 60, "the service", every=0.2)
        assert api.post("/api/v1/estates", json={"id": ESTATE, "name": "整机断电小区"}).is_success
        creds = api.post(f"/api/v1/estates/{ESTATE}/gateways", json={"id": GW}).json()["mqtt"]
        assert len(store_processes(telemetry)) == 1
        # Publisher takes its credentials from a broker; these are the service's broker's
        broker = SimpleNamespace(issue_gateway_credentials=lambda *_: SimpleNamespace(**creds))
        pub = Publisher(broker)  # type: ignore[arg-type]
        pub.publish(range(1, 151))
        wait_for(lambda: stored(telemetry)[0] > 20 * PER_MESSAGE, 30, "the service to store")
        service.send_signal(signal.SIGKILL)  # the process alone: its group lives on
        service.wait(10)
        wait_for(lambda: not store_processes(telemetry), 5, "the orphaned writer to end")
        pub.publish(range(151, 301))  # the broker keeps them for the service's session
        service = start()
        wait_for(up, 60, "the service again", every=0.2)
        assert_each_once(telemetry, 300)
        assert len(store_processes(telemetry)) == 1
    finally:
        if pub is not None:
            pub.close()
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(15)
        except subprocess.TimeoutExpired:
            service.kill()
    assert not store_processes(telemetry)  # a stopped service leaves no writer behind


def test_one_process_setting_keeps_the_writer_a_thread(tmp_path: Path) -> None:
    """``ESTATEWATCH_INGEST_STORE_PROCESS=false``: the writer is a thread of the service."""
    from tests.conftest import service_settings

    svc = Service(service_settings(tmp_path, ingest_store_process=False))
    svc.start()
    try:
        assert not isinstance(svc.telemetry_writer, StoreProcess)
        assert "store_process" not in svc.ingest.writer_health()
        assert not store_processes(tmp_path / "data" / "telemetry.db")
    finally:
        svc.stop()


def _hydrants(seq: int) -> EstateBatch:
    ts = int(time.time() * 1000)
    readings = [
        Reading(f"h-{i}", "fire_hydrant", ts, {"pressure_mpa": seq + i / 100}) for i in range(3)
    ]
    return EstateBatch("e1", "gw-01", readings, seq=seq)


def test_two_writes_in_flight_both_fail_when_the_child_dies_and_are_stored_once_after(
    tmp_path: Path,
) -> None:
    """Two commits handed to the store process at once, the first waiting for SQLite's lock
    (a reader holds it), then kill -9: both answers are StoreDown; the first says it was
    judged before its COMMIT (its outcome is unknown), the second was never reached. Sent
    again to the next child, each is stored once, and a repeat of the first is a duplicate."""
    path = tmp_path / "t.db"
    store = StoreProcess(path)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        store.ready()
        blocker.execute("BEGIN IMMEDIATE")  # the child's write waits for this lock
        first = store.submit_write([_hydrants(1)], None)
        second = store.submit_write([_hydrants(2)], None)
        wait_for(lambda: first.judged is not None, 10, "the first write judged")
        assert store.in_flight() == 2 and not first.answer.done()
        pid = store.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        for pending in (first, second):
            with pytest.raises(StoreDown):
                pending.answer.result(10)
        assert first.judged == set() and second.judged is None
        blocker.execute("ROLLBACK")
        again = store.submit_write([_hydrants(1), _hydrants(2), _hydrants(1)], None)
        result = again.answer.result(30)
        assert (result.readings, result.duplicates) == (6, {2})
        assert store.restarts == 1 and store.in_flight() == 0
    finally:
        blocker.close()
        store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 6
        assert conn.execute("SELECT count(*) FROM message_seqs").fetchone()[0] == 2
    finally:
        conn.close()


def test_writer_process_killed_with_two_commits_in_flight_loses_and_repeats_nothing(
    service: Service,
) -> None:
    """The service's recorder keeps two commits with the store process; kill -9 while both are
    in flight (the first held on SQLite's lock): nothing of either is acknowledged, both are
    stored again by the next process, each reading once, and the rules see each message
    once."""
    writer = service.telemetry_writer
    assert isinstance(writer, StoreProcess)
    telemetry = writer.path
    seen = SeqsSeen()
    service.ingest.add_listener(seen)
    pub = registered_publisher(service, "两个提交在途小区")
    blocker = sqlite3.connect(telemetry, isolation_level=None)
    try:
        pub.publish(range(1, 51))
        wait_for(lambda: len(seen) >= 50, 30, "the first messages through")
        blocker.execute("BEGIN IMMEDIATE")  # the next commit waits for this lock
        pub.publish(range(51, 351))  # 30,000 readings: more than one commit
        wait_for(lambda: writer.in_flight() >= 2, 30, "two commits in flight")
        acknowledged = len(seen)
        pid = writer.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        blocker.execute("ROLLBACK")
        assert acknowledged == 50  # nothing of the held commits reached the listeners
        wait_for(lambda: writer.alive() and writer.pid != pid, 20, "a new writer")
        assert_each_once(telemetry, 350)
        wait_for(lambda: len(seen) >= 350, 20, "the listeners")
        assert seen.sorted() == list(range(1, 351))
        assert service.ingest.stats.duplicates == 0
        assert service.ingest.stats.commit_failures >= 1
    finally:
        blocker.close()
        pub.close()
