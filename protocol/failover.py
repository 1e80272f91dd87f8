"""Reconnecting to a broker that is one node or a cluster of them.

``Backoff``: exponential delays with jitter, so a fleet of gateways does not reconnect in step
after a broker restart. ``Failover``: which node of the cluster a client is on and where it
goes when the connection is lost: the next node at once (a short jittered pause), and the
backoff only after a whole round of nodes failed. A connection that held ``stable_s`` starts a
new round; one dropped sooner counts as a failure (a node that accepts and then drops us must
not make a tight loop). One node is the old behaviour: backoff on every loss. The client id
stays the same on every node, so a broker that replicates sessions (EMQX, NATS JetStream with
``stream_replicas``) hands the persistent session over. Pure: the clock and the randomness
are injected; ``hop`` is the few lines that point a paho client at the next node."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Protocol

from protocol.endpoint import MqttEndpoint


class Backoff:
    def __init__(
        self, min_s: float = 0.5, max_s: float = 60.0, rng: random.Random | None = None
    ) -> None:
        if not 0 < min_s <= max_s:
            raise ValueError(f"backoff needs 0 < min ({min_s}) <= max ({max_s})")
        self.min_s, self.max_s = min_s, max_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """Equal jitter: half the exponential step, plus a random share of the other half."""
        cap = min(self.max_s, self.min_s * 2**self.attempt)
        self.attempt += 1
        return float(cap / 2 + self._rng.uniform(0, cap / 2))

    def reset(self) -> None:
        self.attempt = 0


class Failover:
    """The node a client uses, and the pause before the next try (see the module)."""

    def __init__(
        self,
        endpoint: MqttEndpoint,
        min_s: float = 0.5,
        max_s: float = 30.0,
        stable_s: float = 10.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self.nodes = endpoint.nodes
        self._rng = rng or random.Random()
        self._backoff = Backoff(min_s, max_s, self._rng)
        self._hop_s = min_s / 2
        self._stable_s = stable_s
        self._clock = clock
        self._index = 0
        self._failures = 0  # tries since the last connection that held
        self._since: float | None = None  # when the current connection was made
        self.failovers = 0  # moves to another node, for /healthz

    @property
    def node(self) -> tuple[str, int]:
        return self.nodes[self._index]

    @property
    def node_url(self) -> str:
        return self.endpoint.node_url(self.node)

    @property
    def up(self) -> bool:
        """Connected to ``node`` now (since ``connected``, until ``lost``)."""
        return self._since is not None

    def connected(self) -> None:
        self._since = self._clock()

    def lost(self) -> float:
        """The connection to the current node ended, or could not be made: move on to the
        next node; returns the seconds to wait before trying it."""
        if self._since is not None and self._clock() - self._since >= self._stable_s:
            self._failures = 0
            self._backoff.reset()
        self._since = None
        self._failures += 1
        if len(self.nodes) > 1:
            self._index = (self._index + 1) % len(self.nodes)
            self.failovers += 1
        if self._failures % len(self.nodes):
            return self._rng.uniform(0, self._hop_s)  # the next node, soon
        return self._backoff.next_delay()  # a whole round failed


class Reconnecting(Protocol):
    """What ``hop`` needs of a paho client (paho's threaded reconnect)."""

    def connect_async(self, host: str, port: int = 1883, keepalive: int = 60) -> None: ...

    def reconnect_delay_set(self, min_delay: int = 1, max_delay: int = 120) -> None: ...


def hop(client: Reconnecting, failover: Failover, keepalive: int) -> None:
    """From a paho client's on_disconnect or on_connect_fail: its network thread's next try
    goes to the next node, after the failover's pause. connect_async is the public way to
    change the address of a client whose connection is not closed on purpose; paho's
    reconnect loop then dials the new address (same client id: the same session)."""
    delay = failover.lost()
    host, port = failover.node
    client.connect_async(host, port, keepalive)
    # paho annotates int but waits on a float; it resets its own doubling here, so the next
    # wait is exactly this one.
    client.reconnect_delay_set(delay, delay)  # type: ignore[arg-type]
