"""Browser fixtures shared by the dashboard tests: one service and one Chromium per module
(``module_service``, ``module_page``), for tests that each take seconds, not a fresh service
each; and ``page``, a fresh Chromium on the per-test ``service``. The ``Page`` helper and
``chromium`` stay in test_dashboard.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from estatewatch.service import Service
from tests.browser.test_dashboard import Page, chromium
from tests.conftest import service_settings


@pytest.fixture
def page(service: Service, tmp_path: Path) -> Iterator[Page]:
    with chromium(tmp_path) as driver:
        shots = tmp_path / "screenshots"
        shots.mkdir()
        yield Page(driver, service.url, shots)


@pytest.fixture(scope="module")
def module_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The whole service, shared by the tests of one module (each uses its own estate)."""
    svc = Service(service_settings(tmp_path_factory.mktemp("service")))
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def module_browser(
    module_service: Service, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Page]:
    tmp: Path = tmp_path_factory.mktemp("browser")
    with chromium(tmp) as driver:
        shots = tmp / "screenshots"
        shots.mkdir()
        yield Page(driver, module_service.url, shots)


@pytest.fixture
def module_page(module_browser: Page) -> Iterator[Page]:
    """The module's browser, signed out and with its log read, for one test."""
    module_browser.open("#/login")
    module_browser.js("localStorage.clear()")
    module_browser.driver.get("about:blank")  # the next open() loads the page afresh
    module_browser.driver.get_log("browser")  # what earlier tests logged is theirs
    yield module_browser
