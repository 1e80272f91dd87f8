"""Silences: mute the alarms that match, for a time window (maintenance, drills).

A silenced alarm is still raised and recorded, so the control room sees it, but nobody is
notified of it. Matchers are on an alarm's labels (rule, estate, device, subject, kind,
gateway, severity), Alertmanager style: ``=``, ``!=``, ``=~`` and ``!~`` (full-match regex).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LABELS", "Matcher", "Silence", "SilenceBook", "SilenceError"]

LABELS = frozenset({"rule", "estate", "device", "subject", "kind", "gateway", "severity"})
_OPS = ("=", "!=", "=~", "!~")


class SilenceError(ValueError):
    """A silence that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    value: str
    op: str = "="
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, name: str, value: str, op: str = "=") -> Matcher:
        if name not in LABELS:
            raise SilenceError(f"unknown label {name!r} (known: {', '.join(sorted(LABELS))})")
        if op not in _OPS:
            raise SilenceError(f"unknown operator {op!r} (known: {', '.join(_OPS)})")
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = re.compile(value)
            except re.error as exc:
                raise SilenceError(
                    f"{name}{op}{value!r}: not a regular expression: {exc}"
                ) from None
        return cls(name, value, op, regex)

    def matches(self, labels: Mapping[str, str]) -> bool:
        got = labels.get(self.name, "")
        if self._regex is not None:
            found = self._regex.fullmatch(got) is not None
            return found if self.op == "=~" else not found
        return (got == self.value) if self.op == "=" else (got != self.value)

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "op": self.op, "value": self.value}


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_ms: int
    ends_ms: int
    created_by: str
    comment: str
    created_ms: int

    def __post_init__(self) -> None:
        if not self.matchers:
            raise SilenceError("a silence needs at least one matcher, or it would mute everything")
        if self.ends_ms <= self.starts_ms:
            raise SilenceError("a silence must end after it starts")

    def active(self, now: int) -> bool:
        return self.starts_ms <= now < self.ends_ms

    @property
    def estate(self) -> str | None:
        """The one estate it is limited to (an ``estate=`` matcher), or None: any estate."""
        for m in self.matchers:
            if m.name == "estate" and m.op == "=":
                return m.value
        return None

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)

    def as_dict(self, now: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "estate": self.estate,
            "matchers": [m.as_dict() for m in self.matchers],
            "starts_ms": self.starts_ms,
            "ends_ms": self.ends_ms,
            "created_by": self.created_by,
            "comment": self.comment,
            "created_ms": self.created_ms,
        }
        if now is not None:
            out["active"] = self.active(now)
        return out


class SilenceBook:
    def __init__(self, silences: Iterable[Silence] = ()) -> None:
        self.silences: dict[str, Silence] = {s.id: s for s in silences}

    def add(self, silence: Silence) -> None:
        self.silences[silence.id] = silence

    def match(self, labels: Mapping[str, str], now: int) -> Silence | None:
        for s in self.silences.values():
            if s.active(now) and s.matches(labels):
                return s
        return None

    def prune(self, now: int, keep_ms: int = 86_400_000) -> None:
        """Drop from memory silences that ended more than ``keep_ms`` ago (stored ones stay)."""
        for sid in [s.id for s in self.silences.values() if s.ends_ms + keep_ms < now]:
            del self.silences[sid]
