"""`estatewatch run` with VictoriaMetrics as its telemetry store: a gateway publishes through the
service's own Mosquitto, the readings go to VictoriaMetrics (none stay in the local file), and the
device chart API answers from VictoriaMetrics; when VictoriaMetrics stops, the chart is a 503
that says what to do and /healthz says degraded."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from protocol.clock import SHANGHAI
from tests.conftest import free_port, start_victoriametrics
from tests.ingest.test_victoria import expected
from tests.support import settings_file, waiter

pytestmark = pytest.mark.integration
TOKEN = "test-admin-token-0123456789"
MINUTE = 60_000


wait_for = waiter(every=0.3)


def test_charts_come_from_victoriametrics_and_fail_loudly_without_it(tmp_path: Path) -> None:
    vm, vm_url = start_victoriametrics(tmp_path / "vm")
    api_port = free_port()
    settings = settings_file(
        tmp_path,
        api_port,
        TOKEN,
        f"""timeseries = "victoriametrics"
victoriametrics_url = "{vm_url}"
""",
    )
    env = {**os.environ, "ESTATEWATCH_LOG_LEVEL": "INFO"}
    log = tmp_path / "service.log"  # a file: a pipe nobody reads would block the service
    service = subprocess.Popen(
        [sys.executable, "-m", "estatewatch.cli", "run", "--config", str(settings)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{api_port}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    try:

        def up() -> bool:
            try:
                return api.get("/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return service.poll() is not None  # ended: reported below

        wait_for(up, 60, "the service to start")
        assert service.poll() is None, log.read_text(encoding="utf-8")
        # nothing to fold locally: the store downsamples, and the start says so
        assert "local rollup and raw purge jobs are off" in log.read_text(encoding="utf-8")
        health = api.get("/healthz").json()
        assert health["timeseries"] == {"backend": "victoriametrics", "url": vm_url, "state": "up"}

        assert api.post("/api/v1/estates", json={"id": "e1", "name": "东苑小区"}).status_code == 201
        creds = api.post("/api/v1/estates/e1/gateways", json={"id": "gw-01"}).json()["mqtt"]
        now = int(time.time() * 1000)
        # three hours of a hydrant's pressure, one reading a minute (a gateway's backlog)
        samples = [
            (now - 180 * MINUTE + i * MINUTE + 7, round(0.3 + (i % 17) / 100, 2))
            for i in range(180)
        ]
        body = {
            "v": 1,
            "gw": "gw-01",
            "seq": 1,
            "sent": now,
            "readings": [
                {"dev": "b1-hydrant-1", "kind": "fire_hydrant", "ts": t, "m": {"pressure_mpa": v}}
                for t, v in samples
            ],
        }
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw-01")
        pub.username_pw_set(creds["username"], creds["password"])
        pub.connect(creds["host"], creds["port"])
        pub.loop_start()
        time.sleep(6)  # the service subscribes to a new estate within 5 s
        pub.publish("estates/e1/gw/gw-01/telemetry", orjson.dumps(body), qos=1).wait_for_publish(10)
        pub.loop_stop()
        pub.disconnect()

        chart_url = "/api/v1/estates/e1/devices/b1-hydrant-1/telemetry"
        from_ms = now - 200 * MINUTE

        def chart() -> dict[str, Any] | None:
            r = api.get(
                chart_url,
                params={"metric": "pressure_mpa", "from": from_ms, "to": now, "max_points": 12},
            )
            if r.status_code == 404:  # the device is made by the first commit
                return None
            assert r.status_code == 200, r.text
            c: dict[str, Any] = r.json()
            return c if sum(p["count"] for p in c["points"]) == len(samples) else None

        # VictoriaMetrics makes new points searchable within about a second
        got = wait_for(chart, 30, "the chart to hold every reading")
        assert got["resolution"] != "raw" and len(got["points"]) <= 12
        want = expected(samples, from_ms, now, got["step_ms"])
        assert [p["ts"] for p in got["points"]] == [w[0] for w in want]
        for p, w in zip(got["points"], want, strict=True):
            assert (p["min"], p["max"], p["mean"], p["count"], p["last"]) == pytest.approx(w[1:])
        # no raw row in the local file: the chart can only have come from VictoriaMetrics
        local = sqlite3.connect(tmp_path / "data" / "telemetry.db")
        assert local.execute("SELECT count(*) FROM readings").fetchone()[0] == 0
        assert local.execute("SELECT count(*) FROM rollup_1h").fetchone()[0] == 0
        local.close()
        # the yearly report's uptime hours come from VictoriaMetrics too (the empty local
        # rollups would make it 0 %)
        year = datetime.fromtimestamp(now / 1000, SHANGHAI).year
        report = api.get("/api/v1/reports/yearly", params={"year": year})
        assert report.status_code == 200, report.text
        (estate,) = [e for e in report.json()["estates"] if e["estate"] == "e1"]
        assert estate["device_uptime_pct"] == 100.0
        # a short range: the raw points, from VictoriaMetrics' export API
        raw = api.get(
            chart_url,
            params={"metric": "pressure_mpa", "from": now - 20 * MINUTE, "to": now},
        ).json()
        assert raw["resolution"] == "raw"
        assert [(p["ts"], p["value"]) for p in raw["points"]] == [
            (t, v) for t, v in samples if t >= now - 20 * MINUTE
        ]

        vm.terminate()
        vm.wait(10)
        down = api.get(chart_url, params={"metric": "pressure_mpa"})
        assert down.status_code == 503
        error = down.json()["error"]
        assert error["code"] == "timeseries_unavailable"
        assert vm_url in error["message"] and "ESTATEWATCH_VICTORIAMETRICS_URL" in error["message"]
        report_down = api.get("/api/v1/reports/yearly", params={"year": year})
        assert report_down.status_code == 503
        assert report_down.json()["error"]["code"] == "timeseries_unavailable"
        health_down = api.get("/healthz")
        assert health_down.status_code == 503
        assert health_down.json()["status"] == "degraded"
        assert health_down.json()["timeseries"]["state"] == "down"
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(30)
        except subprocess.TimeoutExpired:
            service.kill()
        if vm.poll() is None:
            vm.terminate()
            vm.wait(10)
