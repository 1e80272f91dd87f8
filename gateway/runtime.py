"""The gateway process core: poll the adapters, buffer what they gather, route commands.

Readings and events go to the on-disk buffer the moment an adapter returns them; the
:class:`~gateway.publisher.GatewayPublisher` link thread drains the buffer to the broker.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.adapter import DeviceAdapter, ReportsHealth
from gateway.publisher import GatewayPublisher
from protocol.clock import now_ms
from protocol.messages import CommandAck

log = logging.getLogger(__name__)


@dataclass
class GatewayCounters:
    readings: int = 0
    events: int = 0
    commands: int = 0
    polls: int = 0


class Gateway:
    def __init__(
        self,
        publisher: GatewayPublisher,
        adapters: Sequence[DeviceAdapter],
        poll_interval_s: float = 0.2,
        network_down: Callable[[], bool] | None = None,
    ) -> None:
        if not adapters:
            raise ValueError("a gateway needs at least one adapter")
        self.publisher = publisher
        self.adapters = list(adapters)
        self.poll_interval_s = poll_interval_s
        self.counters = GatewayCounters()
        self._network_down = network_down  # a scenario may cut the uplink (simulation only)
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        if any(isinstance(a, ReportsHealth) for a in self.adapters):
            publisher.status_extra = self.adapter_health

    def adapter_health(self) -> dict[str, Any]:
        """Each reporting adapter's field-side state, for the status message."""
        out: dict[str, Any] = {}
        for adapter in self.adapters:
            if isinstance(adapter, ReportsHealth):
                try:
                    out[adapter.name] = adapter.health()
                except Exception as exc:  # the status must go out even so
                    out[adapter.name] = {"state": "error", "detail": str(exc)[:200]}
        return out

    def start(self, wait_connected_s: float = 0.0) -> bool:
        connected = self.publisher.start(wait_connected_s)
        self._thread = threading.Thread(target=self._run, name="gw-poll", daemon=True)
        self._thread.start()
        return connected

    def poll_once(self) -> None:
        """One round: every adapter polled, every waiting command carried out."""
        for adapter in self.adapters:
            got = adapter.poll()
            if got.events:  # events first: they must never wait behind a batch
                self.publisher.publish_events(got.events)
                self.counters.events += len(got.events)
            if got.readings:
                self.publisher.publish_telemetry(got.readings)
                self.counters.readings += len(got.readings)
        self.counters.polls += 1
        self._commands()
        if self._network_down is not None:
            self.publisher.hold_down(self._network_down())

    def _commands(self) -> None:
        while True:
            try:
                cmd = self.publisher.commands.get_nowait()
            except queue.Empty:
                return
            self.counters.commands += 1
            owner = next((a for a in self.adapters if a.owns(cmd.dev)), None)
            expires = cmd.params.get("expires")
            now = now_ms()
            if type(expires) is int and now > expires:
                # The broker keeps commands for this gateway's session while it is away: one
                # the service stopped waiting for must not switch anything minutes later.
                error: str | None = (
                    f"expired at {expires}, now {now} by this gateway's clock: not carried out "
                    "(if it was just sent, this gateway's clock is ahead)"
                )
            elif owner is None:
                error = f"no device {cmd.dev!r} behind this gateway"
            else:
                try:
                    error = owner.execute(cmd)
                except Exception as exc:  # an adapter bug must not stop the gateway
                    log.exception("adapter %s failed on command %s", owner.name, cmd.id)
                    error = f"adapter error: {exc}"
            self.publisher.acknowledge(CommandAck(cmd.id, error is None, now_ms(), error))

    def _run(self) -> None:
        while not self._halt.is_set():
            try:
                self.poll_once()
            except Exception:
                log.exception("gateway poll failed; retrying")
            self._halt.wait(self.poll_interval_s)

    def stop(self, drain_s: float = 0.0) -> None:
        self._halt.set()
        if self._thread:
            self._thread.join(10)
        for adapter in self.adapters:
            adapter.close()
        self.publisher.hold_down(False)
        self.publisher.stop(drain_s)
