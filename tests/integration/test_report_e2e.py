"""The yearly report, right, as the running service serves it (issue 13): plans raised by a
person at Ⅲ and at Ⅰ export as Ⅲ and Ⅰ (they came out inverted), a device registered today
has been up all its time (not a sliver of the year), and the Chinese CSV and XLSX hold no
English, the estate by its name. (The report's code over a known set of activations, with
levels Ⅳ–Ⅰ, is in tests/supervision/test_report_words.py.)"""

from __future__ import annotations

import csv
import io
import re

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from openpyxl import load_workbook
from paho.mqtt.enums import CallbackAPIVersion

from estatewatch.service import Service
from gateway.publisher import now_ms
from tests.support import waiter

pytestmark = pytest.mark.integration

TOKEN = "test-admin-token-0123456789"
wait_for = waiter(20)


def test_the_downloaded_report_has_the_levels_raised_uptime_from_registration_and_no_english(
    service: Service,
) -> None:
    api = httpx.Client(
        base_url=service.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )
    body = {"id": "bei", "name": "北苑小区", "region": "呼伦贝尔市"}
    assert api.post("/api/v1/estates", json=body).status_code == 201
    creds = api.post("/api/v1/estates/bei/gateways", json={"id": "gw-01"}).json()["mqtt"]
    gw = mqtt.Client(CallbackAPIVersion.VERSION2)
    gw.username_pw_set(creds["username"], creds["password"])
    gw.connect(creds["host"], creds["port"])
    gw.loop_start()
    try:
        ts = now_ms()
        reading = {"dev": "ws-1", "kind": "weather_station", "ts": ts, "m": {"temp_c": -18.5}}
        msg = {"v": 1, "gw": "gw-01", "seq": 1, "sent": ts, "readings": [reading]}
        topic = "estates/bei/gw/gw-01/telemetry"
        gw.publish(topic, orjson.dumps(msg), qos=1).wait_for_publish(10)
    finally:
        gw.loop_stop()
        gw.disconnect()
    wait_for(lambda: api.get("/api/v1/estates/bei/devices").json()["items"], 20, "the station")
    for plan, level in (("snowstorm", "Ⅲ"), ("gas_leak", "Ⅰ")):
        r = api.post(
            "/api/v1/estates/bei/plans/activations",
            json={"plan": plan, "level": level, "reason": "值班长决定"},
        )
        assert r.status_code == 201, r.text
        r = api.post(
            f"/api/v1/plans/activations/{r.json()['id']}/stand-down", json={"reason": "解除"}
        )
        assert r.status_code == 200, r.text

    service.rollup()  # the service's own job (every 10 s): uptime reads the 1-hour rollups
    (bei,) = api.get("/api/v1/reports/yearly").json()["estates"]
    assert bei["activations"] == {"snowstorm": {"III": 1}, "gas_leak": {"I": 1}}, bei
    assert bei["device_uptime_pct"] >= 99.0, bei  # registered today, up since

    r = api.get("/api/v1/reports/yearly", params={"format": "csv"})
    assert r.status_code == 200
    texts = [cell for row in csv.reader(io.StringIO(r.content.decode("utf-8-sig"))) for cell in row]
    r = api.get("/api/v1/reports/yearly", params={"format": "xlsx"})
    assert r.status_code == 200
    wb = load_workbook(io.BytesIO(r.content))
    # the plans sheet: one row per plan and level, as raised (Ⅲ came out as "II")
    plans = [[str(c) for c in row] for row in wb.worksheets[2].iter_rows(values_only=True)]
    assert plans[1:] == [
        ["北苑小区", "燃气泄漏应急预案", "Ⅰ级响应", "1"],
        ["北苑小区", "暴雪应急预案", "Ⅲ级响应", "1"],
        ["合计", "燃气泄漏应急预案", "Ⅰ级响应", "1"],
        ["合计", "暴雪应急预案", "Ⅲ级响应", "1"],
    ], plans  # the estate by its name
    texts += list(wb.sheetnames)
    for ws in wb.worksheets:
        texts += [str(c.value) for row in ws.iter_rows() for c in row if c.value is not None]
    # Latin letters only in codes: the estate's id column of the summary ("bei", "total")
    english = {w for t in texts for w in re.findall(r"[A-Za-z]{2,}", t)} - {"bei", "total"}
    assert not english, english
