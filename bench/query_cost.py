"""Bench 5: query cost against history, the 30-day chart query over the same query for 1 day.

30 days of the 5,000-device estate (``simulators/specs/large.toml``) are written to the SQLite
telemetry store through the real ``TelemetryWriter`` (500 readings a message, 40 messages a
commit) and folded by its ``rollup()``. Writing every device at its real interval for 30 days
would take hours, so the simulator runs with every kind's interval set to one reading an hour
(``--full``: every 10 minutes). A chart of 500 points reads, for 30 days, ``rollup_1h`` (720
hourly rows merged into 2-hour points), which holds one row per series and hour whether a
device reported every hour or every minute, so that table has its full real size. For 1 day it
reads ``rollup_1m`` (5-minute points merged from minutes): so that the day's rows are as many as
a real device's, the charted devices' last day is also written at their kinds' real reporting
intervals (10 s to 5 min). The other devices' raw and 1-minute rows are fewer than a real
month's; they only deepen the indexes the queries seek in.

Then ``TelemetryReader.telemetry(..., max_points=500, now=end of data)`` is timed for the last
day and the last 30 days over several devices and metrics, each pair in turn (the order
alternating), repeated; the figure is the median 30-day time over the median 1-day time.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import parse_with_full, report, verdict
from ingest.model import ChartQuery
from ingest.telemetry import EstateBatch, TelemetryReader, TelemetryWriter
from protocol.catalog import Catalog, default_catalog
from protocol.messages import Reading
from simulators.estate import SimulatedEstate
from simulators.spec import load_spec

ESTATE, GW = "bench-large", "gw-01"
HOUR = 3_600_000
DAY = 24 * HOUR
START_MS = 1_764_547_200_000  # 2025-12-01 00:00 UTC: a winter month
PER_MESSAGE, PER_COMMIT = 500, 40
MAX_POINTS = 500
# (kind, metric) charted: the busiest kinds and a few plant ones.
CHARTED = (
    ("ebike_charger", "temp_c"),
    ("ebike_charger", "power_w"),
    ("elevator", "speed_ms"),
    ("fire_hydrant", "pressure_mpa"),
    ("room_temp", "temp_c"),
    ("power_meter", "voltage_v"),
    ("heating_station", "supply_temp_c"),
    ("weather_station", "temp_c"),
)


def coarse_catalog(catalog: Catalog, interval_s: int) -> Catalog:
    """The catalog with every kind reporting at ``interval_s`` (the simulator reads it)."""
    kinds = {k: dataclasses.replace(v, interval_s=interval_s) for k, v in catalog.kinds.items()}
    return dataclasses.replace(catalog, kinds=kinds)


def fill(path: Path, days: int, interval_s: int, seed: int) -> dict[str, Any]:
    """Write ``days`` of the large estate and fold the rollups; what it took."""
    sim = SimulatedEstate(
        load_spec("large"), coarse_catalog(default_catalog(), interval_s), seed, START_MS
    )
    writer = TelemetryWriter(path, latest_interval_s=1.0)  # as the service
    readings = values = rolled = 0
    write_s = rollup_s = 0.0
    step = max(interval_s * 1000, HOUR)
    try:
        for t in range(START_MS + step, START_MS + days * DAY + 1, step):
            got = sim.due(t)
            batches = [
                EstateBatch(ESTATE, GW, got[i : i + PER_MESSAGE])
                for i in range(0, len(got), PER_MESSAGE)
            ]
            t0 = time.perf_counter()
            for i in range(0, len(batches), PER_COMMIT):
                values += writer.write(batches[i : i + PER_COMMIT]).values
            write_s += time.perf_counter() - t0
            readings += len(got)
            if (t - START_MS) % DAY == 0:  # the service folds every 10 s; once a day here
                t0 = time.perf_counter()
                while n := writer.rollup():
                    rolled += n
                rollup_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        while n := writer.rollup():
            rolled += n
        writer.flush_latest()
        rollup_s += time.perf_counter() - t0
        rows_1h = writer.conn.execute("SELECT count(*) FROM rollup_1h").fetchone()[0]
        rows_1m = writer.conn.execute("SELECT count(*) FROM rollup_1m").fetchone()[0]
        series = writer.conn.execute("SELECT count(*) FROM series").fetchone()[0]
    finally:
        writer.close()
    return {
        "devices": len(sim.spec.devices),
        "readings_written": readings,
        "values_written": values,
        "series": series,
        "rollup_1h_rows": rows_1h,
        "rollup_1m_rows": rows_1m,
        "write_values_per_s": round(values / write_s),
        "rollup_values_per_s": round(rolled / max(rollup_s, 1e-9)),
        "write_s": round(write_s, 1),
        "rollup_s": round(rollup_s, 1),
        "db_mb": round(path.stat().st_size / 1e6),
    }


def charted_devices(n_per: int) -> list[tuple[str, str, str, int]]:
    """(device, kind, metric, interval_ms) to chart: the first ``n_per`` devices of each kind."""
    catalog = default_catalog()
    spec = load_spec("large")
    out = []
    for kind, metric in CHARTED:
        devs = [d.id for d in spec.devices if d.kind == kind][:n_per]
        out += [(d, kind, metric, catalog.kinds[kind].interval_s * 1000) for d in devs]
    return out


def fill_real_day(path: Path, end: int, n_per: int) -> int:
    """The charted devices' last day at their real reporting intervals, folded into the
    rollups like the rest; how many readings."""
    writer = TelemetryWriter(path, latest_interval_s=1.0)
    readings: list[Reading] = []
    try:
        for dev, kind, metric, interval in charted_devices(n_per):
            # offset half an interval so no reading repeats the hourly fill's timestamps
            for i, ts in enumerate(range(end - DAY + interval // 2, end, interval)):
                readings.append(Reading(dev, kind, ts, {metric: 1.0 + (i % 97) / 100}))
        batches = [
            EstateBatch(ESTATE, GW, readings[i : i + PER_MESSAGE])
            for i in range(0, len(readings), PER_MESSAGE)
        ]
        for i in range(0, len(batches), PER_COMMIT):
            writer.write(batches[i : i + PER_COMMIT])
        while writer.rollup():
            pass
        writer.flush_latest()
    finally:
        writer.close()
    return len(readings)


def time_queries(path: Path, end: int, repeats: int, n_per: int) -> dict[str, Any]:
    reader = TelemetryReader(path)
    spans = {"1d": DAY, "30d": 30 * DAY}
    times: dict[str, list[float]] = {k: [] for k in spans}
    shape: dict[str, tuple[str, int, int]] = {}
    targets = charted_devices(n_per)
    for rep in range(repeats + 1):
        for i, (dev, _kind, metric, interval) in enumerate(targets):
            order = list(spans) if (rep + i) % 2 == 0 else list(spans)[::-1]
            for name in order:
                t0 = time.perf_counter()
                query = ChartQuery(
                    ESTATE, dev, metric, end - spans[name], end, MAX_POINTS, interval
                )
                body = reader.telemetry(query, now=end)
                dt = time.perf_counter() - t0
                if rep > 0:  # the first round warms the page cache and the connection
                    times[name].append(dt)
                shape[name] = (body["resolution"], len(body["points"]), body["step_ms"])
                assert body["points"], f"no points for {dev}.{metric} over {name}"
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "charted_series": len(targets),
        "queries_each": len(times["1d"]),
        "query_1d_ms": round(med["1d"] * 1000, 3),
        "query_30d_ms": round(med["30d"] * 1000, 3),
        "query_1d_p90_ms": round(statistics.quantiles(times["1d"], n=10)[-1] * 1000, 3),
        "query_30d_p90_ms": round(statistics.quantiles(times["30d"], n=10)[-1] * 1000, 3),
        "points_1d": shape["1d"][1],
        "points_30d": shape["30d"][1],
        "resolution_1d": shape["1d"][0],
        "resolution_30d": shape["30d"][0],
        "step_1d_min": shape["1d"][2] // 60_000,
        "step_30d_min": shape["30d"][2] // 60_000,
        "ratio": round(med["30d"] / med["1d"], 3),
    }


def run(
    days: int = 30, interval_s: int = 3600, repeats: int = 30, n_per: int = 3, seed: int = 7
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "telemetry.db"
        figures = fill(path, days, interval_s, seed)
        end = START_MS + days * DAY
        figures["charted_day_readings"] = fill_real_day(path, end, n_per)
        figures |= time_queries(path, end, repeats, n_per)
    return figures


def targets(f: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [
        (
            "5: 30-day chart query ÷ 1-day",
            f"{f['ratio']:.2f}",
            "≤ 1.5",
            verdict(f["ratio"] <= 1.5),
        )
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--interval-s", type=int, default=3600, help="seconds between readings")
    p.add_argument("--repeats", type=int, default=30, help="rounds over the charted series")
    p.add_argument("--per-kind", type=int, default=3, help="devices charted per kind")
    p.add_argument("--seed", type=int, default=7)
    args = parse_with_full(p, "readings every 10 minutes", interval_s=600)
    print("bench 5: query cost against history", flush=True)
    print(
        f"  writing {args.days} days of the large estate, every device every "
        f"{args.interval_s // 60} min (real intervals are 10 s–5 min: rollup_1h, which the "
        "30-day chart reads, is full-size either way; the charted devices' last day is also "
        "written at real intervals, for the 1-day chart's rollup_1m) ...",
        flush=True,
    )
    f = run(args.days, args.interval_s, args.repeats, args.per_kind, args.seed)
    settings = {
        **vars(args),
        "estate": "large",
        "max_points": MAX_POINTS,
        "stored": f"every device every {args.interval_s} s for {args.days} days, real writer",
        "charted": [f"{k}.{m}" for k, m in CHARTED],
    }
    print(
        f"  stored {f['readings_written']:,} readings ({f['values_written']:,} values, "
        f"{f['series']:,} series, {f['db_mb']:,} MB): write {f['write_values_per_s']:,} values/s, "
        f"rollup {f['rollup_values_per_s']:,} values/s; rollup_1h {f['rollup_1h_rows']:,} rows\n"
        f"  1 day:   median {f['query_1d_ms']:.3f} ms (p90 {f['query_1d_p90_ms']:.3f}), "
        f"{f['points_1d']} points of {f['step_1d_min']} min from {f['resolution_1d']}\n"
        f"  30 days: median {f['query_30d_ms']:.3f} ms (p90 {f['query_30d_p90_ms']:.3f}), "
        f"{f['points_30d']} points of {f['step_30d_min']} min from {f['resolution_30d']}\n"
        f"  {f['charted_series']} series × {f['queries_each'] // f['charted_series']} rounds; "
        f"ratio {f['ratio']:.3f}",
        flush=True,
    )
    report("query-cost", f, settings, targets(f))


if __name__ == "__main__":
    main()
