"""Charts, report hours and counts from InfluxDB 2 through Flux (ingest.flux, issue 16).

The Flux text is checked as text (windows, time ranges, quoting) and the answers are shaped from
Flux tables as influxdb-client parses them from InfluxDB's annotated CSV: no network. Reads
against a real InfluxDB 2 (a worker's write, then the chart, hours and count through an API-role
Service) run when INFLUXDB_URL, INFLUXDB_TOKEN, INFLUXDB_ORG and INFLUXDB_BUCKET point at one;
none can be installed here, so they are a reported skip.
"""

from __future__ import annotations

import io
import os
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from influxdb_client.client.flux_csv_parser import FluxCsvParser, FluxSerializationMode

from estatewatch.broker import ManagedMosquitto, free_port
from estatewatch.service import Service
from estatewatch.settings import SettingsError, load_settings
from ingest.flux import (
    STATS,
    FluxChartsReader,
    Record,
    count_query,
    flux_string,
    hours_bounds,
    hours_query,
    raw_query,
    to_ms,
    window_rows,
    windows_query,
)
from ingest.influx import InfluxTelemetrySink
from ingest.model import ChartQuery, EstateBatch
from ingest.net_telemetry import NetworkTelemetryStore
from ingest.rollup import aggregate, choose_resolution, points
from ingest.victoria import HOUR_MS, TimeseriesUnavailable
from protocol.catalog import default_catalog
from protocol.messages import Reading
from tests.support import run_env

CAT = default_catalog()

MINUTE = 60_000
TOKEN = "test-admin-token-0123456789"
NOW = 1_796_000_000_000  # a fixed data time (2026-12), so every window below is known
REAL = pytest.mark.skipif(
    not os.environ.get("INFLUXDB_URL"),
    reason="Flux reads need a real InfluxDB 2: set INFLUXDB_URL, INFLUXDB_TOKEN, "
    "INFLUXDB_ORG and INFLUXDB_BUCKET to run them",
)


def unquote(literal: str) -> str:
    """A Flux string literal's value, by the spec's escapes (\\n \\r \\t \\\\ \\" and \\xNN
    bytes). A raw quote would end the literal; a raw "$" is refused too: "${" interpolates and
    Flux's scanner pairs "$" with the next character (a quote or backslash after it would be
    swallowed). Flux's own parser (flux-lsp) read 5,000 random ids back as these do."""
    assert literal[0] == literal[-1] == '"'
    body, out, i = literal[1:-1], bytearray(), 0
    escapes = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"'}
    while i < len(body):
        c = body[i]
        if c == "\\":
            nxt = body[i + 1]
            if nxt == "x":
                out.append(int(body[i + 2 : i + 4], 16))
                i += 4
                continue
            out += escapes[nxt].encode()
            i += 2
            continue
        assert c not in '"$', literal
        out += c.encode()
        i += 1
    return out.decode()


@given(st.text(st.sampled_from(list('ab"\\${}\n\r\t é东x2')), max_size=12))
def test_every_id_is_one_flux_string_holding_exactly_it(value: str) -> None:
    assert unquote(flux_string(value)) == value


def test_an_estate_id_cannot_widen_the_filter() -> None:
    q = ChartQuery('x" or true or r.estate == "', "d${r._value}", "m", NOW - MINUTE, NOW, 10, 1)
    text = raw_query("telemetry", q, "fire_hydrant")
    # every string in the text is one literal; the ids are literals, not Flux
    literals = re.findall(r'"(?:[^"\\]|\\.)*"', text)
    assert [unquote(lit) for lit in literals] == [
        "telemetry",
        'x" or true or r.estate == "',
        "fire_hydrant",
        "d${r._value}",
        "m",
        "_time",
        "_value",
    ]


def ns(ms: int) -> str:
    return f"time(v: {ms * 1_000_000})"


def test_raw_reads_take_both_ends_of_the_range() -> None:
    q = ChartQuery("e1", "b1-hydrant-1", "pressure_mpa", NOW - 30 * MINUTE, NOW, 500, MINUTE)
    text = raw_query("telemetry", q, "fire_hydrant")
    # Flux's stop is exclusive: 1 ms past to_ms keeps a point at to_ms, as the other stores do
    assert f"range(start: {ns(NOW - 30 * MINUTE)}, stop: {ns(NOW + 1)})" in text
    assert 'r._measurement == "fire_hydrant"' in text and 'r._field == "pressure_mpa"' in text


def test_windows_cover_the_whole_aligned_buckets_touching_the_range() -> None:
    width = 5 * MINUTE
    q = ChartQuery("e1", "b1-hydrant-1", "pressure_mpa", NOW + 7_000, NOW + 86_400_000, 500, 1)
    text = windows_query("telemetry", q, "fire_hydrant", width, numeric=True)
    first = (NOW + 7_000) // width * width
    stop = (NOW + 86_400_000) // width * width + width
    assert f"range(start: {ns(first)}, stop: {ns(stop)})" in text
    assert f"window(every: {width}ms)" in text
    # each statistic its own plain read (InfluxDB pushes window |> fn down to its storage)
    assert [line.split(" |> ")[-2:] for line in text.splitlines()] == [
        [f"{s}()", f'yield(name: "{s}")'] for s in STATS
    ]
    assert "group(" not in text and "toFloat" not in text  # a gateway is a series already
    # a boolean is made a float first: min and sum take numbers
    flags = windows_query("telemetry", q, "fire_hydrant", width, numeric=False)
    assert flags.count("|> toFloat() |> window(") == len(STATS)


def test_only_metrics_the_catalog_says_are_numbers_go_unconverted(
    reader: FluxChartsReader,
) -> None:
    assert reader.numeric("fire_hydrant", "pressure_mpa")
    assert reader.numeric("elevator", "floor")  # an integer
    assert not reader.numeric("fire_hydrant", "no_such_metric")
    assert not reader.numeric("no_such_kind", "pressure_mpa")
    booleans = [
        (k, m) for k in CAT.kinds.values() for m in k.metrics.values() if m.type == "boolean"
    ]
    assert booleans and not any(reader.numeric(k.name, m.name) for k, m in booleans)


def test_hours_are_those_the_range_starts_in_up_to_its_end() -> None:
    start = NOW // HOUR_MS * HOUR_MS
    assert hours_bounds(start, start) is None
    assert hours_bounds(start + 1, start + HOUR_MS) == (start, start + HOUR_MS)
    assert hours_bounds(start, start + HOUR_MS + 1) == (start, start + 2 * HOUR_MS)
    text = hours_query("telemetry", "e1", start, start + 2 * HOUR_MS)
    assert f"range(start: {ns(start)}, stop: {ns(start + 2 * HOUR_MS)})" in text
    assert "window(every: 1h) |> count()" in text and 'r.estate == "e1"' in text


def test_counts_are_of_one_estate_or_all() -> None:
    assert 'r.estate == "e1"' in count_query("telemetry", "e1", NOW)
    assert "filter" not in count_query("telemetry", None, NOW)
    assert f"stop: {ns(NOW)}" in count_query("telemetry", None, NOW)


def at(ms: int) -> str:
    """RFC 3339 with nanoseconds, as InfluxDB writes times in its CSV."""
    t = datetime.fromtimestamp(ms // 1000, UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}000000Z"


def parse_csv(text: str) -> list[Record]:
    """Records as ``QueryApi.query`` returns them, from InfluxDB's annotated CSV."""
    parser = FluxCsvParser(
        response=io.BytesIO(text.encode()), serialization_mode=FluxSerializationMode.tables
    )
    list(parser.generator())  # type: ignore[no-untyped-call]
    return [rec.values for table in parser.tables for rec in table.records]


def yield_csv(stat: str, rows: Sequence[tuple[int, str, int | None, float | int]]) -> str:
    """One ``yield`` of windows_query: (bucket, gateway, time of the point or None, value)."""
    selector = rows[0][2] is not None
    kind = "long" if stat == "count" else "double"
    if selector:
        head = (
            "#group,false,false,true,true,false,false,true\n"
            f"#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,{kind},"
            "string\n"
            f"#default,{stat},,,,,,\n"
            ",result,table,_start,_stop,_time,_value,gateway\n"
        )
    else:
        head = (
            "#group,false,false,true,true,false,true\n"
            f"#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,{kind},string\n"
            f"#default,{stat},,,,,\n"
            ",result,table,_start,_stop,_value,gateway\n"
        )
    lines = []
    for table, (bucket, gw, t, v) in enumerate(rows):
        middle = f"{at(t)}," if t is not None else ""
        lines.append(f",,{table},{at(bucket)},{at(bucket + 5 * MINUTE)},{middle}{v},{gw}")
    return head + "\n".join(lines) + "\n\n"


def test_windows_of_two_gateways_merge_as_one_series() -> None:
    b0, b1 = NOW // (5 * MINUTE) * (5 * MINUTE), NOW // (5 * MINUTE) * (5 * MINUTE) + 5 * MINUTE
    text = (
        yield_csv("min", [(b0, "gw-01", b0 + 1000, 0.3), (b0, "gw-02", b0 + 2000, 0.25)])
        + yield_csv("max", [(b0, "gw-01", b0 + 3000, 0.5), (b0, "gw-02", b0 + 2000, 0.25)])
        + yield_csv("sum", [(b0, "gw-01", None, 1.2), (b0, "gw-02", None, 0.25)])
        + yield_csv("count", [(b0, "gw-01", None, 3), (b0, "gw-02", None, 1)])
        # gw-02's point is the newest of the bucket: its value is the bucket's last
        + yield_csv("last", [(b0, "gw-01", b0 + 3000, 0.5), (b0, "gw-02", b0 + 4000, 0.25)])
        + yield_csv("min", [(b1, "gw-01", b1, 0.4)])
        + yield_csv("max", [(b1, "gw-01", b1, 0.4)])
        + yield_csv("sum", [(b1, "gw-01", None, 0.4)])
        + yield_csv("count", [(b1, "gw-01", None, 1)])
        + yield_csv("last", [(b1, "gw-01", b1, 0.4)])
    )
    records = parse_csv(text)
    assert to_ms(records[0]["_start"]) == b0 and records[0]["result"] == "min"
    assert window_rows(records) == [
        (b0, 0.25, 0.5, pytest.approx(1.45), 4, 0.25),
        (b1, 0.4, 0.4, 0.4, 1, 0.4),
    ]


def test_hours_and_counts_are_read_from_their_tables(reader: FluxChartsReader) -> None:
    hours = (
        "#group,false,false,true,false\n"
        "#datatype,string,long,string,long\n"
        "#default,_result,,,\n"
        ",result,table,device,_value\n"
        ",,0,b1-hydrant-1,3\n"
        ",,1,lift-1,1\n"
    )
    count = (
        "#group,false,false,false\n"
        "#datatype,string,long,long\n"
        "#default,_result,,\n"
        ",result,table,_value\n"
        ",,0,4242\n"
    )
    texts: list[str] = []

    def answer(flux: str) -> list[Record]:
        texts.append(flux)
        return parse_csv(hours if "window(every: 1h)" in flux else count)

    reader.query = answer  # type: ignore[method-assign]
    start = NOW // HOUR_MS * HOUR_MS
    assert reader.hours_with_data("e1", start, start + 3 * HOUR_MS) == {
        "b1-hydrant-1": 3,
        "lift-1": 1,
    }
    assert f"stop: {ns(start + 3 * HOUR_MS)}" in texts[-1]
    assert reader.hours_with_data("e1", start, start) == {}  # no hour: no read
    assert len(texts) == 1
    assert reader.count_values("e1") == 4242 and 'r.estate == "e1"' in texts[-1]
    assert reader.count_values() == 4242 and "filter" not in texts[-1]
    # an answer without the columns asked is the store's fault, not "no data"
    reader.query = lambda flux: [{"result": "_result"}]  # type: ignore[method-assign]
    with pytest.raises(TimeseriesUnavailable, match="without the columns"):
        reader.hours_with_data("e1", start, start + HOUR_MS)


def test_times_are_read_to_the_millisecond() -> None:
    for ms in (0, 1, 999, NOW - 1, NOW, NOW + 999):
        (rec,) = parse_csv(
            "#group,false,false,false,false\n"
            "#datatype,string,long,dateTime:RFC3339,double\n"
            "#default,_result,,,\n"
            ",result,table,_time,_value\n"
            f",,0,{at(ms)},1.5\n"
        )
        assert (to_ms(rec["_time"]), rec["_value"]) == (ms, 1.5)


class FakeFlux:
    """Answers windows_query/raw_query as InfluxDB would over ``points`` (gateway, ts, value):
    the records of every gateway's windows (or raw points), in Flux's shapes."""

    def __init__(self, data: Sequence[tuple[str, int, float]]) -> None:
        self.data = data
        self.texts: list[str] = []

    def __call__(self, flux: str) -> list[Record]:
        self.texts.append(flux)
        start, stop = (int(n) // 1_000_000 for n in re.findall(r"time\(v: (\d+)\)", flux)[:2])
        inside = [(g, t, v) for g, t, v in self.data if start <= t < stop]
        utc = datetime.fromtimestamp(0, UTC)

        def time_of(ms: int) -> datetime:
            return datetime.fromisoformat(at(ms)[:23] + "+00:00") if ms else utc

        if "window(every:" not in flux:
            return [{"_time": time_of(t), "_value": v} for _, t, v in inside]
        width = int(re.search(r"window\(every: (\d+)ms\)", flux).group(1))  # type: ignore[union-attr]
        groups: dict[tuple[str, int], list[tuple[int, float]]] = {}
        for g, t, v in sorted(inside, key=lambda p: p[1]):
            groups.setdefault((g, t // width * width), []).append((t, v))
        out: list[Record] = []
        for (g, b), pts in groups.items():
            vs = [v for _, v in pts]
            lo, hi = min(pts, key=lambda p: p[1]), max(pts, key=lambda p: p[1])
            base = {"_start": time_of(b), "gateway": g}
            out += [
                {**base, "result": "min", "_time": time_of(lo[0]), "_value": lo[1]},
                {**base, "result": "max", "_time": time_of(hi[0]), "_value": hi[1]},
                {**base, "result": "sum", "_value": sum(vs)},
                {**base, "result": "count", "_value": len(vs)},
                {**base, "result": "last", "_time": time_of(pts[-1][0]), "_value": pts[-1][1]},
            ]
        return out


@pytest.fixture
def reader() -> Iterator[FluxChartsReader]:
    # nothing listens there: a test that reaches the network fails
    r = FluxChartsReader(
        f"http://127.0.0.1:{free_port()}", "t", "o", "telemetry", CAT, timeout_s=1.0, retries=0
    )
    yield r
    r.close()


@pytest.mark.parametrize("days", [1, 7, 30, 400])
def test_a_chart_is_the_local_rollups_answer_over_every_gateways_points(
    reader: FluxChartsReader, days: int
) -> None:
    rng = np.random.default_rng(days)
    span = days * 86_400_000
    ts = np.unique(rng.integers(NOW - span, NOW, 3000))  # time-ordered, one point a time
    values = np.round(rng.uniform(0.2, 0.6, len(ts)), 3)
    data = [
        (f"gw-0{i % 2 + 1}", int(t), float(v))
        for i, (t, v) in enumerate(zip(ts, values, strict=True))
    ]
    flux = FakeFlux(data)
    reader.query = flux  # type: ignore[method-assign]
    q = ChartQuery("e1", "b1-hydrant-1", "pressure_mpa", NOW - span, NOW, 500, MINUTE)
    chart = reader.chart(q, "fire_hydrant", NOW)
    res = choose_resolution(q.from_ms, q.to_ms, 500, MINUTE, NOW, 2**62)
    assert (chart["resolution"], chart["step_ms"]) == (res.name, res.step_ms) != ("raw", MINUTE)
    assert f"window(every: {res.step_ms}ms)" in flux.texts[0]
    # the local store's answer: all the points in one series, bucketed and merged alike
    b = aggregate(np.zeros(len(ts), np.int64), ts, values, res.step_ms)
    want = points(b.bucket, b.min, b.max, b.sum, b.count, b.last, 500)
    assert len(chart["points"]) == len(want) <= 500
    for got, exp in zip(chart["points"], want, strict=True):
        assert got == pytest.approx(exp)


def test_a_short_recent_chart_is_raw_points(reader: FluxChartsReader) -> None:
    data = [("gw-01", NOW - 20 * MINUTE + i * MINUTE, 0.3 + i / 100) for i in range(21)]
    data.append(("gw-02", NOW - 20 * MINUTE, 0.9))  # the same time twice: one point
    reader.query = FakeFlux(data)  # type: ignore[method-assign]
    q = ChartQuery("e1", "b1-hydrant-1", "pressure_mpa", NOW - 20 * MINUTE, NOW, 500, MINUTE)
    chart = reader.chart(q, "fire_hydrant", NOW)
    assert (chart["resolution"], chart["step_ms"]) == ("raw", MINUTE)
    assert [p["ts"] for p in chart["points"]] == [t for _, t, _ in data[:21]]
    assert chart["points"][-1]["value"] == pytest.approx(0.5)  # to_ms itself is in


def test_an_unreachable_store_is_an_error_never_an_empty_chart(
    reader: FluxChartsReader,
) -> None:
    q = ChartQuery("e1", "b1-hydrant-1", "pressure_mpa", NOW - 20 * MINUTE, NOW, 500, MINUTE)
    with pytest.raises(TimeseriesUnavailable, match=r"did not answer.*INFLUXDB_URL"):
        reader.chart(q, "fire_hydrant", NOW)
    with pytest.raises(TimeseriesUnavailable):
        reader.hours_with_data("e1", NOW - HOUR_MS, NOW)
    with pytest.raises(TimeseriesUnavailable):
        reader.count_values("e1")
    health = reader.health()
    assert health["state"] == "down" and "INFLUXDB_URL" in health["error"]


def test_cluster_mode_accepts_influxdb() -> None:
    env = {
        "ESTATEWATCH_PARTITIONS": "8",
        "ESTATEWATCH_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/any",
        "ESTATEWATCH_TIMESERIES": "influxdb",
    }
    with pytest.raises(SettingsError, match="needs influxdb_url"):
        load_settings(None, env)
    url = {"ESTATEWATCH_INFLUXDB_URL": "http://influx:8086"}
    assert load_settings(None, {**env, **url}).raw_store_url == "http://influx:8086"
    with pytest.raises(SettingsError, match='or timeseries = "influxdb"'):
        load_settings(None, {**env, "ESTATEWATCH_TIMESERIES": "sqlite"})


@pytest.mark.integration
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_an_api_node_in_cluster_mode_reads_charts_through_flux(
    database_url: str, mosquitto: ManagedMosquitto, tmp_path: Path
) -> None:
    """`run --role api` with partitions and timeseries = "influxdb" reads charts through Flux:
    with the InfluxDB down, /healthz says so and a chart is a 503 that says what to check,
    never an empty chart; "now" still comes from PostgreSQL."""
    cluster = {
        "ESTATEWATCH_DATABASE_URL": database_url,
        "ESTATEWATCH_PARTITIONS": "4",
        "ESTATEWATCH_TIMESERIES": "influxdb",
        "ESTATEWATCH_INFLUXDB_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens
    }
    env = run_env(tmp_path, mosquitto.endpoint, free_port(), TOKEN, **cluster)
    api = Service(load_settings(None, env), role="api")
    try:
        api.start()
        assert isinstance(api.timeseries, FluxChartsReader)
        http = httpx.Client(
            base_url=api.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )
        assert http.post("/api/v1/estates", json={"id": "e1", "name": "x"}).status_code == 201
        api.state.add_devices([("e1", "b1-hydrant-1", "fire_hydrant", "gw-01", NOW)])
        chart = http.get(
            "/api/v1/estates/e1/devices/b1-hydrant-1/telemetry", params={"metric": "pressure_mpa"}
        )
        assert chart.status_code == 503, chart.text
        assert "INFLUXDB_URL" in chart.text
        assert http.get("/healthz").json()["timeseries"]["state"] == "down"
        items = http.get("/api/v1/estates/e1/devices").json()["items"]
        assert [d["id"] for d in items] == ["b1-hydrant-1"]
    finally:
        api.stop()


# --- against a real InfluxDB 2 -----------------------------------------------------------------
def influx_env() -> dict[str, str]:
    return {
        "ESTATEWATCH_TIMESERIES": "influxdb",
        "ESTATEWATCH_INFLUXDB_URL": os.environ["INFLUXDB_URL"],
        "ESTATEWATCH_INFLUXDB_TOKEN": os.environ.get("INFLUXDB_TOKEN", ""),
        "ESTATEWATCH_INFLUXDB_ORG": os.environ.get("INFLUXDB_ORG", "estatewatch"),
        "ESTATEWATCH_INFLUXDB_BUCKET": os.environ.get("INFLUXDB_BUCKET", "telemetry"),
    }


@REAL
@pytest.mark.integration
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_an_api_node_charts_counts_and_hours_from_influxdb(
    database_url: str, mosquitto: ManagedMosquitto, tmp_path: Path
) -> None:
    """A worker's store writes a hydrant's readings (two gateways) to PostgreSQL and InfluxDB 2;
    an API-role Service in cluster mode answers the chart (raw and windowed), the report's
    hours with data and the count of values through Flux alone."""
    env = influx_env()
    cluster = {"ESTATEWATCH_DATABASE_URL": database_url, "ESTATEWATCH_PARTITIONS": "4", **env}
    estate = f"f-{uuid.uuid4().hex[:8]}"
    now = int(time.time() * 1000)
    samples = [(now - 40 * MINUTE + i * MINUTE, round(0.3 + i / 100, 2)) for i in range(40)]
    sink = InfluxTelemetrySink(
        env["ESTATEWATCH_INFLUXDB_URL"],
        env["ESTATEWATCH_INFLUXDB_TOKEN"],
        env["ESTATEWATCH_INFLUXDB_ORG"],
        env["ESTATEWATCH_INFLUXDB_BUCKET"],
        default_catalog(),
    )
    api = Service(
        load_settings(None, run_env(tmp_path, mosquitto.endpoint, free_port(), TOKEN, **cluster)),
        role="api",
    )
    try:
        api.start()
        http = httpx.Client(
            base_url=api.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )
        assert http.post("/api/v1/estates", json={"id": estate, "name": "flux"}).status_code == 201
        api.state.add_devices([(estate, "b1-hydrant-1", "fire_hydrant", "gw-01", now)])
        store = NetworkTelemetryStore(database_url, sink)
        store.write(
            [
                EstateBatch(
                    estate,
                    f"gw-0{i % 2 + 1}",  # every other reading by a second gateway
                    readings=[Reading("b1-hydrant-1", "fire_hydrant", t, {"pressure_mpa": v})],
                    seq=i // 2 + 1,
                )
                for i, (t, v) in enumerate(samples)
            ]
        )
        store.close()
        path = f"/api/v1/estates/{estate}/devices/b1-hydrant-1/telemetry"
        raw = http.get(
            path, params={"metric": "pressure_mpa", "from": now - 41 * MINUTE, "to": now}
        )
        assert raw.status_code == 200, raw.text
        assert raw.json()["resolution"] == "raw"
        assert [(p["ts"], p["value"]) for p in raw.json()["points"]] == samples
        wide = http.get(
            path,
            params={
                "metric": "pressure_mpa",
                "from": now - 41 * MINUTE,
                "to": now,
                "max_points": 5,
            },
        )
        assert wide.status_code == 200, wide.text
        pts = wide.json()["points"]
        assert wide.json()["resolution"] != "raw" and 0 < len(pts) <= 5
        assert sum(p["count"] for p in pts) == len(samples)
        assert min(p["min"] for p in pts) == samples[0][1]
        assert max(p["max"] for p in pts) == samples[-1][1]
        assert api.timeseries is not None and isinstance(api.timeseries, FluxChartsReader)
        hours = api.timeseries.hours_with_data(estate, now - 2 * HOUR_MS, now + 1)
        spanned = {t // HOUR_MS for t, _ in samples}
        assert hours == {"b1-hydrant-1": len(spanned)}
        assert api.timeseries.count_values(estate) == len(samples)
        assert http.get("/healthz").json()["timeseries"]["state"] == "up"
    finally:
        api.stop()
        sink.close()
