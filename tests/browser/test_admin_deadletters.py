"""The admin page's dead letters in real headless Chromium, from a real gateway through the
service's managed Mosquitto: the reason and what to do are in Chinese, the decoder's own
(English) detail is one click away (issue 13). Screenshot in ``tests/browser/artifacts/``."""

from __future__ import annotations

import re

import pytest

from estatewatch.service import Service
from tests.browser.test_dashboard import (  # the API helpers
    Gateway,
    Page,
    api,
    estate_with_gateway,
    now_ms,
)

pytestmark = pytest.mark.integration

ESTATE = "bt-letters"


def test_dead_letters_read_in_chinese_with_the_raw_detail_kept(
    service: Service, page: Page
) -> None:
    gw = Gateway(estate_with_gateway(service, ESTATE, "测试 死信小区"))
    try:  # a weather station reporting 900 °C: outside its physical range
        gw.send(
            "readings",
            [{"dev": "ws-1", "kind": "weather_station", "ts": now_ms(), "m": {"temp_c": 900}}],
        )
    finally:
        gw.close()
    page.until(
        lambda d: api(service, "GET", "/api/v1/deadletters").json()["items"],
        message="no dead letter was stored",
    )
    letters = api(service, "GET", "/api/v1/deadletters").json()["items"]
    raw = {x["reason"]: x["detail"] for x in letters}
    assert "out_of_range" in raw and re.search(r"[A-Za-z]{3}", raw["out_of_range"])

    page.open("#token=test-admin-token-0123456789")
    page.click('#nav a[href="#/admin"]')
    cell = "table.deadletters td.deadletter-detail"
    page.find(cell)
    texts = [e.text for e in page.driver.find_elements("css selector", cell)]
    shown = "\n".join(texts)
    assert "读数超出该指标的物理范围" in shown, shown
    for text in texts:  # the visible part (the raw detail is folded away) has no English
        assert not re.search(r"[A-Za-z]{3,}", text.replace("JSON", "")), text
    # the raw detail is kept: unfolded, it is the decoder's own text
    page.click(f"{cell} details summary")
    page.until(lambda d: raw["out_of_range"] in page.text(f"{cell} details pre.raw-detail"))
    page.shot("40-admin-deadletters-zh")
