"""Who applies a person's action on an estate (issue 16), pure: the estate's owner.

The owner of an estate is the process whose alert engine holds the estate's alarm state in
memory (open alarms, ``for`` timers, plans). An API node that takes an action (acknowledge,
tick a task, a socket command …) sends it to the owner's **address**, and the owner serves the
addresses it owns. An address is a name, not a host: the static shard (``shard-{i}``, crc32
of the estate id mod ``ESTATEWATCH_INGEST_SHARDS``, as ``ingest.shards.shard_of``) or, with
partition leases (``ESTATEWATCH_PARTITIONS``), the partition (``p{N}``), served by whichever
worker holds that partition's lease, so the API nodes need no look-up of workers and the
request follows the lease when it moves.

``owner_of`` is the one function every part asks; swapping the static shards for leases is
swapping it (and what a worker serves), nothing else.
"""

from __future__ import annotations

from collections.abc import Callable

from cluster.partitions import partition_of

__all__ = ["OwnerOf", "partition_address", "partition_owner", "shard_address", "shard_owner"]

OwnerOf = Callable[[str], str]  # estate id -> the address of its owner


def shard_address(shard: int) -> str:
    """The address an ingest shard serves: ``shard-{i}``."""
    if shard < 0:
        raise ValueError(f"shard must be 0 or more, not {shard}")
    return f"shard-{shard}"


def partition_address(partition: int) -> str:
    """The address a partition's lease holder serves: ``p{N}`` (as its MQTT session id)."""
    if partition < 0:
        raise ValueError(f"partition must be 0 or more, not {partition}")
    return f"p{partition}"


def shard_owner(shards: int) -> OwnerOf:
    """Today's owners: the static shard of the estate (crc32 of its id mod ``shards``)."""
    count = max(shards, 1)
    return lambda estate: shard_address(partition_of(estate, count))


def partition_owner(partitions: int) -> OwnerOf:
    """Scaled out: the partition of the estate (``p{N}``), served by its lease holder."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, not {partitions}")
    return lambda estate: partition_address(partition_of(estate, partitions))
