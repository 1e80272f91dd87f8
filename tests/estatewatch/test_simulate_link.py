"""`simulate` says which broker it reached, says so when its credentials are refused (never
"link up"), and takes its password from a file or the environment, not the command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from estatewatch.broker import ManagedMosquitto

pytestmark = pytest.mark.integration


def _simulate(
    args: list[str], env: dict[str, str], done: Callable[[str], bool], seconds: float = 8.0
) -> str:
    """Its output once ``done`` holds for it (then a progress line more, so what follows the
    awaited line shows too), or after ``seconds``; then it is stopped as Ctrl-C would."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "estatewatch.cli", "simulate", *args, "--progress-every", "0.5"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None and not done("".join(lines)):
        time.sleep(0.1)
    if proc.poll() is None:
        time.sleep(1.0)  # at least one more progress line
        proc.send_signal(signal.SIGTERM)
    proc.wait(20)
    reader.join(5)
    return "".join(lines)


def test_refused_credentials_are_said_and_never_shown_as_link_up(
    mosquitto: ManagedMosquitto, tmp_path: Path
) -> None:
    creds = mosquitto.issue_gateway_credentials("hohhot-xinhua", "gw-01", "estates")
    assert creds is not None
    broker = f"mqtt://{creds.username}@{creds.host}:{creds.port}"
    out = _simulate(
        ["--broker", broker, "--state-dir", str(tmp_path / "gw")],
        {"ESTATEWATCH_GATEWAY_PASSWORD": "not-the-password"},
        lambda out: "credentials refused by" in out,
    )
    assert "refused the gateway's credentials" in out, out
    assert "credentials refused by" in out
    assert "link up" not in out


def test_the_password_from_a_file_and_the_broker_it_reached(
    mosquitto: ManagedMosquitto, tmp_path: Path
) -> None:
    creds = mosquitto.issue_gateway_credentials("hohhot-xinhua", "gw-01", "estates")
    assert creds is not None
    secret = tmp_path / "password"
    secret.write_text(creds.password + "\n", encoding="utf-8")
    broker = f"mqtt://{creds.username}@{creds.host}:{creds.port}"
    out = _simulate(
        ["--broker", broker, "--password-file", str(secret), "--state-dir", str(tmp_path / "gw")],
        {"ESTATEWATCH_GATEWAY_PASSWORD": ""},
        lambda out: "link up" in out,
    )
    assert f"connected to broker {broker}" in out, out
    assert f"link up ({broker})" in out, out
    assert creds.password not in out
    # and a password on the command line works, with a warning that ps shows it
    out = _simulate(
        [
            "--broker",
            f"mqtt://{creds.username}:{creds.password}@{creds.host}:{creds.port}",
            "--state-dir",
            str(tmp_path / "gw2"),
        ],
        {"ESTATEWATCH_GATEWAY_PASSWORD": ""},
        lambda out: "link up" in out,
    )
    assert "visible in ps" in out and "link up" in out
