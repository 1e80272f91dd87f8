"""Receivers from settings: webhooks, each for some roles, estates and severities.

The settings file takes a list (``[[receivers]]`` tables in TOML; the environment variable
``ESTATEWATCH_RECEIVERS`` the same list as JSON)::

    [[receivers]]
    type = "dingtalk"                 # json | wecom | dingtalk
    url = "https://oapi.dingtalk.com/robot/send?access_token=…"
    secret = "SEC…"                   # DingTalk 加签 (or secret_file = "/run/secrets/ding")
    roles = ["control_room"]          # who it speaks for (default: control_room)
    estates = ["hohhot-xinhua"]       # default: every estate
    severities = ["critical", "major"]  # alarms of these severities (default: all); plans
                                        # and drills go to every receiver of the role

The older mapping form (role → list of ``{type, url, secret}``) is still read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from alerts.notify import Notifier
from alerts.notify.webhook import WebhookNotifier, WebhookStyle
from alerts.rules.spec import Severity

__all__ = ["ROLES", "SEVERITIES", "receivers_from_config"]

ROLES = ("control_room", "supervisor", "authority")
SEVERITIES = tuple(s.value for s in Severity)
_KEYS = {"name", "type", "url", "secret", "secret_file", "roles", "estates", "severities"}


def _names(item: Mapping[str, Any], key: str, where: str, allowed: Sequence[str] | None) -> Any:
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{where}: {key!r} must be a list of names, got {value!r}")
    if allowed is not None:
        bad = [v for v in value if v not in allowed]
        if bad:
            raise ValueError(f"{where}: unknown {key} {bad} (known: {', '.join(allowed)})")
    return frozenset(value)


def _webhook(item: Mapping[str, Any], where: str, default_name: str) -> WebhookNotifier:
    if not isinstance(item, Mapping):
        raise ValueError(f"{where}: expected a table with 'type' and 'url', got {item!r}")
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} (allowed: {', '.join(sorted(_KEYS))})")
    kind = item.get("type", "json")
    try:
        style = WebhookStyle(kind)
    except ValueError:
        raise ValueError(f"{where}: unknown type {kind!r} (json, wecom or dingtalk)") from None
    url = item.get("url")
    if not url or not isinstance(url, str):
        raise ValueError(f"{where}: 'url' is missing")
    secret = item.get("secret")
    if item.get("secret_file"):
        try:
            secret = Path(str(item["secret_file"])).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"{where}: cannot read secret_file: {exc}") from None
    if style is WebhookStyle.DINGTALK and secret is not None and not secret:
        raise ValueError(f"{where}: 'secret' is empty")
    name = str(item.get("name") or default_name)
    try:
        return WebhookNotifier(
            name,
            url,
            style,
            secret,
            estates=_names(item, "estates", where, None),
            severities=_names(item, "severities", where, SEVERITIES),
        )
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def receivers_from_config(
    config: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Mapping[str, Any]]],
) -> dict[str, list[Notifier]]:
    """role → notifiers; raises ValueError naming the receiver and what is wrong."""
    out: dict[str, list[Notifier]] = {}
    if isinstance(config, Mapping):
        for role, items in config.items():
            for i, item in enumerate(items):
                n = _webhook(
                    item, f"receiver {role}[{i}]", f"{role}-{item.get('type', 'json')}-{i}"
                )
                out.setdefault(role, []).append(n)
        return out
    names: set[str] = set()
    for i, item in enumerate(config):
        where = f"receivers[{i}]"
        n = _webhook(item, where, f"webhook-{i + 1}")
        if n.name in names or n.name == "mqtt":
            raise ValueError(f"{where}: the name {n.name!r} is taken")
        names.add(n.name)
        roles = _names(item, "roles", where, ROLES) or frozenset({"control_room"})
        for role in sorted(roles):
            out.setdefault(role, []).append(n)
    return out
