"""Notifications: what is told to whom. Every channel is a :class:`Notifier` in its own module
(``mqtt``, ``webhook``); ``outbox`` delivers with retries and a log, so nothing is sent twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Notification", "Notifier", "NotifyError"]


class NotifyError(RuntimeError):
    """A delivery that failed; the outbox retries it later."""


@dataclass(frozen=True, slots=True)
class Notification:
    key: str  # what, to whom: the same key is delivered at most once
    receiver: str  # the notifier's name
    estate: str
    event: str  # firing, resolved, escalated, deadline_breached, plan_raised, task_overdue ...
    payload: dict[str, Any]
    created_ms: int


class Notifier(Protocol):
    """One channel. ``send`` raises (NotifyError or any error) when delivery failed."""

    @property
    def name(self) -> str: ...

    def send(self, notification: Notification) -> None: ...
