"""`estatewatch demo` keeps one clock (issue 13): its storm is replayed so that simulated time
ends now, never ahead of the wall clock; nothing the API shows is later than now, and no
duration is negative."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration


def test_the_demo_data_is_never_ahead_of_the_wall_clock(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ESTATEWATCH_DATA_DIR": str(tmp_path / "data"),
        "ESTATEWATCH_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "estatewatch.cli", "demo", "--duration", "75"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        url = token = None
        for line in proc.stdout:
            m = re.search(r"(http://[\d.]+:\d+)/#token=(\S+)", line)
            if m:
                url, token = m.groups()
                break
        assert url and token
        api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        time.sleep(45)
        now = int(time.time() * 1000)
        for estate in ("hohhot-xinhua", "hailar-beiyuan"):
            devices = api.get(f"/api/v1/estates/{estate}/devices").json()["items"]
            seen = [d["last_seen_ms"] for d in devices if d["last_seen_ms"] is not None]
            assert seen and max(seen) <= now + 1000  # before: hours ahead within minutes
            assert sum(d["online"] for d in devices) >= len(devices) // 2
            station = next(d for d in devices if d["kind"] == "weather_station")
            day = api.get(
                f"/api/v1/estates/{estate}/devices/{station['id']}/telemetry",
                params={"metric": "temp_c", "from": now - 86_400_000, "to": now},
            ).json()
            assert day["points"], day  # the chart over a day has the replayed storm
        alarms: list[dict[str, Any]] = api.get("/api/v1/alarms", params={"limit": 1000}).json()[
            "items"
        ]
        for a in alarms:
            for key in ("to_ack_ms", "to_resolve_ms"):
                assert a[key] is None or a[key] >= 0, a
            assert a["raised_ms"] is None or a["raised_ms"] <= now + 1000
            assert a["started_ms"] <= now + 1000
        acts = api.get("/api/v1/plans/activations").json()["items"]
        for act in acts:
            assert act["started_ms"] <= now + 1000, act
            for task in act.get("tasks", []):
                # a task's deadline counts from when the plan reached the control room
                assert task["due_ms"] >= act["started_ms"], task
        assert api.get("/api/v1/deadletters").json()["items"] == []
    finally:
        proc.send_signal(2)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
