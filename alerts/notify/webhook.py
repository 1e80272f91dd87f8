"""Webhooks: plain JSON, and the WeCom (企业微信) and DingTalk (钉钉) group-robot formats.

Plain JSON posts the notification as it is. The robots take a markdown message; both answer
HTTP 200 with ``{"errcode": 0}`` on success, so a non-zero errcode is a failure to retry.
DingTalk robots with "加签" security need the secret: the request is signed with HMAC-SHA256
of ``"{timestamp}\\n{secret}"``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import urllib.error
import urllib.parse
import urllib.request
from enum import StrEnum
from typing import Any

import orjson

from alerts.notify import Notification, NotifyError
from alerts.notify.text import describe
from protocol.clock import now_ms

__all__ = ["WebhookNotifier", "WebhookStyle", "dingtalk_body", "json_body", "wecom_body"]


class WebhookStyle(StrEnum):
    JSON = "json"
    WECOM = "wecom"
    DINGTALK = "dingtalk"


def json_body(n: Notification) -> dict[str, Any]:
    return {
        "v": 1,
        "key": n.key,
        "event": n.event,
        "estate": n.estate,
        "created_ms": n.created_ms,
        **n.payload,
    }


def _markdown(n: Notification) -> tuple[str, str]:
    title, lines = describe(n)
    return title, "\n".join([f"**{title}**", *(f"> {line}" for line in lines)])


def wecom_body(n: Notification) -> dict[str, Any]:
    _title, text = _markdown(n)
    return {"msgtype": "markdown", "markdown": {"content": text[:4000]}}


def dingtalk_body(n: Notification) -> dict[str, Any]:
    title, text = _markdown(n)
    return {"msgtype": "markdown", "markdown": {"title": title, "text": text}}


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    to_sign = f"{timestamp_ms}\n{secret}".encode()
    digest = hmac.new(secret.encode(), to_sign, hashlib.sha256).digest()
    return urllib.parse.quote_plus(base64.b64encode(digest).decode())


class WebhookNotifier:
    def __init__(
        self,
        name: str,
        url: str,
        style: WebhookStyle | str = WebhookStyle.JSON,
        secret: str | None = None,
        timeout_s: float = 5.0,
        estates: frozenset[str] | None = None,
        severities: frozenset[str] | None = None,
    ) -> None:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"webhook {name}: {url!r} is not an http(s) URL")
        self._name = name
        self.url = url
        self.style = WebhookStyle(style)
        self.secret = secret
        self.timeout_s = timeout_s
        self.estates = estates  # None: every estate
        self.severities = severities  # None: every severity

    def wants(self, estate: str, severity: str | None = None) -> bool:
        """Whether a notice of this estate (and alarm severity) is for this receiver."""
        if self.estates is not None and estate not in self.estates:
            return False
        return severity is None or self.severities is None or severity in self.severities

    @property
    def name(self) -> str:
        return self._name

    def body(self, n: Notification) -> dict[str, Any]:
        if self.style is WebhookStyle.WECOM:
            return wecom_body(n)
        if self.style is WebhookStyle.DINGTALK:
            return dingtalk_body(n)
        return json_body(n)

    def _target(self) -> str:
        if self.style is WebhookStyle.DINGTALK and self.secret:
            ts = now_ms()
            sep = "&" if "?" in self.url else "?"
            return f"{self.url}{sep}timestamp={ts}&sign={dingtalk_sign(self.secret, ts)}"
        return self.url

    def send(self, notification: Notification) -> None:
        data = orjson.dumps(self.body(notification), option=orjson.OPT_NON_STR_KEYS)
        req = urllib.request.Request(
            self._target(),
            data=data,
            headers={"Content-Type": "application/json; charset=utf-8"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                answer = resp.read()
        except urllib.error.HTTPError as exc:
            raise NotifyError(f"{self.name}: HTTP {exc.code} from {self.url}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise NotifyError(f"{self.name}: cannot reach {self.url}: {exc}") from None
        if self.style is not WebhookStyle.JSON:
            try:
                doc = orjson.loads(answer)
            except orjson.JSONDecodeError:
                raise NotifyError(f"{self.name}: the robot did not answer JSON") from None
            if not isinstance(doc, dict) or doc.get("errcode") != 0:
                raise NotifyError(f"{self.name}: the robot refused the message: {doc}")
