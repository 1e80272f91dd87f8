"""Helpers the integration-style tests share: waiting for a condition, finding brokers,
running `estatewatch run` as a process of its own."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, Protocol

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from api.context import ApiContext
from estatewatch.broker import GatewayCredentials, free_port
from gateway.adapter import Collected
from ingest.state import StateStore
from ingest.telemetry import TelemetryReader
from protocol.catalog import default_catalog
from protocol.endpoint import MqttEndpoint


class Wait(Protocol):
    def __call__(
        self, check: Callable[[], Any], timeout: float = ..., what: str = ..., every: float = ...
    ) -> Any: ...


def waiter(timeout: float = 20.0, every: float = 0.1) -> Wait:
    """A ``wait_for(check, timeout, what)`` with these defaults: it returns the first truthy
    value ``check()`` gives, polling every ``every`` seconds, and fails the test on timeout."""

    def wait_for(
        check: Callable[[], Any],
        timeout: float = timeout,
        what: str = "condition",
        every: float = every,
    ) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(every)
        raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")

    return wait_for


def mosquittos_over(conf: Path) -> list[int]:
    """Pids of live processes started with this config (the process list, not our records)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and str(conf).encode() in args:
            pids.append(int(entry.name))
    return pids


def seed_state(data: Path, estate: str, name: str, gateway: str) -> None:
    """A new data dir whose state database knows one estate and its gateway."""
    data.mkdir()
    state = StateStore.open(f"sqlite:///{data / 'estatewatch.db'}")
    state.add_estate(estate, name)
    state.add_gateway(estate, gateway)
    state.close()


def run_env(data: Path, ep: MqttEndpoint, api_port: int, token: str, **more: str) -> dict[str, str]:
    """The environment of an `estatewatch run` over ``data`` on the broker at ``ep``."""
    return {
        **os.environ,
        "ESTATEWATCH_DATA_DIR": str(data),
        "ESTATEWATCH_MQTT_URL": f"mqtt://{ep.username}:{ep.password}@{ep.host}:{ep.port}",
        "ESTATEWATCH_API_PORT": str(api_port),
        "ESTATEWATCH_ADMIN_TOKEN": token,
        "ESTATEWATCH_LOG_LEVEL": "WARNING",
        **more,
    }


def start_run(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`estatewatch run` as a process of its own (to be killed), its output dropped."""
    return subprocess.Popen(
        [sys.executable, "-m", "estatewatch.cli", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_run(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, and SIGKILL if it has not ended within ``timeout`` seconds."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


class Polls(Protocol):
    def poll(self) -> Collected: ...


def poll_until(
    adapter: Polls, check: Callable[[Collected], bool], timeout: float, every: float
) -> tuple[Collected, bool]:
    """What an adapter's polls gave until ``check`` held of it (True) or ``timeout`` passed."""
    got = Collected()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        more = adapter.poll()
        got.readings += more.readings
        got.events += more.events
        if check(got):
            return got, True
        time.sleep(every)
    return got, False


@contextlib.contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[HTTPServer]:
    """A real HTTP server on a free port of 127.0.0.1, serving in a thread of its own."""
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def api_context(state: StateStore, data: Path, token: str, **parts: Any) -> ApiContext:
    """What the API serves from: ``state``, the telemetry file ``data/t.db``, the bundled
    catalog and the admin ``token``; ``parts`` the optional ones (users, alerts, live, …)."""
    return ApiContext(
        state=state,
        telemetry=TelemetryReader(data / "t.db"),
        catalog=default_catalog(),
        admin_token=token,
        **parts,
    )


def publish_temperature(
    creds: GatewayCredentials, estate: str, temp_c: float, now: int, timeout: float
) -> None:
    """Gateway ``gw-01`` of ``estate`` sends one reading of its weather station ``ws-01`` (a
    telemetry message with seq 1, QoS 1) with the credentials the broker issued it."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2)
    c.username_pw_set(creds.username, creds.password)
    c.connect(creds.host, creds.port)
    c.loop_start()
    reading = {"dev": "ws-01", "kind": "weather_station", "ts": now, "m": {"temp_c": temp_c}}
    payload = {"v": 1, "gw": "gw-01", "seq": 1, "sent": now, "readings": [reading]}
    topic = f"estates/{estate}/gw/gw-01/telemetry"
    c.publish(topic, orjson.dumps(payload), 1).wait_for_publish(timeout)
    c.disconnect()
    c.loop_stop()


def settings_file(folder: Path, api_port: int, token: str, more: str = "") -> Path:
    """``folder/estatewatch.toml`` for ``estatewatch run --config``: data in ``folder/data``,
    the API on ``api_port``, its own broker on a free port, commits every 50 ms, then ``more``
    (TOML)."""
    path = folder / "estatewatch.toml"
    head = (
        f'data_dir = "{folder / "data"}"\n'
        f"api_port = {api_port}\n"
        f"broker_port = {free_port()}\n"
        f'admin_token = "{token}"\n'
        "commit_interval_ms = 50\n"
    )
    path.write_text(head + more, encoding="utf-8")
    return path
