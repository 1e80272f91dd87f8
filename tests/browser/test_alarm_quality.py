"""The alarm-quality page in a real headless Chromium against the real service: an authority
sees this month's figures of an estate in which one alarm chattered (raised three times within
60 s), the day's bar in the chart, the bad actor at the top, and the estates' table; the
figures are the API's, and the API's are the pure function's (tests/alerts/test_quality.py)."""

from __future__ import annotations

import time

import pytest

from estatewatch.service import Service
from tests.browser.test_dashboard import (  # the dashboard test's browser and helpers
    Gateway,
    Page,
    api,
    estate_with_gateway,
    user,
)

pytestmark = pytest.mark.integration

ESTATE = "aq-xinhua"


def test_authority_sees_chattering_floods_and_bad_actors_of_the_month(
    service: Service,
    page: Page,
) -> None:
    gw = Gateway(estate_with_gateway(service, ESTATE, "质量 新华小区"))
    user(service, "bureau-aq", "authority", [])
    # The same fire alarm three times within a minute: raised, resolved by the operator,
    # raised again (a panel that cannot make up its mind): one chattering alarm.
    for i in range(3):
        gw.event("fap-1", "fire_panel", "fire.alarm", zone="b1", point="sd-1")
        deadline = time.monotonic() + 10
        open_ = []
        while time.monotonic() < deadline:
            items = api(service, "GET", f"/api/v1/alarms?estate={ESTATE}").json()["items"]
            open_ = [a for a in items if a["state"] == "firing" and a["rule"] == "fire-alarm"]
            if len(items) >= i + 1 and open_:
                break
            time.sleep(0.1)
        assert open_, api(service, "GET", "/api/v1/alarms").json()
        if i < 2:
            r = api(service, "POST", f"/api/v1/alarms/{open_[0]['id']}/resolve", {"note": "复位"})
            assert r.status_code == 200, r.text
    gw.close()

    r = api(service, "GET", f"/api/v1/alarm-quality?estate={ESTATE}")
    assert r.status_code == 200, r.text
    body = r.json()
    q = body["quality"]
    fire = [t for t in q["top"] if t["rule"] == "fire-alarm"]
    assert fire and fire[0]["alarms"] == 3
    assert [(c["rule"], c["in_60s"]) for c in q["chattering"]] == [("fire-alarm", 3)]
    month = body["month"]

    page.login("bureau-aq")
    page.open(f"#/quality/{ESTATE}/{month}")
    page.find('.quality[data-loaded="1"]')
    assert page.text('[data-kpi="alarms"] b') == str(q["alarms"])
    assert page.text('[data-kpi="chattering"] b') == "1"
    # each figure names its clock: the operator's load by arrival, conditions by data time
    assert page.text('[data-kpi="floods"] .clock') == "按到达控制室时间"
    assert page.text('[data-kpi="chattering"] .clock') == "按数据时间"
    assert "bad" in page.find('[data-kpi="chattering"]').get_attribute("class")
    assert "fire-alarm" in page.text("#quality-chattering")
    assert "fire-alarm" in page.text("#fig-top .bar-label")
    # the chart: one bar a day of the month so far, today's as tall as its alarms
    bars = page.driver.find_elements("css selector", "#quality-chart svg rect")
    assert len(bars) == len(body["days"]) and bars
    assert max(int(b.get_attribute("data-value")) for b in bars) == q["alarms"]
    page.shot("20-alarm-quality-estate")
    # every estate of the month, each linking to its page
    page.open("#/quality")
    row = page.find("#quality-estates tbody tr")
    assert "质量 新华小区" in row.text
    page.click('a[href="#/quality"]')
    assert page.text("h1") == "告警质量"
    page.click("#lang")
    page.until(lambda d: page.text("h1") == "Alarm quality", message="no English title")
    page.shot("21-alarm-quality-all-estates")
    assert page.script_errors() == []
