"""Per-gateway ``seq`` bookkeeping: which messages are duplicates, which are missing.

Pure: no I/O. The store persists what this decides in the same transaction as the readings,
so the decision survives a restart exactly when the readings do.

A gateway numbers every telemetry and event message by 1. Everything up to ``max_seq`` has been
seen except the seqs in ``missing`` (gaps). Store-and-forward replays old messages after live
events, so a gap may fill later; until it does it counts as lost for the gateway's health.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

# Gaps wider than this are counted but not remembered seq by seq (a gateway reset, a bug).
MAX_TRACKED_GAP = 100_000


class Verdict(Enum):
    NEW = "new"
    FILLS_GAP = "fills_gap"
    DUPLICATE = "duplicate"
    UNSURE = "unsure"  # below max_seq and not a known gap: ask the store whether it was kept


@dataclass
class GatewaySeqs:
    max_seq: int = 0
    missing: set[int] = field(default_factory=set)
    untracked_lost: int = 0  # messages in gaps too wide to remember one by one

    @property
    def lost(self) -> int:
        return len(self.missing) + self.untracked_lost

    def judge(self, seq: int) -> Verdict:
        if seq > self.max_seq:
            return Verdict.NEW
        if seq in self.missing:
            return Verdict.FILLS_GAP
        return Verdict.UNSURE

    def accept(self, seq: int) -> None:
        """Record a message as stored."""
        if seq > self.max_seq:
            gap = seq - self.max_seq - 1
            if 0 < gap <= MAX_TRACKED_GAP:
                self.missing.update(range(self.max_seq + 1, seq))
            elif gap > MAX_TRACKED_GAP:
                self.untracked_lost += gap
            self.max_seq = seq
        else:
            self.missing.discard(seq)


class SeqBook:
    """All gateways' seq state."""

    def __init__(self) -> None:
        self.gateways: dict[tuple[str, str], GatewaySeqs] = {}

    def get(self, estate: str, gw: str) -> GatewaySeqs:
        key = (estate, gw)
        g = self.gateways.get(key)
        if g is None:
            g = self.gateways[key] = GatewaySeqs()
        return g
