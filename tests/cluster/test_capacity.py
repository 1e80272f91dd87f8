"""docs/capacity.md's load figures, recomputed from the catalog and the bundled estate specs, so
the document goes stale loudly when an interval or a spec changes (`-s` prints them)."""

from __future__ import annotations

from collections import Counter

import pytest

from cluster.partitions import assign, loads, moved, partition_of
from protocol.catalog import default_catalog
from simulators.spec import load_spec

ESTATES = 10_000
DEVICES_PER_ESTATE = 500


def test_the_regions_load_from_the_catalogs_intervals() -> None:
    catalog = default_catalog()
    spec = load_spec("hohhot-typical")  # the 500-device estate's mix
    kinds = spec.kinds()
    devices = sum(kinds.values())
    readings_s = sum(n / catalog.kinds[k].interval_s for k, n in kinds.items())
    points_s = sum(n * len(catalog.kinds[k].metrics) / catalog.kinds[k].interval_s
                   for k, n in kinds.items())  # fmt: skip
    series = sum(n * len(catalog.kinds[k].metrics) for k, n in kinds.items())
    per_device = readings_s / devices
    region_readings = per_device * DEVICES_PER_ESTATE * ESTATES
    region_points = points_s / devices * DEVICES_PER_ESTATE * ESTATES
    region_series = series / devices * DEVICES_PER_ESTATE * ESTATES
    print(
        f"\n{spec.estate}: {devices} devices, {per_device:.4f} readings/s a device, "
        f"{points_s / readings_s:.2f} metrics a reading; region: {region_readings:,.0f} "
        f"readings/s, {region_points:,.0f} points/s, {region_series:,.0f} series"
    )
    # The figures docs/capacity.md states.
    assert per_device == pytest.approx(0.0216, abs=0.00005)
    assert region_readings == pytest.approx(108_000, rel=0.01)
    assert region_points == pytest.approx(496_000, rel=0.01)
    assert region_series == pytest.approx(13.7e6, rel=0.01)


# docs/capacity.md §3: the deployment sized from the measured figures.
PARTITIONS = 256
HOSTS = 4
WORKERS_A_HOST = 2
WORKER_READINGS_S = 35_000  # a cluster worker, bounded by its store (bench.net_telemetry)
READINGS_S_AN_ESTATE = 10.8  # hohhot-typical's 500 devices (the test above)
MAX_USE_ONE_HOST_LOST = 0.6


def test_the_sized_region_loses_a_host_and_stays_below_sixty_percent() -> None:
    """8 workers on 4 hosts hold 256 partitions of 10,000 estates (crc32, as deployed). One
    host is lost: exactly its workers' partitions move (sticky rendezvous), every survivor
    then holds ⌊P/N⌋ or ⌈P/N⌉, and the busiest survivor, counted by the estates its
    partitions really hold, stays below 60 % of a worker's measured rate; with every host
    up, below 40 %."""
    estates = Counter(partition_of(f"estate-{i:05d}", PARTITIONS) for i in range(ESTATES))
    workers = [f"h{h}-w{w}" for h in range(HOSTS) for w in range(WORKERS_A_HOST)]
    owners: dict[int, str] = {}
    for n in range(1, len(workers) + 1):  # the workers start one after the other
        owners = assign(owners, workers[:n], PARTITIONS)

    def busiest(assignment: dict[int, str]) -> float:
        load: dict[str, float] = {}
        for p, w in assignment.items():
            load[w] = load.get(w, 0.0) + estates[p] * READINGS_S_AN_ESTATE
        return max(load.values()) / WORKER_READINGS_S

    all_up = busiest(owners)
    lost = [w for w in workers if w.startswith("h0-")]
    survivors = [w for w in workers if w not in lost]
    after = assign({p: w for p, w in owners.items() if w not in lost}, survivors, PARTITIONS)
    one_lost = busiest(after)
    print(
        f"\n{len(workers)} workers on {HOSTS} hosts, {PARTITIONS} partitions: busiest at "
        f"{all_up:.0%} of {WORKER_READINGS_S:,} readings/s; host h0 lost: "
        f"{moved(owners, after)} partitions moved, busiest at {one_lost:.0%}"
    )
    assert moved(owners, after) == sum(1 for w in owners.values() if w in lost)
    assert set(loads(after, survivors).values()) <= {PARTITIONS // 6, PARTITIONS // 6 + 1}
    assert all_up < 0.4
    assert one_lost < MAX_USE_ONE_HOST_LOST
