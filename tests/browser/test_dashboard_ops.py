"""What the API lets people do, done from the dashboard, in a real headless Chromium against the
real service with its own Mosquitto (one service and one browser for the whole module; each
test has an estate of its own): the device-events list, silences, official weather warnings,
drills, raising / lowering / standing down a plan, users with their estates, estates and
gateways with their credentials, and the socket power commands.

The socket commands go the whole way: the button → ``POST …/devices/{dev}/commands`` → the
service's Mosquitto → a real gateway (``gateway.runtime``) with a simulated estate whose
charging socket overheats → its acknowledgement back → the live stream's ``command`` event →
the page, without a reload.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from estatewatch.service import Service
from gateway.runtime import Gateway as SimulatedGateway
from tests.browser.test_dashboard import (
    Gateway,
    Page,
    api,
    estate_with_gateway,
    now_ms,
    user,
)
from tests.support import HOT_SOCKET, overheating_estate, report_unowned_socket, socket_powered

pytestmark = pytest.mark.integration

try:
    from selenium.webdriver.common.by import By
except ImportError:  # the browser fixture says what to install
    By = None  # type: ignore[assignment,misc]


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


def on_duty(
    service: Service, page: Page, estate: str, name: str, username: str, role: str
) -> dict[str, Any]:
    """A new estate with its gateway, and ``username`` (an operator of it, or an authority)
    logged in to the page; the gateway's credentials."""
    creds = estate_with_gateway(service, estate, name)
    user(service, username, role, [] if role == "authority" else [estate])
    page.login(username)
    return creds


def test_device_events_are_listed_live_and_after_a_reload(
    module_service: Service, module_page: Page
) -> None:
    estate, page = "ev-xinhua", module_page
    gw = Gateway(on_duty(module_service, page, estate, "事件 新华小区", "duty-ev", "operator"))
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


def test_a_fire_alarm_reset_before_anyone_acknowledged_it_stays_listed_until_acknowledged(
    module_service: Service, module_page: Page
) -> None:
    """ISA-18.2 "return to normal, unacknowledged": the panel's reset ends the alarm, the list
    keeps it, marked, until the operator acknowledges it."""
    estate, page = "rtn-xinhua", module_page
    gw = Gateway(on_duty(module_service, page, estate, "复位 新华小区", "duty-rtn", "operator"))
    page.find(".live.live")
    fire = {"dev": "smoke-1", "kind": "smoke_detector", "ts": now_ms(), "type": "fire.alarm"}
    gw.send("events", [{**fire, "data": {"zone": "b3", "point": "smoke-1"}}])
    page.find('.alarm[data-state="firing"]')
    reset = {**fire, "ts": now_ms(), "type": "fire.reset", "data": {"by": "panel_reset"}}
    gw.send("events", [reset])

    def fire_alarm(body: dict[str, Any]) -> dict[str, Any] | None:
        found = [a for a in body["items"] if a["rule"] == "fire-alarm-detector"]
        return found[0] if found and found[0]["state"] == "cleared" else None

    alarms = f"/api/v1/alarms?estate={estate}"
    alarm = fire_alarm(wait_api(module_service, alarms, fire_alarm))
    assert alarm is not None
    item = f'.alarm[data-id="{alarm["id"]}"]'
    page.until(lambda d: "已恢复 未确认" in page.text(item), message="no cleared mark")
    assert page.find(item).get_attribute("data-state") == "cleared"
    page.shot("31-fire-alarm-reset-unacknowledged")
    page.click(f"{item} button.ack")
    page.until(lambda d: not d.find_elements(By.CSS_SELECTOR, item), message="still listed")
    done = api(module_service, "GET", f"/api/v1/alarms/{alarm['id']}").json()
    assert (done["state"], done["acked_by"]) == ("resolved", "duty-rtn")
    gw.close()
    assert page.script_errors() == []


def set_value(page: Page, css: str, value: str) -> None:
    """Sets a field the way a person's choice would, and tells the page it changed."""
    page.find(css)
    page.js(
        "const el = document.querySelector(arguments[0]); el.value = arguments[1];"
        "el.dispatchEvent(new Event('input', {bubbles: true}));"
        "el.dispatchEvent(new Event('change', {bubbles: true}));",
        css,
        value,
    )


def test_an_operator_creates_a_silence_sees_a_refused_pattern_and_expires_it(
    module_service: Service, module_page: Page
) -> None:
    estate = "si-xinhua"
    service, page = module_service, module_page
    on_duty(module_service, module_page, estate, "静默 新华小区", "duty-si", "operator")
    page.click('#nav a[href="#/silences"]')
    form = "form.silence-form"
    set_value(page, f"{form} [name=m_name]", "device")
    set_value(page, f"{form} [name=m_op]", "=~")
    set_value(page, f"{form} [name=m_value]", r"(lift)-\1")  # a backreference: RE2 refuses it
    page.find(f"{form} [name=comment]").send_keys("2 号电梯年检")
    page.click(f"{form} button[type=submit]")
    refused = page.text(f"{form} .error-box")
    assert "RE2" in refused and "请按下方说明修改" in refused, refused
    page.shot("31-silence-refused-pattern")
    assert api(service, "GET", "/api/v1/silences").json()["items"] == []

    set_value(page, f"{form} [name=m_value]", "lift-.*")
    page.click(f"{form} button[type=submit]")
    page.until(lambda d: "已创建静默" in page.text(f"{form} .form-outcome"), message="not created")
    (made,) = api(service, "GET", "/api/v1/silences?active=true").json()["items"]
    assert made["estate"] == estate and made["created_by"] == "duty-si"
    assert {"name": "device", "op": "=~", "value": "lift-.*"} in made["matchers"]
    assert made["ends_ms"] - made["starts_ms"] == 60 * 60_000  # the default hour
    row = f'tr[data-silence="{made["id"]}"]'
    assert "设备 =~ lift-.*" in page.text(row)
    page.shot("32-silence-created")

    page.click(f'{row} button[data-action="expire"]')  # asks first
    page.until(lambda d: "确认" in page.text(f'{row} button[data-action="expire"]'))
    page.click(f'{row} button[data-action="expire"]')
    page.until(lambda d: not d.find_elements(By.CSS_SELECTOR, row), message="still listed")
    assert api(service, "GET", "/api/v1/silences?active=true").json()["items"] == []
    assert page.script_errors() == []


def test_the_authority_posts_an_official_warning_for_an_estate_and_lifts_it(
    module_service: Service, module_page: Page
) -> None:
    estate = "wa-xinhua"
    service, page = module_service, module_page
    on_duty(module_service, module_page, estate, "预警 新华小区", "bureau-wa", "authority")
    page.click('#nav a[href="#/warnings"]')
    form = "form.warning-form"
    page.click(f"{form} button[type=submit]")  # covering nothing: said what to do
    assert "请选择覆盖的小区" in page.text(f"{form} .form-outcome")
    set_value(page, f"{form} [name=hazard]", "snowstorm")
    set_value(page, f"{form} [name=level]", "orange")
    page.js(
        "for (const o of document.querySelector(arguments[0]).options)"
        " o.selected = o.value === arguments[1];",
        f"{form} [name=estates]",
        estate,
    )
    page.find(f"{form} [name=source]").send_keys("呼和浩特市气象台")
    page.click(f"{form} button[type=submit]")
    page.until(lambda d: "已发布暴雪橙色预警" in page.text(f"{form} .form-outcome"))
    (posted,) = api(service, "GET", "/api/v1/warnings?active=true").json()["items"]
    assert (posted["hazard"], posted["level"], posted["estates"]) == (
        "snowstorm",
        "orange",
        [estate],
    )
    assert posted["created_by"] == "bureau-wa"
    # the estate's snowstorm plan follows the official warning at once
    wait_api(
        service,
        f"/api/v1/plans/activations?estate={estate}&active=true",
        lambda b: any(a["plan"] == "snowstorm" for a in b["items"]),
    )
    row = f'tr[data-warning="{posted["id"]}"]'
    assert "预警 新华小区" in page.text(row)
    page.shot("33-warning-posted")
    page.click("#lang")  # in English too
    page.until(lambda d: page.text(".warnings h1") == "Official weather warnings")
    assert "in force" in page.text(f"{row} td.state")
    page.click("#lang")
    page.until(lambda d: page.text(".warnings h1") == "官方气象预警")
    page.click(f'{row} button[data-action="cancel"]')
    page.click(f'{row} button[data-action="cancel"]')
    page.until(lambda d: "已解除" in page.text(".warnings .form-outcome"), message="not lifted")
    assert api(service, "GET", "/api/v1/warnings?active=true").json()["items"] == []
    # an authority reads silences but neither creates nor ends them
    page.click('#nav a[href="#/silences"]')
    assert "只能查看静默" in page.text(".silences")
    assert not page.driver.find_elements(By.CSS_SELECTOR, "form.silence-form")
    assert page.script_errors() == []


def test_an_operator_plans_a_drill_and_records_it_when_held(
    module_service: Service, module_page: Page
) -> None:
    estate = "dr-xinhua"
    service, page = module_service, module_page
    on_duty(module_service, module_page, estate, "演练 新华小区", "duty-dr", "operator")
    page.click('#nav a[href="#/drills"]')
    set_value(page, "form.drill-plan-form [name=plan]", "elevator_entrapment")
    page.click("form.drill-plan-form button[type=submit]")
    page.until(lambda d: "已计划" in page.text("form.drill-plan-form .form-outcome"))
    (planned,) = api(service, "GET", f"/api/v1/drills?estate={estate}").json()["items"]
    assert (planned["status"], planned["plan"]) == ("scheduled", "elevator_entrapment")
    row = f'tr[data-drill="{planned["id"]}"]'
    page.find(f'{row}[data-status="scheduled"]')
    page.shot("34-drill-planned")

    page.click(f"{row} button.record")
    form = "form.drill-record-form"
    assert "记录计划中的演练" in page.text(f"{form} .recording-for")
    page.click(f"{form} button[type=submit]")  # held, but nobody named
    assert "请填写参加人员" in page.text(f"{form} .form-outcome")
    page.find(f"{form} [name=participants]").send_keys("张工、李师傅，保安队")
    page.find(f"{form} [name=findings]").send_keys("对讲机 2 号楼信号弱")
    page.click(f"{form} button[type=submit]")
    page.find(f'{row}[data-status="held"]')
    (held,) = api(service, "GET", f"/api/v1/drills?estate={estate}").json()["items"]
    assert held["id"] == planned["id"] and held["recorded_by"] == "duty-dr"
    assert held["participants"] == ["张工", "李师傅", "保安队"]
    assert held["findings"] == "对讲机 2 号楼信号弱"
    page.shot("35-drill-recorded")
    assert page.script_errors() == []


def test_an_operator_raises_a_plan_by_hand_changes_its_level_and_stands_it_down(
    module_service: Service, module_page: Page
) -> None:
    estate = "pl-xinhua"
    service, page = module_service, module_page
    on_duty(module_service, module_page, estate, "预案 新华小区", "duty-pl", "operator")
    page.find(".p-plan .all-clear")
    page.click(".plan-raise summary")
    set_value(page, ".raise-form [name=plan]", "gas_leak")
    set_value(page, ".raise-form [name=level]", "Ⅳ")
    page.find(".raise-form [name=reason]").send_keys("3 号楼住户报燃气异味")
    page.click(".raise-form button[type=submit]")
    act = '.activation[data-level="Ⅳ"]'
    page.find(act)
    assert "燃气" in page.text(f"{act} h3")
    page.shot("36-plan-raised")

    # to Ⅰ: the reason is asked for first
    page.click(f'{act} .plan-controls button[data-level="Ⅰ"]')
    assert "请先填写原因" in page.text(f"{act} .plan-said")
    page.find(f"{act} [name=plan_reason]").send_keys("燃气公司确认泄漏，上报街道")
    page.click(f'{act} .plan-controls button[data-level="Ⅰ"]')
    act1 = '.activation[data-level="Ⅰ"]'
    page.find(act1)
    page.find(f"{act1} [name=plan_reason]").send_keys("已关阀，险情可控")
    page.click(f'{act1} .plan-controls button[data-level="Ⅳ"]')
    page.find(act)
    # (issue 13) its timeline in Chinese: what happened and who, no English word but the
    # operator's user name
    steps = f"{act} .plan-timeline"
    page.until(lambda d: "降级 Ⅳ" in page.text(steps), message="the lowering is not listed")
    said = page.text(steps)
    assert "启动 Ⅳ" in said and "升级 Ⅰ" in said, said
    assert not re.findall(r"[A-Za-z]{2,}", said.replace("duty-pl", "")), said
    page.find(f"{act} [name=plan_reason]").send_keys("现场处置完毕")
    page.click(f'{act} button[data-action="stand-down"]')
    page.click(f'{act} button[data-action="stand-down"]')
    page.find(".p-plan .all-clear")
    acts = api(service, "GET", f"/api/v1/plans/activations?estate={estate}").json()["items"]
    (gone,) = acts
    assert gone["active"] is False
    full = api(service, "GET", f"/api/v1/plans/activations/{gone['id']}").json()
    actions = [e["action"] for e in full["timeline"]]
    assert "raised" in actions and "lowered" in actions and "stood_down" in actions, actions
    page.shot("37-plan-stood-down")
    assert page.script_errors() == []


def test_the_admin_registers_an_estate_and_gateway_and_gives_a_user_its_estates(
    module_service: Service, module_page: Page
) -> None:
    service, page = module_service, module_page
    estate_with_gateway(service, "ad-old", "运维 老小区")
    page.open("#token=test-admin-token-0123456789")
    page.click('#nav a[href="#/admin"]')
    form = "form.estate-new"
    page.find(f"{form} [name=id]").send_keys("ad-new")
    page.find(f"{form} [name=name]").send_keys("运维 新小区")
    page.find(f"{form} [name=region]").send_keys("包头市")
    page.click(f"{form} button[type=submit]")
    page.until(lambda d: "已新增小区 运维 新小区" in page.text(form), message="no estate")
    assert api(service, "GET", "/api/v1/estates/ad-new").json()["region"] == "包头市"
    page.find('form.estate-settings[data-estate="ad-new"]')  # its settings row at once

    gw_form = "form.gateway-new"
    set_value(page, f"{gw_form} [name=estate]", "ad-new")
    page.find(f"{gw_form} [name=id]").send_keys("gw-09")
    page.click(f"{gw_form} button[type=submit]")
    password = page.text('#credentials-notice dd[data-field="cred.password"]')
    assert password and "仅显示这一次" in page.text("#credentials-notice")
    page.find('.estate-gateways[data-estate="ad-new"] tr[data-gateway="gw-09"]')
    page.shot("38-admin-estate-and-gateway")

    u_form = "form.user-new"
    page.find(f"{u_form} [name=username]").send_keys("duty-ad")
    set_value(page, f"{u_form} [name=role]", "operator")
    page.find(f"{u_form} [name=password]").send_keys("a-long-first-pass-7")
    page.click(f"{u_form} button[type=submit]")  # an operator with no estate: refused here
    assert "至少要分配一个小区" in page.text(u_form)
    page.js(
        "for (const o of document.querySelector(arguments[0]).options)"
        " o.selected = o.value === 'ad-old';",
        f"{u_form} [name=estates]",
    )
    page.click(f"{u_form} button[type=submit]")
    row = 'table.users tr[data-user="duty-ad"]'
    assert "运维 老小区" in page.text(f"{row} td.estates")

    # change: both estates, viewer
    page.click(f'{row} button[data-action="edit"]')
    edit = 'tr.user-edit[data-edit="duty-ad"]'
    set_value(page, f"{edit} [name=role]", "viewer")
    page.js(
        "for (const o of document.querySelector(arguments[0]).options) o.selected = true;",
        f"{edit} [name=estates]",
    )
    page.click(f"{edit} button[type=submit]")
    page.until(lambda d: "已更新" in page.text("#credentials-notice"), message="not updated")
    got = {u["username"]: u for u in api(service, "GET", "/api/v1/users").json()["items"]}
    assert got["duty-ad"]["role"] == "viewer"
    assert set(got["duty-ad"]["estates"]) >= {"ad-old", "ad-new"}
    # the notice shows before the users table is drawn anew with the change
    page.until(
        lambda d: "运维 新小区" in page.text(f"{row} td.estates"), message="the estates not shown"
    )
    page.shot("39-admin-user-estates")
    assert page.script_errors() == []


SOCKET_ESTATE = "so-xinhua"


@pytest.fixture(scope="module")
def socket_estate(
    module_service: Service, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SimulatedGateway]:
    """An estate with an operator and a real gateway in front of simulated charging sockets,
    the first of them overheating since 12 minutes ago (past 60 °C on the first poll)."""
    creds = estate_with_gateway(module_service, SOCKET_ESTATE, "插座 新华小区")
    user(module_service, "duty-so", "operator", [SOCKET_ESTATE])
    gw = overheating_estate(
        module_service.catalog,
        SOCKET_ESTATE,
        creds,
        tmp_path_factory.mktemp("gw"),
        hot_since_min=12,
    )
    try:
        yield gw
    finally:
        gw.stop()


def socket_commands(service: Service, dev: str) -> list[dict[str, Any]]:
    path = f"/api/v1/estates/{SOCKET_ESTATE}/devices/{dev}/commands"
    items: list[dict[str, Any]] = api(service, "GET", path).json()["items"]
    return items


# Every request the page makes from here on (method, path), and the state each POST was
# answered with: what the page shows afterwards came by the live stream, not by asking again.
RECORD_FETCHES = """
window.__fetched = [];
window.__answered = [];
const real = window.fetch;
window.fetch = async (path, opts) => {
  const method = (opts && opts.method) || "GET";
  window.__fetched.push([method, String(path)]);
  const r = await real(path, opts);
  if (method === "POST") r.clone().json().then((b) => window.__answered.push(b.state));
  return r;
};
"""


def test_an_operator_cuts_a_hot_socket_from_its_alarm_and_restores_it_from_its_page(
    module_service: Service, module_page: Page, socket_estate: SimulatedGateway
) -> None:
    service, page = module_service, module_page

    def hot_alarm(body: dict[str, Any]) -> dict[str, Any] | None:
        return next((a for a in body["items"] if a["rule"] == "ebike-socket-hot"), None)

    def tripped(body: dict[str, Any]) -> dict[str, Any] | None:
        return next((a for a in body["items"] if a["rule"] == "ebike-protection"), None)

    hot = hot_alarm(wait_api(service, f"/api/v1/alarms?estate={SOCKET_ESTATE}", hot_alarm, 20))
    assert hot is not None
    assert (hot["subject"], hot["late"]) == (HOT_SOCKET, False)
    trip = tripped(wait_api(service, f"/api/v1/alarms?estate={SOCKET_ESTATE}", tripped, 20))
    assert trip is not None and trip["subject"] == HOT_SOCKET
    page.login("duty-so")
    page.find(".live.live")
    # the socket's protection alarm offers the power cut too, not only the over-temperature one
    page.find(f'.alarm[data-id="{trip["id"]}"] button.power')
    alarm = f'.alarm[data-id="{hot["id"]}"]'
    page.click(f"{alarm} button.details")  # its timeline open while the command goes
    page.find(f"{alarm} .timeline li")
    page.click(f"{alarm} button.power")
    off = f'{alarm} button[data-command="socket.power_off"]'
    page.click(off)  # no reason yet: said what to do, nothing sent
    assert "请先填写原因" in page.text(f"{alarm} .command-said")
    page.find(f"{alarm} [name=command_reason]").send_keys("插座过热，远程断电")
    page.click(off)
    assert f"确认对 {HOT_SOCKET} 断电" in page.text(off)
    assert socket_commands(service, HOT_SOCKET) == []  # nothing sent before the confirmation
    page.js("window.__noReload = true;" + RECORD_FETCHES)
    page.click(off)

    # sent → the gateway carries it out on the simulated socket → its ack → the live stream
    done = f'{alarm} li.command-state[data-state="acknowledged"][data-action="socket.power_off"]'
    assert "断开插座电源：网关已执行" in page.text(done)
    assert page.js("return window.__noReload") is True
    fetched = page.js("return window.__fetched")
    asked = [(m, p) for m, p in fetched if "/commands" in p]
    assert asked == [("POST", f"/api/v1/estates/{SOCKET_ESTATE}/devices/{HOT_SOCKET}/commands")]
    assert page.js("return window.__answered") == ["sent"]  # acknowledged: by the stream
    (cmd,) = socket_commands(service, HOT_SOCKET)
    assert (cmd["state"], cmd["by"], cmd["alarm_id"]) == ("acknowledged", "duty-so", hot["id"])
    assert cmd["reason"] == "插座过热，远程断电" and cmd["gateway"] == "gw-01"
    assert not socket_powered(socket_estate, HOT_SOCKET)  # the simulated socket is off

    # the alarm's timeline, redrawn live: who asked, what, why; then the gateway's answer
    sent_row = f'{alarm} .timeline li[data-action="command_sent"]'
    acked_row = f'{alarm} .timeline li[data-action="command_acknowledged"]'
    sent_text = page.text(sent_row)
    assert "下发远程指令 · duty-so · 断开插座电源（插座过热，远程断电）" in sent_text, sent_text
    assert "远程指令已执行 · 网关 · 断开插座电源" in page.text(acked_row)
    page.js("document.querySelector(arguments[0]).scrollIntoView()", acked_row)
    page.shot("40-socket-power-off-from-alarm")

    # on the device page: the earlier command listed, power restored from there
    page.open(f"#/estate/{SOCKET_ESTATE}/device/{HOT_SOCKET}")
    control = ".socket-slot .socket-control"
    page.find(f'{control} li.command-state[data-id="{cmd["id"]}"][data-state="acknowledged"]')
    page.find(f"{control} [name=command_reason]").send_keys("现场已处理，恢复充电")
    on = f'{control} button[data-command="socket.power_on"]'
    page.click(on)
    assert f"确认对 {HOT_SOCKET} 恢复供电" in page.text(on)
    page.click(on)
    back = f'{control} li.command-state[data-state="acknowledged"][data-action="socket.power_on"]'
    assert "恢复插座供电：网关已执行" in page.text(back)
    latest = socket_commands(service, HOT_SOCKET)[0]
    assert (latest["action"], latest["state"], latest["alarm_id"]) == (
        "socket.power_on",
        "acknowledged",
        None,
    )
    assert socket_powered(socket_estate, HOT_SOCKET)
    page.shot("41-socket-power-on-device-page")
    assert page.script_errors() == []


def test_a_gateway_that_refuses_a_command_shows_its_reason_on_the_page_and_the_alarm(
    module_service: Service, module_page: Page, socket_estate: SimulatedGateway
) -> None:
    service, page = module_service, module_page
    ghost = "ghost-ebc-9"
    report_unowned_socket(socket_estate, ghost)
    wait_api(
        service,
        f"/api/v1/estates/{SOCKET_ESTATE}/devices?device={ghost}",
        lambda b: bool(b["items"]),
    )
    page.login("duty-so")
    page.open(f"#/estate/{SOCKET_ESTATE}/device/{ghost}")
    page.find(".live.live")
    control = ".socket-slot .socket-control"
    page.find(f"{control} [name=command_reason]").send_keys("检修前断电")
    off = f'{control} button[data-command="socket.power_off"]'
    page.click(off)
    page.click(off)
    failed_row = f'{control} li.command-state[data-state="failed"]'
    failed = page.text(failed_row)
    assert "断开插座电源：失败（" in failed, failed
    # a reason our gateway gives is labelled (zh/en); its own words stay on hover
    assert failed.endswith("— 网关下没有该设备"), failed
    said = page.find(f"{failed_row} .command-error").get_attribute("title")
    assert said == f"no device '{ghost}' behind this gateway"
    (cmd,) = socket_commands(service, ghost)
    assert cmd["state"] == "failed" and ghost in cmd["error"]
    page.shot("42-socket-command-refused")

    # refused for a hot socket's alarm: the reason in the alarm's timeline too
    hot_ghost = "ghost-ebc-8"
    report_unowned_socket(socket_estate, hot_ghost, temp_c=72.0)

    def ghost_alarm(body: dict[str, Any]) -> dict[str, Any] | None:
        return next((a for a in body["items"] if a["subject"] == hot_ghost), None)

    alarms = f"/api/v1/alarms?estate={SOCKET_ESTATE}&rule=ebike-socket-hot"
    hot = ghost_alarm(wait_api(service, alarms, ghost_alarm))
    assert hot is not None and hot["rule"] == "ebike-socket-hot"
    page.open(f"#/estate/{SOCKET_ESTATE}")
    alarm = f'.alarm[data-id="{hot["id"]}"]'
    page.click(f"{alarm} button.details")
    page.click(f"{alarm} button.power")
    page.find(f"{alarm} [name=command_reason]").send_keys("插座过热")
    page.click(f'{alarm} button[data-command="socket.power_off"]')
    page.click(f'{alarm} button[data-command="socket.power_off"]')
    assert "断开插座电源：失败（" in page.text(f'{alarm} li.command-state[data-state="failed"]')
    refused = page.text(f'{alarm} .timeline li[data-action="command_failed"]')
    assert "远程指令被网关拒绝 · 网关 · 断开插座电源（插座过热）" in refused, refused
    assert "— 网关下没有该设备" in refused, refused
    page.js(
        "document.querySelector(arguments[0]).scrollIntoView()",
        f'{alarm} .timeline li[data-action="command_failed"]',
    )
    page.shot("43-socket-command-refused-alarm-timeline")
    assert page.script_errors() == []
