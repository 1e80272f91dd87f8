"""Estates → partitions → workers (issue 16), pure.

Estates hash into a fixed number of partitions (``DEFAULT_PARTITIONS``); the partition, not the
estate, is what a worker owns, leases and hands over. The hash is crc32 of the estate id's
UTF-8 bytes (as ``ingest.shards`` does): stable across processes, hosts and Python versions,
unlike ``hash()``, which is salted per process. The count is fixed for a deployment's life:
changing it moves almost every estate (and its dedup book and alarm state) at once.

Which live worker owns which partition: **sticky rendezvous with bounded load**
(``assign``). Plain rendezvous (highest-random-weight) hashing moves only what must move, but
its loads are those of balls thrown into bins: 64 partitions over 50 workers leave some worker
4 or 5 of them where the fair share is 2. Rendezvous with a load cap recomputed from the live
set alone balances, but a change cascades: measured over 3 → 50 → 3 workers it moved 1.4-1.8
times the partitions that had to move, up to 10 times on one join. So the assignment starts
from the current owners (the lease table every worker reads), keeps each partition where it is
while its owner is live and within its share, and places only the rest, each on the live
worker of highest rendezvous weight that still has room. Hence:

- a worker that leaves moves exactly its own partitions; a worker that joins takes
  ``P // N`` or ``P // N + 1`` of them, from the workers above their new share and nothing else;
- every worker holds ``P // N`` or ``P // N + 1`` partitions (balance is exact, not "+ small");
- where a partition lands is decided by the rendezvous weights, so every worker that reads the
  same owners computes the same answer, with no coordinator.

Each partition has its own persistent MQTT session (``session_id``): the broker keeps the
partition's queue while no worker holds it, and the next owner connects with the same client id
and clean start off, so it receives what was queued (and the broker disconnects any previous
holder of that client id: a second fence beside the lease epoch). Its subscriptions are the
contract's gateway channels of the partition's estates (``subscriptions``), each as a shared
subscription in the partition's own group: if two connections ever hold a partition's filters
at once (a clustered broker taking over a session on another node), each message still goes to
one of them only, never to both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from functools import lru_cache

from protocol.topics import Channel, estate_slot, gateway_prefix

__all__ = [
    "DEFAULT_PARTITIONS",
    "SERVICE_CHANNELS",
    "assign",
    "estates_of",
    "loads",
    "moved",
    "partition_of",
    "partition_subscriptions",
    "rendezvous_weight",
    "session_id",
    "share_group",
    "subscriptions",
]

DEFAULT_PARTITIONS = 64
SESSION_PREFIX = "estatewatch-p"
# What a worker listens to per estate; cmd is its own output (as protocol.topics' service list).
SERVICE_CHANNELS = (Channel.TELEMETRY, Channel.EVENTS, Channel.STATUS, Channel.CMD_ACK)


def partition_of(estate: str, partitions: int = DEFAULT_PARTITIONS) -> int:
    """The partition of an estate: crc32 of its id mod the partition count."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, not {partitions}")
    return estate_slot(estate, partitions)


def estates_of(
    partition: int, estates: Iterable[str], partitions: int = DEFAULT_PARTITIONS
) -> list[str]:
    """The estates (of those given, e.g. the registered ones) in one partition, sorted."""
    return sorted(e for e in estates if partition_of(e, partitions) == partition)


def session_id(partition: int) -> str:
    """The partition's persistent MQTT client id, e.g. ``estatewatch-p17``: the same on every
    worker, so the broker hands the session (and its queue) to whoever owns the partition."""
    if partition < 0:
        raise ValueError(f"partition must be 0 or more, not {partition}")
    return f"{SESSION_PREFIX}{partition}"


def share_group(partition: int) -> str:
    """The shared-subscription group of a partition (one group per partition)."""
    return session_id(partition)


def subscriptions(partition: int, estates: Iterable[str], root: str) -> list[str]:
    """Topic filters a partition's session subscribes to: ``$share/{group}/{root}/{estate}/
    gw/+/{channel}`` for each of the given estates, which the caller has picked as the
    partition's (``estates_of``; ``partition_subscriptions`` does both)."""
    group = share_group(partition)
    out: list[str] = []
    for estate in estates:
        # gateway_prefix checks root and estate id against the contract; "+" is the gw level.
        prefix = gateway_prefix(estate, "x", root).removesuffix("x/")
        out.extend(f"$share/{group}/{prefix}+/{ch.value}" for ch in SERVICE_CHANNELS)
    return out


def partition_subscriptions(
    partition: int, registered: Iterable[str], root: str, partitions: int = DEFAULT_PARTITIONS
) -> list[str]:
    """The filters of a partition's session over the registered estates: those of its own
    estates (MQTT cannot filter by a hash of a topic level, so new estates mean new filters,
    as ``ingest.shards`` subscribes today)."""
    return subscriptions(partition, estates_of(partition, registered, partitions), root)


@lru_cache(maxsize=65536)
def rendezvous_weight(worker: str, partition: int) -> int:
    """The rendezvous weight of a (worker, partition) pair: 64 bits of BLAKE2b, stable across
    processes and versions (crc32 is too linear here: similar worker names rank alike)."""
    digest = hashlib.blake2b(f"{worker}\x00{partition}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _ranked(workers: Iterable[str], partition: int) -> list[str]:
    return sorted(workers, key=lambda w: (rendezvous_weight(w, partition), w), reverse=True)


def assign(
    owners: Mapping[int, str | None],
    workers: Collection[str],
    partitions: int = DEFAULT_PARTITIONS,
) -> dict[int, str]:
    """The target owner of every partition, given the current ``owners`` (partition → live
    lease holder or None; missing = None) and the live ``workers``. Deterministic: any worker
    reading the same owners and members gets the same answer. Empty when no worker is live."""
    live = sorted(set(workers))
    if not live:
        return {}
    base, extra = divmod(partitions, len(live))
    kept: dict[str, list[int]] = {w: [] for w in live}
    for p in range(partitions):
        owner = owners.get(p)
        if owner in kept:
            kept[owner].append(p)
    # No one keeps more than base + 1; a worker keeps its partitions of highest weight.
    for w, ps in kept.items():
        ps.sort(key=lambda p: rendezvous_weight(w, p), reverse=True)
        del ps[base + 1 :]
    # Only `extra` workers may hold base + 1: those of them whose spare partition weighs most
    # keep it (ties by name), the others shed one.
    full = [w for w in live if len(kept[w]) == base + 1]
    full.sort(key=lambda w: (rendezvous_weight(w, kept[w][-1]), w), reverse=True)
    for w in full[extra:]:
        kept[w].pop()
    spare = extra - min(len(full), extra)
    out = {p: w for w, ps in kept.items() for p in ps}
    load = {w: len(ps) for w, ps in kept.items()}
    for p in range(partitions):
        if p in out:
            continue
        for w in _ranked(live, p):
            if load[w] < base or (load[w] == base and spare > 0):
                if load[w] == base:
                    spare -= 1
                load[w] += 1
                out[p] = w
                break
    return out


def moved(before: Mapping[int, str], after: Mapping[int, str]) -> int:
    """How many partitions changed owner (a partition that had none counts as moved)."""
    return sum(1 for p, w in after.items() if before.get(p) != w)


def loads(assignment: Mapping[int, str], workers: Sequence[str]) -> dict[str, int]:
    """Partitions per worker (workers with none included)."""
    out = dict.fromkeys(workers, 0)
    for w in assignment.values():
        out[w] = out.get(w, 0) + 1
    return out
