"""The admin page's credential lifecycle in real headless Chromium against the real service and
its managed Mosquitto: the admin disables a user (its token dies at once) and rotates a
gateway's password (the new one is shown once; the gateway's connection made with the old one
is cut and the old password refused). Screenshots go to ``tests/browser/artifacts/``.
"""

from __future__ import annotations

import threading

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from estatewatch.service import Service
from tests.browser.test_dashboard import (  # the API helpers
    PASSWORD,
    Page,
    estate_with_gateway,
    user,
)
from tests.support import connect_result

pytestmark = pytest.mark.integration

ESTATE = "bt-creds"


def test_admin_disables_a_user_and_rotates_a_gateway_from_the_admin_page(
    service: Service, page: Page
) -> None:
    creds = estate_with_gateway(service, ESTATE, "测试 凭据小区")
    user(service, "duty-bt", "operator", [ESTATE])
    r = httpx.post(
        f"{service.url}/api/v1/login", json={"username": "duty-bt", "password": PASSWORD}
    )
    duty_token = r.json()["token"]
    # the gateway, connected with its first password
    cut = threading.Event()
    gw = mqtt.Client(CallbackAPIVersion.VERSION2)
    gw.username_pw_set(creds["username"], creds["password"])
    gw.on_disconnect = lambda *a: cut.set()
    gw.connect(creds["host"], creds["port"])
    gw.loop_start()

    page.open("#token=test-admin-token-0123456789")
    page.click('#nav a[href="#/admin"]')

    # disable the user: a first click arms the button, the second acts
    row = 'table.users tr[data-user="duty-bt"]'
    page.find(f'{row} td[data-status="enabled"]')
    page.click(f'{row} button[data-action="disable"]')
    page.until(lambda d: "确认" in page.text(f'{row} button[data-action="disable"]'))
    page.click(f'{row} button[data-action="disable"]')
    page.find(f'{row} td[data-status="disabled"]')
    assert "已停用" in page.text("#credentials-notice")
    page.shot("20-admin-user-disabled")
    me = httpx.get(f"{service.url}/api/v1/me", headers={"Authorization": f"Bearer {duty_token}"})
    assert me.status_code == 401
    r = httpx.post(
        f"{service.url}/api/v1/login", json={"username": "duty-bt", "password": PASSWORD}
    )
    assert r.status_code == 401

    # rotate the gateway's password: shown once in the notice
    gw_row = f'.estate-gateways[data-estate="{ESTATE}"] tr[data-gateway="gw-01"]'
    page.click(f'{gw_row} button[data-action="rotate"]')
    page.click(f'{gw_row} button[data-action="rotate"]')
    new_password = page.text('#credentials-notice dd[data-field="cred.password"]')
    assert page.text('#credentials-notice dd[data-field="cred.username"]') == creds["username"]
    assert new_password and new_password != creds["password"]
    assert "仅显示这一次" in page.text("#credentials-notice")
    page.shot("21-admin-gateway-rotated")
    try:
        assert cut.wait(5), "the gateway's connection with the old password was not cut"
    finally:
        gw.loop_stop()
    assert connect_result(creds, creds["password"]) == "Not authorized"
    assert connect_result(creds, new_password) == "Success"
    # the new password is not shown again: a reload shows no credentials
    page.driver.refresh()
    page.find(gw_row)
    assert new_password not in page.driver.page_source
    assert page.script_errors() == []
