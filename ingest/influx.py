"""InfluxDB as the telemetry backend for large deployments (``ESTATEWATCH_INFLUXDB_URL``).

Raw readings go to InfluxDB, one measurement per device kind, tagged with estate, gateway and
device; the latest values, the ``seq`` book and events stay in the local telemetry file. Writes
are synchronous from the ingest writer thread, which already batches many messages per commit:
the bounded ingest queue is the buffer, and a write that fails after its retries fails the
commit, so nothing is acknowledged to the broker and the batch is tried again (InfluxDB keeps
one point per measurement, tag set and time, so a repeated write does not duplicate).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write.point import Point
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from urllib3.util.retry import Retry

from ingest.model import ChartQuery
from protocol.catalog import Catalog, ValueType
from protocol.messages import Value

if TYPE_CHECKING:
    from ingest.model import EstateBatch


def field_value(kind_type: ValueType | None, value: Value) -> float | int | bool | str:
    """InfluxDB fixes a field's type at its first write: numbers always as floats, integers as
    integers, so a reading of 5 and one of 5.5 do not clash."""
    if isinstance(value, (bool, str)):
        return value
    if kind_type is ValueType.INTEGER:
        return int(value)
    return float(value)


# Line protocol's escapes, as influxdb-client's Point writes them (tests compare the two).
_ESCAPE_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESCAPE_KEY = str.maketrans(
    {",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"}
)
_ESCAPE_STRING = str.maketrans({'"': r"\"", "\\": r"\\"})


def _tag_value(value: str) -> str:
    escaped = value.translate(_ESCAPE_KEY)
    return escaped + " " if escaped.endswith("\\") else escaped


def _field(name: str, value: float | int | bool | str) -> str | None:
    """``name=value`` as Point writes it (floats without a trailing ".0", integers with "i");
    None for a float that is not finite (Point leaves it out)."""
    key = name.translate(_ESCAPE_KEY)
    if type(value) is float:
        if not math.isfinite(value):
            return None
        text = str(value)
        return f"{key}={text[:-2] if text.endswith('.0') else text}"
    if type(value) is bool:
        return f"{key}={'true' if value else 'false'}"
    if type(value) is int:
        return f"{key}={value}i"
    return f'{key}="{str(value).translate(_ESCAPE_STRING)}"'


class InfluxTelemetrySink:
    def __init__(
        self,
        url: str,
        token: str,
        org: str,
        bucket: str,
        catalog: Catalog,
        timeout_ms: int = 10_000,
        retries: int = 5,
    ) -> None:
        self.bucket, self.org, self.catalog = bucket, org, catalog
        retry = Retry(
            total=retries,
            backoff_factor=0.5,
            allowed_methods=None,
            status_forcelist=(429, 500, 502, 503, 504),
            raise_on_status=False,
        )
        self.client = InfluxDBClient(
            url=url, token=token, org=org, timeout=timeout_ms, retries=retry, enable_gzip=True
        )
        self.write_api = self.client.write_api(write_options=SYNCHRONOUS)

    def points(self, batches: Sequence[EstateBatch]) -> list[Point]:
        out = []
        for b in batches:
            for r in b.readings:
                kind = self.catalog.kinds.get(r.kind)
                p = (
                    Point(r.kind)
                    .tag("estate", b.estate)
                    .tag("gateway", b.gateway)
                    .tag("device", r.dev)
                    .time(r.ts, WritePrecision.MS)
                )
                for name, value in r.metrics.items():
                    metric = kind.metrics.get(name) if kind else None
                    p.field(name, field_value(metric.type if metric else None, value))
                out.append(p)
        return out

    def lines(self, batches: Sequence[EstateBatch]) -> list[str]:
        """The line protocol of ``points``, written here directly: building Point objects cost
        as much as the HTTP write and the store's ingest together (a cluster worker's raw
        writes, bench.net_telemetry). Tags sorted by key, fields by name, as Point does."""
        out: list[str] = []
        append = out.append
        kinds = self.catalog.kinds
        for b in batches:
            # a tag with an empty value is left out, as Point does
            estate, gateway = _tag_value(b.estate), _tag_value(b.gateway)
            tail = (f",estate={estate}" if estate else "") + (
                f",gateway={gateway}" if gateway else ""
            )
            for r in b.readings:
                kind = kinds.get(r.kind)
                fields = []
                for name in sorted(r.metrics):
                    metric = kind.metrics.get(name) if kind else None
                    f = _field(name, field_value(metric.type if metric else None, r.metrics[name]))
                    if f is not None:
                        fields.append(f)
                if fields:
                    dev = _tag_value(r.dev)
                    append(
                        f"{r.kind.translate(_ESCAPE_MEASUREMENT)}{f',device={dev}' if dev else ''}"
                        f"{tail} {','.join(fields)} {r.ts}"
                    )
        return out

    def write(self, batches: Sequence[EstateBatch]) -> int:
        lines = self.lines(batches)
        if lines:
            self.write_api.write(
                self.bucket,
                self.org,
                "\n".join(lines),
                write_precision=WritePrecision.MS,  # type: ignore[arg-type]
            )
        return len(lines)

    def telemetry(self, q: ChartQuery, kind: str) -> list[dict[str, Any]]:
        """Chart points by Flux, windowed so that at most max_points come back."""
        estate, device, metric, from_ms, to_ms = q.estate, q.device, q.metric, q.from_ms, q.to_ms
        every_ms = max(math.ceil((to_ms - from_ms) / q.max_points), 1000)
        flux = (
            f'from(bucket: "{self.bucket}")'
            f" |> range(start: time(v: {from_ms * 1_000_000}), stop: time(v: {to_ms * 1_000_000}))"
            f' |> filter(fn: (r) => r._measurement == "{kind}" and r.estate == "{estate}"'
            f' and r.device == "{device}" and r._field == "{metric}")'
            f" |> aggregateWindow(every: {every_ms}ms, fn: mean, createEmpty: false)"
        )
        tables = self.client.query_api().query(flux, org=self.org)
        return [
            {"ts": int(rec.get_time().timestamp() * 1000), "mean": float(rec.get_value())}
            for table in tables
            for rec in table.records
        ]

    def close(self) -> None:
        self.client.close()
