"""Bench 1: ingest throughput against two references measured in the same run.

The 5,000-device estate's readings (from the simulator, so kinds and metrics are realistic)
are packed R to a message and queued in a local Mosquitto for a persistent session first, so
the load generator does not compete for the 2 cores while the drain is timed. Then:

- ingest: the service's consumer drains the backlog: decode, validate, dedup, commit to SQLite,
  (rules, when the alerts engine is wired), acknowledge;
- reference (a): a bare paho-mqtt subscriber that only counts messages, same broker, same stream;
- reference (b): raw ``sqlite3.executemany`` of the same rows into the same table shape, with
  the same pragmas and the same rows per commit.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from alerts.engine import AlertEngine
from bench.common import queueing_broker, report, target
from estatewatch.broker import ManagedMosquitto
from estatewatch.cli import tune_interpreter
from estatewatch.settings import Settings
from ingest.consumer import Ingest, IngestStats
from ingest.state import StateStore
from ingest.store_process import StoreProcess, telemetry_store
from ingest.telemetry import TelemetryStore, TelemetryWriter, connect
from protocol.catalog import default_catalog
from protocol.endpoint import MqttEndpoint
from protocol.messages import Reading, encode_telemetry
from simulators.estate import SimulatedEstate
from simulators.spec import load_spec

ESTATE, GW = "bench-large", "gw-01"
TOPIC = f"estates/{ESTATE}/gw/{GW}/telemetry"


ONE_PROCESS = False  # --one-process: the writer a thread, as before issue 15


def estate_readings(total: int, seed: int = 7) -> list[Reading]:
    """``total`` readings of the large estate, in time order, from the simulator."""
    spec = load_spec("large")
    start = 1_764_288_000_000
    sim = SimulatedEstate(spec, default_catalog(), seed=seed, start_ms=start)
    out: list[Reading] = []
    t = start
    while len(out) < total:
        t += 10_000
        out.extend(sim.due(t))
    return out[:total]


def payloads(readings: list[Reading], per_message: int) -> list[bytes]:
    now = int(time.time() * 1000)
    return [
        encode_telemetry(GW, i // per_message + 1, now, readings[i : i + per_message])
        for i in range(0, len(readings), per_message)
    ]


def mqtt_client(
    broker: ManagedMosquitto, client_id: str, user: str | None = None, password: str | None = None
) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    ep = broker.endpoint
    c.username_pw_set(user or ep.username, password or ep.password)
    c.max_inflight_messages_set(1000)
    return c


def make_session(broker: ManagedMosquitto, client_id: str) -> None:
    """Connect once and subscribe, so the broker queues for this session while it is away."""
    c = mqtt_client(broker, client_id)
    done = threading.Event()
    c.on_subscribe = lambda *a: done.set()
    c.on_connect = lambda cl, *a: cl.subscribe(f"estates/{ESTATE}/gw/+/telemetry", 1)
    c.connect(broker.endpoint.host, broker.endpoint.port)
    c.loop_start()
    done.wait(10)
    c.disconnect()
    c.loop_stop()


def preload(broker: ManagedMosquitto, messages: list[bytes]) -> None:
    creds = broker.issue_gateway_credentials(ESTATE, GW, "estates")
    assert creds is not None
    c = mqtt_client(broker, f"bench-gw-{time.monotonic_ns()}", creds.username, creds.password)
    c.connect(broker.host, broker.port)
    c.loop_start()
    infos = [c.publish(TOPIC, m, 1) for m in messages]
    for info in infos:
        info.wait_for_publish(120)
    c.disconnect()
    c.loop_stop()


def bare_subscriber(broker: ManagedMosquitto, messages: list[bytes]) -> float:
    """Reference (a): messages per second a subscriber that does nothing drains."""
    cid = f"bench-bare-{time.monotonic_ns()}"
    make_session(broker, cid)
    preload(broker, messages)
    n = len(messages)
    count = 0
    first = last = 0.0
    done = threading.Event()
    c = mqtt_client(broker, cid)

    def on_message(_c: Any, _u: Any, _m: Any) -> None:
        nonlocal count, first, last
        if count == 0:
            first = time.perf_counter()
        count += 1
        if count == n:
            last = time.perf_counter()
            done.set()

    c.on_message = on_message
    c.connect(broker.endpoint.host, broker.endpoint.port)
    c.loop_start()
    done.wait(600)
    c.disconnect()
    c.loop_stop()
    return (n - 1) / max(last - first, 1e-9)


def ingest_run(
    broker: ManagedMosquitto,
    messages: list[bytes],
    folder: Path,
    wire: Callable[[Ingest], None] | None = None,
) -> tuple[float, float, IngestStats, dict[str, Any]]:
    """The service's consumer: (readings/s, messages/s, stats, CPU) from first receipt to last
    commit; CPU: cores busy (its process and its writer process), and CPU seconds per 100,000
    readings of each (service, writer): where the work is, whatever the machine's load."""
    state = StateStore.open(f"sqlite:///{folder / 'state.db'}")
    state.add_estate(ESTATE, "大型测试小区")
    state.add_gateway(ESTATE, GW)
    # as the service: the writer in a process of its own unless --one-process
    writer = telemetry_store(folder / "telemetry.db", None, not ONE_PROCESS)
    pids = [os.getpid()] + ([writer.pid] if isinstance(writer, StoreProcess) and writer.pid else [])
    cid = f"bench-ingest-{time.monotonic_ns()}"

    def consumer() -> Ingest:
        made = service_ingest(broker.endpoint, state, writer, cid)
        if wire:
            wire(made)
        return made

    ingest = consumer()
    ingest.start()  # creates the session, so the broker queues what comes next
    ingest.stop()
    ingest = consumer()
    preload(broker, messages)
    first: list[float] = []
    cpu_first: list[list[float]] = []
    threads_first: dict[str, float] = {}
    orig = ingest.lanes.on_message

    def timed(*a: Any) -> None:
        if not first:
            first.append(time.perf_counter())
            cpu_first.append(cpu_seconds(pids))
            threads_first.update(thread_cpu_seconds())
        orig(*a)

    ingest.client.on_message = timed
    if isinstance(writer, StoreProcess):
        writer.ready()  # as in a running service: its writer process is up
    ingest.start()
    n = len(messages)
    deadline = time.monotonic() + 900
    while ingest.stats.committed_messages < n and time.monotonic() < deadline:
        time.sleep(0.01)
    end = time.perf_counter()
    cpu = [b - a for a, b in zip(cpu_first[0], cpu_seconds(pids), strict=True)]
    threads_cpu = thread_cpu_seconds()
    stats = ingest.stats
    ingest.stop()
    writer.close()
    state.close()
    span = max(end - first[0], 1e-9)
    per_100k = [round(c * 100_000 / max(stats.readings, 1), 2) for c in cpu]
    use = {"cores": round(sum(cpu) / span, 2), "cpu_s_per_100k": per_100k}
    # the service's process split by thread (decoder, writer, listeners, paho): where its
    # share goes
    use["thread_cpu_s_per_100k"] = {
        name: round((c - threads_first.get(name, 0.0)) * 100_000 / max(stats.readings, 1), 3)
        for name, c in sorted(threads_cpu.items())
        if c - threads_first.get(name, 0.0) > 0
    }
    return stats.readings / span, stats.committed_messages / span, stats, use


def cpu_seconds(pids: list[int]) -> list[float]:
    """User + system CPU seconds of each live process, all its threads (/proc/PID/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = []
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        out.append((int(fields[11]) + int(fields[12])) / tick)  # utime, stime (14 and 15)
    return out


def thread_cpu_seconds() -> dict[str, float]:
    """User + system CPU seconds of each live thread of this process, by thread name (paho's
    network threads, whose names carry the client id, by their lane)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for t in threading.enumerate():
        if t.native_id is None:
            continue
        try:
            stat = Path(f"/proc/self/task/{t.native_id}/stat").read_text()
        except OSError:  # ended meanwhile
            continue
        fields = stat.rpartition(")")[2].split()
        name = t.name
        if name.startswith("paho-mqtt-client-"):
            name = "paho-events" if name.endswith("-events") else "paho-telemetry"
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def raw_executemany(readings: list[Reading], rows_per_commit: int, folder: Path) -> float:
    """Reference (b): rows/s of plain executemany into the same readings table and pragmas."""
    path = folder / "raw.db"
    TelemetryWriter(path).close()  # the same schema
    conn: sqlite3.Connection = connect(path)
    series: dict[tuple[str, str], int] = {}
    rows = []
    for r in readings:
        for m, v in r.metrics.items():
            sid = series.setdefault((r.dev, m), len(series) + 1)
            rows.append(
                (
                    r.ts,
                    sid,
                    None if isinstance(v, str) else float(v),
                    v if isinstance(v, str) else None,
                )
            )
    start = time.perf_counter()
    for i in range(0, len(rows), rows_per_commit):
        with conn:
            conn.executemany(
                "INSERT INTO readings VALUES (?, ?, ?, ?)", rows[i : i + rows_per_commit]
            )
    elapsed = time.perf_counter() - start
    conn.close()
    return len(rows) / elapsed


def service_ingest(
    endpoint: MqttEndpoint, state: StateStore, writer: TelemetryStore, client_id: str
) -> Ingest:
    """Ingest with the service's queue and batch settings (bench 8's peer runs the same)."""
    settings = Settings()
    return Ingest(
        endpoint,
        state,
        writer,
        default_catalog(),
        client_id=client_id,
        queue_size=settings.ingest_queue_size,
        queue_bytes=settings.ingest_queue_mb << 20,
        linger_s=0.05,
        max_batch_readings=settings.commit_max_readings,
    )


def with_default_rules() -> Callable[[Ingest], None]:
    """Attach the alert engine with the shipped default rules, as the service does."""

    def wire(ingest: Ingest) -> None:
        engine = AlertEngine(
            ingest.state.engine, default_catalog(), clock=lambda: time.time_ns() // 1_000_000
        )
        ingest.add_listener(engine.on_committed)

    return wire


def run(
    total: int = 200_000,
    sizes: tuple[int, ...] = (1, 100, 500),
    one_reading_messages: int = 20_000,
    rules: bool = True,
) -> dict[str, Any]:
    tune_interpreter()  # as the service's process is
    readings = estate_readings(total)
    values_per_reading = sum(len(r.metrics) for r in readings) / len(readings)
    figures: dict[str, Any] = {"values_per_reading": round(values_per_reading, 2)}
    with queueing_broker() as (broker, folder):
        for size in sizes:
            sample = readings if size > 1 else readings[:one_reading_messages]
            msgs = payloads(sample, size)
            run_dir = folder / f"r{size}"
            run_dir.mkdir()
            bare = bare_subscriber(broker, msgs)
            wire = with_default_rules() if rules else None
            rps, mps, stats, cpu = ingest_run(broker, msgs, run_dir, wire)
            rows_per_commit = max(
                1, int(stats.readings / max(stats.commits, 1) * values_per_reading)
            )
            raw_rows = raw_executemany(sample, rows_per_commit, run_dir)
            raw_rps = raw_rows / values_per_reading
            figures[f"r{size}"] = {
                "messages": len(msgs),
                "readings": stats.readings,
                "ingest_readings_per_s": round(rps),
                "ingest_messages_per_s": round(mps),
                "bare_subscriber_messages_per_s": round(bare),
                "raw_executemany_readings_per_s": round(raw_rps),
                "ratio_to_executemany": round(rps / raw_rps, 3),
                "ratio_to_bare_subscriber": round(mps / bare, 3),
                "cpu_cores": cpu["cores"],
                "cpu_s_per_100k": cpu["cpu_s_per_100k"],
                "thread_cpu_s_per_100k": cpu["thread_cpu_s_per_100k"],
                "commits": stats.commits,
                "rows_per_commit": rows_per_commit,
                "duplicates": stats.duplicates,
                "rejects": dict(stats.dead_letters),
            }
            print(
                f"  {size:>3} readings/message: ingest {rps:>10,.0f} readings/s "
                f"{mps:>8,.0f} msg/s | bare subscriber {bare:>8,.0f} msg/s | "
                f"executemany {raw_rps:>10,.0f} readings/s | CPU {cpu['cores']:.2f} cores, "
                f"s/100k readings {cpu['cpu_s_per_100k']}",
                flush=True,
            )
            print(f"      by thread, s/100k readings: {cpu['thread_cpu_s_per_100k']}", flush=True)
    return figures


def targets(f: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, value, target, verdict) rows for the table."""
    rows = []
    if "r500" in f:
        speed, ratio = f["r500"]["ingest_readings_per_s"], f["r500"]["ratio_to_executemany"]
        goal = "≥ 100,000"
        rows.append(
            target("1: readings/s at 500 per message", f"{speed:,}", goal, speed >= 100_000)
        )
        rows.append(target("1: ÷ raw executemany at 500", f"{ratio:.2f}", "≥ 0.85", ratio >= 0.85))
        if "cpu_cores" in f["r500"]:
            cores = f["r500"]["cpu_cores"]
            what = "1: CPU of the service at 500 per message"
            rows.append(target(what, f"{cores:.2f} cores", "≥ 1.7 cores", cores >= 1.7))
    if "r1" in f:
        ratio = f["r1"]["ratio_to_bare_subscriber"]
        what = "1: msg/s at 1 per message ÷ bare subscriber"
        rows.append(target(what, f"{ratio:.2f}", "≥ 0.5", ratio >= 0.5))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readings", type=int, default=200_000)
    p.add_argument("--one-reading-messages", type=int, default=20_000)
    p.add_argument("--no-rules", action="store_true", help="store only, no rule evaluation")
    p.add_argument(
        "--sizes", default="1,100,500", help="readings per message, comma-separated (1,100,500)"
    )
    p.add_argument(
        "--one-process",
        action="store_true",
        help="the writer as a thread of the service (ingest_store_process = false)",
    )
    args = p.parse_args()
    global ONE_PROCESS
    ONE_PROCESS = args.one_process
    print("bench 1: ingest throughput (decode, validate, dedup, commit, default rules)", flush=True)
    sizes = tuple(int(x) for x in args.sizes.split(","))
    f = run(args.readings, sizes, args.one_reading_messages, rules=not args.no_rules)
    report("ingest-throughput", f, vars(args), targets(f))


if __name__ == "__main__":
    main()
