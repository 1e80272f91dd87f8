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
from ingest.store_process import StoreDown, StoreProcess
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
