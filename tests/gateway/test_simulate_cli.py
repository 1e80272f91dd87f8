"""``estatewatch simulate`` through a real Mosquitto: same seed, same readings at any speed;
winter-storm crosses the snowstorm thresholds at the times its file states."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from estatewatch.broker import ManagedMosquitto
from simulators.scenario import load_scenario
from tests.gateway.conftest import ESTATE, GW, Received, readings_of

pytestmark = pytest.mark.integration
HOUR = 3_600_000


def simulate(
    mosquitto: ManagedMosquitto, state: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    creds = mosquitto.issue_gateway_credentials(ESTATE, GW, "estates")
    url = f"mqtt://{creds.username}:{creds.password}@{creds.host}:{creds.port}"
    return subprocess.run(
        [sys.executable, "-m", "estatewatch.cli", "simulate", "--broker", url,
         "--state-dir", str(state), "--progress-every", "1", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def take(
    subscriber: Received, quiet_s: float = 0.5, timeout_s: float = 20.0
) -> list[dict[str, Any]]:
    """What the subscriber got, once nothing more arrives for ``quiet_s``: the simulator ends
    when the broker has acknowledged every message, and the broker's copies to this subscriber
    may still be on their way (on a busy machine, thousands of them)."""
    deadline = time.monotonic() + timeout_s
    seen = -1
    while time.monotonic() < deadline:
        with subscriber.cond:
            n = len(subscriber.messages)
        if n == seen:
            break
        seen = n
        time.sleep(quiet_s)
    with subscriber.cond:
        got = readings_of(subscriber.deduplicated())
        subscriber.messages.clear()
    return got


def test_same_seed_same_readings_at_any_speed_and_storm_thresholds_on_time(
    mosquitto: ManagedMosquitto, subscriber: Received, tmp_path: Path
) -> None:
    storm = ["--spec", "small", "--scenario", "winter-storm", "--seed", "5", "--for", "7h"]
    first = simulate(mosquitto, tmp_path / "a", *storm, "--speed", "3600")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "done: every reading delivered" in first.stdout
    # the progress shows the simulated clock (issue 11: the storm moved to March)
    assert "sim 2026-03-18 13:00:00" in first.stdout
    a = take(subscriber)
    second = simulate(mosquitto, tmp_path / "b", *storm, "--speed", "7200")
    assert second.returncode == 0, second.stdout + second.stderr
    b = take(subscriber)
    assert len(a) > 20_000
    assert sorted(a, key=lambda r: (r["dev"], r["ts"])) == sorted(
        b, key=lambda r: (r["dev"], r["ts"])
    )

    scenario = load_scenario("winter-storm")
    assert scenario.start_ms is not None
    station = sorted((r for r in a if r["kind"] == "weather_station"), key=lambda r: r["ts"])
    ts = np.array([r["ts"] for r in station])
    cum = np.cumsum([r["m"]["snow_mm"] for r in station])
    windows = {"blue": (12, 4.0), "yellow": (12, 6.0), "orange": (6, 10.0)}
    for e in scenario.expect:
        hours, mm = windows[e.level]
        first_in = np.searchsorted(ts, ts - hours * HOUR, side="right")
        sums = cum - np.where(first_in > 0, cum[np.maximum(first_in - 1, 0)], 0.0)
        crossed = ts[np.flatnonzero(sums >= mm - 1e-9)[0]]
        stated = scenario.start_ms + e.at_ms
        assert 0 <= crossed - stated < 63_000, (e.level, (crossed - stated) / 1000)


def test_a_spec_with_a_mistake_is_named_with_what_to_fix(
    mosquitto: ManagedMosquitto, tmp_path: Path
) -> None:
    bad = tmp_path / "estate.toml"
    bad.write_text('[estate]\nid = "Estate One"\n[plant]\nweather_station = 1\n')
    run = simulate(mosquitto, tmp_path / "s", "--spec", str(bad))
    assert run.returncode == 2
    assert str(bad) in run.stderr and "estate.id" in run.stderr and "Traceback" not in run.stderr
    run = simulate(mosquitto, tmp_path / "s", "--scenario", "blizzard")
    assert run.returncode == 2 and "bundled: " in run.stderr and "winter-storm" in run.stderr
