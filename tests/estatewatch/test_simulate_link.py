"""`simulate` says which broker it reached, says so when its credentials are refused (never
"link up"), and takes its password from a file or the environment, not the command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from estatewatch.broker import ManagedMosquitto

pytestmark = pytest.mark.integration


def _simulate(args: list[str], env: dict[str, str], seconds: float = 8.0) -> str:
    proc = subprocess.Popen(
        [sys.executable, "-m", "estatewatch.cli", "simulate", *args, "--progress-every", "1"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    return out


def test_refused_credentials_are_said_and_never_shown_as_link_up(
    mosquitto: ManagedMosquitto, tmp_path: Path
) -> None:
    creds = mosquitto.issue_gateway_credentials("hohhot-xinhua", "gw-01", "estates")
    assert creds is not None
    broker = f"mqtt://{creds.username}@{creds.host}:{creds.port}"
    out = _simulate(
        ["--broker", broker, "--state-dir", str(tmp_path / "gw")],
        {"ESTATEWATCH_GATEWAY_PASSWORD": "not-the-password"},
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
    )
    assert f"connected to broker {broker}" in out, out
    assert f"link up ({creds.host}:{creds.port})" in out
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
        seconds=5,
    )
    assert "visible in ps" in out and "link up" in out
