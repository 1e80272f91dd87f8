"""VictoriaMetrics as the telemetry store every node reads (``timeseries = "victoriametrics"``).

Readings are written by ``InfluxTelemetrySink`` (ingest/influx.py) to VictoriaMetrics'
``/api/v2/write``, which names each field ``{measurement}_{field}`` and keeps the tags as labels:
``fire_hydrant_pressure_mpa{estate, gateway, device}``. Charts and the report's uptime hours are
read here with its own query API, so any API node answers them without the ingest worker's
files: raw points from ``/api/v1/export``, windows and hours from ``/api/v1/query_range`` with
MetricsQL's ``*_over_time`` rollups (the store downsamples; nothing is rolled up locally).
A read that fails raises ``TimeseriesUnavailable``, never an empty chart: an empty chart would say
"no readings".
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Collection
from typing import Any

import numpy as np
import orjson
import urllib3

from ingest.model import ChartQuery
from ingest.rollup import choose_resolution, points, points_of_rows
from ingest.shards import ShardedTelemetryReader
from ingest.telemetry import TelemetryReader, now_ms
from protocol.messages import Value

# the statistics of a chart point, as aggr_over_time names the series it returns (label "rollup")
ROLLUPS = ("min_over_time", "max_over_time", "avg_over_time", "count_over_time")
LAST = ("last_over_time", "tlast_over_time")
# a raw read answers any range that fits max_points: the store keeps raw points, not only recent
ANY_AGE_MS = 2**62
HOUR_MS = 3_600_000


class TimeseriesUnavailable(RuntimeError):
    """The time-series store did not answer a read; the message says what to check."""


def quote(value: str) -> str:
    """A MetricsQL string literal: VictoriaMetrics unquotes double-quoted strings as Go does,
    which reads JSON's escapes (\\", \\\\, \\n, \\uXXXX), so no id can end the literal."""
    return json.dumps(value, ensure_ascii=False)


def selector(estate: str, device: str, kind: str, metric: str) -> str:
    """The series of one metric of one device (over all the gateways that sent it)."""
    name = f"{kind}_{metric}"
    return f"{{__name__={quote(name)},estate={quote(estate)},device={quote(device)}}}"


class VictoriaMetricsReader:
    """Chart reads from a single-node VictoriaMetrics (cluster: point ``url`` at vmselect's
    ``/select/<tenant>/prometheus``)."""

    backend = "victoriametrics"

    def __init__(self, url: str, timeout_s: float = 10.0, retries: int = 2) -> None:
        self.url = url.rstrip("/")
        self.http = urllib3.PoolManager(
            maxsize=8,  # connections kept for the API's worker threads reading charts at once
            timeout=urllib3.Timeout(connect=min(timeout_s, 3.0), read=timeout_s),
            retries=urllib3.Retry(total=retries, backoff_factor=0.2, raise_on_status=False),
        )

    def _get(self, path: str, params: dict[str, str], timeout_s: float | None = None) -> bytes:
        what = f"VictoriaMetrics at {self.url}"
        try:
            if timeout_s is None:
                r = self.http.request("GET", self.url + path, fields=params)
            else:  # a probe: one try, short
                r = self.http.request(
                    "GET", self.url + path, fields=params, timeout=timeout_s, retries=False
                )
        except urllib3.exceptions.HTTPError as exc:
            raise TimeseriesUnavailable(
                f"{what} did not answer ({type(exc).__name__}): check that it runs and that "
                "ESTATEWATCH_VICTORIAMETRICS_URL points at it"
            ) from exc
        if r.status != 200:
            detail = r.data[:300].decode("utf-8", "replace")
            raise TimeseriesUnavailable(
                f"{what} answered {r.status} to {path}: {detail}; check its log and version "
                "(MetricsQL's aggr_over_time and /api/v1/export are needed)"
            )
        return bytes(r.data)

    def export(self, sel: str, from_ms: int, to_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """(timestamps, values) of the raw points in [from_ms, to_ms], time-ordered."""
        body = self._get(
            "/api/v1/export",
            {"match[]": sel, "start": f"{from_ms / 1000:.3f}", "end": f"{to_ms / 1000:.3f}"},
        )
        merged: dict[int, float] = {}
        try:
            for line in body.splitlines():
                row = orjson.loads(line)
                # several gateways, or several blocks of one series: one point per timestamp
                merged.update(zip(row["timestamps"], row["values"], strict=True))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise TimeseriesUnavailable(
                f"VictoriaMetrics at {self.url} sent an export that is not JSON lines: {exc}"
            ) from exc
        ts = np.array(sorted(merged), dtype=np.int64)
        return ts, np.array([merged[t] for t in ts.tolist()], dtype=np.float64)

    def windows(
        self, sel: str, from_ms: int, to_ms: int, width_ms: int
    ) -> list[tuple[int, float, float, float, int, float]]:
        """(bucket start, min, max, sum, count, last) of every aligned bucket [b, b + width)
        that touches [from_ms, to_ms] and holds points."""
        first = from_ms // width_ms * width_ms
        last = to_ms // width_ms * width_ms
        funcs = ",".join(quote(f) for f in ROLLUPS + LAST)
        # MetricsQL's window at t is (t - width, t]: evaluated at b + width - 1 ms it is
        # exactly [b, b + width) in whole milliseconds, the local rollups' buckets
        body = self._get(
            "/api/v1/query_range",
            {
                "query": f"aggr_over_time(({funcs}), {sel}[{width_ms}ms])",
                "start": f"{(first + width_ms - 1) / 1000:.3f}",
                "end": f"{(last + width_ms - 1) / 1000:.3f}",
                "step": f"{width_ms}ms",
                # no response cache: it would move start to a multiple of step (shifting every
                # window by 1 ms) and may hide a gateway's late backlog
                "nocache": "1",
            },
        )
        try:
            result = orjson.loads(body)["data"]["result"]
            # bucket -> rollup -> one value per series (gateway) holding points in it
            by_bucket: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
            for series in result:
                rollup = series["metric"]["rollup"]
                for t, v in series["values"]:
                    bucket = round(float(t) * 1000) - width_ms + 1
                    by_bucket[bucket][rollup].append(float(v))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise TimeseriesUnavailable(
                f"VictoriaMetrics at {self.url} sent a query answer that is not Prometheus' "
                f"JSON: {exc}"
            ) from exc
        out = []
        for bucket in sorted(by_bucket):
            agg = by_bucket[bucket]
            counts = agg["count_over_time"]
            if not counts or len(agg["avg_over_time"]) != len(counts):
                continue
            total = sum(a * c for a, c in zip(agg["avg_over_time"], counts, strict=True))
            # "last" of the series (gateway) whose last point is the newest
            newest = int(np.argmax(agg["tlast_over_time"])) if agg["tlast_over_time"] else -1
            out.append(
                (
                    bucket,
                    min(agg["min_over_time"]),
                    max(agg["max_over_time"]),
                    total,
                    int(sum(counts)),
                    agg["last_over_time"][newest],
                )
            )
        return out

    def chart(self, q: ChartQuery, kind: str, now: int) -> dict[str, Any]:
        """The API's chart body (as ``TelemetryReader.telemetry``): raw points when the range
        holds few enough at the kind's interval, else buckets of the finest chart width that
        fits, computed by the store; never more than max_points."""
        from_ms, to_ms, max_points = q.from_ms, q.to_ms, q.max_points
        res = choose_resolution(from_ms, to_ms, max_points, q.interval_ms, now, ANY_AGE_MS)
        sel = selector(q.estate, q.device, kind, q.metric)
        body: dict[str, Any] = {"resolution": res.name, "step_ms": res.step_ms, "points": []}
        if res.name == "raw":
            ts, values = self.export(sel, from_ms, to_ms)
            ones = np.ones(len(ts), dtype=np.int64)
            body["points"] = points(ts, values, values, values, ones, values, max_points)
            for p in body["points"]:
                p["value"] = p["last"]
            return body
        rows = self.windows(sel, from_ms, to_ms, res.step_ms)
        if rows:
            body["points"] = points_of_rows(rows, max_points)
        return body

    def hours_with_data(self, estate: str, from_ms: int, to_ms: int) -> dict[str, int]:
        """device -> hours [b, b + 1 h) with b in [from_ms floored to the hour, to_ms) holding
        at least one reading: the local ``rollup_1h`` count, for the report's uptime. One
        query per estate, the hours aligned as the chart windows (evaluated 1 ms before the
        next hour)."""
        first = from_ms // HOUR_MS * HOUR_MS
        last = (to_ms - 1) // HOUR_MS * HOUR_MS
        if last < first:
            return {}
        body = self._get(
            "/api/v1/query_range",
            {
                # per device and hour: how many of its series hold a point (none: no value)
                "query": f"count by (device) (count_over_time({{estate={quote(estate)}}}[1h]))",
                "start": f"{(first + HOUR_MS - 1) / 1000:.3f}",
                "end": f"{(last + HOUR_MS - 1) / 1000:.3f}",
                "step": "1h",
                "nocache": "1",  # see windows(): the cache would shift the hours by 1 ms
            },
        )
        try:
            return {
                str(series["metric"]["device"]): sum(1 for _, n in series["values"] if float(n))
                for series in orjson.loads(body)["data"]["result"]
            }
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise TimeseriesUnavailable(
                f"VictoriaMetrics at {self.url} sent a query answer that is not Prometheus' "
                f"JSON: {exc}"
            ) from exc

    def count_values(self, estate: str | None = None) -> int:
        """Samples stored (one per metric value, duplicates merged by the server's dedup), of
        one estate or of all: the store's count of readings. Evaluated a day ahead over a window
        reaching back to 1970 + 1 day (MetricsQL returns nothing for a window before the epoch),
        so readings of a gateway whose clock runs ahead are counted too."""
        at = now_ms() + 86_400_000
        sel = f"{{estate={quote(estate)}}}" if estate is not None else '{__name__!=""}'
        body = self._get(
            "/api/v1/query",
            {
                "query": f"sum(count_over_time({sel}[{at - 86_400_000}ms]))",
                "time": f"{at / 1000:.3f}",
                "nocache": "1",
            },
        )
        try:
            result = orjson.loads(body)["data"]["result"]
            return int(float(result[0]["value"][1])) if result else 0
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise TimeseriesUnavailable(
                f"VictoriaMetrics at {self.url} sent a query answer that is not Prometheus' "
                f"JSON: {exc}"
            ) from exc

    def health(self) -> dict[str, Any]:
        """Reachability for /healthz: a 2-second probe of VictoriaMetrics' own /health."""
        body: dict[str, Any] = {"backend": self.backend, "url": self.url}
        try:
            self._get("/health", {}, timeout_s=2.0)
        except TimeseriesUnavailable as exc:
            return {**body, "state": "down", "error": str(exc)}
        return {**body, "state": "up"}

    def close(self) -> None:
        self.http.clear()


class RemoteChartsReader:
    """The API's telemetry reader when charts come from the time-series store: charts and the
    report's hours with data are read from the store; "now", events and gateway health stay with
    the local telemetry reader (they are kept in the local file, see ARCHITECTURE.md)."""

    def __init__(
        self,
        local: TelemetryReader | ShardedTelemetryReader,
        store: VictoriaMetricsReader,
        kind_of: Callable[[str, str], str],
    ) -> None:
        self.local, self.store, self.kind_of = local, store, kind_of

    def latest(
        self, estate: str, devices: Collection[str] | None = None
    ) -> dict[str, dict[str, tuple[int, Value]]]:
        return self.local.latest(estate, devices)

    def count_readings(self, estate: str | None = None) -> int:
        return self.local.count_readings(estate)

    def recent_events(self, estate: str, limit: int = 100) -> list[dict[str, Any]]:
        return self.local.recent_events(estate, limit)

    def hours_with_data(self, estate: str, from_ms: int, to_ms: int) -> dict[str, int]:
        # the local rollups stay empty: raw readings go to the store only
        return self.store.hours_with_data(estate, from_ms, to_ms)

    def gateway_health(self, estate: str) -> dict[str, dict[str, Any]]:
        return self.local.gateway_health(estate)

    def telemetry(self, q: ChartQuery, now: int | None = None) -> dict[str, Any]:
        return self.store.chart(
            q, self.kind_of(q.estate, q.device), now_ms() if now is None else now
        )
