"""A damaged or emptied database stops ``estatewatch run`` with one line that names the file
and says what to do: no driver traceback naming no file, and no state database that was
emptied silently replaced by a new one (no estates, no users, no open alarms)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from estatewatch.broker import free_port
from estatewatch.service import Service
from tests.conftest import service_settings

pytestmark = pytest.mark.integration

STATE_MARKER = "state-db.initialised"  # in the data dir: the state DB was made here


@pytest.fixture(scope="module")
def initialised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data dir after one real start and stop of the service (broker dir left out)."""
    root = tmp_path_factory.mktemp("first-run")
    svc = Service(service_settings(root))
    svc.start()
    svc.state.add_estate("e1", "新华小区")
    svc.stop()
    shutil.rmtree(root / "data" / "broker", ignore_errors=True)
    yield root / "data"


def run(data: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ESTATEWATCH_DATA_DIR": str(data),
        "ESTATEWATCH_API_PORT": str(free_port()),
        "ESTATEWATCH_BROKER_PORT": str(free_port()),
        "ESTATEWATCH_ADMIN_TOKEN": "test-admin-token-0123456789",
    }
    try:
        return subprocess.run(
            [sys.executable, "-m", "estatewatch.cli", "run"],
            capture_output=True,
            text=True,
            env=env,
            timeout=40,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the service started on a damaged data dir (and ran until killed)")


def copy_of(initialised: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(initialised, data)
    return data


def assert_one_line_naming(out: subprocess.CompletedProcess[str], path: Path, *says: str) -> str:
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    (line,) = [x for x in out.stderr.splitlines() if x.strip()]
    assert line.startswith("estatewatch: ") and str(path) in line, line
    for word in says:
        assert word in line, line
    return line


def test_a_state_database_overwritten_with_garbage(initialised: Path, tmp_path: Path) -> None:
    data = copy_of(initialised, tmp_path)
    db = data / "estatewatch.db"
    with db.open("r+b") as f:
        f.write(os.urandom(4096))
    assert_one_line_naming(run(data), db, "not an SQLite database", "restore")


def test_a_state_database_with_a_damaged_schema_page(initialised: Path, tmp_path: Path) -> None:
    data = copy_of(initialised, tmp_path)
    db = data / "estatewatch.db"
    with db.open("r+b") as f:  # keep the 100-byte header, break the schema behind it
        f.seek(100)
        f.write(b"\xff" * 3900)
    assert_one_line_naming(run(data), db, "damaged", "restore")


def test_a_truncated_state_database(initialised: Path, tmp_path: Path) -> None:
    data = copy_of(initialised, tmp_path)
    db = data / "estatewatch.db"
    os.truncate(db, db.stat().st_size // 2)
    assert_one_line_naming(run(data), db, "truncated", "restore")


def test_a_damaged_telemetry_database(initialised: Path, tmp_path: Path) -> None:
    data = copy_of(initialised, tmp_path)
    db = data / "telemetry.db"
    assert db.stat().st_size > 0
    with db.open("r+b") as f:
        f.write(b"not a database at all" * 10)
    assert_one_line_naming(run(data), db, "telemetry database", "restore")


def test_an_emptied_state_database_is_refused_not_replaced(tmp_path: Path) -> None:
    settings = service_settings(tmp_path)
    svc = Service(settings)
    svc.start()
    svc.state.add_estate("e1", "新华小区")
    svc.stop()
    db = settings.data_path / "estatewatch.db"
    for extra in ("-wal", "-shm"):
        Path(f"{db}{extra}").unlink(missing_ok=True)
    db.write_bytes(b"")  # a failed copy, a full disk
    out = run(settings.data_path)
    marker = settings.data_path / STATE_MARKER
    assert_one_line_naming(out, db, "empty (0 bytes)", "restore", str(marker))
    assert db.stat().st_size == 0  # left as found, for whoever restores it
    # deleting the marker is the way to start afresh on purpose
    marker.unlink()
    svc = Service(service_settings(tmp_path, data_dir=str(settings.data_path)))
    svc.start()
    try:
        assert svc.state.list_estates() == []
        assert marker.exists()
    finally:
        svc.stop()
