"""Estates → partitions → workers, and the simulation at issue 16's size (pure, fast).

`pytest tests/cluster/test_partitions.py -s` prints the simulation's figures (docs/capacity.md
quotes them).
"""

from __future__ import annotations

import random
import time
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.leases import LEASE_TTL_MS, RENEW_INTERVAL_MS, handoff_bound_ms, takeover_bound_ms
from cluster.partitions import (
    assign,
    estates_of,
    loads,
    moved,
    partition_of,
    partition_subscriptions,
    session_id,
    subscriptions,
)
from protocol.topics import TopicError

ESTATES = 10_000
DEVICES_PER_ESTATE = 500


def test_partition_of_is_crc32_of_the_id_stable_across_processes() -> None:
    # A literal, not hash(): the same on every host, process and Python version.
    assert zlib.crc32(b"hohhot-large") == 2_260_424_507
    assert partition_of("hohhot-large") == 2_260_424_507 % 64 == 59
    assert partition_of("hohhot-large", 256) == 2_260_424_507 % 256
    with pytest.raises(ValueError):
        partition_of("x", 0)


def test_a_partitions_session_and_its_shared_subscriptions() -> None:
    assert session_id(17) == "estatewatch-p17"
    estates = ["hohhot-large", "hailar-small", "bad id"]
    mine = estates_of(59, estates[:2])
    assert mine == ["hohhot-large"]
    assert subscriptions(59, mine, "estates") == [
        "$share/estatewatch-p59/estates/hohhot-large/gw/+/telemetry",
        "$share/estatewatch-p59/estates/hohhot-large/gw/+/events",
        "$share/estatewatch-p59/estates/hohhot-large/gw/+/status",
        "$share/estatewatch-p59/estates/hohhot-large/gw/+/cmd/ack",
    ]
    with pytest.raises(TopicError):
        subscriptions(0, ["bad id"], "estates")
    # the registered estates, each to its own partition's session only
    assert partition_subscriptions(59, estates[:2], "estates") == subscriptions(59, mine, "estates")
    assert partition_subscriptions(partition_of("hailar-small"), estates[:2], "estates", 64)[0] == (
        f"$share/estatewatch-p{partition_of('hailar-small')}/estates/hailar-small/gw/+/telemetry"
    )


def _workers(n: int) -> list[str]:
    return [f"worker-{i:02d}" for i in range(n)]


@settings(max_examples=200, deadline=None)
@given(
    partitions=st.sampled_from([1, 7, 64, 256]),
    before=st.integers(1, 40),
    data=st.data(),
)
def test_a_leave_moves_only_the_leavers_and_a_join_only_a_share(
    partitions: int, before: int, data: st.DataObject
) -> None:
    workers = _workers(before)
    start = assign({}, workers, partitions)
    # Balanced from nothing, too.
    assert max(loads(start, workers).values()) - min(loads(start, workers).values()) <= 1
    if before > 1:
        gone = data.draw(st.sampled_from(workers))
        rest = [w for w in workers if w != gone]
        after = assign(start, rest, partitions)
        assert moved(start, after) == loads(start, workers)[gone]
        counts = loads(after, rest).values()
        assert max(counts) - min(counts) <= 1
    new = [*workers, "newcomer"]
    after = assign(start, new, partitions)
    share = loads(after, new)["newcomer"]
    assert moved(start, after) == share
    assert share in (partitions // len(new), partitions // len(new) + 1)
    counts = loads(after, new).values()
    assert max(counts) - min(counts) <= 1


def test_the_same_owners_give_every_worker_the_same_answer() -> None:
    workers = _workers(7)
    owners: dict[int, str | None] = {p: workers[p % 3] for p in range(0, 64, 2)}
    assert assign(owners, workers) == assign(dict(owners), list(reversed(workers)))


def _simulate(partitions: int, rng: random.Random) -> dict[str, float]:
    """3 → 50 workers one at a time, 50 → 3 in random order, then 100 random joins and
    leaves between 3 and 50. Each change: partitions moved, against the least that must."""
    per_partition = [0] * partitions
    for i in range(ESTATES):
        per_partition[partition_of(f"estate-{i:05d}", partitions)] += 1
    live = _workers(3)
    spare = _workers(60)[3:]
    owners = assign({}, live, partitions)
    changes = moved_total = least_total = worst_extra = 0
    max_load_at_50 = min_load_at_50 = 0
    max_moved = 0
    schedule = ["join"] * 47 + ["leave"] * 47
    schedule += [rng.choice(["join", "leave"]) for _ in range(100)]
    for what in schedule:
        if what == "join" and len(live) < 50:
            live.append(spare.pop(rng.randrange(len(spare))))
            new = assign(owners, live, partitions)
            least = loads(new, live)[live[-1]]
        elif what == "leave" and len(live) > 3:
            gone = live.pop(rng.randrange(len(live)))
            spare.append(gone)
            least = loads(owners, [gone])[gone]
            new = assign(owners, live, partitions)
        else:
            continue
        n = moved(owners, new)
        changes += 1
        moved_total += n
        least_total += least
        worst_extra = max(worst_extra, n - least)
        max_moved = max(max_moved, n)
        counts = loads(new, live).values()
        share = partitions // len(live)
        assert share <= min(counts) and max(counts) <= share + 1
        if len(live) == 50:
            max_load_at_50, min_load_at_50 = max(counts), min(counts)
        owners = new
    return {
        "changes": changes,
        "moved_mean": moved_total / changes,
        "moved_max": max_moved,
        "moved_over_least": moved_total / least_total,
        "worst_extra": worst_extra,
        "max_load_at_50": max_load_at_50,
        "min_load_at_50": min_load_at_50,
        "estates_per_partition_max": max(per_partition),
        "estates_per_partition_min": min(per_partition),
    }


def test_simulation_at_the_issues_size() -> None:
    """10,000 estates × 500 devices over 64 and 256 partitions, 3 → 50 workers and back."""
    started = time.perf_counter()
    rng = random.Random(16)
    print()
    print(f"{ESTATES:,} estates × {DEVICES_PER_ESTATE} devices")
    for partitions in (64, 256):
        f = _simulate(partitions, rng)
        print(
            f"P={partitions}: {f['changes']:.0f} changes; moved per change mean "
            f"{f['moved_mean']:.1f}, max {f['moved_max']:.0f}; moved ÷ least that must move "
            f"{f['moved_over_least']:.2f}; load at 50 workers {f['min_load_at_50']:.0f}-"
            f"{f['max_load_at_50']:.0f} partitions "
            f"(≤ {f['max_load_at_50'] * f['estates_per_partition_max'] * DEVICES_PER_ESTATE:,.0f}"
            f" devices); estates a partition {f['estates_per_partition_min']:.0f}-"
            f"{f['estates_per_partition_max']:.0f}"
        )
        assert f["moved_over_least"] == 1.0 and f["worst_extra"] == 0
        assert f["max_load_at_50"] - f["min_load_at_50"] <= 1
        # crc32 spreads the estates: no partition above 1.3 × the mean.
        assert f["estates_per_partition_max"] <= 1.3 * ESTATES / partitions
    print(
        f"takeover bound (kill -9): lease TTL {LEASE_TTL_MS / 1000:.0f} s + renewal interval "
        f"{RENEW_INTERVAL_MS / 1000:.0f} s = {takeover_bound_ms() / 1000:.0f} s; "
        f"hand-off on a rebalance ≤ {handoff_bound_ms() / 1000:.0f} s"
    )
    elapsed = time.perf_counter() - started
    print(f"simulation took {elapsed:.2f} s")
    assert elapsed < 5
