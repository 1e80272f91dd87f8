"""What the evaluator remembers of rules' conditions: which subjects each rule's condition
holds for now (hysteresis: a held condition ends only by its clear test), how many each
subject holds, and which of them can clear by time alone; and the :class:`Signal` it emits
when that changes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alerts.rules.spec import Composite, EventCount, Rule, ValueTest

__all__ = ["ConditionMemory", "Signal", "SubjectKey"]

SubjectKey = tuple[str, str]  # (estate, device or gateway)


@dataclass(slots=True)
class Signal:
    rule: Rule
    estate: str
    subject: str
    kind: str  # the device's kind, or "gateway"
    gateway: str | None
    hit: bool  # True: the condition holds (or the event happened); False: it cleared
    ts: int
    detail: dict[str, Any]


class ConditionMemory:
    def __init__(self) -> None:
        self.asserted: dict[str, set[SubjectKey]] = {}
        # How many held conditions each subject has: a subject with none skips quiet groups.
        self.held_count: dict[SubjectKey, int] = {}
        # Held conditions that can clear by time alone: windows and counts slide.
        self._timed: dict[
            tuple[str, str, str], tuple[Rule, ValueTest | Composite | EventCount]
        ] = {}

    def holds(self, rule_id: str, estate: str, subject: str) -> bool:
        held = self.asserted.get(rule_id)
        return held is not None and (estate, subject) in held

    def forget(self, rule_id: str, estate: str, subject: str) -> None:
        """Drop a held condition (its alarm was resolved by a person, or not raised at all),
        so the next reading that meets it raises a new alarm."""
        self._release(rule_id, (estate, subject))
        self._timed.pop((rule_id, estate, subject), None)

    def _hold(self, rule: Rule, key: SubjectKey) -> None:
        held = self.asserted.get(rule.id)
        if held is None:
            held = self.asserted[rule.id] = set()
        if key not in held:
            held.add(key)
            self.held_count[key] = self.held_count.get(key, 0) + 1

    def _release(self, rule_id: str, key: SubjectKey) -> None:
        held = self.asserted.get(rule_id)
        if held is not None and key in held:
            held.discard(key)
            n = self.held_count.get(key, 1) - 1
            if n > 0:
                self.held_count[key] = n
            else:
                self.held_count.pop(key, None)
