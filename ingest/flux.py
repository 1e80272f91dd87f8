"""InfluxDB 2 as the telemetry store every node reads (cluster mode, ``timeseries = "influxdb"``).

Readings are written by ``InfluxTelemetrySink`` (ingest/influx.py): one measurement per device
kind, a field per metric, tagged estate, gateway and device. Charts, the report's uptime hours
and the count of values are read here through Flux, so any API node answers them without the
ingest worker's files; the store downsamples (``window`` + min/max/sum/count/last), nothing is
rolled up locally. Windows are aligned to the epoch (Flux's default), as the local rollups' and
VictoriaMetrics' buckets, so a chart has the same points whichever store answers it.

The Flux text is built by the pure functions below, every string quoted by ``flux_string`` (ids
are bounded, but an estate named ``x" or true`` must still match nothing). A read that fails
raises ``TimeseriesUnavailable`` (the API answers 503), never an empty chart.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import urllib3
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.flux_csv_parser import FluxCsvParserException, FluxQueryException
from influxdb_client.client.influxdb_client import InfluxDBClient
from urllib3.util.retry import Retry

from ingest.model import ChartQuery
from ingest.rollup import choose_resolution, points, points_of_rows
from ingest.telemetry import now_ms
from ingest.victoria import ANY_AGE_MS, HOUR_MS, TimeseriesUnavailable
from protocol.catalog import Catalog, ValueType

DAY_MS = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# Flux's string escapes. "$" goes as its byte value: "${" would start an interpolation, and
# Flux's scanner takes "$" with the character after it as a pair, so a "$" before a quote or a
# backslash would swallow it (checked with Flux's own parser, flux-lsp's)
_ESCAPES = str.maketrans(
    {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "$": "\\x24"}
)
Record = Mapping[str, Any]  # one row of a Flux answer (``FluxRecord.values``)


def flux_string(value: str) -> str:
    """A Flux string literal holding exactly ``value``."""
    return '"' + value.translate(_ESCAPES) + '"'


def flux_time(ms: int) -> str:
    """A Flux time of a data time in ms (nanoseconds: no float, no time zone)."""
    return f"time(v: {int(ms) * 1_000_000})"


def series_filter(bucket: str, estate: str, from_ms: int, stop_ms: int) -> str:
    """The points of one estate in [from_ms, stop_ms)."""
    return (
        f"from(bucket: {flux_string(bucket)})"
        f" |> range(start: {flux_time(from_ms)}, stop: {flux_time(stop_ms)})"
        f" |> filter(fn: (r) => r.estate == {flux_string(estate)})"
    )


def metric_filter(
    bucket: str, q: ChartQuery, kind: str, from_ms: int, stop_ms: int, numeric: bool
) -> str:
    """One metric of one device: a table per gateway (a tag: each is a series of its own).
    Not ``numeric`` (a boolean, or a metric the catalog does not know): converted to floats,
    which min/sum need; a number or integer is left as stored, so InfluxDB can push the
    windows down to its storage (a conversion between would make it read every point)."""
    return (
        series_filter(bucket, q.estate, from_ms, stop_ms)
        + f" |> filter(fn: (r) => r._measurement == {flux_string(kind)}"
        f" and r.device == {flux_string(q.device)} and r._field == {flux_string(q.metric)})"
        + ("" if numeric else " |> toFloat()")
    )


def raw_query(bucket: str, q: ChartQuery, kind: str) -> str:
    """Raw points of [q.from_ms, q.to_ms] (both ends in, as the other stores read them); read
    as stored, booleans too (``raw_points`` makes them floats)."""
    return (
        metric_filter(bucket, q, kind, q.from_ms, q.to_ms + 1, numeric=True)
        + ' |> keep(columns: ["_time", "_value"])'
    )


def window_bounds(from_ms: int, to_ms: int, width_ms: int) -> tuple[int, int]:
    """[start, stop) of the whole aligned buckets touching [from_ms, to_ms]."""
    return from_ms // width_ms * width_ms, to_ms // width_ms * width_ms + width_ms


STATS = ("min", "max", "sum", "count", "last")


def windows_query(
    bucket: str, q: ChartQuery, kind: str, width_ms: int, numeric: bool = False
) -> str:
    """Per gateway and aligned bucket [b, b + width): min, max, sum, count and last, each a
    ``yield`` of its own (``result`` names it). The range covers whole buckets, so every
    window's ``_start`` is its bucket. Each statistic is a read of its own, the plain
    ``range |> filter |> window |> fn`` that InfluxDB answers from its storage (a read shared
    by five would not be pushed down)."""
    start, stop = window_bounds(q.from_ms, q.to_ms, width_ms)
    read = metric_filter(bucket, q, kind, start, stop, numeric)
    return "\n".join(
        f"{read} |> window(every: {int(width_ms)}ms) |> {s}() |> yield(name: {flux_string(s)})"
        for s in STATS
    )


def hours_bounds(from_ms: int, to_ms: int) -> tuple[int, int] | None:
    """[start, stop) of the hours [b, b + 1 h) with b in [from_ms floored, to_ms); None: none."""
    first = from_ms // HOUR_MS * HOUR_MS
    last = (to_ms - 1) // HOUR_MS * HOUR_MS
    return None if last < first else (first, last + HOUR_MS)


def hours_query(bucket: str, estate: str, start: int, stop: int) -> str:
    """device -> hours holding any reading: counted per series and hour first (a series has one
    type; a device's fields mixed in one table would clash), then distinct hours per device."""
    return (
        series_filter(bucket, estate, start, stop)
        + " |> window(every: 1h) |> count()"
        + ' |> group(columns: ["device", "_start"]) |> count()'
        + ' |> group(columns: ["device"]) |> count()'
    )


def count_query(bucket: str, estate: str | None, stop_ms: int) -> str:
    """Values stored (a point holds one field's value), of one estate or all, up to stop_ms."""
    source = (
        series_filter(bucket, estate, 0, stop_ms)
        if estate is not None
        else f"from(bucket: {flux_string(bucket)}) |> range(start: {flux_time(0)}, "
        f"stop: {flux_time(stop_ms)})"
    )
    # per series first (one type each), then one total
    return source + ' |> count() |> group() |> sum() |> keep(columns: ["_value"])'


# --- answers: Flux records into the stores' common shapes ---------------------------------------
def to_ms(t: datetime) -> int:
    """A Flux time (an aware datetime, microseconds) as ms since the epoch, exactly."""
    return (t - _EPOCH) // _MS


def raw_points(records: Iterable[Record]) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps, values), time-ordered, one point per timestamp (several gateways, or one
    gateway's tables: the last one read wins, as VictoriaMetrics' export merge)."""
    merged: dict[int, float] = {}
    for r in records:
        merged[to_ms(r["_time"])] = float(r["_value"])
    ts = np.array(sorted(merged), dtype=np.int64)
    return ts, np.array([merged[t] for t in ts.tolist()], dtype=np.float64)


def window_rows(records: Iterable[Record]) -> list[tuple[int, float, float, float, int, float]]:
    """(bucket, min, max, sum, count, last) per bucket holding points, the gateways merged: the
    extremes of theirs, sums and counts added, the last of the gateway whose last is newest."""
    # bucket -> stat -> per gateway (value, time of the point for the selectors)
    by_bucket: dict[int, dict[str, list[tuple[float, int]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in records:
        stat = r["result"]
        if stat not in STATS or r["_value"] is None:
            continue
        at = to_ms(r["_time"]) if stat == "last" else 0
        by_bucket[to_ms(r["_start"])][stat].append((float(r["_value"]), at))
    out = []
    for bucket in sorted(by_bucket):
        agg = by_bucket[bucket]
        counts = int(sum(c for c, _ in agg["count"]))
        if not counts or not agg["min"] or not agg["max"] or not agg["last"]:
            continue
        out.append(
            (
                bucket,
                min(v for v, _ in agg["min"]),
                max(v for v, _ in agg["max"]),
                float(sum(v for v, _ in agg["sum"])),
                counts,
                max(agg["last"], key=lambda p: p[1])[0],
            )
        )
    return out


def hours_per_device(records: Iterable[Record]) -> dict[str, int]:
    return {str(r["device"]): int(r["_value"]) for r in records if r["_value"]}


def total_count(records: Iterable[Record]) -> int:
    return sum(int(r["_value"]) for r in records if r["_value"] is not None)


class FluxChartsReader:
    """Charts, hours with data and counts from InfluxDB 2 through Flux (a ``ChartSource`` of
    ingest.net_telemetry, as ``VictoriaMetricsReader``)."""

    backend = "influxdb"

    def __init__(
        self,
        url: str,
        token: str,
        org: str,
        bucket: str,
        catalog: Catalog | None = None,
        timeout_s: float = 10.0,
        retries: int = 2,
    ) -> None:
        self.url, self.org, self.bucket, self.catalog = url.rstrip("/"), org, bucket, catalog
        retry = Retry(total=retries, backoff_factor=0.2, raise_on_status=False)
        self.client = InfluxDBClient(
            url=self.url, token=token, org=org, timeout=int(timeout_s * 1000), retries=retry
        )
        # /healthz's probe: one try, short
        self.probe = InfluxDBClient(url=self.url, token=token, org=org, timeout=2000, retries=False)
        self.query_api = self.client.query_api()

    def query(self, flux: str) -> list[Record]:
        """The rows of every table of the answer; a failure says what to check."""
        what = f"InfluxDB at {self.url}"
        try:
            tables = self.query_api.query(flux, org=self.org)
            return [rec.values for table in tables for rec in table.records]
        except InfluxDBError as exc:
            raise TimeseriesUnavailable(
                f"{what} refused a Flux read ({exc}): check that it runs (2.x, with Flux), "
                "that ESTATEWATCH_INFLUXDB_TOKEN may read bucket "
                f"{self.bucket!r} of org {self.org!r} and that the bucket exists"
            ) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TimeseriesUnavailable(
                f"{what} did not answer ({type(exc).__name__}): check that it runs and that "
                "ESTATEWATCH_INFLUXDB_URL points at it"
            ) from exc
        except (FluxQueryException, FluxCsvParserException) as exc:
            raise TimeseriesUnavailable(
                f"{what} failed a Flux read: {getattr(exc, 'message', exc)}; check its log"
            ) from exc

    def _shaped(self, flux: str, shape: Any) -> Any:
        rows = self.query(flux)
        try:
            return shape(rows)
        except (KeyError, TypeError, ValueError) as exc:
            raise TimeseriesUnavailable(
                f"InfluxDB at {self.url} sent a Flux answer without the columns asked: {exc}"
            ) from exc

    def numeric(self, kind: str, metric: str) -> bool:
        """Whether the catalog says the metric is stored as a number (float or integer)."""
        k = self.catalog.kinds.get(kind) if self.catalog is not None else None
        m = k.metrics.get(metric) if k is not None else None
        return m is not None and m.type in (ValueType.NUMBER, ValueType.INTEGER)

    def chart(self, q: ChartQuery, kind: str, now: int) -> dict[str, Any]:
        """The API's chart body (as ``VictoriaMetricsReader.chart``): raw points when the range
        holds few enough at the kind's interval, else the finest chart width that fits,
        windowed by the store; never more than max_points."""
        res = choose_resolution(q.from_ms, q.to_ms, q.max_points, q.interval_ms, now, ANY_AGE_MS)
        body: dict[str, Any] = {"resolution": res.name, "step_ms": res.step_ms, "points": []}
        if res.name == "raw":
            ts, values = self._shaped(raw_query(self.bucket, q, kind), raw_points)
            ones = np.ones(len(ts), dtype=np.int64)
            body["points"] = points(ts, values, values, values, ones, values, q.max_points)
            for p in body["points"]:
                p["value"] = p["last"]
            return body
        text = windows_query(self.bucket, q, kind, res.step_ms, self.numeric(kind, q.metric))
        rows = self._shaped(text, window_rows)
        if rows:
            body["points"] = points_of_rows(rows, q.max_points)
        return body

    def hours_with_data(self, estate: str, from_ms: int, to_ms: int) -> dict[str, int]:
        """device -> hours [b, b + 1 h), b in [from_ms floored to the hour, to_ms), holding at
        least one reading (the report's uptime), hours aligned as the chart windows."""
        bounds = hours_bounds(from_ms, to_ms)
        if bounds is None:
            return {}
        result: dict[str, int] = self._shaped(
            hours_query(self.bucket, estate, *bounds), hours_per_device
        )
        return result

    def count_values(self, estate: str | None = None) -> int:
        """Values stored, of one estate or all (a day ahead: a gateway's clock may run ahead)."""
        n: int = self._shaped(count_query(self.bucket, estate, now_ms() + DAY_MS), total_count)
        return n

    def health(self) -> dict[str, Any]:
        """Reachability for /healthz: a 2-second probe of InfluxDB's /ping."""
        body: dict[str, Any] = {"backend": self.backend, "url": self.url}
        if not self.probe.ping():
            return {
                **body,
                "state": "down",
                "error": f"InfluxDB at {self.url} did not answer /ping within 2 s: check that "
                "it runs and that ESTATEWATCH_INFLUXDB_URL points at it",
            }
        return {**body, "state": "up"}

    def close(self) -> None:
        self.client.close()  # type: ignore[no-untyped-call]
        self.probe.close()  # type: ignore[no-untyped-call]
