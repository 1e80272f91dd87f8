"""The values ingest's pure core (``pipeline``) hands to its stores: what one message carries
that is stored (``EstateBatch``) and what is not (``DeadLetter``). No I/O, nothing of a store,
so the pipeline imports no database code."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from protocol.messages import Event, Reading


@dataclass(frozen=True, slots=True)
class EstateBatch:
    """Valid readings and events of one message, with where it came from and its ``seq``."""

    estate: str
    gateway: str
    readings: Sequence[Reading] = ()
    events: Sequence[Event] = ()
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message, or one bad item of it, that is not stored, and why (``reason``: a
    ``protocol.messages.Reason`` value, or the store's ``store_refused``)."""

    received_ms: int
    topic: str
    reason: str
    detail: str
    payload: bytes
    estate: str | None = None
    gateway: str | None = None
    item_index: int | None = None


@dataclass(frozen=True, slots=True)
class ChartQuery:
    """One chart's question to a telemetry reader: a device's metric between two data times,
    in at most ``max_points`` points; ``interval_ms`` is how often its kind reports."""

    estate: str
    device: str
    metric: str
    from_ms: int
    to_ms: int
    max_points: int
    interval_ms: int


class NotOwner(RuntimeError):
    """This process no longer owns these estates (a scaled-out worker lost their partition's
    lease, issue 16): the transaction that raised it rolls back, and what it carried for them
    is neither acknowledged nor kept in memory; their next owner takes it from the broker."""

    def __init__(self, estates: Collection[str], why: str) -> None:
        self.estates = frozenset(estates)
        super().__init__(
            f"not the owner of {', '.join(sorted(self.estates)) or 'no estate'}: {why}"
        )


# Called first inside a commit's transaction (a SQLAlchemy ``Connection``) with the estates it
# writes for; raises NotOwner when this process may no longer commit for one of them (the
# scaled-out worker's lease check, in the same transaction as the writes it guards).
Fence = Callable[[Any, Collection[str]], None]
