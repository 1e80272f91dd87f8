"""The winter-storm scenario played through a real Mosquitto at high speed: the snowstorm plan
is activated at Ⅳ, raised to Ⅲ and Ⅱ as the 6 h / 12 h sums cross the CMA thresholds, and
stood down after the hold time; the activation's timeline shows each step with its reading.

The alert engine runs on the data's clock (the newest reading committed), as a replay of a
past storm must: the simulator plays 2026-01-15 at ×7200.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from estatewatch.broker import ManagedMosquitto
from estatewatch.service import Service
from supervision.report import SHANGHAI
from tests.conftest import service_settings

pytestmark = pytest.mark.integration

ESTATE, GW = "hohhot-xinhua", "gw-01"  # the bundled "small" spec
START = int(datetime(2026, 1, 15, 6, 0, tzinfo=SHANGHAI).timestamp() * 1000)
HOUR = 3_600_000


def test_winter_storm_raises_the_snowstorm_plan_and_stands_it_down(tmp_path: Path) -> None:
    box: list[Service] = []

    evaluated: list[int] = [START]

    def data_clock() -> int:
        # Simulated time: the newest reading the alert engine has evaluated (ingest's newest
        # can be a commit or more ahead of it, and a plan step is stamped with this clock
        # when its reading is older than the late threshold).
        return evaluated[-1]

    def track(deliveries: Any) -> None:
        newest = max((r.ts for d in deliveries if d.batch for r in d.batch.readings), default=0)
        if newest > evaluated[-1]:
            evaluated.append(newest)

    service = Service(service_settings(tmp_path), clock=data_clock)
    box.append(service)
    service.start()
    assert service.ingest is not None
    service.ingest.add_listener(track)  # after the alert engine's: what it has evaluated
    try:
        service.state.add_estate(ESTATE, "呼和浩特 新华小区", "呼和浩特市")
        service.state.add_gateway(ESTATE, GW)
        service.ingest.registry.reload()
        broker = service.broker
        assert isinstance(broker, ManagedMosquitto)
        creds = broker.issue_gateway_credentials(ESTATE, GW, "estates")
        assert creds is not None
        url = f"mqtt://{creds.username}:{creds.password}@{creds.host}:{creds.port}"
        # 12 h of storm, then 18 h of calm for the levels to fall and the hold time to pass
        sim = subprocess.run(
            [
                sys.executable,
                "-m",
                "estatewatch.cli",
                "simulate",
                "--spec",
                "small",
                "--scenario",
                "winter-storm",
                "--speed",
                "7200",
                "--for",
                "30h",
                "--broker",
                url,
                "--state-dir",
                str(tmp_path / "gw"),
                "--progress-every",
                "60",
            ],
            env={**os.environ, "ESTATEWATCH_LOG_LEVEL": "WARNING"},
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert sim.returncode == 0, sim.stdout[-2000:] + sim.stderr[-2000:]
        api = httpx.Client(
            base_url=service.url, headers={"Authorization": "Bearer test-admin-token"}, timeout=10
        )

        def snowstorm() -> dict[str, Any] | None:
            acts = api.get("/api/v1/plans/activations", params={"estate": ESTATE}).json()
            items = [a for a in acts["items"] if a["plan"] == "snowstorm"]
            return items[0] if items and not items[0]["active"] else None

        deadline = time.monotonic() + 60
        act = None
        while act is None and time.monotonic() < deadline:
            act = snowstorm()
            time.sleep(0.5)
        assert act is not None, api.get("/api/v1/plans/activations").json()
        full = api.get(f"/api/v1/plans/activations/{act['id']}").json()
        steps = [
            e
            for e in full["timeline"]
            if e["action"] in ("activated", "raised", "lowered", "stood_down")
        ]
        assert [(e["action"], e["level"]) for e in steps][:3] == [
            ("activated", "Ⅳ"),
            ("raised", "Ⅲ"),
            ("raised", "Ⅱ"),
        ]
        assert steps[-1]["action"] == "stood_down"
        first = {e["action"] + e["level"]: e for e in steps}
        # Each step names the station reading that made it and the sum it crossed, at the
        # scenario's times (blue 4 h, yellow 5 h, orange 6 h 48 min after the start; the
        # station reports every minute and levels are judged at each of its readings).
        for key, at, window, threshold in (
            ("activatedⅣ", 4 * HOUR, "12h", 4),
            ("raisedⅢ", 5 * HOUR, "12h", 6),
            ("raisedⅡ", int(6.8 * HOUR), "6h", 10),
        ):
            reading = first[key]["detail"]["reading"]
            assert reading["device"] == "ws-1"
            assert at <= reading["ts"] - START <= at + 2 * 60_000, (key, reading["ts"] - START)
            (evidence,) = first[key]["detail"]["evidence"]
            assert (evidence["metric"], evidence["window"]) == ("snow_mm", window)
            assert evidence["value"] >= threshold
        assert full["summary"]["max_level"] == "Ⅱ"
        # stood down only after the hold time below blue
        assert steps[-1]["ts"] - steps[-2]["ts"] >= 2 * HOUR
    finally:
        service.stop()
