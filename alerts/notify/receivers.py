"""Receivers from settings: role → notifiers, e.g. ::

{"control_room": [{"type": "wecom", "url": "https://qyapi.weixin.qq.com/..."}],
 "supervisor": [{"type": "dingtalk", "url": "...", "secret": "SEC..."}],
 "authority": [{"type": "json", "url": "https://authority.example/hooks/estatewatch"}]}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from alerts.notify import Notifier
from alerts.notify.webhook import WebhookNotifier, WebhookStyle

__all__ = ["receivers_from_config"]


def receivers_from_config(
    config: Mapping[str, Sequence[Mapping[str, str]]],
) -> dict[str, list[Notifier]]:
    out: dict[str, list[Notifier]] = {}
    for role, items in config.items():
        for i, item in enumerate(items):
            kind = item.get("type", "json")
            try:
                style = WebhookStyle(kind)
            except ValueError:
                raise ValueError(
                    f"receiver {role}[{i}]: unknown type {kind!r} (json, wecom or dingtalk)"
                ) from None
            url = item.get("url")
            if not url:
                raise ValueError(f"receiver {role}[{i}]: 'url' is missing")
            name = item.get("name") or f"{role}-{style.value}-{i}"
            out.setdefault(role, []).append(WebhookNotifier(name, url, style, item.get("secret")))
    return out
