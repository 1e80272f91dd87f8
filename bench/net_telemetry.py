"""Cluster mode's telemetry store: readings/s through NetworkTelemetryStore.write (raw points to
VictoriaMetrics, then the fenced PostgreSQL transaction of the dedup book, latest and seqs), as
the recorder commits (``--per-commit`` messages of ``--per-message`` readings each), against
the same batches written by the raw sink alone (VictoriaMetrics' share of the work).

Starts its own VictoriaMetrics (Debian's ``victoria-metrics``) and a fresh database on the
PostgreSQL at ``--postgres`` (trust auth, as the tests use). Not part of ``bench.run``: run it
alone, ``python -m bench.net_telemetry``."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.common import record
from estatewatch.broker import free_port, wait_for_port
from ingest.influx import InfluxTelemetrySink
from ingest.model import EstateBatch
from ingest.net_telemetry import NetworkTelemetryStore
from protocol.catalog import default_catalog
from protocol.messages import Reading


def batches(
    estates: int, devices: int, messages: int, per_message: int, start: int, salt: str
) -> list[EstateBatch]:
    """``messages`` messages spread over the estates' gateways, each with ``per_message``
    hydrant readings of consecutive devices, one second apart per device."""
    out = []
    for m in range(messages):
        estate = f"{salt}-e{m % estates}"
        seq = m // estates + 1
        readings = [
            Reading(
                f"hydrant-{(seq * per_message + i) % devices}",
                "fire_hydrant",
                start + seq * 1000 + i,
                {"pressure_mpa": 0.3 + (i % 50) / 1000},
            )
            for i in range(per_message)
        ]
        out.append(EstateBatch(estate, "gw-01", readings=readings, seq=seq))
    return out


def start_vm(data: Path) -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("victoria-metrics")
    if not exe:
        raise SystemExit("victoria-metrics is not installed: apt-get install victoria-metrics")
    port = free_port()
    proc = subprocess.Popen(
        [
            exe,
            f"-httpListenAddr=127.0.0.1:{port}",
            f"-storageDataPath={data}",
            "-retentionPeriod=100y",
            "-dedup.minScrapeInterval=1ms",
            "-loggerLevel=ERROR",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if not wait_for_port("127.0.0.1", port, 20):
        proc.kill()
        raise SystemExit("VictoriaMetrics did not start within 20 s")
    return proc, f"http://127.0.0.1:{port}"


def timed(write: Any, work: list[EstateBatch], per_commit: int) -> float:
    started = time.perf_counter()
    for i in range(0, len(work), per_commit):
        write(work[i : i + per_commit])
    return time.perf_counter() - started


def run(args: argparse.Namespace) -> dict[str, Any]:
    admin = sa.create_engine(args.postgres, isolation_level="AUTOCOMMIT")
    name = f"ew_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = args.postgres.rsplit("/", 1)[0] + f"/{name}"
    fenced: list[int] = []

    def fence(conn: sa.Connection, estates: Collection[str]) -> None:
        # the shape of the lease check: one row read per commit in the same transaction
        conn.execute(sa.text("SELECT 1"))
        fenced.append(len(estates))

    with tempfile.TemporaryDirectory() as tmp:
        vm, vm_url = start_vm(Path(tmp) / "vm")
        sink = InfluxTelemetrySink(vm_url, "unused", "estatewatch", "telemetry", default_catalog())
        store = NetworkTelemetryStore(url, sink, fence)
        try:
            now = int(time.time() * 1000) - 86_400_000
            shape = (args.estates, args.devices, args.messages, args.per_message, now)
            # warm up both (connections, VictoriaMetrics' first series)
            store.write(batches(*shape[:2], args.per_commit, args.per_message, now, "warm"))
            raw = timed(sink.write, batches(*shape, "raw"), args.per_commit)
            full = timed(store.write, batches(*shape, "store"), args.per_commit)
            replay = timed(store.write, batches(*shape, "store"), args.per_commit)
        finally:
            store.close()
            sink.close()
            vm.terminate()
            vm.wait(10)
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    readings = args.messages * args.per_message
    return {
        "readings": readings,
        "store_readings_per_s": round(readings / full),
        "raw_sink_readings_per_s": round(readings / raw),
        "store_over_raw_sink": round(raw / full, 2),
        "replay_readings_per_s": round(readings / replay),  # every message a duplicate
        "commits": len(fenced) - 1,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--estates", type=int, default=10)
    p.add_argument("--devices", type=int, default=500, help="per estate")
    p.add_argument("--messages", type=int, default=400)
    p.add_argument("--per-message", type=int, default=500, help="readings per message")
    p.add_argument("--per-commit", type=int, default=20, help="messages per write (commit)")
    p.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = p.parse_args()
    figures = run(args)
    path = record("net_telemetry", figures, vars(args))
    for k, v in figures.items():
        print(f"{k}: {v}")
    print(f"recorded in {path}")


if __name__ == "__main__":
    main()
