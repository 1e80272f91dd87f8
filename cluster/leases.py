"""Partition leases and commit fencing (issue 16), pure.

A lease is one row per partition: ``(partition, owner, epoch, expires_ms)``. The rules:

- **claim**: a free partition (no owner, or its lease expired) goes to the claimant with
  ``epoch + 1``; a live lease cannot be claimed, not even by its own holder (it renews).
- **renew**: only the holder, only with the current epoch, only before expiry. A holder that
  was paused past its expiry must claim again, and gets a new epoch even if nobody else took
  the partition meanwhile.
- **release**: the holder hands a partition back (rebalancing, shutdown); the epoch stays, so
  the next claim is still a new one.
- **commit** (``commit_accepted``): a commit for a partition carries the epoch its writer holds;
  it is accepted only if that is the stored lease's epoch, the writer is its owner and the lease
  has not expired. The check runs in the same transaction as the commit's dedup book and alarm
  state, with the lease row locked (``SELECT … FOR SHARE``), so a worker that lost its lease
  (paused, cut off) can never commit for the partition again: its epoch is older.

Every ``now_ms`` here is the store's wall clock (the database's ``clock_timestamp()``), never
a worker's: one clock decides expiry, so a worker whose clock runs fast or slow cannot extend
its lease.

``LeaseTable`` is the in-memory reference of those rows (``cluster.pg`` applies the same rules in
PostgreSQL, and a test holds the two to the same answers);
``plan`` is what one worker does on each renewal tick, given the table it just read.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace

from cluster.partitions import DEFAULT_PARTITIONS, assign

__all__ = [
    "LEASE_TTL_MS",
    "RENEW_INTERVAL_MS",
    "Lease",
    "LeaseTable",
    "Plan",
    "claim",
    "commit_accepted",
    "handoff_bound_ms",
    "is_free",
    "plan",
    "release",
    "renew",
    "takeover_bound_ms",
]

# A dead worker's partitions are free LEASE_TTL_MS after its last renewal and claimed at the
# next tick of a live worker: 15 + 5 = 20 s, inside the 30 s with a tick to spare.
LEASE_TTL_MS = 15_000
RENEW_INTERVAL_MS = 5_000


def takeover_bound_ms(ttl_ms: int = LEASE_TTL_MS, interval_ms: int = RENEW_INTERVAL_MS) -> int:
    """Longest time from a worker's death to its partitions being claimed by live workers:
    its lease (and membership) lasts ttl after its last renewal, and the successor claims at
    its next tick, at most one interval later."""
    return ttl_ms + interval_ms


def handoff_bound_ms(interval_ms: int = RENEW_INTERVAL_MS) -> int:
    """Longest time a rebalance (a join, a worker's return) leaves a partition unowned: from
    the holder's release to the successor's claim at its next tick."""
    return interval_ms


@dataclass(frozen=True, slots=True)
class Lease:
    partition: int
    owner: str | None = None
    epoch: int = 0
    expires_ms: int = 0  # the store's wall time


def is_free(lease: Lease, now_ms: int) -> bool:
    return lease.owner is None or now_ms >= lease.expires_ms


def claim(lease: Lease, worker: str, now_ms: int, ttl_ms: int = LEASE_TTL_MS) -> Lease | None:
    """The lease after ``worker`` claims it, or None when it is held by a live lease."""
    if not is_free(lease, now_ms):
        return None
    return Lease(lease.partition, worker, lease.epoch + 1, now_ms + ttl_ms)


def renew(
    lease: Lease, worker: str, epoch: int, now_ms: int, ttl_ms: int = LEASE_TTL_MS
) -> Lease | None:
    """The lease renewed for another ttl, or None when ``worker`` no longer holds it."""
    if lease.owner != worker or lease.epoch != epoch or now_ms >= lease.expires_ms:
        return None
    return replace(lease, expires_ms=now_ms + ttl_ms)


def release(lease: Lease, worker: str, epoch: int) -> Lease | None:
    """The lease given back (owner none, epoch kept), or None when ``worker`` does not hold it
    at ``epoch`` (then there is nothing of its to give back)."""
    if lease.owner != worker or lease.epoch != epoch:
        return None
    return replace(lease, owner=None, expires_ms=0)


def commit_accepted(lease: Lease, worker: str, epoch: int, now_ms: int) -> bool:
    """Whether a commit by ``worker`` holding ``epoch`` for the lease's partition is accepted,
    given the stored lease (read locked, in the commit's own transaction)."""
    return lease.owner == worker and lease.epoch == epoch and now_ms < lease.expires_ms


@dataclass
class LeaseTable:
    """The lease rows and the members' heartbeats, as the store will keep them. Each method is
    one transaction: it reads the row, applies a rule above, and writes what the rule returns."""

    partitions: int = DEFAULT_PARTITIONS
    ttl_ms: int = LEASE_TTL_MS
    leases: dict[int, Lease] = field(default_factory=dict)
    heartbeats: dict[str, int] = field(default_factory=dict)  # worker → expires_ms

    def __post_init__(self) -> None:
        for p in range(self.partitions):
            self.leases.setdefault(p, Lease(p))

    def claim(self, partition: int, worker: str, now_ms: int) -> int | None:
        """The new epoch, or None when refused."""
        new = claim(self.leases[partition], worker, now_ms, self.ttl_ms)
        if new is None:
            return None
        self.leases[partition] = new
        return new.epoch

    def renew(self, partition: int, worker: str, epoch: int, now_ms: int) -> bool:
        new = renew(self.leases[partition], worker, epoch, now_ms, self.ttl_ms)
        if new is None:
            return False
        self.leases[partition] = new
        return True

    def release(self, partition: int, worker: str, epoch: int) -> bool:
        new = release(self.leases[partition], worker, epoch)
        if new is None:
            return False
        self.leases[partition] = new
        return True

    def commit(self, partition: int, worker: str, epoch: int, now_ms: int) -> bool:
        return commit_accepted(self.leases[partition], worker, epoch, now_ms)

    def heartbeat(self, worker: str, now_ms: int) -> None:
        self.heartbeats[worker] = now_ms + self.ttl_ms

    def leave(self, worker: str) -> None:
        self.heartbeats.pop(worker, None)

    def members(self, now_ms: int) -> list[str]:
        return sorted(w for w, exp in self.heartbeats.items() if now_ms < exp)

    def owners(self, now_ms: int) -> dict[int, str | None]:
        """Partition → holder of a live lease, or None."""
        return {p: None if is_free(le, now_ms) else le.owner for p, le in self.leases.items()}


@dataclass(frozen=True)
class Plan:
    """What a worker does on one tick: renew what it holds and is still its, release what the
    target gives to another, claim what is free and the target gives to it."""

    renew: dict[int, int]  # partition → epoch held
    release: dict[int, int]
    claim: list[int]


def plan(
    worker: str,
    held: Mapping[int, int],
    owners: Mapping[int, str | None],
    members: Collection[str],
    partitions: int = DEFAULT_PARTITIONS,
) -> Plan:
    """One tick of ``worker`` that holds ``held`` (partition → epoch), having just read the
    live ``owners`` and ``members`` (itself among them, as it heartbeats first)."""
    target = assign(owners, members, partitions)
    renew_ = {p: e for p, e in held.items() if target.get(p) == worker}
    release_ = {p: e for p, e in held.items() if target.get(p) != worker}
    claim_ = [p for p, w in sorted(target.items()) if w == worker and owners.get(p) is None]
    return Plan(renew_, release_, claim_)
