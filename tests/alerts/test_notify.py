"""Notifiers (MQTT, webhooks in plain JSON, WeCom and DingTalk robot formats) and the outbox:
retries with backoff, and a log so nothing is sent twice, restarts included."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa

from alerts.notify import Notification, NotifyError
from alerts.notify.mqtt import MqttNotifier
from alerts.notify.outbox import Outbox
from alerts.notify.receivers import receivers_from_config
from alerts.notify.webhook import WebhookNotifier, dingtalk_sign
from alerts.store import AlertStore, StoreBatch
from tests.alerts.conftest import MINUTE, START, EngineFactory, RecordingNotifier, SimClock, Site
from tests.support import http_server

ALARM = {
    "id": "al-1",
    "rule": "elevator-trapped",
    "estate": "e1",
    "subject": "lift-b2-1",
    "kind": "elevator",
    "severity": "critical",
    "state": "firing",
    "summary": {"zh": "电梯困人", "en": "Passengers trapped"},
    "started_ms": START,
    "fired_ms": START,
    "deadline_ms": START + 30 * MINUTE,
    "detail": {"event": "elevator.trapped"},
}
NOTE = Notification("al-1:firing.0:cr", "cr", "e1", "firing", {"alarm": ALARM}, START)


class Robot(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict[str, Any]]]] = []
    answer: ClassVar[dict[str, Any]] = {"errcode": 0, "errmsg": "ok"}
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Robot.received.append((self.path, json.loads(body)))
        data = json.dumps(Robot.answer).encode()
        self.send_response(Robot.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def robot() -> Iterator[str]:
    Robot.received, Robot.answer, Robot.status = [], {"errcode": 0, "errmsg": "ok"}, 200
    with http_server(Robot) as server:
        yield f"http://127.0.0.1:{server.server_port}/hook"


def test_plain_json_webhook(robot: str) -> None:
    WebhookNotifier("json", robot).send(NOTE)
    ((path, body),) = Robot.received
    assert path == "/hook"
    assert (body["event"], body["key"], body["alarm"]["id"]) == ("firing", NOTE.key, "al-1")


def test_wecom_robot_markdown(robot: str) -> None:
    WebhookNotifier("wecom", robot, "wecom").send(NOTE)
    ((_, body),) = Robot.received
    assert body["msgtype"] == "markdown"
    text = body["markdown"]["content"]
    assert text.startswith("**【告警·紧急】电梯困人**")
    assert "> 对象：lift-b2-1（电梯）" in text  # the kind as people name it, not its code
    assert "> 到场时限：2026-01-10 08:30:00" in text  # Asia/Shanghai; a lift's is its arrival


def test_dingtalk_robot_is_signed(robot: str) -> None:
    WebhookNotifier("ding", robot, "dingtalk", secret="SECabc").send(NOTE)
    ((path, body),) = Robot.received
    assert body["msgtype"] == "markdown" and body["markdown"]["title"].startswith("【告警")
    query = parse_qs(urlsplit(path).query)
    ts = int(query["timestamp"][0])
    assert query["sign"][0] == dingtalk_sign("SECabc", ts).replace("%2B", "+").replace(
        "%2F", "/"
    ).replace("%3D", "=")


def test_a_robot_that_refuses_is_a_failure(robot: str) -> None:
    Robot.answer = {"errcode": 93000, "errmsg": "invalid webhook url"}
    with pytest.raises(NotifyError, match="refused"):
        WebhookNotifier("wecom", robot, "wecom").send(NOTE)
    Robot.status = 500
    with pytest.raises(NotifyError, match="HTTP 500"):
        WebhookNotifier("json", robot).send(NOTE)
    with pytest.raises(NotifyError, match="cannot reach"):
        WebhookNotifier("json", "http://127.0.0.1:9/nothing", timeout_s=1).send(NOTE)
    with pytest.raises(ValueError, match="not an http"):
        WebhookNotifier("x", "file:///etc/passwd")


def test_receivers_from_settings() -> None:
    got = receivers_from_config(
        {"control_room": [{"type": "wecom", "url": "https://qyapi.example/send"}]}
    )
    (n,) = got["control_room"]
    assert n.name == "control_room-wecom-0"
    with pytest.raises(ValueError, match="unknown type 'sms'"):
        receivers_from_config({"x": [{"type": "sms", "url": "https://a"}]})


def test_mqtt_notifier_topic_and_payload() -> None:
    sent: list[tuple[str, bytes, bool]] = []
    MqttNotifier(lambda t, p, r: sent.append((t, p, r))).send(NOTE)
    ((topic, payload, retain),) = sent
    assert (topic, retain) == ("estates/e1/alerts", False)
    assert json.loads(payload)["alarm"]["subject"] == "lift-b2-1"


@pytest.fixture
def store(sqlite_url: str) -> Iterator[AlertStore]:
    engine = sa.create_engine(sqlite_url)
    s = AlertStore(engine)
    s.migrate(START)
    yield s
    engine.dispose()


def test_outbox_retries_with_backoff_then_gives_up(store: AlertStore) -> None:
    clock = SimClock()
    flaky = RecordingNotifier("cr", failures=2)
    box = Outbox(store, {"cr": flaky}, clock, max_attempts=3, backoff_ms=1000)
    store.write(StoreBatch(notifications=[NOTE]))
    assert box.deliver_due() == 0  # attempt 1 fails: retry in 1 s
    assert box.deliver_due() == 0  # not due yet
    clock.advance(1000)
    assert box.deliver_due() == 0  # attempt 2 fails: retry in 2 s
    clock.advance(1999)
    assert box.deliver_due() == 0
    clock.advance(1)
    assert box.deliver_due() == 1
    (row,) = store.list_notifications()
    assert (row["state"], row["attempts"], len(flaky.sent)) == ("sent", 3, 1)

    dead = RecordingNotifier("cr", failures=10)
    box = Outbox(store, {"cr": dead}, clock, max_attempts=2, backoff_ms=1000)
    store.write(StoreBatch(notifications=[Notification("k2", "cr", "e1", "firing", {}, clock.now)]))
    box.deliver_due()
    clock.advance(1000)
    box.deliver_due()
    row = next(r for r in store.list_notifications() if r["key"] == "k2")
    assert (row["state"], row["attempts"]) == ("failed", 2)
    assert "cr is down" in row["last_error"]
    assert box.backoff(1) == 1000 and box.backoff(30) == box.max_backoff_ms


def test_the_same_key_is_logged_once(store: AlertStore) -> None:
    store.write(StoreBatch(notifications=[NOTE]))
    store.write(StoreBatch(notifications=[NOTE]))
    assert len(store.list_notifications()) == 1


def test_nothing_is_sent_twice_across_restarts(
    sqlite_url: str, make_engine: EngineFactory, clock: SimClock
) -> None:
    down = RecordingNotifier("cr", failures=1)
    first = Site(make_engine(sqlite_url, receivers={"control_room": [down]}), clock)
    first.reading("p1", "fire_pump", fault=True)
    first.engine.tick()  # the webhook is down: the firing waits in the log
    assert down.sent == []
    first.engine.stop()

    up = RecordingNotifier("cr")
    clock.advance(MINUTE)
    second = Site(make_engine(sqlite_url, receivers={"control_room": [up]}), clock)
    second.engine.tick()
    assert up.events() == ["firing"]
    second.engine.stop()

    again = RecordingNotifier("cr")
    third = Site(make_engine(sqlite_url, receivers={"control_room": [again]}), clock)
    clock.advance(MINUTE)
    third.reading("p1", "fire_pump", fault=True)  # the same fault, still open
    third.engine.tick()
    assert again.sent == []


def test_the_notify_thread_delivers_on_its_own(
    sqlite_url: str, make_engine: EngineFactory, clock: SimClock
) -> None:
    cr = RecordingNotifier("cr")
    site = Site(make_engine(sqlite_url, receivers={"control_room": [cr]}), clock)
    site.engine.start()
    site.reading("p1", "fire_pump", fault=True)
    for _ in range(200):
        if cr.sent:
            break
        threading.Event().wait(0.01)
    site.engine.stop()
    assert cr.events() == ["firing"]


def test_old_delivered_notifications_are_purged(store: AlertStore) -> None:
    store.write(
        StoreBatch(notifications=[NOTE, Notification("k2", "cr", "e1", "firing", {}, START)])
    )
    store.notification_sent(NOTE.key, START)
    assert store.purge_notifications(START + 1) == 1  # k2 is still pending: kept
    assert [r["key"] for r in store.list_notifications()] == ["k2"]
