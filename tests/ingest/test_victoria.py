"""Chart reads from a real VictoriaMetrics (tests/conftest.py starts one): readings written
through the InfluxDB write path come back as raw points (/api/v1/export) and as windows computed
by the store (MetricsQL aggr_over_time), equal to the same statistics computed here."""

from __future__ import annotations

import random
import time
from pathlib import Path

import httpx
import pytest

from estatewatch.broker import free_port
from ingest.influx import InfluxTelemetrySink
from ingest.model import ChartQuery
from ingest.telemetry import EstateBatch, TelemetryWriter
from ingest.telemetry_reader import TelemetryReader
from ingest.victoria import TimeseriesUnavailable, VictoriaMetricsReader, quote, selector
from protocol.catalog import default_catalog
from protocol.messages import Reading

pytestmark = pytest.mark.integration
CAT = default_catalog()
MINUTE = 60_000
INTERVAL = 30_000  # fire_hydrant's reporting interval is not used: any width works


def flush(url: str) -> None:
    # just-written points are searchable after VictoriaMetrics' in-memory buffer is flushed
    # (about a second); the tests do not wait for it
    httpx.get(f"{url}/internal/force_flush", timeout=10).raise_for_status()


def write(url: str, tmp_path: Path, batches: list[EstateBatch]) -> None:
    sink = InfluxTelemetrySink(url, "unused-token", "estatewatch", "telemetry", CAT)
    writer = TelemetryWriter(tmp_path / "t.db", raw_sink=sink)
    writer.write(batches)
    writer.close()
    sink.close()
    flush(url)


def expected(
    samples: list[tuple[int, float]], from_ms: int, to_ms: int, width: int
) -> list[tuple[int, float, float, float, int, float]]:
    """(bucket, min, max, mean, count, last) over [b, b + width) buckets touching the range."""
    out = []
    b = from_ms // width * width
    while b <= to_ms:
        vs = [(t, v) for t, v in samples if b <= t < b + width]
        if vs:
            values = [v for _, v in vs]
            out.append(
                (b, min(values), max(values), sum(values) / len(values), len(values), vs[-1][1])
            )
        b += width
    return out


def test_chart_windows_and_raw_points_match_a_direct_computation(
    victoriametrics: str, tmp_path: Path
) -> None:
    rng = random.Random(16)
    now = int(time.time() * 1000) // MINUTE * MINUTE
    start = now - 6 * 3_600_000
    # irregular times, some exactly on a bucket boundary (a boundary belongs to the later one)
    stamps = sorted({start + rng.randrange(0, 6 * 3_600_000) for _ in range(700)})
    stamps += [start + 15 * MINUTE, start + 60 * MINUTE, start + 5 * MINUTE]
    stamps = sorted(set(stamps))
    samples = [(t, round(rng.uniform(0.1, 0.9), 4)) for t in stamps]
    # two gateways took turns for the device (a gateway swapped mid-way): one chart still
    half = len(samples) // 2
    batches = [
        EstateBatch(
            "hohhot-a",
            gw,
            readings=[
                Reading("b1-hydrant-1", "fire_hydrant", t, {"pressure_mpa": v}) for t, v in part
            ],
            seq=i + 1,
        )
        for i, (gw, part) in enumerate((("gw-01", samples[:half]), ("gw-02", samples[half:])))
    ]
    write(victoriametrics, tmp_path, batches)
    reader = VictoriaMetricsReader(victoriametrics)

    for from_ms, to_ms, max_points in (
        (start, now, 20),  # 30-minute windows
        (start + 7 * MINUTE, now - 3 * MINUTE, 300),  # 2-minute windows, unaligned range
        (start, now, 5),  # 2-hour windows
    ):
        query = ChartQuery(
            "hohhot-a", "b1-hydrant-1", "pressure_mpa", from_ms, to_ms, max_points, INTERVAL
        )
        body = reader.chart(query, "fire_hydrant", now)
        assert body["resolution"] != "raw"
        assert 0 < len(body["points"]) <= max_points
        want = expected(samples, from_ms, to_ms, body["step_ms"])
        got = [
            (p["ts"], p["min"], p["max"], p["mean"], p["count"], p["last"]) for p in body["points"]
        ]
        assert [g[0] for g in got] == [w[0] for w in want], body["step_ms"]
        assert [g[4] for g in got] == [w[4] for w in want]  # every point in its own window
        for g, w in zip(got, want, strict=True):
            assert g[1:4] == pytest.approx(w[1:4], rel=1e-9), g[0]
            assert g[5] == pytest.approx(w[5], rel=1e-9), g[0]

    # a short range at the kind's interval: the raw points themselves, from the export API
    from_ms, to_ms = start + 30 * MINUTE, start + 60 * MINUTE
    query = ChartQuery("hohhot-a", "b1-hydrant-1", "pressure_mpa", from_ms, to_ms, 500, INTERVAL)
    body = reader.chart(query, "fire_hydrant", now)
    assert body["resolution"] == "raw"
    raw = [(t, v) for t, v in samples if from_ms <= t <= to_ms]
    assert [p["ts"] for p in body["points"]] == [t for t, _ in raw]
    assert [p["value"] for p in body["points"]] == pytest.approx([v for _, v in raw])
    # a device with no readings there: an empty chart, which is then true
    query = ChartQuery("hohhot-a", "b1-hydrant-9", "pressure_mpa", start, now, 20, INTERVAL)
    empty = reader.chart(query, "fire_hydrant", now)
    assert empty["points"] == []


def test_ids_are_quoted_so_no_id_reaches_into_another_series(
    victoriametrics: str, tmp_path: Path
) -> None:
    # the wire contract bounds ids to [a-z0-9-]; these are not, and still cannot escape
    # their string literal: a quote, a backslash, a brace and a regex
    odd = 'x"} or {device=~".+'
    backslash = "b1\\hydrant"
    now = int(time.time() * 1000)
    batches = [
        EstateBatch(
            "est-a",
            "gw-01",
            readings=[
                Reading(dev, "fire_hydrant", now - 60_000 + i * 1000, {"pressure_mpa": value})
                for i in range(3)
            ],
            seq=n + 1,
        )
        for n, (dev, value) in enumerate(((odd, 0.1), (backslash, 0.2), ("plain", 0.3)))
    ]
    write(victoriametrics, tmp_path, batches)
    assert quote('a"b\\c') == '"a\\"b\\\\c"'
    assert selector("e", 'd"', "k", "m") == '{__name__="k_m",estate="e",device="d\\""}'
    reader = VictoriaMetricsReader(victoriametrics)
    for dev, value in ((odd, 0.1), (backslash, 0.2), ("plain", 0.3)):
        for max_points in (500, 2):  # raw (export) and windows (query_range)
            query = ChartQuery("est-a", dev, "pressure_mpa", now - 120_000, now, max_points, 1000)
            body = reader.chart(query, "fire_hydrant", now)
            assert sum(p["count"] for p in body["points"]) == 3, (dev, max_points)
            assert {p["min"] for p in body["points"]} == {value}
    # an estate id that would close the selector reads nothing of the others
    assert (
        reader.chart(
            ChartQuery(
                'est-a",device=~".+', "plain", "pressure_mpa", now - 120_000, now, 500, 1000
            ),
            "fire_hydrant",
            now,
        )["points"]
        == []
    )


def test_a_store_that_does_not_answer_is_an_error_never_an_empty_chart(
    victoriametrics: str,
) -> None:
    dead = VictoriaMetricsReader(f"http://127.0.0.1:{free_port()}", timeout_s=1, retries=0)
    now = int(time.time() * 1000)

    def query(max_points: int) -> ChartQuery:
        return ChartQuery("e", "d", "pressure_mpa", now - 3_600_000, now, max_points, 1000)

    for max_points in (500, 2):
        with pytest.raises(TimeseriesUnavailable, match=r"did not answer.*VICTORIAMETRICS_URL"):
            dead.chart(query(max_points), "fire_hydrant", now)
    assert dead.health()["state"] == "down"
    # a server that answers, but not VictoriaMetrics' API (a wrong path in the URL)
    wrong = VictoriaMetricsReader(f"{victoriametrics}/not-here", retries=0)
    with pytest.raises(TimeseriesUnavailable, match="answered 4"):
        wrong.chart(query(2), "fire_hydrant", now)
    assert VictoriaMetricsReader(victoriametrics).health()["state"] == "up"


def test_hours_with_data_match_the_local_rollups_for_the_same_readings(
    victoriametrics: str, tmp_path: Path
) -> None:
    # the report's uptime hours: one query per estate to VictoriaMetrics, the same count per
    # device as the local rollup_1h gives for the same readings
    rng = random.Random(1616)
    hour = 3_600_000
    now = int(time.time() * 1000) // MINUTE * MINUTE
    start = now // hour * hour - 30 * hour
    readings: list[tuple[str, str, str, int, dict[str, float]]] = []
    for dev, kind, metric in (
        ("b1-hydrant-1", "fire_hydrant", "pressure_mpa"),
        ("b1-hydrant-2", "fire_hydrant", "pressure_mpa"),
        ("b2-smoke-1", "smoke_detector", "smoke_obscuration_pct"),
    ):
        # each device skips some hours; a few readings exactly on an hour boundary or its
        # last millisecond (each belongs to one hour only)
        for h in rng.sample(range(30), 17):
            b = start + h * hour
            for t in {b, b + hour - 1, b + rng.randrange(hour)}:
                if rng.random() < 0.7:
                    gw = "gw-01" if rng.random() < 0.5 else "gw-02"
                    readings.append((gw, dev, kind, t, {metric: round(rng.uniform(0, 1), 3)}))
    readings.sort(key=lambda r: r[3])
    # the other estate's readings are not counted
    readings.append(("gw-09", "b1-hydrant-1", "fire_hydrant", start + hour, {"pressure_mpa": 1}))

    def batches() -> list[EstateBatch]:
        out = []
        for seq, (gw, dev, kind, t, m) in enumerate(readings, 1):
            estate = "other" if gw == "gw-09" else "hohhot-a"
            out.append(EstateBatch(estate, gw, readings=[Reading(dev, kind, t, m)], seq=seq))
        return out

    write(victoriametrics, tmp_path, batches())
    local = TelemetryWriter(tmp_path / "local.db")
    local.write(batches())
    local.rollup()
    local.close()

    rollups = TelemetryReader(tmp_path / "local.db")
    reader = VictoriaMetricsReader(victoriametrics)
    for from_ms, to_ms in (
        (start, now),
        (start + 5 * hour + 17 * MINUTE, start + 20 * hour),  # unaligned start, aligned end
        (start + 3 * hour, start + 11 * hour + 1),  # an end 1 ms into an hour counts it
        (start - 48 * hour, start),  # before any reading
    ):
        want = rollups.hours_with_data("hohhot-a", from_ms, to_ms)
        assert reader.hours_with_data("hohhot-a", from_ms, to_ms) == want, (from_ms, to_ms)
    assert len(rollups.hours_with_data("hohhot-a", start, now)) == 3
    assert reader.hours_with_data("other", start, now) == {"b1-hydrant-1": 1}
