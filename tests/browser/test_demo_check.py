"""`estatewatch demo` as a user runs it, looked at in real headless Chromium (issue 13's "done
when"): the real demo process, its own managed broker, both simulated estates, a fresh data dir.

At each checkpoint (seconds since the demo started) the estate page, the weather station's chart
over an hour and over a day, and the yearly report are opened; the charts have data, every
duration agrees with the wall clock (a plan has run no longer than the demo has; a rescue
deadline is at most 30 minutes away), and no negative figure shows anywhere (temperatures
aside: it is winter in Inner Mongolia). Screenshots go to ``test-artifacts/demo-<time>/`` at
the repository's root (printed).

``make test`` runs it once, compressed: the storm at ×120 for about a minute, which is past the
first plan and still in the catch-up. ``make demo-check`` runs the real thing: ×40 (the demo's
own speed), looked at after 1 minute and after 12 (``ESTATEWATCH_DEMO_CHECK_AT`` and
``ESTATEWATCH_DEMO_CHECK_SPEED`` override both). The API-level checks of the demo's one clock and
of its stop (Ctrl-C, the ground-truth files) are made on the same run.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.browser.test_dashboard import Page, chromium

pytestmark = pytest.mark.integration

with contextlib.suppress(ImportError):  # reported by chromium(), with what to install
    from selenium.webdriver.common.by import By

REPO = Path(__file__).resolve().parents[2]
ESTATES = ("hohhot-xinhua", "hailar-beiyuan")
CHECK_AT = [float(x) for x in os.environ.get("ESTATEWATCH_DEMO_CHECK_AT", "55").split(",")]
SPEED = os.environ.get("ESTATEWATCH_DEMO_CHECK_SPEED", "120")
RESCUE_MIN = 30  # TSG T5002-2017: the technician arrives within 30 minutes (city districts)

# "启动于 06:12，已持续 3 分钟" / "已持续 1 小时 5 分"; the same for "剩余"
DURATION = r"(?:(\d+) 小时 (\d+) 分|(\d+) 分钟)"
# A minus before a figure, not inside a word, an id ("ws-1"), a date or a time range.
NEGATIVE = re.compile(r"(?<![\w.:/\-−])[-−]\s?(\d[\d,]*(?:\.\d+)?)")
TEMPERATURE = re.compile(r"\s?(°C|℃)")


def minutes(m: re.Match[str]) -> int:
    h, mi, only = m.groups()
    return int(only) if only is not None else int(h) * 60 + int(mi)


def negatives(text: str) -> list[str]:
    """Negative figures in a page's text, temperatures aside."""
    return [
        text[max(m.start() - 30, 0) : m.end() + 10]
        for m in NEGATIVE.finditer(text)
        if not TEMPERATURE.match(text, m.end())
    ]


class Demo:
    """The demo process, the API it serves and the wall time it started at."""

    def __init__(self, data: Path, log: Path) -> None:
        self.data, self.log = data, log
        env = {**os.environ, "ESTATEWATCH_DATA_DIR": str(data), "ESTATEWATCH_LOG_LEVEL": "WARNING"}
        self.started_ms = int(time.time() * 1000)
        self.started = time.monotonic()
        self.out = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "estatewatch.cli", "demo", "--speed", SPEED],
            stdout=self.out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 60
        while not (m := re.search(r"(http://[\d.]+:\d+)/#token=(\S+)", log.read_text())):
            assert self.proc.poll() is None, f"the demo stopped:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"the demo printed no URL:\n{log.read_text()}"
            time.sleep(0.2)
        self.url, self.token = m.groups()
        self.api = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=15
        )

    def get(self, path: str, **params: Any) -> Any:
        r = self.api.get(path, params=params)
        assert r.status_code == 200, (path, r.text)
        return r.json()

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -9
        finally:
            self.out.close()


@pytest.fixture
def shots() -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = REPO / "test-artifacts" / f"demo-{stamp}"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def demo(tmp_path: Path, shots: Path) -> Iterator[Demo]:
    d = Demo(tmp_path / "data", shots / "demo.log")
    try:
        yield d
    finally:
        if d.proc.poll() is None:
            d.stop()


@pytest.fixture
def browser(demo: Demo, shots: Path, tmp_path: Path) -> Iterator[Page]:
    with chromium(tmp_path) as driver:  # the dashboard tests' headless Chromium
        yield Page(driver, demo.url, shots)


def page_text(page: Page) -> str:
    """What a person reads on the page; the charts' axis ticks (values in their unit) aside."""
    text: str = page.js(
        "const svgs = [...document.querySelectorAll('svg')];"
        "svgs.forEach((s) => { s.dataset.was = s.style.display; s.style.display = 'none'; });"
        "const text = document.body.innerText;"
        "svgs.forEach((s) => { s.style.display = s.dataset.was; });"
        "return text;"
    )
    return text


def settled(page: Page, css: str) -> str:
    """The page's text once ``css`` is shown and nothing is loading any more."""
    page.find(css, timeout=30)
    page.until(lambda d: not page.js("return !!document.querySelector('.progress, .loading')"))
    time.sleep(1.0)  # the live stream's first updates
    return page_text(page)


def choose_range(page: Page, range_: str) -> str:
    """Shows the device chart over ``range_`` (clicked again should the page have been drawn
    anew under the click) and returns the page's text once it is drawn."""
    page.find(".chart-box svg.chart", timeout=30)  # the device page is up
    button = f'.ranges button[data-range="{range_}"]'

    def chosen(d: Any) -> bool:
        if page.shown(d, button + ".active"):
            return True
        if (b := page.shown(d, button)) is not None:
            b.click()
        return False

    page.until(chosen, timeout=30, message=f"the {range_} range could not be chosen")
    return settled(page, button + ".active")


def drawn(page: Page, name: str) -> bool:
    """The chart has a line (else a screenshot of what it shows instead)."""
    if page.driver.find_elements(By.CSS_SELECTOR, ".chart-box svg.chart path.mean"):
        return True
    page.shot(name)
    return False


def check_no_negative(text: str, where: str) -> None:
    found = negatives(text)
    assert not found, f"negative figures on {where}: {found}"
    # nor a value the page failed to format
    words = re.findall(r"\b(?:null|undefined|NaN)\b", text)
    assert not words, f"{words} on {where}"


def look(demo: Demo, page: Page, at: int) -> None:
    """One checkpoint: every page the issue names, in the browser."""
    wall_min = demo.elapsed_s() / 60
    estate = ESTATES[0]

    page.open(f"#token={demo.token}")  # the URL the demo prints: logged in, then home
    # 60 s: once, with the suite's other workers busy, the page still said "loading" at 30 s
    # (the demo at ×120 answering its first API calls), not an error.
    page.until(
        lambda d: page.js("return location.hash") in ("#/authority", f"#/estate/{estate}"),
        timeout=60,
        message="the demo's URL did not log in",
    )
    page.js(f"location.hash = '#/estate/{estate}'")
    text = settled(page, ".p-plan")
    page.shot(f"{at:04d}s-1-estate")
    check_no_negative(text, "the estate page")
    for m in re.finditer(rf"已持续 {DURATION}", text):  # a plan runs in wall time
        assert minutes(m) <= wall_min + 1, (m[0], f"the demo has run {wall_min:.1f} min")
    for m in re.finditer(rf"救援时限 \S+（剩余 {DURATION}）", text):
        assert minutes(m) <= RESCUE_MIN, m[0]
    for m in re.finditer(rf"超时 {DURATION}", text):  # only an alarm raised live counts down
        assert minutes(m) <= wall_min + 1, (m[0], f"the demo has run {wall_min:.1f} min")

    station = next(
        d["id"]
        for d in demo.get(f"/api/v1/estates/{estate}/devices", kind="weather_station")["items"]
    )
    page.js(f"location.hash = '#/estate/{estate}/device/{station}'")
    for range_ in ("hour", "day"):
        text = choose_range(page, range_)
        assert drawn(page, f"{at:04d}s-failed-station-{range_}"), (
            f"the weather station's {range_} chart is empty after {at} s"
        )
        page.shot(f"{at:04d}s-2-weather-station-{range_}")
        check_no_negative(text, f"the weather station's page ({range_})")

    # and a device of another family: an e-bike charging socket, over the last hour
    socket = next(
        d["id"]
        for d in demo.get(f"/api/v1/estates/{estate}/devices", kind="ebike_charger")["items"]
        if d["online"]
    )
    page.js(f"location.hash = '#/estate/{estate}/device/{socket}'")
    text = choose_range(page, "hour")
    assert drawn(page, f"{at:04d}s-failed-{socket}"), f"{socket}'s hour chart is empty after {at} s"
    page.shot(f"{at:04d}s-2-{socket}-hour")
    check_no_negative(text, f"{socket}'s page")

    page.js("location.hash = '#/report'")
    text = settled(page, "button.download:not([disabled])")
    page.shot(f"{at:04d}s-3-report")
    check_no_negative(text, "the yearly report")


def check_api(demo: Demo) -> None:
    """The demo's one clock through the API: nothing later than now, no negative duration."""
    now = int(time.time() * 1000)
    for estate in ESTATES:
        devices = demo.get(f"/api/v1/estates/{estate}/devices")["items"]
        seen = [d["last_seen_ms"] for d in devices if d["last_seen_ms"] is not None]
        assert seen and max(seen) <= now + 1000  # before: hours ahead within minutes
        assert sum(d["online"] for d in devices) >= len(devices) // 2
        station = next(d for d in devices if d["kind"] == "weather_station")
        for span in (3_600_000, 86_400_000):  # what the page asks for, to the newest reading
            to = min(now, station["last_seen_ms"]) if span == 3_600_000 else now
            body = demo.get(
                f"/api/v1/estates/{estate}/devices/{station['id']}/telemetry",
                metric="temp_c",
                **{"from": to - span, "to": to},
            )
            assert body["points"], (estate, span, body)
    for a in demo.get("/api/v1/alarms", limit=1000)["items"]:
        for key in ("to_ack_ms", "to_resolve_ms"):
            assert a[key] is None or a[key] >= 0, a
        assert a["raised_ms"] is None or a["raised_ms"] <= now + 1000
        assert a["started_ms"] <= now + 1000
    for act in demo.get("/api/v1/plans/activations")["items"]:
        assert demo.started_ms - 1000 <= act["started_ms"] <= now + 1000, act
        for task in act.get("tasks", []):
            # a task's deadline counts from when the plan reached the control room
            assert task["due_ms"] >= act["started_ms"], task
    assert demo.get("/api/v1/deadletters")["items"] == []


def devices_update_within(demo: Demo, seconds: float) -> None:
    """Devices of both estates report again and again (the gateways publish)."""
    first: dict[str, dict[str, int]] = {e: {} for e in ESTATES}
    updated: set[str] = set()
    while demo.elapsed_s() < seconds and len(updated) < len(ESTATES):
        for estate, seen_first in first.items():
            for d in demo.get(f"/api/v1/estates/{estate}/devices")["items"]:
                if d["online"] and d["last_seen_ms"] > seen_first.setdefault(
                    d["id"], d["last_seen_ms"]
                ):
                    updated.add(estate)
        time.sleep(1)
    assert updated == set(ESTATES), (first, updated)


def test_the_demo_shows_charts_right_durations_and_no_negative_figure(
    demo: Demo, browser: Page, shots: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with capsys.disabled():
        print(f"\n  demo check: ×{SPEED}, looking at {CHECK_AT} s; screenshots in {shots}")
    assert {e["id"] for e in demo.get("/api/v1/estates")["items"]} == set(ESTATES)
    devices_update_within(demo, 30)
    for at in CHECK_AT:
        while demo.elapsed_s() < at:
            time.sleep(min(5.0, at - demo.elapsed_s()))
        look(demo, browser, int(at))
        check_api(demo)
    assert demo.stop() == 0  # Ctrl-C stops everything cleanly
    # the ground truth of what each estate played, for estatewatch score
    for estate in ESTATES:
        lines = (demo.data / f"truth-{estate}.jsonl").read_text().splitlines()
        assert all(orjson.loads(x)["estate"] == estate for x in lines)
    with capsys.disabled():
        print(f"  screenshots: {sorted(p.name for p in shots.glob('*.png'))}")
