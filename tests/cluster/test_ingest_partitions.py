"""`run --role ingest` with ``partitions`` set (issue 16): two ingest services, built from
their ``ESTATEWATCH_*`` environment as `estatewatch run` builds them, claim the partitions
through leases in PostgreSQL, show them in /healthz and their logs, share them evenly, and
one that stops hands its partitions to the other at once (ingest across a worker's death:
test_partition_takeover.py)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import httpx
import pytest

from estatewatch.broker import ManagedMosquitto, free_port
from estatewatch.service import Service, StartupError
from estatewatch.settings import SettingsError, load_settings
from tests.support import run_env, waiter

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


def test_the_one_process_service_refuses_partitions(database_url: str, tmp_path: Path) -> None:
    env = {
        "ESTATEWATCH_DATA_DIR": str(tmp_path),
        "ESTATEWATCH_PARTITIONS": "8",
        "ESTATEWATCH_DATABASE_URL": database_url,
        "ESTATEWATCH_TIMESERIES": "victoriametrics",
        "ESTATEWATCH_VICTORIAMETRICS_URL": "http://127.0.0.1:1",
        "ESTATEWATCH_ADMIN_TOKEN": TOKEN,
    }
    with pytest.raises(StartupError, match="run --role ingest` workers"):
        Service(load_settings(None, env)).start()


def _sessions_connected(url: str) -> bool:
    sessions = httpx.get(f"{url}/healthz", timeout=5).json()["partitions"]["sessions"]
    return all(all(s["connected"].values()) for s in sessions.values())


def test_ingest_workers_claim_share_and_hand_over_partitions(
    database_url: str,
    mosquitto: ManagedMosquitto,
    victoriametrics: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two ingest workers as `run --role ingest` builds them from its environment (in this
    process: two processes' start-up would cost this test most of its time); a --shard given
    as well is ignored, said in the log."""
    services: dict[str, Service] = {}
    caplog.set_level(logging.INFO, logger="estatewatch.service")
    try:
        for shard, name in enumerate(("a", "b")):
            env = run_env(
                tmp_path / name,
                mosquitto.endpoint,
                free_port(),
                TOKEN,
                ESTATEWATCH_DATABASE_URL=database_url,
                ESTATEWATCH_PARTITIONS="16",
                ESTATEWATCH_LEASE_TTL_S="3",
                ESTATEWATCH_LEASE_RENEW_S="1",
                ESTATEWATCH_WORKER_ID=f"worker-{name}",
                ESTATEWATCH_INGEST_SHARDS="2",  # ignored: partitions decide
                # cluster mode keeps telemetry in a networked store (ingest.net_telemetry)
                ESTATEWATCH_TIMESERIES="victoriametrics",
                ESTATEWATCH_VICTORIAMETRICS_URL=victoriametrics,
            )
            services[name] = Service(load_settings(None, env), role="ingest", shard=shard)
            services[name].start()

        def held(name: str) -> list[int]:
            body = httpx.get(f"{services[name].url}/healthz", timeout=5).json()
            return list(body["partitions"]["held"])

        wait = waiter(30, 0.1)
        wait(
            lambda: (
                sorted(len(held(n)) for n in services) == [8, 8]
                and set(held("a")) | set(held("b")) == set(range(16))
            ),
            what="16 partitions shared 8/8",
        )
        # each held partition with its two sessions, connected (no estate registered yet)
        for name, svc in services.items():
            body = httpx.get(f"{svc.url}/healthz", timeout=5).json()["partitions"]
            assert sorted(int(p) for p in body["sessions"]) == body["held"]
            for p, sessions in body["sessions"].items():
                assert sessions["session_id"] == f"estatewatch-p{p}"
                assert sessions["estates"] == []
            wait(functools.partial(_sessions_connected, svc.url), what=f"{name}'s sessions up")
            assert httpx.get(f"{svc.url}/healthz").json()["partitions"]["starting"] == []
            metrics = httpx.get(
                f"{svc.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
            ).text
            assert "estatewatch_partitions_held 8.0" in metrics
        handed = held("a")
        services["a"].stop()  # releases: b takes them at its next round, not a TTL later
        wait(lambda: held("b") == list(range(16)), 5, what="b takes a's at once")
        said = caplog.text
        assert all(f"partition {p} is ours at epoch" in said for p in handed)
        assert all(f"partition {p} is no longer ours" in said for p in handed)
        assert "--shard 1 / ESTATEWATCH_INGEST_SHARDS=2 are ignored" in said
    finally:
        for svc in services.values():
            svc.stop()
