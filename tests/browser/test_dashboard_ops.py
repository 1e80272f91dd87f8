"""What the API lets people do, done from the dashboard, in a real headless Chromium against the
real service with its own Mosquitto (one service and one browser for the whole module; each
test has an estate of its own): the device-events list, silences, official weather warnings,
drills, raising / lowering / standing down a plan, users with their estates, estates and
gateways with their credentials, and the socket power commands.

The socket command API (``POST /api/v1/estates/{estate}/devices/{dev}/commands``) is being
built on another branch: the test of its buttons runs against a small stand-in route mounted
only in this module (``app_extras`` below), which answers with the command record's shape and
announces its acknowledgement on the live stream as the real one will.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from fastapi import FastAPI

from api.deps import Ctx, CurrentUser, guard
from estatewatch.service import Service
from tests.browser.test_dashboard import (
    Gateway,
    Page,
    api,
    estate_with_gateway,
    now_ms,
    user,
)

pytestmark = pytest.mark.integration


def wait_api(service: Service, path: str, check: Any, timeout: float = 10) -> Any:
    """The API's answer at ``path`` once ``check(answer)`` holds."""
    deadline = time.monotonic() + timeout
    body = None
    while time.monotonic() < deadline:
        body = api(service, "GET", path).json()
        if check(body):
            return body
        time.sleep(0.1)
    raise AssertionError(f"{path}: {body}")


# --- the stand-in for the socket command API (another branch builds the real one) ----------
COMMANDS: list[dict[str, Any]] = []


def command_stand_in(app: FastAPI) -> None:
    @app.post(
        "/api/v1/estates/{estate}/devices/{dev}/commands",
        status_code=201,
        **guard("estate:operate"),
    )
    def send_command(
        estate: str, dev: str, body: dict[str, Any], ctx: Ctx, p: CurrentUser
    ) -> dict[str, Any]:
        now = now_ms()
        record = {
            "id": f"cmd-{len(COMMANDS) + 1}",
            "estate": estate,
            "dev": dev,
            "action": body["action"],
            "reason": body.get("reason", ""),
            "alarm_id": body.get("alarm_id"),
            "state": "sent",
            "error": None,
            "sent_ms": now,
            "answered_ms": None,
            "by": p.username,
        }
        COMMANDS.append(dict(record))
        live = ctx.live

        def acknowledge() -> None:  # the socket answers a moment later, on the live feed
            time.sleep(0.5)
            if live is not None:
                live.publish(
                    estate,
                    "command",
                    {**record, "state": "acknowledged", "answered_ms": now_ms()},
                )

        threading.Thread(target=acknowledge, daemon=True).start()
        return record


app_extras = [command_stand_in]


def test_device_events_are_listed_live_and_after_a_reload(
    module_service: Service, module_page: Page
) -> None:
    estate = "ev-xinhua"
    service, page = module_service, module_page
    gw = Gateway(estate_with_gateway(service, estate, "事件 新华小区"))
    user(service, "duty-ev", "operator", [estate])
    page.login("duty-ev")
    page.find(".live.live")
    assert "等待设备事件" in page.text(".events")
    gw.send(
        "events",
        [
            {
                "dev": "lift-1",
                "kind": "elevator",
                "ts": now_ms(),
                "type": "elevator.trapped",
                "data": {"floor": 7, "people": True},
            }
        ],
    )
    page.until(lambda d: "困人" in page.text(".events"), message="the event is not listed")
    assert "lift-1" in page.text(".events")
    page.shot("30-device-events-live")
    # Opened afterwards (another screen, a reload), the list starts with what already came.
    page.driver.refresh()
    page.until(lambda d: "困人" in page.text(".events"), message="not listed after a reload")
    gw.close()
    assert page.script_errors() == []
