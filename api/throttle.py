"""Login throttling: failed attempts per user name and per client address, exponential backoff.

Each attempt counts as a failure when it starts (so parallel guesses cannot all slip through
before the first one fails); a success forgets the user's count and takes its own attempt off
the address's. After
``free`` failures a key must wait ``base_s * 2**(failures - free)`` seconds (at most ``max_s``)
after its last failure; a key left alone for ``forget_s`` is forgotten. The table is bounded
(``max_keys``, oldest first out), and the lock guards only dictionary work: the password hash
runs outside it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Count:
    failures: int
    last: float


@dataclass(eq=False)
class LoginThrottle:
    user_free: int = 5
    address_free: int = 20
    base_s: float = 1.0
    max_s: float = 900.0
    forget_s: float = 900.0
    max_keys: int = 10_000
    clock: Callable[[], float] = time.monotonic
    refused: int = field(default=0, init=False)  # attempts answered 429
    _counts: OrderedDict[str, _Count] = field(default_factory=OrderedDict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def _wait(self, key: str, free: int, now: float) -> float:
        c = self._counts.get(key)
        if c is None:
            return 0.0
        if now - c.last > max(self.forget_s, self._delay(c.failures, free)):
            del self._counts[key]
            return 0.0
        return max(0.0, c.last + self._delay(c.failures, free) - now)

    def _delay(self, failures: int, free: int) -> float:
        if failures < free:
            return 0.0
        return min(self.max_s, self.base_s * 2.0 ** min(failures - free, 30))

    def _bump(self, key: str, now: float) -> None:
        c = self._counts.get(key)
        if c is None:
            self._counts[key] = _Count(1, now)
            while len(self._counts) > self.max_keys:
                self._counts.popitem(last=False)
        else:
            c.failures += 1
            c.last = now
            self._counts.move_to_end(key)

    def attempt(self, username: str, address: str) -> int:
        """0 when this attempt may go ahead (it is counted as a failure until ``succeeded``),
        else the whole seconds to wait before trying again."""
        user_key, addr_key = "u:" + username.lower(), "a:" + address
        with self._lock:
            now = self.clock()
            wait = max(
                self._wait(user_key, self.user_free, now),
                self._wait(addr_key, self.address_free, now),
            )
            if wait > 0:
                self.refused += 1
                return max(1, math.ceil(wait))
            self._bump(user_key, now)
            self._bump(addr_key, now)
            return 0

    def succeeded(self, username: str, address: str) -> None:
        """The user's count is forgotten; the address keeps its other failures (one good
        account must not wipe the trail of guesses at others from the same address)."""
        with self._lock:
            self._counts.pop("u:" + username.lower(), None)
            c = self._counts.get("a:" + address)
            if c is not None:
                c.failures -= 1
                if c.failures <= 0:
                    del self._counts["a:" + address]
