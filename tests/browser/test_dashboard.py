"""The dashboard in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by Selenium) against the real service with its own Mosquitto.

An operator logs in, sees a fire alarm appear live without a reload, acknowledges it and ticks
a task of the fire plan it activated; an authority opens the overview, then an estate
(read-only), and downloads the yearly report. Screenshots go to the test's tmp dir and to
``tests/browser/artifacts/``.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from estatewatch.service import Service

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).parent / "artifacts"
ADMIN = {"Authorization": "Bearer test-admin-token-0123456789"}
ESTATE = "bt-xinhua"
PASSWORD = "browser-test-1"
WAIT_S = 15

try:
    from selenium import webdriver
    from selenium.common.exceptions import (
        ElementClickInterceptedException,
        StaleElementReferenceException,
        TimeoutException,
    )
    from selenium.webdriver.chrome.service import Service as DriverService
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # reported by the fixture, with what to install
    webdriver = None  # type: ignore[assignment]


class Page:
    """The browser, with waits on conditions and screenshots kept as artifacts."""

    def __init__(self, driver: WebDriver, base: str, shots: Path) -> None:
        self.driver, self.base, self.shots = driver, base, shots

    def open(self, hash_: str = "") -> None:
        self.driver.get(f"{self.base}/{hash_}")

    def find(self, css: str, timeout: float = WAIT_S) -> WebElement:
        """The first element matching css, once it is shown."""
        return self.until(lambda d: self.shown(d, css), timeout, f"no visible {css!r}")

    def text(self, css: str) -> str:
        """The text of the first shown match, read in the same poll that found it (live
        updates redraw parts of the page at any moment)."""
        return self.until(lambda d: (e := self.shown(d, css)) and e.text, message=css)

    def click(self, css: str) -> None:
        self.until(lambda d: (e := self.shown(d, css)) and (e.click() or True), message=css)

    @staticmethod
    def shown(d: WebDriver, css: str) -> WebElement | None:
        return next((e for e in d.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()), None)

    def until(self, condition: Any, timeout: float = WAIT_S, message: str = "") -> Any:
        # A redrawn element goes stale between finding and using it, or is briefly covered
        # while the page lays out: look again.
        wait = WebDriverWait(
            self.driver,
            timeout,
            poll_frequency=0.1,
            ignored_exceptions=[StaleElementReferenceException, ElementClickInterceptedException],
        )
        try:
            return wait.until(condition)
        except TimeoutException:
            self.shot("failed")
            raise AssertionError(message or "condition not met") from None

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(path, ARTIFACTS / path.name)
        return path

    def script_errors(self) -> list[str]:
        """Uncaught errors and rejected promises the page logged (not failed requests)."""
        logs = self.driver.get_log("browser")
        return [e["message"] for e in logs if e["level"] == "SEVERE" and e["source"] != "network"]

    def login(self, username: str) -> None:
        self.open("#/login")
        for css, text in (("#login-user", username), ("#login-pass", PASSWORD)):
            self.find(css).clear()
            self.find(css).send_keys(text)
        self.find("#login-submit").click()
        self.until(
            lambda d: d.execute_script("return location.hash") not in ("#/login", ""),
            message=f"{username} was not logged in",
        )


@contextlib.contextmanager
def chromium(tmp_path: Path) -> Iterator[WebDriver]:
    """Headless Debian Chromium, downloads to ``tmp_path / "downloads"``."""
    if webdriver is None:
        pytest.fail("selenium is not installed: pip install -e '.[dev]'")
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            pytest.fail(f"{path} is missing: .ci/run installs it (apt-get install {package})")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1600,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        opts.add_argument(flag)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    opts.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    # An explicit driver path: Selenium Manager would otherwise try to download one.
    driver = webdriver.Chrome(service=DriverService(str(CHROMEDRIVER)), options=opts)
    driver.execute_cdp_cmd(
        "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    try:
        yield driver
    finally:
        driver.quit()


def api(service: Service, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(method, service.url + path, headers=ADMIN, json=body, timeout=10)


def estate_with_gateway(service: Service, estate: str, name: str) -> dict[str, Any]:
    """Registers an estate and a gateway through the API; the gateway's MQTT credentials."""
    body = {"id": estate, "name": name, "region": "呼和浩特市"}
    r = api(service, "POST", "/api/v1/estates", body)
    assert r.status_code == 201, r.text
    r = api(service, "POST", f"/api/v1/estates/{estate}/gateways", {"id": "gw-01"})
    assert r.status_code == 201, r.text
    creds: dict[str, Any] = r.json()["mqtt"]
    return creds


def user(service: Service, username: str, role: str, estates: list[str]) -> None:
    r = api(
        service,
        "POST",
        "/api/v1/users",
        {"username": username, "role": role, "estates": estates, "password": PASSWORD},
    )
    assert r.status_code == 201, r.text


class Gateway:
    """Publishes as the estate's gateway, with its own credentials, like a real one."""

    def __init__(self, creds: dict[str, Any]) -> None:
        self.prefix = creds["topic_prefix"]
        self.seq = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.username_pw_set(creds["username"], creds["password"])
        self.client.connect(creds["host"], creds["port"])
        self.client.loop_start()

    def send(self, kind: str, items: list[dict[str, Any]]) -> None:
        """kind: "readings" (a telemetry batch) or "events"."""
        self.seq += 1
        now = int(time.time() * 1000)
        body = {"v": 1, "gw": "gw-01", "seq": self.seq, "sent": now, kind: items}
        topic = self.prefix + ("telemetry" if kind == "readings" else kind)
        self.client.publish(topic, orjson.dumps(body), qos=1).wait_for_publish(5)

    def event(self, dev: str, kind: str, type_: str, **data: Any) -> None:
        """One event of ``dev``, taken now."""
        self.send(
            "events", [{"dev": dev, "kind": kind, "ts": now_ms(), "type": type_, "data": data}]
        )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def now_ms() -> int:
    return int(time.time() * 1000)


def alerts_wired(service: Service) -> bool:
    return api(service, "GET", "/api/v1/alarms?limit=1").status_code != 404


def test_operator_sees_an_alarm_live_acknowledges_it_and_ticks_a_plan_task(
    service: Service, page: Page
) -> None:
    gw = Gateway(estate_with_gateway(service, ESTATE, "测试 新华小区"))
    user(service, "duty-xinhua", "operator", [ESTATE])
    now = now_ms()
    gw.send(
        "readings",
        [
            {"dev": "fap-1", "kind": "fire_panel", "ts": now, "m": {"status_word": 0}},
            {"dev": "lift-1", "kind": "elevator", "ts": now, "m": {"floor": 3, "running": True}},
        ],
    )
    page.login("duty-xinhua")
    # An operator of one estate lands on its dashboard, in Chinese, with its devices counted.
    assert page.js("return location.hash") == f"#/estate/{ESTATE}"
    assert page.text(".strip h1") == "测试 新华小区"
    assert page.js("return document.documentElement.lang") == "zh-CN"
    page.until(
        lambda d: d.find_element(By.CSS_SELECTOR, '.family[data-family="fire"] .total').text == "1",
        message="the fire family tile does not count the panel",
    )
    page.find(".live.live")  # the stream is connected before anything is published
    page.shot("01-operator-dashboard")

    # Device detail: latest values by their catalog names, a chart, the range picker.
    page.click('.family[data-family="elevator"]')
    page.click('tr[data-dev="lift-1"] a')
    assert page.text('.latest tr[data-metric="floor"]') == "楼层 3"
    page.click('.ranges button[data-range="hour"]')
    page.find(".chart-box svg.chart circle.dot")  # one raw reading: a point, not a line
    page.click('.ranges button[data-range="week"]')
    # a week: rollups merged into points of a quarter or half an hour (by the chart's width)
    page.until(
        lambda d: re.search(
            r"精度：1 (分钟|小时)汇总，每点 \d+ (分钟|小时)，\d+ 个点",
            d.find_element(By.CSS_SELECTOR, ".chart-info").text,
        )
    )
    page.shot("02-device-detail")
    page.click(".crumbs a")
    page.find(".live.live")
    assert alerts_wired(service), "the service runs no alert engine"

    page.js("window.__noReload = true")
    gw.event("fap-1", "fire_panel", "fire.alarm", zone="b3-f12", point="smoke-1203", status_word=3)
    text = page.text('.alarm[data-severity="critical"][data-state="firing"]')
    assert "火警" in text and "fap-1" in text
    assert page.js("return window.__noReload") is True  # it came by the stream, not a reload
    assert int(page.js("return document.body.dataset.beeps || 0")) >= 1  # the critical sound
    page.shot("03-alarm-live")

    page.click('.alarm[data-state="firing"] button.ack')
    page.find('.alarm[data-severity="critical"][data-state="acknowledged"]')
    page.click(".alarm button.assign")
    page.find('.alarm input[name="assign"]').send_keys("张工")
    page.click('.alarm .inline-form button[type="submit"]')
    page.until(lambda d: "指派给 张工" in page.text(".alarm .meta"), message="not assigned")
    page.shot("04-alarm-acknowledged")
    acked = api(service, "GET", f"/api/v1/alarms?estate={ESTATE}&state=acknowledged").json()
    assert [(a["acked_by"], a["assignee"]) for a in acked["items"]] == [("duty-xinhua", "张工")]

    # (issue 11, GB 25201 §5.3) The fire alarm activated the fire plan at Ⅳ, to verify; the
    # operator confirms it on site with the alarm's button, and the plan goes to Ⅲ.
    page.find('.activation[data-level="Ⅳ"]')
    page.click(".alarm button.confirm")
    # Tick the first task of the confirmed plan.
    first = '.activation[data-level="Ⅲ"] li.task:not(.done)'
    task_id = page.until(lambda d: (e := page.shown(d, first)) and e.get_attribute("data-task"))
    page.click(f'li.task[data-task="{task_id}"] input[type=checkbox]')
    page.find(f'li.task.done[data-task="{task_id}"]')
    page.shot("05-plan-task-done")
    acts = api(service, "GET", f"/api/v1/plans/activations?estate={ESTATE}&active=true").json()
    done = {t["id"]: t["done_by"] for a in acts["items"] for t in a["tasks"]}
    assert done[task_id] == "duty-xinhua"

    # Ten minutes on, the level III tasks (due within 5 min) are overdue: red.
    page.js("const real = Date.now; Date.now = () => real() + 10 * 60_000")
    page.click("#lang")  # the view is drawn again, in English, at the later time
    page.click("#lang")
    overdue = page.find(".activation li.task.overdue")
    assert overdue.value_of_css_property("border-color") == "rgb(255, 92, 92)"
    assert "已超时" in page.text(".activation li.task.overdue .status")
    page.shot("06-plan-tasks-overdue")

    # Resolved, the alarm leaves the feed.
    page.click(".alarm button.resolve")
    page.find('.alarm input[name="resolve"]').send_keys("误报，已复位")
    page.click('.alarm .inline-form button[type="submit"]')
    page.find(".p-alarms .all-clear")
    resolved = api(service, "GET", f"/api/v1/alarms?estate={ESTATE}&state=resolved").json()
    assert [a["resolved_by"] for a in resolved["items"]] == ["duty-xinhua"]
    gw.close()
    assert page.script_errors() == []


def test_authority_opens_the_overview_an_estate_read_only_and_downloads_the_report(
    service: Service, page: Page
) -> None:
    gw = Gateway(estate_with_gateway(service, ESTATE, "测试 新华小区"))
    estate_with_gateway(service, "bt-beiyuan", "测试 北苑小区")
    user(service, "bureau", "authority", [])
    gw.send(
        "readings",
        [{"dev": "ws-1", "kind": "weather_station", "ts": now_ms(), "m": {"temp_c": -21.5}}],
    )
    gw.close()
    page.open("#/login")
    page.find("#login-user").send_keys("bureau")
    page.find("#login-pass").send_keys("not-the-password")
    page.click("#login-submit")
    assert "用户名或密码错误" in page.text('.error-box[data-code="bad_credentials"]')
    page.login("bureau")
    assert page.js("return location.hash") == "#/authority"
    page.find(f'tr.estate-row[data-estate="{ESTATE}"]')
    page.find('tr.estate-row[data-estate="bt-beiyuan"]')
    page.until(
        lambda d: "100%" in d.find_element(By.CSS_SELECTOR, f'tr[data-estate="{ESTATE}"]').text,
        message="the weather station is not counted online",
    )
    page.shot("07-authority-overview")

    page.click(f'tr.estate-row[data-estate="{ESTATE}"] td')
    page.find(".badge.readonly")
    assert page.js("return location.hash") == f"#/estate/{ESTATE}"
    assert not page.driver.find_elements(By.CSS_SELECTOR, "button.ack")
    page.shot("08-authority-estate-read-only")

    page.find("#lang").click()  # the English switch
    page.find(".strip h1")
    page.until(lambda d: d.find_element(By.CSS_SELECTOR, ".badge.readonly").text == "read-only")
    assert page.js("return document.documentElement.lang") == "en"
    page.shot("09-authority-estate-english")
    page.find("#lang").click()

    # A random inspection draw, reproducible from its recorded seed.
    page.click('#nav a[href="#/inspections"]')
    page.find('.draw-form input[name="share"]').clear()
    page.find('.draw-form input[name="share"]').send_keys("50")
    page.click('.draw-form button[type="submit"]')
    assert "可复现核验通过" in page.text(".draw-result .draw")
    (draw,) = api(service, "GET", "/api/v1/inspections/draws").json()["items"]
    assert (draw["drawn_by"], len(draw["chosen"])) == ("bureau", 1)
    page.shot("10-inspection-draw")

    page.open("#/report")
    assert api(service, "GET", "/api/v1/reports/yearly").status_code == 200
    page.find('.report[data-loaded="1"]')
    page.shot("11-yearly-report")
    page.find('button.download[data-format="csv"]').click()
    saved = page.find(".saved").get_attribute("data-saved")
    downloads = Path(page.shots.parent / "downloads")
    path = downloads / saved
    page.until(lambda d: path.exists() and path.stat().st_size > 0, message="no CSV saved")
    text = path.read_text(encoding="utf-8-sig")
    assert "测试 新华小区" in text and "测试 北苑小区" in text
    page.shot("12-report-downloaded")
    assert page.script_errors() == []


def test_the_demo_link_opens_the_admin_pages_with_gateway_health_and_dead_letters(
    service: Service, page: Page
) -> None:
    gw = Gateway(estate_with_gateway(service, ESTATE, "测试 新华小区"))
    gw.send(
        "readings",
        [{"dev": "ws-1", "kind": "weather_station", "ts": now_ms(), "m": {"temp_c": 1.5}}],
    )
    gw.client.publish(gw.prefix + "telemetry", b"{not json", qos=1).wait_for_publish(5)
    gw.close()
    # `make demo` prints /#token=<bootstrap admin token>: no login, and the token leaves the URL.
    page.open("#token=test-admin-token-0123456789")
    page.find('#nav a[href="#/admin"]')
    assert "token" not in page.driver.current_url
    page.click('#nav a[href="#/admin"]')
    page.find('.estate-gateways table.gateways tr[data-gateway="gw-01"]')
    assert "已连接" in page.text(".admin .kpis")
    page.until(lambda d: "不是合法 JSON" in page.text(".deadletters"), message="no dead letter")
    page.shot("13-admin-health-and-dead-letters")
    # (issue 11) the estate's settings: its climate zone and lift rescue minutes
    form = f'form.estate-settings[data-estate="{ESTATE}"]'
    page.js(
        f"const f = document.querySelector('{form}');"
        "f.querySelector('select[name=zone]').value = 'hulunbuir';"
        "f.querySelector('input[name=rescue_arrival_min]').value = '60';"
    )
    page.click(f"{form} button[type=submit]")
    page.until(lambda d: "已保存" in page.text(form), message="settings not saved")
    got = api(service, "GET", f"/api/v1/estates/{ESTATE}").json()
    assert (got["zone"], got["rescue_arrival_min"]) == ("hulunbuir", 60)
    page.click("#logout")
    page.find("#login-user")
    assert page.js("return localStorage.getItem('ew.token')") is None
    assert page.script_errors() == []
