"""Bench 8: the service against the peer a user would build instead (a plain Node-RED flow).

Same broker (a bench-owned Mosquitto on a free port), same pre-built messages (bench 1's
generator, byte-identical bytes given to both), drain mode: each consumer's persistent session
is made first, the whole load queued in it, then the consumer is let go. Runs interleave
(service, flow, service, flow, …, ``pairs`` pairs a shape) at 500 and at 1 reading a message.

- service: the service's ingest path as bench 1 runs it (decode, validate, dedup, commit,
  default rules, acknowledge after commit), in a process of its own so its peak RSS is its own
  and it can be killed.
- flow: Node-RED 4 + ``node-red-node-sqlite`` with the flow in ``bench/peers/nodered/``
  (one ``INSERT … SELECT FROM json_each`` per message), installed on first use into
  ``~/.cache/estatewatch/nodered-<version>``.

Rate: readings stored ÷ time from the consumer's connection (the line its process prints at
CONNACK: the queued messages flow from then on) to the last row visible in its own database
(``max(rowid)`` polled every 10 ms, the same cheap probe for both). Recorded beside it: the rate
between the first rows visible and the last, counting only what was committed in between.
Peak RSS: ``VmHWM`` of the service's process (with its writer process) and of node. Loss: each
is killed with SIGKILL once 25 % of the values are stored, restarted on the same session and
database, and drained; readings lost = readings published − distinct readings stored.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import cpu_seconds, queueing_broker, report, verdict
from bench.ingest_throughput import ESTATE, GW, estate_readings, payloads, preload
from estatewatch.broker import ManagedMosquitto, free_port
from ingest.state import StateStore

NODE_RED = "4.1.15"
NODE_SQLITE = "1.1.1"
PEER = Path(__file__).parent / "peers" / "nodered"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "estatewatch"
TARGET_RATIO = 1.3
KILL_AT = 0.25
FLOW_INIT = next(
    n["topic"] for n in json.loads((PEER / "flows.json").read_text()) if n["id"] == "init"
)


def nodered_dir() -> Path:
    return CACHE / f"nodered-{NODE_RED}"


def nodered_installed() -> bool:
    d = nodered_dir()
    return (d / "node_modules" / "node-red" / "red.js").exists() and (
        d / "node_modules" / "node-red-node-sqlite" / "package.json"
    ).exists()


def install_nodered(timeout_s: float = 1200) -> Path:
    """Node-RED and the SQLite node, pinned, from the npm registry into a cache folder of
    their own (once; about 7 minutes on a loaded 2-core machine, sqlite3 builds natively)."""
    d = nodered_dir()
    if nodered_installed():
        return d
    if not shutil.which("npm") or not shutil.which("node"):
        raise RuntimeError("bench 8 needs Node.js and npm: apt-get install nodejs npm")
    d.mkdir(parents=True, exist_ok=True)
    (d / "package.json").write_text('{"name": "estatewatch-nodered-peer", "private": true}\n')
    print(f"  installing Node-RED {NODE_RED} into {d} (once)", flush=True)
    subprocess.run(
        [
            "npm",
            "install",
            "--no-audit",
            "--no-fund",
            "--save-exact",
            f"node-red@{NODE_RED}",
            f"node-red-node-sqlite@{NODE_SQLITE}",
        ],
        cwd=d,
        check=True,
        timeout=timeout_s,
        stdout=subprocess.DEVNULL,
    )
    if not nodered_installed():
        raise RuntimeError(f"npm finished but Node-RED is not in {d}")
    return d


def peak_rss_mb(pid: int) -> float:
    """``VmHWM`` of a process and of its children (the service's writer process), summed."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(OSError):  # ended meanwhile
                total += peak_rss_mb(int(child))
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return total + int(line.split()[1]) / 1024
    return total


def max_rowid(db: Path) -> int:
    """Values stored so far (rows are never deleted in either table): O(log n)."""
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            row = conn.execute("SELECT max(rowid) FROM readings").fetchone()
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0  # the table is not made yet
    return int(row[0] or 0)


def distinct_stored(kind: str, db: Path) -> tuple[int, int]:
    """(distinct values, distinct readings) in a consumer's database, after it has stopped."""
    conn = sqlite3.connect(db)
    try:
        if kind == "flow":
            values = conn.execute(
                "SELECT count(*) FROM (SELECT DISTINCT dev, ts, metric FROM readings)"
            ).fetchone()[0]
            readings = conn.execute(
                "SELECT count(*) FROM (SELECT DISTINCT dev, ts FROM readings)"
            ).fetchone()[0]
        else:
            values = conn.execute(
                "SELECT count(*) FROM (SELECT DISTINCT ts, series FROM readings)"
            ).fetchone()[0]
            readings = conn.execute(
                "SELECT count(*) FROM (SELECT DISTINCT r.ts, s.device FROM readings r "
                "JOIN series s ON s.id = r.series)"
            ).fetchone()[0]
    finally:
        conn.close()
    return int(values), int(readings)


# -- the service's side: a process of its own running bench 1's consumer --------------------


def service_child(url: str, folder: Path, client_id: str, session_only: bool) -> None:
    """The service's ingest with default rules, as bench 1 wires it; runs until killed."""
    from bench.ingest_throughput import service_ingest, with_default_rules
    from estatewatch.cli import tune_interpreter
    from estatewatch.settings import load_settings
    from ingest.store_process import StoreProcess, telemetry_store
    from protocol.endpoint import parse_mqtt_url

    tune_interpreter()
    state = StateStore.open(f"sqlite:///{folder / 'state.db'}")
    # as the service: the writer in a process of its own by default
    # (ESTATEWATCH_INGEST_STORE_PROCESS=false: the one-process shape, for comparison)
    writer = telemetry_store(folder / "telemetry.db", None, load_settings().ingest_store_process)
    ingest = service_ingest(parse_mqtt_url(url), state, writer, client_id)
    with_default_rules()(ingest)
    if isinstance(writer, StoreProcess):
        writer.ready()  # started with the service, before its connection (the rate's start)
    ingest.start()
    if session_only:
        ingest.stop()
        writer.close()
        state.close()
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    ingest.stop()
    writer.close()
    state.close()


class Consumer:
    """One consumer (service or flow) with its own database, session and process."""

    def __init__(self, kind: str, broker: ManagedMosquitto, folder: Path) -> None:
        self.kind = kind
        self.broker = broker
        self.folder = folder
        folder.mkdir(parents=True)
        self.client_id = f"bench8-{kind}-{time.monotonic_ns()}"
        ep = broker.endpoint
        self.url = f"mqtt://{ep.username}:{ep.password}@{ep.host}:{ep.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.connected_at = 0.0  # when its process said it is connected: messages flow now
        self.cpu_at_connect = 0.0  # its CPU seconds then (start-up excluded from the figure)
        self.initialised = threading.Event()  # the flow's pragmas are set
        if kind == "service":
            self.db = folder / "telemetry.db"
            state = StateStore.open(f"sqlite:///{folder / 'state.db'}")
            state.add_estate(ESTATE, "大型测试小区")
            state.add_gateway(ESTATE, GW)
            state.close()
            self._service(session_only=True).wait(120)
        else:
            self.db = folder / "readings.db"
            # The flow makes its table from a once-inject 0.1 s after start, racing the
            # queued messages (an INSERT into no table drops an acknowledged message): made
            # here first, with the flow's own statement, so the race is not what is measured.
            conn = sqlite3.connect(self.db)
            conn.executescript(FLOW_INIT)
            conn.close()
            self._write_flow()
            self._session()

    def _service(self, session_only: bool) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "bench.nodered_peer", "--service-child", self.url]
        cmd += [str(self.folder), self.client_id] + (["--session-only"] if session_only else [])
        return subprocess.Popen(
            cmd,
            cwd=Path(__file__).parent.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _write_flow(self) -> None:
        ep = self.broker.endpoint
        flows = json.loads((PEER / "flows.json").read_text())
        for node in flows:
            if node["type"] == "mqtt-broker":
                node.update(broker=ep.host, port=str(ep.port), clientid=self.client_id)
            elif node["type"] == "sqlitedb":
                node["db"] = str(self.db)
        user = self.folder / "user"
        user.mkdir()
        (user / "flows.json").write_text(json.dumps(flows))
        creds = {"broker1": {"user": ep.username, "password": ep.password}}
        (user / "flows_cred.json").write_text(json.dumps(creds))

    def _session(self) -> None:
        """Subscribe once with the flow's client id and filter, so the broker queues for it."""
        ep = self.broker.endpoint
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False)
        c.username_pw_set(ep.username, ep.password)
        done = threading.Event()
        c.on_subscribe = lambda *a: done.set()
        c.on_connect = lambda cl, *a: cl.subscribe("estates/+/gw/+/telemetry", 1)
        c.connect(ep.host, ep.port)
        c.loop_start()
        if not done.wait(10):
            raise RuntimeError("could not make the flow's session")
        c.disconnect()
        c.loop_stop()

    def start(self) -> None:
        self.connected_at = 0.0
        self.initialised.clear()
        if self.kind == "flow":
            # The flow sets its pragmas (WAL, synchronous=NORMAL: per connection) from a
            # once-inject 0.1 s after start; with a backlog waiting, the backlog's inserts get
            # queued ahead of it and run with SQLite's default synchronous=FULL, an fsync a
            # message. The flow is measured as meant: the broker (its queue kept in its
            # persistence) is down until the flow says its pragmas are set.
            self.broker.stop()
        if self.kind == "service":
            cmd = [sys.executable, "-m", "bench.nodered_peer", "--service-child", self.url]
            cmd += [str(self.folder), self.client_id]
            marker = b"ready"  # printed once both lanes have their CONNACK
        else:
            user = self.folder / "user"
            red = nodered_dir() / "node_modules" / "node-red" / "red.js"
            settings = PEER / "settings.js"
            cmd = ["node", str(red), "-u", str(user), "-p", str(free_port()), "-s", str(settings)]
            cmd.append(str(user / "flows.json"))
            marker = b"Connected to broker"  # the mqtt-broker node's log line at CONNACK
        # The service's child imports bench/ from the checkout; node finds nothing by cwd.
        cwd = Path(__file__).parent.parent if self.kind == "service" else self.folder
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._read_log, args=(self.proc, marker), daemon=True).start()
        if self.kind == "flow":
            ok = self.initialised.wait(120)
            self.broker.start()
            if not ok:
                raise RuntimeError(f"the flow did not set its pragmas in 120 s (see {self.folder})")

    def _read_log(self, proc: subprocess.Popen[bytes], marker: bytes) -> None:
        """Its output to a log file, and the moment it says it is connected."""
        assert proc.stdout is not None
        with (self.folder / f"{self.kind}.log").open("ab") as log:
            for line in proc.stdout:
                if marker in line and not self.connected_at:
                    self.connected_at = time.perf_counter()
                    with contextlib.suppress(OSError):
                        self.cpu_at_connect = cpu_seconds(proc.pid)
                if b"[debug:ready]" in line:  # the flow's init and pragma check are done
                    self.initialised.set()
                log.write(line)
                log.flush()

    def wait_connected(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.connected_at:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {self.kind} did not connect in {timeout_s:.0f} s")
            time.sleep(0.01)

    def peak_rss_mb(self) -> float:
        assert self.proc is not None
        return peak_rss_mb(self.proc.pid)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._forget()

    def _forget(self) -> None:
        """End this run's persistent sessions: left subscribed, every later run's load would
        also be queued for them, and the broker's work would grow run after run."""
        ep = self.broker.endpoint
        ids = [self.client_id, f"{self.client_id}-events"]  # the service's two lanes
        for cid in ids if self.kind == "service" else ids[:1]:
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, clean_session=True)
            c.username_pw_set(ep.username, ep.password)
            connected = threading.Event()
            c.on_connect = lambda *_, done=connected: done.set()
            c.connect(ep.host, ep.port)
            c.loop_start()
            connected.wait(10)
            c.disconnect()
            c.loop_stop()


def watch(
    c: Consumer,
    until_values: int,
    timeout_s: float,
    settle_s: float | None = None,
) -> tuple[float, float, int, int]:
    """Poll c's database until ``until_values`` values are stored (or, with ``settle_s``, no
    growth for that long once rows flow): (first rows seen, last growth seen, values then,
    values at the end)."""
    first = last = 0.0
    seen = at_first = 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        n = max_rowid(c.db)
        now = time.perf_counter()
        if n > seen:
            if seen == 0:
                first, at_first = now, n
            seen, last = n, now
        if seen >= until_values:
            break
        if settle_s is not None and seen and now - last > settle_s:
            break
        if not seen and time.monotonic() > deadline - timeout_s + 120:
            raise RuntimeError(f"the {c.kind} stored nothing in 120 s (see {c.folder})")
        assert c.proc is not None
        if c.proc.poll() is not None:
            raise RuntimeError(f"the {c.kind} exited with {c.proc.returncode} (see {c.folder})")
        time.sleep(0.01)
    else:
        raise RuntimeError(f"the {c.kind} stored {seen:,} of {until_values:,} values in time")
    return first, last, at_first, seen


def drain(
    kind: str, broker: ManagedMosquitto, folder: Path, messages: list[bytes], values: int
) -> dict[str, float]:
    c = Consumer(kind, broker, folder)
    preload(broker, messages)
    c.start()
    try:
        first, last, at_first, _ = watch(c, values, 900)
        rss = c.peak_rss_mb()
        assert c.proc is not None
        cpu = cpu_seconds(c.proc.pid) - c.cpu_at_connect
    finally:
        c.stop()
    stored, readings = distinct_stored(kind, c.db)
    if not c.connected_at:
        raise RuntimeError(f"the {kind} never said it was connected (see {c.folder})")
    # Second view: only what was committed between the first rows seen and the last (the
    # service's first commit, up to 10,000 readings, and the flow's first message are not).
    share = (stored - at_first) / stored if at_first < stored else 1.0
    return {
        "readings_per_s": readings / max(last - c.connected_at, 0.01),
        "seconds": max(last - c.connected_at, 0.01),
        "readings_per_s_rows_window": readings * share / max(last - first, 0.01),
        # the ramp: from the connection to the first rows visible
        "first_rows_s": max(first - c.connected_at, 0.0),
        "readings": readings,
        "values": stored,
        "peak_rss_mb": rss,
        # CPU from its connection to the last rows (its writer process's too): the load-proof
        # view of the cost a reading on a machine shared with other work
        "cpu_s_per_100k_readings": cpu * 100_000 / max(readings, 1),
    }


def kill_test(
    kind: str,
    broker: ManagedMosquitto,
    folder: Path,
    messages: list[bytes],
    values: int,
    readings: int,
) -> dict[str, Any]:
    """SIGKILL at 25 % of the values stored, restart on the same session and database, drain."""
    c = Consumer(kind, broker, folder)
    preload(broker, messages)
    c.start()
    try:
        *_, at_kill = watch(c, int(values * KILL_AT), 900)
        c.kill()
        c.start()
        # Either may take a while to start again on a loaded machine; what it stores counts
        # from its connection on.
        c.wait_connected(120)
        # The flow may have lost some for good: done once nothing more arrives for 5 s.
        watch(c, values, 900, settle_s=5.0)
    finally:
        c.stop()
    _, got = distinct_stored(kind, c.db)
    return {
        "stored_at_kill_pct": round(100 * at_kill / values, 1),
        "readings_stored": got,
        "readings_lost": readings - got,
        "lost_pct": round(100 * (readings - got) / readings, 1),
    }


def run(
    total: int = 200_000,
    one_reading_messages: int = 10_000,
    pairs: int = 3,
    sizes: tuple[int, ...] = (500, 1),
    kill: bool = True,
) -> dict[str, Any]:
    install_nodered()
    pool = estate_readings(total)
    figures: dict[str, Any] = {"nodered": NODE_RED, "node_red_node_sqlite": NODE_SQLITE}
    with queueing_broker() as (broker, folder):
        for size in sizes:
            sample = pool if size > 1 else pool[:one_reading_messages]
            msgs = payloads(sample, size)  # built once: byte-identical for both
            values = sum(len(r.metrics) for r in sample)
            runs: dict[str, list[dict[str, float]]] = {"service": [], "flow": []}
            ratios = []
            for i in range(pairs):
                for kind in ("service", "flow"):
                    r = drain(kind, broker, folder / f"r{size}-{i}-{kind}", msgs, values)
                    runs[kind].append(r)
                s, f = runs["service"][-1], runs["flow"][-1]
                ratios.append(s["readings_per_s"] / f["readings_per_s"])
                print(
                    f"  {size:>3} a message, pair {i + 1}: service {s['readings_per_s']:>9,.0f}"
                    f" readings/s ({s['peak_rss_mb']:.0f} MB) | flow "
                    f"{f['readings_per_s']:>9,.0f} readings/s ({f['peak_rss_mb']:.0f} MB)"
                    f" | ratio {ratios[-1]:.2f} | first rows after {s['first_rows_s']:.2f} /"
                    f" {f['first_rows_s']:.2f} s | CPU s/100k readings"
                    f" {s['cpu_s_per_100k_readings']:.2f} / {f['cpu_s_per_100k_readings']:.2f}",
                    flush=True,
                )
            shape: dict[str, Any] = {
                "messages": len(msgs),
                "readings": len(sample),
                "values": values,
                "service_readings_per_s": round(
                    statistics.median(r["readings_per_s"] for r in runs["service"])
                ),
                "flow_readings_per_s": round(
                    statistics.median(r["readings_per_s"] for r in runs["flow"])
                ),
                "ratio": round(statistics.median(ratios), 3),
                "ratios": [round(x, 3) for x in ratios],
                "service_peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs["service"])),
                "flow_peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs["flow"])),
                "service_readings_per_s_rows_window": round(
                    statistics.median(r["readings_per_s_rows_window"] for r in runs["service"])
                ),
                "flow_readings_per_s_rows_window": round(
                    statistics.median(r["readings_per_s_rows_window"] for r in runs["flow"])
                ),
                "service_cpu_s_per_100k_readings": [
                    round(r["cpu_s_per_100k_readings"], 2) for r in runs["service"]
                ],
                "flow_cpu_s_per_100k_readings": [
                    round(r["cpu_s_per_100k_readings"], 2) for r in runs["flow"]
                ],
                "service_seconds": [round(r["seconds"], 2) for r in runs["service"]],
                "service_first_rows_s": [round(r["first_rows_s"], 3) for r in runs["service"]],
                "flow_first_rows_s": [round(r["first_rows_s"], 3) for r in runs["flow"]],
                "flow_seconds": [round(r["seconds"], 2) for r in runs["flow"]],
                "service_readings_stored": [r["readings"] for r in runs["service"]],
                "flow_readings_stored": [r["readings"] for r in runs["flow"]],
            }
            if kill:
                for kind in ("service", "flow"):
                    k = kill_test(
                        kind, broker, folder / f"k{size}-{kind}", msgs, values, len(sample)
                    )
                    shape[f"{kind}_kill"] = k
                    print(
                        f"  {size:>3} a message, kill -9 at {k['stored_at_kill_pct']} % "
                        f"stored: {kind} lost {k['readings_lost']:,} of {len(sample):,} "
                        f"readings ({k['lost_pct']} %)",
                        flush=True,
                    )
            figures[f"r{size}"] = shape
    return figures


def targets(f: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows = []
    for size in (500, 1):
        s = f.get(f"r{size}")
        if not s:
            continue
        rows.append(
            (
                f"8: service ÷ Node-RED flow, {size} a message (drain)",
                f"{s['ratio']:.2f} ({s['service_readings_per_s']:,} ÷ "
                f"{s['flow_readings_per_s']:,} readings/s)",
                f"≥ {TARGET_RATIO}",
                verdict(s["ratio"] >= TARGET_RATIO),
            )
        )
        rows.append(
            (
                f"8: peak RSS, {size} a message (service / node)",
                f"{s['service_peak_rss_mb']} / {s['flow_peak_rss_mb']} MB",
                "reported",
                "—",
            )
        )
        if "service_kill" in s:
            sk, fk = s["service_kill"], s["flow_kill"]
            rows.append(
                (
                    f"8: readings lost by kill -9 at 25 %, {size} a message (service / flow)",
                    f"{sk['readings_lost']:,} / {fk['readings_lost']:,} ({fk['lost_pct']} %)",
                    "0 / reported",
                    verdict(sk["readings_lost"] == 0),
                )
            )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--readings", type=int, default=200_000, help="at 500 a message")
    p.add_argument("--one-reading-messages", type=int, default=10_000)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--no-kill", action="store_true")
    p.add_argument("--sizes", default="500,1", help="readings a message, comma-separated")
    p.add_argument("--full", action="store_true", help="400,000 readings, 40,000 at 1, 5 pairs")
    p.add_argument("--install", action="store_true", help="only install Node-RED (once)")
    p.add_argument("--service-child", nargs=3, metavar=("URL", "FOLDER", "CLIENT_ID"))
    p.add_argument("--session-only", action="store_true")
    args = p.parse_args()
    if args.service_child:
        url, folder, cid = args.service_child
        service_child(url, Path(folder), cid, args.session_only)
        return
    if args.install:
        print(install_nodered())
        return
    if args.full:
        args.readings, args.one_reading_messages, args.pairs = 400_000, 40_000, 5
    print("bench 8: the service ÷ a Node-RED flow (drain, interleaved)", flush=True)
    sizes = tuple(int(x) for x in args.sizes.split(","))
    f = run(args.readings, args.one_reading_messages, args.pairs, sizes, kill=not args.no_kill)
    report("nodered-peer", f, vars(args), targets(f))


if __name__ == "__main__":
    main()
