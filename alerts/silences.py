"""Silences: mute the alarms that match, for a time window (maintenance, drills).

A silenced alarm is still raised and recorded, so the control room sees it, but nobody is
notified of it. Matchers are on an alarm's labels (rule, estate, device, subject, kind,
gateway, severity), Alertmanager style: ``=``, ``!=``, ``=~`` and ``!~`` (full-match regex).

Regexes are RE2 (linear time, no backreferences or lookaround), at most ``MAX_VALUE_LEN``
characters: an operator's pattern runs on the alert engine's thread, so one written to
backtrack (``(.*.*.*)*!``) must not be able to stall every estate's alarms.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import re2

__all__ = ["LABELS", "MAX_VALUE_LEN", "Matcher", "Silence", "SilenceBook", "SilenceError"]

log = logging.getLogger(__name__)

LABELS = frozenset({"rule", "estate", "device", "subject", "kind", "gateway", "severity"})
_LABEL_ORDER = tuple(sorted(LABELS))
_OPS = ("=", "!=", "=~", "!~")
MAX_VALUE_LEN = 200
# A match result per distinct label set is kept until a silence changes, starts or ends.
_CACHE_MAX = 100_000

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the refusal is told to the caller, not printed by the library
_RE2_OPTIONS.max_mem = 1 << 20  # bounds the compiled program, so a huge pattern is refused


_TOLD: set[tuple[str, str, str, str]] = set()  # disabled matchers already logged


class SilenceError(ValueError):
    """A silence that cannot be used; the message says why."""


def compile_re2(value: str) -> Any:
    """The RE2 program of ``value``, or SilenceError saying why RE2 refuses it."""
    try:
        return re2.compile(value, options=_RE2_OPTIONS)
    except re2.error as exc:
        why = exc.args[0] if exc.args else exc
        if isinstance(why, bytes):
            why = why.decode("utf-8", "replace")
        raise SilenceError(
            f"not a regular expression RE2 accepts: {why} (RE2 syntax: no backreferences "
            "or lookaround)"
        ) from None


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    value: str
    op: str = "="
    _regex: Any = field(default=None, compare=False, repr=False)
    # why a stored matcher could not be used; such a matcher matches nothing
    disabled: str | None = field(default=None, compare=False)

    @classmethod
    def parse(cls, name: str, value: str, op: str = "=") -> Matcher:
        if name not in LABELS:
            raise SilenceError(f"unknown label {name!r} (known: {', '.join(sorted(LABELS))})")
        if op not in _OPS:
            raise SilenceError(f"unknown operator {op!r} (known: {', '.join(_OPS)})")
        if len(value) > MAX_VALUE_LEN:
            raise SilenceError(
                f"{name}{op}: the value has {len(value)} characters, at most {MAX_VALUE_LEN}"
            )
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = compile_re2(value)
            except SilenceError as exc:
                raise SilenceError(f"{name}{op}{value!r}: {exc}") from None
        return cls(name, value, op, regex)

    @classmethod
    def load(cls, name: str, value: str, op: str, silence_id: str = "") -> Matcher:
        """A stored matcher: one that is no longer accepted (a Python-regex pattern RE2
        refuses, written before RE2) is kept but disabled, and the reason logged."""
        try:
            return cls.parse(name, value, op)
        except SilenceError as exc:
            told = (silence_id, name, op, value)
            if told not in _TOLD and len(_TOLD) < 10_000:  # the store is re-read every minute
                _TOLD.add(told)
                log.warning("silence %s: matcher disabled, it matches nothing: %s", silence_id, exc)
            return cls(name, value, op, None, str(exc))

    @property
    def literal(self) -> bool:
        return self._regex is None

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.disabled is not None:
            return False
        got = labels.get(self.name, "")
        if self._regex is not None:
            found = self._regex.fullmatch(got) is not None
            return found if self.op == "=~" else not found
        return (got == self.value) if self.op == "=" else (got != self.value)

    def as_dict(self) -> dict[str, str]:
        out = {"name": self.name, "op": self.op, "value": self.value}
        if self.disabled is not None:
            out["disabled"] = self.disabled
        return out


def _cost(m: Matcher) -> int:
    """Cheapest and most selective first: the estate, then literals, then regexes."""
    if m.name == "estate" and m.op == "=":
        return 0
    return 1 if m.literal else 2


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_ms: int
    ends_ms: int
    created_by: str
    comment: str
    created_ms: int
    _order: tuple[Matcher, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.matchers:
            raise SilenceError("a silence needs at least one matcher, or it would mute everything")
        if self.ends_ms <= self.starts_ms:
            raise SilenceError("a silence must end after it starts")
        object.__setattr__(self, "_order", tuple(sorted(self.matchers, key=_cost)))

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
        return all(m.matches(labels) for m in self._order)

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
    """The silences in memory, indexed by the estate each is limited to.

    ``match`` is asked for every open alarm every second: its answer per label set is cached
    until a silence is added or dropped or one starts or ends, so the matchers run once per
    alarm and change, not once per alarm and second.
    """

    def __init__(self, silences: Iterable[Silence] = ()) -> None:
        self.silences: dict[str, Silence] = {}
        self._by_estate: dict[str | None, dict[str, Silence]] = {}
        self._cache: dict[tuple[str, ...], Silence | None] = {}
        # the cache holds from _cache_from until _cache_until (the next start or end)
        self._cache_from = self._cache_until = -1
        for s in silences:
            self.add(s)

    def add(self, silence: Silence) -> None:
        old = self.silences.get(silence.id)
        if old == silence:
            return  # read again from the store, unchanged
        if old is not None:
            self._unindex(old)
        self.silences[silence.id] = silence
        self._by_estate.setdefault(silence.estate, {})[silence.id] = silence
        self._cache_until = -1

    def _unindex(self, silence: Silence) -> None:
        bucket = self._by_estate.get(silence.estate)
        if bucket is not None:
            bucket.pop(silence.id, None)
            if not bucket:
                del self._by_estate[silence.estate]

    def candidates(self, estate: str) -> list[Silence]:
        """The silences that could match an alarm of ``estate``: its own and the global ones."""
        own = self._by_estate.get(estate)
        every = self._by_estate.get(None)
        out = list(own.values()) if own else []
        if every:
            out.extend(every.values())
        return out

    def match(self, labels: Mapping[str, str], now: int) -> Silence | None:
        if now >= self._cache_until or now < self._cache_from:
            self._reset_cache(now)
        key = tuple(labels.get(n, "") for n in _LABEL_ORDER)
        if key in self._cache:
            return self._cache[key]
        found = None
        for s in self.candidates(labels.get("estate", "")):
            if s.active(now) and s.matches(labels):
                found = s
                break
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[key] = found
        return found

    def _reset_cache(self, now: int) -> None:
        self._cache.clear()
        self._cache_from = now
        nxt = 2**63
        for s in self.silences.values():
            if s.starts_ms > now:
                nxt = min(nxt, s.starts_ms)
            elif s.ends_ms > now:
                nxt = min(nxt, s.ends_ms)
        self._cache_until = nxt

    def prune(self, now: int, keep_ms: int = 86_400_000) -> None:
        """Drop from memory silences that ended more than ``keep_ms`` ago (stored ones stay)."""
        for sid in [s.id for s in self.silences.values() if s.ends_ms + keep_ms < now]:
            self._unindex(self.silences.pop(sid))
            self._cache_until = -1
