"""Delivering notifications: at most once per key, with retries and backoff, across restarts.

Every notification is first written to the notification log (in the same transaction as the
alarm change that caused it); a key already in the log is not added again, so a restart that
replays a change sends nothing twice. A worker sends what is due, marks it sent, or schedules a
retry with exponential backoff until ``max_attempts``. (A crash between a send and its mark
can repeat that one send: at-least-once towards the receiver, once per key in the log.)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from alerts.notify import Notifier
from alerts.store import AlertStore

__all__ = ["Outbox"]

log = logging.getLogger(__name__)


class Outbox:
    def __init__(
        self,
        store: AlertStore,
        notifiers: Mapping[str, Notifier],
        clock: Callable[[], int],
        max_attempts: int = 8,
        backoff_ms: int = 2_000,
        max_backoff_ms: int = 600_000,
        batch: int = 100,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        self.store = store
        self.notifiers = dict(notifiers)
        self.clock = clock
        self.max_attempts = max_attempts
        self.backoff_ms = backoff_ms
        self.max_backoff_ms = max_backoff_ms
        self.batch = batch
        self.owns = owns  # shards deliver their own estates' notifications only
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one delivery round at a time

    @property
    def running(self) -> bool:
        return self._thread is not None

    def backoff(self, attempts: int) -> int:
        """Delay before attempt ``attempts + 1``: 2 s, 4 s, 8 s … capped."""
        return int(min(self.max_backoff_ms, self.backoff_ms * 2 ** max(0, attempts - 1)))

    def deliver_due(self, now: int | None = None) -> int:
        """Send what is due; returns how many were sent."""
        with self._lock:
            now = self.clock() if now is None else now
            sent = 0
            for n in self.store.due_notifications(now, self.batch, self.owns):
                notifier = self.notifiers.get(n.receiver)
                if notifier is None:
                    self.store.notification_failed(n.key, None, f"no receiver {n.receiver!r}")
                    continue
                try:
                    notifier.send(n)
                except Exception as exc:
                    attempts = self.store.notification_attempts(n.key) + 1
                    retry = now + self.backoff(attempts) if attempts < self.max_attempts else None
                    self.store.notification_failed(n.key, retry, str(exc))
                    log.warning(
                        "notify: %s to %s failed (attempt %d): %s", n.key, n.receiver, attempts, exc
                    )
                    continue
                self.store.notification_sent(n.key, now)
                sent += 1
            return sent

    def wake(self) -> None:
        self._wake.set()

    def start(self, interval_s: float = 1.0) -> None:
        if self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.is_set():
                self._wake.wait(interval_s)
                self._wake.clear()
                try:
                    self.deliver_due()
                except Exception:  # the database may be away for a moment; try again later
                    log.exception("notify: delivery round failed")

        self._thread = threading.Thread(target=loop, name="alerts-notify", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(10)
        self._thread = None
