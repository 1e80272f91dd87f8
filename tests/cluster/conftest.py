"""Fixtures of the multi-host tests: hosts as network namespaces, PostgreSQL on one of them."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.cluster.netns import Network, available


@pytest.fixture
def network() -> Iterator[Network]:
    """An empty network to add hosts to (``network.add("w1")``); all of it, and every
    process started in it, is gone after the test, passed or failed."""
    why = available()
    if why is not None:
        pytest.skip(f"network namespaces cannot be made here: {why}")
    net = Network()
    try:
        yield net
    finally:
        net.close()


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(Path("/usr/lib/postgresql").glob(f"*/bin/{name}")), None
    )
    if found is None:
        pytest.fail(f"{name} is not installed (.ci/run installs postgresql)")
    return str(found)


@pytest.fixture
def netns_postgres(network: Network) -> Iterator[str]:
    """A PostgreSQL of its own on host ``db`` (as user postgres: it refuses to run as root),
    listening on that host's address; yields its URL (trust auth, database ``postgres``)."""
    host = network.add("db")
    folder = Path(tempfile.mkdtemp(prefix="ew-netns-pg-"))
    data = folder / "data"
    shutil.chown(folder, "postgres")
    as_pg = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_pg, _pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    with (data / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all all {network.subnet} trust\n")
    settings = {
        "listen_addresses": host.address,
        "port": "5432",
        "unix_socket_directories": str(folder),
        "fsync": "off",
        "max_connections": "100",
        # a client whose host is cut off is dropped within ~3 s, whatever its session was
        # doing: its open transaction (a fenced commit holding lease rows FOR SHARE, a
        # statement waiting for the rest of its parameters) would otherwise hold its locks
        # until the kernel's keepalive gives up, two hours later, and the other workers,
        # claiming with SKIP LOCKED, would never take those partitions (docs/deploy.md)
        "tcp_keepalives_idle": "1",
        "tcp_keepalives_interval": "1",
        "tcp_keepalives_count": "2",
        "tcp_user_timeout": "2000",
    }
    flags = [a for k, v in settings.items() for a in ("-c", f"{k}={v}")]
    log = (folder / "postgres.log").open("w")
    network.popen(
        "db", [*as_pg, _pg_bin("postgres"), "-D", str(data), *flags], stdout=log, stderr=log
    )
    url = f"postgresql://postgres@{host.address}:5432/postgres"
    engine = sa.create_engine(url.replace("postgresql:", "postgresql+psycopg:"))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with engine.connect():
                    break
            except sa.exc.OperationalError:
                if time.monotonic() > deadline:
                    said = (folder / "postgres.log").read_text()
                    pytest.fail(f"PostgreSQL on {host.address} did not start: {said}")
                time.sleep(0.2)
        yield url
    finally:
        engine.dispose()
        subprocess.run(
            [*as_pg, _pg_bin("pg_ctl"), "stop", "-D", str(data), "-m", "immediate"],
            capture_output=True,
            timeout=30,
        )
        log.close()
        shutil.rmtree(folder, ignore_errors=True)
