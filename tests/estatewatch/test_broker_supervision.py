"""The managed Mosquitto is supervised: restarted when it dies (``/healthz`` degraded
meanwhile), never run twice over one folder, a broker left running by a killed service stopped
cleanly (its queued messages kept) before a new one starts on the same port."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from estatewatch.broker import BrokerFolderBusy, ManagedMosquitto, free_port
from estatewatch.service import Service
from tests.support import mosquittos_over, waiter

pytestmark = pytest.mark.integration


wait_for = waiter(every=0.05)


def test_a_broker_that_dies_is_restarted_and_healthz_says_so_meanwhile(service: Service) -> None:
    broker = service.broker
    assert isinstance(broker, ManagedMosquitto)
    api = httpx.Client(base_url=service.url, timeout=5)
    assert api.get("/healthz").status_code == 200
    port, first_pid = broker.port, broker.pid
    seen: list[tuple[int, str]] = []
    broker.kill()  # SIGKILL, as a crash would

    def back() -> bool:
        r = api.get("/healthz")
        seen.append((r.status_code, r.json()["broker"]["state"]))
        return r.status_code == 200

    wait_for(back, 30, "the broker back and the service reconnected")
    assert (503, "down") in seen  # degraded while it was down, not "ok"
    body = api.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["broker"]["restarts"] == 1
    assert broker.port == port and broker.pid not in (None, first_pid)
    assert (
        "estatewatch_broker_restarts 1.0"
        in api.get("/metrics", headers={"Authorization": "Bearer test-admin-token-0123456789"}).text
    )


def test_a_second_service_cannot_run_a_broker_over_the_same_folder(tmp_path: Path) -> None:
    first = ManagedMosquitto(tmp_path / "broker", free_port())
    first.start()
    second = ManagedMosquitto(tmp_path / "broker", free_port())
    try:
        with pytest.raises(BrokerFolderBusy, match=str(os.getpid())):
            second.start()
        assert mosquittos_over(first.conf_path) == [first.pid]
    finally:
        second.stop()
        first.stop()
    assert mosquittos_over(first.conf_path) == []


def test_the_port_is_kept_across_restarts_when_the_setting_is_taken(tmp_path: Path) -> None:
    """1883 is often taken by a system Mosquitto: the free port chosen instead is kept, so
    gateways configured with it find the broker again."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        wanted = taken.getsockname()[1]
        broker = ManagedMosquitto(tmp_path / "broker", wanted, port_fallback=True)
        broker.start()
        chosen = broker.port
        broker.stop()
        assert chosen != wanted
        broker = ManagedMosquitto(tmp_path / "broker", wanted, port_fallback=True)
        broker.start()
        assert broker.port == chosen
        broker.stop()
    # the setting's port is free now, but gateways know the other one
    broker = ManagedMosquitto(tmp_path / "broker", wanted, port_fallback=True)
    broker.start()
    try:
        assert broker.port == chosen
    finally:
        broker.stop()


ORPHAN_MAKER = """
import sys, time
from pathlib import Path
from estatewatch.broker import ManagedMosquitto
b = ManagedMosquitto(Path(sys.argv[1]), int(sys.argv[2]), port_fallback=True)
b.start()
print(b.port, b.service_port, b.pid, flush=True)
time.sleep(3600)
"""


def _client(host: str, port: int, user: str, password: str, cid: str) -> mqtt.Client:
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=cid, clean_session=False, protocol=mqtt.MQTTv311
    )
    c.username_pw_set(user, password)
    c.max_inflight_messages_set(100)
    return c


@pytest.mark.parametrize("pidfile", ["kept", "lost"])
def test_a_broker_left_running_by_a_killed_service_is_stopped_cleanly_and_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, pidfile: str
) -> None:
    """Lost pidfile: a broker left by a version that kept none is found in the process
    table."""
    folder = tmp_path / "broker"
    wanted = free_port()
    broker = ManagedMosquitto(folder, wanted, port_fallback=True)
    creds = broker.issue_gateway_credentials("orphan-e", "gw-01", "estates")
    ep = broker.endpoint
    owner = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_MAKER, str(folder), str(wanted)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        port, service_port, orphan_pid = map(int, owner.stdout.readline().split())
        # the service's persistent session exists, as ingest's would
        topic = "estates/orphan-e/gw/gw-01/telemetry"
        sub = _client("127.0.0.1", service_port, ep.username or "", ep.password or "", "svc")
        done = threading.Event()
        sub.on_subscribe = lambda *a: done.set()
        sub.on_connect = lambda c, *a: c.subscribe(topic, 1)
        sub.connect("127.0.0.1", service_port)
        sub.loop_start()
        assert done.wait(10)
        sub.disconnect()
        sub.loop_stop()
        os.kill(owner.pid, signal.SIGKILL)  # the service dies; its broker does not
        owner.wait(10)
        assert mosquittos_over(broker.conf_path) == [orphan_pid]

        # gateways keep publishing to the orphan meanwhile: it acknowledges and queues
        gw = _client("127.0.0.1", port, creds.username, creds.password, "gw")
        gw.connect("127.0.0.1", port)
        gw.loop_start()
        wait_for(gw.is_connected, 10, "the gateway connected to the orphan")
        for info in [gw.publish(topic, str(i).encode(), 1) for i in range(200)]:
            info.wait_for_publish(10)
            assert info.is_published()
        gw.disconnect()
        gw.loop_stop()

        if pidfile == "lost":
            (folder / "mosquitto.pid").unlink()
        with caplog.at_level(logging.WARNING, logger="estatewatch.broker"):
            broker.start()
        assert any(
            r.levelno == logging.WARNING and str(orphan_pid) in r.getMessage()
            for r in caplog.records
        )
        assert mosquittos_over(broker.conf_path) == [broker.pid]
        assert (broker.port, broker.service_port) == (port, service_port)
        got: list[bytes] = []
        sub = _client("127.0.0.1", broker.service_port, ep.username or "", ep.password or "", "svc")
        sub.on_message = lambda _c, _u, m: got.append(m.payload)
        sub.connect("127.0.0.1", broker.service_port)
        sub.loop_start()
        wait_for(lambda: len(got) >= 200, 20, "the messages the orphan queued")
        sub.disconnect()
        sub.loop_stop()
        assert sorted(int(p) for p in got) == list(range(200))
    finally:
        if owner.poll() is None:
            owner.kill()
        broker.stop()
        left = mosquittos_over(broker.conf_path)
        for pid in left:  # a failure above must not leave a broker behind
            os.kill(pid, signal.SIGKILL)
    assert left == []


def test_healthz_says_an_external_broker_is_gone(
    mosquitto: ManagedMosquitto, tmp_path: Path
) -> None:
    """Issue 13: /healthz said "ok" with the broker gone. An external broker is not the
    service's to restart, but its absence shows."""
    from tests.conftest import service_settings

    ep = mosquitto.endpoint
    url = f"mqtt://{ep.username}:{ep.password}@{ep.host}:{ep.port}"
    service = Service(service_settings(tmp_path, mqtt_url=url))
    service.start()
    try:
        api = httpx.Client(base_url=service.url, timeout=5)
        wait_for(lambda: api.get("/healthz").status_code == 200, 20, "connected")
        mosquitto.stop()
        r = wait_for(
            lambda: (r := api.get("/healthz")).status_code == 503 and r, 20, "503 without broker"
        )
        assert r.json()["status"] == "degraded"
        assert r.json()["broker"]["state"] == "down"
        assert r.json()["broker"]["managed"] is None
        mosquitto.start()
        wait_for(lambda: api.get("/healthz").status_code == 200, 40, "connected again", every=0.2)
    finally:
        service.stop()
