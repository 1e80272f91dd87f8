"""`estatewatch run --role ingest` with ``partitions`` set (issue 16): two workers claim the
partitions through leases in PostgreSQL, show them in /healthz, share them evenly, and a
worker that stops hands its partitions to the other at once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from estatewatch.broker import ManagedMosquitto, free_port
from estatewatch.settings import SettingsError, load_settings
from tests.support import run_env, stop_run

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

TOKEN = "test-admin-token-0123456789"


def test_partitions_need_postgresql_and_a_renewal_below_half_the_ttl(database_url: str) -> None:
    with pytest.raises(SettingsError, match="must then be PostgreSQL"):
        load_settings(None, {"ESTATEWATCH_PARTITIONS": "64"})
    with pytest.raises(SettingsError, match="below half of lease_ttl_s=15"):
        load_settings(
            None,
            {
                "ESTATEWATCH_PARTITIONS": "64",
                "ESTATEWATCH_DATABASE_URL": database_url,
                "ESTATEWATCH_LEASE_RENEW_S": "8",
            },
        )


def test_ingest_workers_claim_share_and_hand_over_partitions(
    database_url: str, mosquitto: ManagedMosquitto, tmp_path: Path
) -> None:
    ports = {name: free_port() for name in ("a", "b")}
    procs = {}
    for shard, (name, port) in enumerate(ports.items()):
        env = run_env(
            tmp_path / name,
            mosquitto.endpoint,
            port,
            TOKEN,
            ESTATEWATCH_DATABASE_URL=database_url,
            ESTATEWATCH_PARTITIONS="16",
            ESTATEWATCH_LEASE_TTL_S="3",
            ESTATEWATCH_LEASE_RENEW_S="1",
            ESTATEWATCH_WORKER_ID=f"worker-{name}",
            ESTATEWATCH_INGEST_SHARDS="2",  # ingest still by shard: their own MQTT sessions
            ESTATEWATCH_LOG_LEVEL="INFO",
        )
        log = (tmp_path / f"{name}.log").open("wb")
        cmd = [sys.executable, "-m", "estatewatch.cli", "run", "--role", "ingest"]
        cmd += ["--shard", str(shard)]
        procs[name] = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)

    def held(name: str) -> list[int] | None:
        try:
            body = httpx.get(f"http://127.0.0.1:{ports[name]}/healthz", timeout=2).json()
        except httpx.HTTPError:
            return None
        return list(body["partitions"]["held"])

    def wait(cond: object, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not cond():  # type: ignore[operator]
            if time.monotonic() > deadline:
                logs = {n: (tmp_path / f"{n}.log").read_text()[-1500:] for n in ports}
                raise AssertionError(f"not within {timeout} s: {what}; {logs}")
            time.sleep(0.2)

    try:
        wait(
            lambda: (
                sorted(len(held(n) or []) for n in ports) == [8, 8]
                and set(held("a") or []) | set(held("b") or []) == set(range(16))
            ),
            "16 partitions shared 8/8",
        )
        handed = held("a") or []
        stop_run(procs["a"], 20)
        wait(lambda: held("b") == list(range(16)), "b takes a's at once", timeout=5)
        log = (tmp_path / "b.log").read_text()
        assert all(f"partition {p} is ours at epoch" in log for p in handed), log[-3000:]
    finally:
        for p in procs.values():
            stop_run(p, 20)
