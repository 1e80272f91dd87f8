"""Webhooks from the settings file, end to end through `estatewatch run` (issue 13): a fire
alarm reaches a plain-JSON receiver, a WeCom robot and a signed DingTalk robot on a local
HTTP server, each once; receivers for another estate or other severities get nothing; a
receiver that fails is retried, across a restart of the service, and gets it once."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import free_port
from tests.support import http_server, settings_file, stop_run, waiter

pytestmark = pytest.mark.integration

SECRET = "SEC0123456789abcdef"
TOKEN = "webhook-test-admin-token-0123"


class Receiver(BaseHTTPRequestHandler):
    posts: ClassVar[list[tuple[str, dict[str, list[str]], dict[str, Any], int]]] = []
    failing: ClassVar[set[str]] = set()  # paths that answer 503

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status = 503 if parts.path in self.failing else 200
        Receiver.posts.append((parts.path, parse_qs(parts.query), body, status))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"errcode": 0, "errmsg": "ok"}')

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.posts, Receiver.failing = [], {"/json"}
    with http_server(Receiver) as server:
        yield f"http://127.0.0.1:{server.server_port}"


wait_for = waiter(every=0.1)


def ok_posts(path: str) -> list[dict[str, Any]]:
    return [b for p, _, b, status in Receiver.posts if p == path and status == 200]


def alarm_posts(path: str) -> list[dict[str, Any]]:
    """What a receiver took about the alarm (the fire plan it raised is told too)."""
    out = []
    for b in ok_posts(path):
        text = json.dumps(b, ensure_ascii=False)
        if "alarm" in b or "【告警" in text:
            out.append(b)
    return out


def test_webhooks_from_the_settings_file_get_the_alarm_once_in_their_format(
    tmp_path: Path, receiver: str
) -> None:
    api_port = free_port()
    settings = settings_file(
        tmp_path,
        api_port,
        TOKEN,
        f"""
[[receivers]]
type = "json"
url = "{receiver}/json"

[[receivers]]
type = "wecom"
url = "{receiver}/wecom?key=abc"
severities = ["critical", "major"]

[[receivers]]
type = "dingtalk"
url = "{receiver}/dingtalk?access_token=xyz"
secret = "{SECRET}"
estates = ["e1"]

[[receivers]]
name = "elsewhere"
url = "{receiver}/other-estate"
estates = ["e2"]

[[receivers]]
name = "only-warnings"
url = "{receiver}/warnings"
severities = ["warning"]
""",
    )
    env = {**os.environ, "ESTATEWATCH_LOG_LEVEL": "WARNING"}
    cmd = [sys.executable, "-m", "estatewatch.cli", "run", "--config", str(settings)]
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{api_port}", headers={"Authorization": f"Bearer {TOKEN}"}
    )

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def up() -> bool:
            try:
                return bool(api.get("/healthz", timeout=1).status_code == 200)
            except httpx.HTTPError:
                return proc.poll() is not None  # ended: reported below

        wait_for(up, 60, "the service to start")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        return proc

    service = start()
    try:
        assert (
            api.post(
                "/api/v1/estates", json={"id": "e1", "name": "东苑小区", "region": "呼和浩特市"}
            ).status_code
            == 201
        )
        gw = api.post("/api/v1/estates/e1/gateways", json={"id": "gw-01"}).json()
        creds = gw["mqtt"]
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw-01")
        pub.username_pw_set(creds["username"], creds["password"])
        pub.connect(creds["host"], creds["port"])
        pub.loop_start()
        now = int(time.time() * 1000)
        event = {
            "dev": "fap-1",
            "kind": "fire_panel",
            "ts": now,
            "type": "fire.alarm",
            "data": {"zone": "b3-f12"},
        }
        body = {"v": 1, "gw": "gw-01", "seq": 1, "sent": now, "events": [event]}
        # the gateway is in once the broker has its new account (one process: ingest takes
        # every estate's topics, so nothing else waits on the registration)
        wait_for(lambda: pub.is_connected(), 10, "the new gateway's connection")
        pub.publish("estates/e1/gw/gw-01/events", orjson.dumps(body), qos=1).wait_for_publish(10)
        pub.loop_stop()
        pub.disconnect()

        wecom = wait_for(lambda: alarm_posts("/wecom"), 30, "the WeCom robot's message")
        ding = wait_for(lambda: alarm_posts("/dingtalk"), 30, "the DingTalk robot's message")
        wait_for(lambda: any(p == "/json" for p, *_ in Receiver.posts), 30, "a first JSON attempt")
        assert ok_posts("/json") == []  # it failed; the outbox will retry
        service.send_signal(signal.SIGTERM)
        service.wait(30)

        Receiver.failing = set()  # the receiver is back; so is the service
        service = start()
        wait_for(lambda: alarm_posts("/json"), 60, "the retried JSON post")
        time.sleep(3)  # anything sent twice would arrive by now
        (plain,) = alarm_posts("/json")
        keys = [b["key"] for b in ok_posts("/json")]
        assert len(keys) == len(set(keys))  # each notice once (the alarm, the fire plan)

        assert plain["event"] == "firing" and plain["estate"] == "e1"
        assert plain["alarm"]["rule"].startswith("fire-alarm") and plain["alarm"]["late"] is False
        (w,) = alarm_posts("/wecom")
        assert w["msgtype"] == "markdown" and "小区：东苑小区" in w["markdown"]["content"]
        assert "【告警·紧急】" in w["markdown"]["content"]
        # (issue 13) in Chinese but the device's code; the last line is the English summary
        said = w["markdown"]["content"].splitlines()[:-1]
        assert not {x for line in said for x in re.findall(r"[A-Za-z]{2,}", line)} - {"fap"}
        assert "> 对象：fap-1（火灾报警控制器）" in said and "> 状态：未确认" in said, said
        (d,) = alarm_posts("/dingtalk")
        assert d["msgtype"] == "markdown" and d["markdown"]["title"].startswith("【告警")
        # signed as DingTalk checks it: base64(HMAC-SHA256("{timestamp}\n{secret}"))
        query = next(q for p, q, b, _ in Receiver.posts if p == "/dingtalk" and b == d)
        ts = query["timestamp"][0]
        want = base64.b64encode(
            hmac.new(SECRET.encode(), f"{ts}\n{SECRET}".encode(), hashlib.sha256).digest()
        ).decode()
        assert query["sign"] == [want] and query["access_token"] == ["xyz"]
        assert abs(int(ts) - now) < 120_000
        assert wecom == [w] and ding == [d]
        assert not [p for p, *_ in Receiver.posts if p == "/other-estate"]  # another estate's
        assert alarm_posts("/warnings") == []  # a critical alarm is not for it
        for path in ("/wecom", "/dingtalk"):  # robots, once each notice
            texts = [json.dumps(b, ensure_ascii=False) for b in ok_posts(path)]
            assert len(texts) == len(set(texts))
        attempts = [s for p, _, _, s in Receiver.posts if p == "/json"]
        assert attempts[0] == 503 and attempts[-1] == 200
    finally:
        stop_run(service, 30)
