"""Receivers from the settings file and the environment, with clear errors (issue 13)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alerts.notify.receivers import receivers_from_config
from alerts.notify.webhook import WebhookNotifier
from estatewatch.settings import SettingsError, load_settings


def test_receivers_from_a_settings_file_and_from_the_environment(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text(
        '[[receivers]]\ntype = "wecom"\nurl = "https://qyapi.weixin.qq.com/x"\n'
        'roles = ["control_room", "supervisor"]\nseverities = ["critical"]\n',
        encoding="utf-8",
    )
    s = load_settings(f, environ={})
    got = receivers_from_config(json.loads(s.receivers))
    assert set(got) == {"control_room", "supervisor"}
    (n,) = got["supervisor"]
    assert isinstance(n, WebhookNotifier)
    assert n.wants("any", "critical") and not n.wants("any", "minor") and n.wants("any")
    env = {"ESTATEWATCH_RECEIVERS": json.dumps([{"url": "http://h/x", "estates": ["e1"]}])}
    (m,) = receivers_from_config(json.loads(load_settings(environ=env).receivers))["control_room"]
    assert isinstance(m, WebhookNotifier) and m.wants("e1") and not m.wants("e2")


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"type": "sms", "url": "http://h/x"}, "unknown type 'sms'"),
        ({"type": "json"}, "'url' is missing"),
        ({"url": "ftp://h/x"}, "not an http(s) URL"),
        ({"url": "http://h/x", "roles": ["janitor"]}, "unknown roles ['janitor']"),
        ({"url": "http://h/x", "severities": ["huge"]}, "unknown severities ['huge']"),
        ({"url": "http://h/x", "colour": "red"}, "unknown key(s) ['colour']"),
        ({"url": "http://h/x", "secret_file": "/nonexistent/s"}, "cannot read secret_file"),
    ],
)
def test_a_wrong_receiver_is_refused_with_what_is_wrong(
    item: dict[str, object], message: str
) -> None:
    env = {"ESTATEWATCH_RECEIVERS": json.dumps([item])}
    with pytest.raises(SettingsError) as err:
        load_settings(environ=env)
    assert "receivers[0]" in str(err.value) and message in str(err.value)
    with pytest.raises(SettingsError, match="receivers"):
        load_settings(environ={"ESTATEWATCH_RECEIVERS": "{not json"})


def test_a_dingtalk_secret_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "ding"
    secret.write_text("SECabc\n", encoding="utf-8")
    item = {"type": "dingtalk", "url": "https://oapi.dingtalk.com/robot/send?access_token=t"}
    (n,) = receivers_from_config([{**item, "secret_file": str(secret)}])["control_room"]
    assert isinstance(n, WebhookNotifier) and n.secret == "SECabc"
