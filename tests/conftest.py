"""Fixtures that start real parts: Mosquitto on a free port, PostgreSQL databases, the service."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from estatewatch.broker import ManagedMosquitto, free_port, wait_for_port
from estatewatch.service import Service
from estatewatch.settings import Settings

POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[ManagedMosquitto]:
    """A real Mosquitto with persistence, passwords and an ACL, on a free port."""
    if not ManagedMosquitto.available():
        pytest.fail("mosquitto is not installed: .ci/run installs it (apt-get install mosquitto)")
    broker = ManagedMosquitto(tmp_path / "broker", free_port())
    broker.start()
    yield broker
    broker.stop()


def start_victoriametrics(data: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A real single-node VictoriaMetrics (Debian's package) on a free port, keeping its data
    in ``data``: (its process, its URL)."""
    exe = shutil.which("victoria-metrics")
    if not exe:
        pytest.fail(
            "victoria-metrics is not installed: .ci/run installs it "
            "(apt-get install victoria-metrics)"
        )
    port = free_port()
    proc = subprocess.Popen(
        [
            exe,
            f"-httpListenAddr=127.0.0.1:{port}",
            f"-storageDataPath={data}",
            "-retentionPeriod=100y",
            # query_range otherwise leaves out the last 30 s as possibly incomplete: the tests
            # read what they have just written
            "-search.latencyOffset=0s",
            # one point per series and millisecond, so a replayed write is stored once (the
            # setting a deployment uses too, see README)
            "-dedup.minScrapeInterval=1ms",
            "-loggerLevel=ERROR",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if not wait_for_port("127.0.0.1", port, 20):
        proc.kill()
        pytest.fail("VictoriaMetrics did not start within 20 s")
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture
def victoriametrics(tmp_path: Path) -> Iterator[str]:
    """The URL of a VictoriaMetrics of this test's own."""
    proc, url = start_victoriametrics(tmp_path / "vm")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _postgres_reachable() -> bool:
    try:
        engine = sa.create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 2})
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The state database on SQLite and on a fresh PostgreSQL database of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    if not _postgres_reachable():
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 (.ci/run starts it)")
    name = f"ew_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn, contextlib.suppress(Exception):
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def service_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": str(tmp_path / "data"),
        "broker_port": free_port(),
        "api_port": free_port(),
        "admin_token": "test-admin-token-0123456789",
        "commit_interval_ms": 50,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """The whole service in this process: its own Mosquitto, SQLite, ingest and the API."""
    svc = Service(service_settings(tmp_path))
    svc.start()
    yield svc
    svc.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Integration and cluster tests first (a stable sort: files and their tests otherwise keep
    their order): they mostly wait on services, so under ``make test``'s workers the long ones
    start early and overlap, and the quick unit tests fill the end instead of a long file (the
    cluster region's 55 s file was among the last)."""
    items.sort(
        key=lambda item: (
            item.get_closest_marker("integration") is None
            and item.get_closest_marker("cluster") is None
        )
    )


def mosquitto_pub() -> str:
    path = shutil.which("mosquitto_pub")
    if not path:
        pytest.fail("mosquitto_pub is not installed: .ci/run installs mosquitto-clients")
    return path
