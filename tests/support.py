"""Helpers the integration-style tests share: waiting for a condition, finding brokers,
running `estatewatch run` as a process of its own, a simulated estate whose charging socket
overheats behind a real gateway (the socket command tests, API and browser)."""

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

import httpx
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from api.context import ApiContext
from api.live import read_frames
from estatewatch.broker import GatewayCredentials, free_port
from gateway.adapter import Collected
from gateway.publisher import GatewayPublisher
from gateway.runtime import Gateway
from ingest.state import StateStore
from ingest.telemetry import TelemetryReader
from protocol.catalog import Catalog, default_catalog
from protocol.clock import now_ms
from protocol.endpoint import MqttEndpoint
from protocol.messages import Reading
from simulators.adapter import SimulatorAdapter
from simulators.clock import SimClock
from simulators.estate import SimulatedEstate, small_estate
from simulators.scenario import Fault, Scenario

HOT_SOCKET = "b1-ebc-s01"  # the first charger: the overheat scenario's fault takes it
_MIN = 60_000


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


def connect_result(creds: dict[str, Any], password: str) -> str:
    """What the broker answers a new connection with these credentials."""
    got: list[str] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2)
    c.username_pw_set(creds["username"], password)
    c.on_connect = lambda _c, _u, _f, rc, _p: got.append(str(rc))
    c.connect(creds["host"], creds["port"])
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        c.loop(0.1)
    c.disconnect()
    return got[0] if got else "no answer"


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


class SeqsSeen:
    """A commit listener keeping the seq of every message handed to it (thread-safe): what the
    rules were fed, to check each message reached them once."""

    def __init__(self) -> None:
        self._seqs: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, deliveries: Any) -> None:
        with self._lock:
            self._seqs.extend(d.seq for d in deliveries if d.seq is not None)

    def __contains__(self, seq: int) -> bool:
        with self._lock:
            return seq in self._seqs

    def __len__(self) -> int:
        with self._lock:
            return len(self._seqs)

    def sorted(self) -> list[int]:
        with self._lock:
            return sorted(self._seqs)


def managed_run_env(data: Path, api_port: int, token: str, **more: str) -> dict[str, str]:
    """The environment of an `estatewatch run` over ``data`` with the broker it starts itself
    (its managed Mosquitto on a free port): what a user's plain `estatewatch run` does."""
    env = {
        **os.environ,
        "ESTATEWATCH_DATA_DIR": str(data),
        "ESTATEWATCH_BROKER_PORT": str(free_port()),
        "ESTATEWATCH_API_PORT": str(api_port),
        "ESTATEWATCH_ADMIN_TOKEN": token,
        "ESTATEWATCH_LOG_LEVEL": "WARNING",
        **more,
    }
    env.pop("ESTATEWATCH_MQTT_URL", None)
    return env


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


def overheating_estate(
    catalog: Catalog,
    estate: str,
    creds: dict[str, Any],
    tmp: Path,
    hot_since_min: float = 10.0,
) -> Gateway:
    """A simulated estate behind a real gateway (simulator adapter → gateway → MQTT with the
    estate's gateway credentials) whose first charger, ``HOT_SOCKET``, overheats from
    ``hot_since_min`` minutes ago (35 → 65 °C in 7 min). The simulated clock starts 5 minutes
    ago and catches up at ×3 (a socket reports every 10 s), meeting the wall clock after
    2.5 minutes and going on in real time from there: its data is never ahead of the wall
    clock. The gateway carries out power commands on the simulated sockets and acknowledges
    them. With the default 10 the first poll stays under 60 °C and the alarm comes some
    seconds later; with 12 or more the first poll's readings (minutes old, not late) are
    already past it."""
    now = now_ms()
    spec = small_estate(estate, estate, "呼和浩特市", -11.0, buildings=2, gateway="gw-01")
    fault = Fault("charger_overheat", 0, 30 * _MIN, kind="ebike_charger")
    scenario = Scenario("socket-overheat", "", None, None, faults=(fault,))
    start = now - int(hot_since_min * _MIN)
    sim = SimulatedEstate(spec, catalog, seed=3, start_ms=start, scenario=scenario)
    publisher = GatewayPublisher(
        estate,
        "gw-01",
        MqttEndpoint(creds["host"], creds["port"], creds["username"], creds["password"]),
        tmp / estate,
    )
    behind = 5 * _MIN
    clock = SimClock(now - behind, speed=3.0, fast_until_ms=now + behind // 2)
    gateway = Gateway(publisher, [SimulatorAdapter(sim, clock)])
    assert gateway.start(wait_connected_s=10), "the gateway could not log in"
    return gateway


def report_unowned_socket(gateway: Gateway, dev: str, temp_c: float | None = None) -> None:
    """The gateway reports a socket no adapter of it owns (at ``temp_c`` if given): a command
    to it is refused by the gateway itself (ok=false, "no device 'dev' behind this gateway")."""
    metrics: dict[str, Any] = {"power_w": 0.0}
    if temp_c is not None:
        metrics["temp_c"] = temp_c
    reading = Reading(dev, "ebike_charger", now_ms(), metrics)
    for d in gateway.publisher.publish_telemetry([reading]):
        d.wait_for_publish(10)


def socket_powered(gateway: Gateway, dev: str) -> bool:
    """Whether the simulated socket behind this gateway has power now (what its next readings
    will show, without waiting for them)."""
    adapter = gateway.adapters[0]
    assert isinstance(adapter, SimulatorAdapter)
    g = adapter.estate.groups["ebike_charger"]
    return bool(g.state["powered"][g.ids.index(dev)])


class LiveStream:
    """An estate's live stream (SSE) read as the dashboard reads it, in a thread: every event
    as (name, data)."""

    def __init__(self, client: httpx.Client, estate: str) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(client, estate), daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the live stream did not open"

    def _run(self, client: httpx.Client, estate: str) -> None:
        with client.stream("GET", f"/api/v1/estates/{estate}/stream", timeout=None) as r:
            self._ready.set()
            for frame in read_frames(r.iter_lines()):
                if self._stop.is_set():
                    return
                self.events.append(frame)

    def named(self, name: str) -> list[dict[str, Any]]:
        return [data for event, data in self.events if event == name]

    def close(self) -> None:
        self._stop.set()
