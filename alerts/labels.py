"""zh-CN and English labels, from their one place: the dashboard's ``messages.json`` (words of
the product: severities, alarm states, roles, notification events, plan levels, dead-letter
reasons) and the device catalog (families, kinds, metrics, event types). The page reads the
same file; the notifiers and the yearly report read it here, so no label is written twice and
no English code ("firing", "elevator", "other") reaches a Chinese text.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from protocol.catalog import Catalog

__all__ = ["MESSAGES_PATH", "Labels", "messages"]

# A data file shipped beside the page (package data of api/); read, not imported.
MESSAGES_PATH = Path(__file__).resolve().parents[1] / "api" / "static" / "messages.json"
LANGS = ("zh-CN", "en")


@functools.lru_cache(maxsize=4)
def messages(path: Path = MESSAGES_PATH) -> dict[str, dict[str, str]]:
    doc: dict[str, dict[str, str]] = json.loads(path.read_text(encoding="utf-8"))
    return doc


class Labels:
    """``Labels(catalog).severity("critical")`` → "紧急"; ``lang="en"`` for English."""

    def __init__(self, catalog: Catalog, path: Path = MESSAGES_PATH) -> None:
        self.catalog = catalog
        self._m = messages(path)

    def text(self, key: str, lang: str = "zh-CN", fallback: str | None = None, **vars: Any) -> str:
        found = self._m.get(lang, {}).get(key) or self._m["zh-CN"].get(key)
        if found is None:
            return key if fallback is None else fallback
        return re.sub(r"\{(\w+)\}", lambda m: str(vars.get(m[1], m[0])), found)

    def severity(self, s: str, lang: str = "zh-CN") -> str:
        return self.text(f"severity.{s}", lang, s)

    def alarm_state(self, s: str, lang: str = "zh-CN") -> str:
        return self.text(f"alarm.state.{s}", lang, s)

    def role(self, r: str, lang: str = "zh-CN") -> str:
        return self.text(f"role.{r}", lang, r)

    def notice_event(self, e: str, lang: str = "zh-CN") -> str:
        return self.text(f"notice.{e}", lang, e)

    def level(self, roman: str, lang: str = "zh-CN") -> str:
        """A plan level ("Ⅲ") as people say it: "Ⅲ级响应"."""
        return self.text("plan.level", lang, roman, level=roman)

    def family(self, f: str, lang: str = "zh-CN") -> str:
        pair = self.catalog.families.get(f)
        if pair is None:
            return self.text(f"family.{f}", lang, f)
        return pair[0] if lang == "zh-CN" else pair[1]

    def kind(self, k: str, lang: str = "zh-CN") -> str:
        if k == "gateway":
            return self.text("gateway.one", lang, k)
        kind = self.catalog.kinds.get(k)
        if kind is None:
            return k
        return kind.label_zh if lang == "zh-CN" else kind.label_en

    def event_type(self, e: str, lang: str = "zh-CN") -> str:
        et = self.catalog.event_types.get(e)
        if et is None:
            return e
        return et.label_zh if lang == "zh-CN" else et.label_en

    def condition(self, kind: str, text: str, lang: str = "zh-CN") -> str:
        """A rule's condition ("pressure_mpa < 0.07") with the metric's name and unit."""
        k = self.catalog.kinds.get(kind)
        if k is None:
            return text
        for name, metric in k.metrics.items():
            if name in text:
                label = metric.label_zh if lang == "zh-CN" else metric.label_en
                text = text.replace(name, label)
                if metric.unit:
                    text = f"{text} {metric.unit}"
                break
        return text

    def deadletter_reason(self, reason: str, lang: str = "zh-CN") -> str:
        return self.text(f"deadletter.reason.{reason}", lang, reason)

    def deadletter_hint(self, reason: str, detail: str = "", lang: str = "zh-CN") -> str:
        """What a dead letter's reason means and what to do, for people; the decoder's own
        detail (English, with the offending values) is the fallback and is kept beside it."""
        return self.text(f"deadletter.hint.{reason}", lang, detail or reason)
