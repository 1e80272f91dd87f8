"""docs/capacity.md's load figures, recomputed from the catalog and the bundled estate specs, so
the document goes stale loudly when an interval or a spec changes (`-s` prints them)."""

from __future__ import annotations

import pytest

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
