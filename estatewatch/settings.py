"""Settings: a TOML file, overridden by ``ESTATEWATCH_*`` environment variables.

Every setting is declared once in ``SETTINGS`` so that ``--help`` can list them all and the
environment and the file can never drift apart.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.consumer import (
    DEFAULT_COMMIT_INTERVAL_MS,
    DEFAULT_COMMIT_MAX_READINGS,
    DEFAULT_QUEUE_MB,
    DEFAULT_QUEUE_SIZE,
    DEFAULT_STALL_S,
)
from protocol.endpoint import EndpointError, parse_mqtt_url

ENV_PREFIX = "ESTATEWATCH_"


class SettingsError(ValueError):
    """A settings file or variable that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Settings:
    """The service's settings. Field metadata holds the help text shown by ``--help``."""

    mqtt_url: str = field(
        default="",
        metadata={
            "help": "broker to use, e.g. mqtt://user:pass@127.0.0.1:1883; a cluster's nodes "
            "comma-separated (mqtt://a:1883,mqtt://b:1883, or a list in the file): every "
            "client moves to the next node when its node is lost; "
            "empty: start a local Mosquitto (or, without one, an embedded Python broker)"
        },
    )
    mqtt_root: str = field(default="estates", metadata={"help": "topic root prefix"})
    broker_port: int = field(
        default=1883,
        metadata={
            "help": "port for the broker the service starts itself "
            "(a free port is chosen when this one is taken)"
        },
    )
    data_dir: str = field(
        default="./data", metadata={"help": "folder for the databases, broker files and logs"}
    )
    database_url: str = field(
        default="",
        metadata={
            "help": "state database, sqlite:///path or postgresql://user@host/db; "
            "empty: SQLite estatewatch.db in the data dir"
        },
    )
    api_host: str = field(default="127.0.0.1", metadata={"help": "address the API listens on"})
    api_port: int = field(default=8000, metadata={"help": "port the API listens on"})
    admin_token: str = field(
        default="",
        metadata={
            "help": "bearer token of the bootstrap admin, at least 24 characters (a shorter "
            "one is refused at start); empty: one is generated and kept in the data dir"
        },
    )
    ingest_queue_mb: int = field(
        default=DEFAULT_QUEUE_MB,
        metadata={
            "help": "MiB of undecoded payloads held between the broker and the store writer, "
            "per lane (the memory bound; the broker holds the rest)"
        },
    )
    ingest_queue_size: int = field(
        default=DEFAULT_QUEUE_SIZE,
        metadata={"help": "MQTT messages held between the broker and the store writer"},
    )
    commit_interval_ms: int = field(
        default=DEFAULT_COMMIT_INTERVAL_MS,
        metadata={"help": "longest a received reading waits before it is committed"},
    )
    commit_max_readings: int = field(
        default=DEFAULT_COMMIT_MAX_READINGS,
        metadata={"help": "readings that trigger a commit before the interval ends"},
    )
    ingest_stall_s: int = field(
        default=DEFAULT_STALL_S,
        metadata={
            "help": "/healthz says degraded when the store writer has been in one batch "
            "(or its retries) this long"
        },
    )
    ingest_store_process: bool = field(
        default=True,
        metadata={
            "help": "the SQLite telemetry writer runs in a child process of its own (both "
            "cores: no wait for the interpreter lock); false keeps it a thread of the "
            "service (one process). Ignored when raw readings go to InfluxDB"
        },
    )
    raw_retention_days: int = field(
        default=30, metadata={"help": "days raw readings are kept (rollups stay longer)"}
    )
    minute_rollup_retention_days: int = field(
        default=90, metadata={"help": "days 1-minute rollups are kept (1-hour rollups stay)"}
    )
    rollup_interval_s: int = field(
        default=10, metadata={"help": "how often new readings are folded into the rollups"}
    )
    ingest_shards: int = field(
        default=1,
        metadata={
            "help": "how many `run --role ingest --shard I` processes split the estates "
            "(by a hash of the estate id, so one estate's rules stay on one process)"
        },
    )
    owner_timeout_ms: int = field(
        default=2000,
        metadata={
            "help": "scaled out: how long a node waits for the estate's owner (the ingest "
            "process holding its alarms) to apply a person's action (acknowledge, tick a task, "
            "a socket command) before answering 503"
        },
    )
    partitions: int = field(
        default=0,
        metadata={
            "help": "partitions the estates hash into, owned by `run --role ingest` workers "
            "through leases in the state database (PostgreSQL): workers claim, rebalance and "
            "take over partitions by themselves; fixed for a deployment's life (e.g. 64); "
            "telemetry then lives in PostgreSQL and VictoriaMetrics or InfluxDB 2, which every "
            'node reads (needs timeseries = "victoriametrics" or "influxdb"); 0: off, the '
            "--shard split above"
        },
    )
    lease_ttl_s: int = field(
        default=15,
        metadata={
            "help": "a partition's lease lasts this long after its last renewal: a worker "
            "that died or was cut off loses its partitions within lease_ttl_s + lease_renew_s"
        },
    )
    lease_renew_s: int = field(
        default=5,
        metadata={"help": "how often a worker renews its leases and rebalances (< ttl / 2)"},
    )
    worker_id: str = field(
        default="",
        metadata={"help": "this worker's name in the lease table; empty: host name and process id"},
    )
    influxdb_url: str = field(
        default="",
        metadata={
            "help": "InfluxDB 2 for raw telemetry, e.g. http://127.0.0.1:8086; empty: "
            "raw readings stay in the local SQLite telemetry file"
        },
    )
    influxdb_token: str = field(default="", metadata={"help": "InfluxDB API token"})
    timeseries: str = field(
        default="",
        metadata={
            "help": "where raw telemetry lives and charts are read from: sqlite (the local "
            "telemetry file), influxdb (influxdb_url) or victoriametrics (victoriametrics_url); "
            "empty: influxdb when influxdb_url is set, else sqlite"
        },
    )
    victoriametrics_url: str = field(
        default="",
        metadata={
            "help": "single-node VictoriaMetrics, e.g. http://127.0.0.1:8428: readings are "
            "written to its /api/v2/write, charts read by MetricsQL and /api/v1/export"
        },
    )
    influxdb_org: str = field(default="estatewatch", metadata={"help": "InfluxDB organisation"})
    influxdb_bucket: str = field(default="telemetry", metadata={"help": "InfluxDB bucket"})
    max_clock_skew_s: int = field(
        default=300,
        metadata={
            "help": "how far ahead of the service's clock a reading's time may be; later "
            "ones are dead-lettered (the wire contract's 1 day at most)"
        },
    )
    late_after_s: int = field(
        default=600,
        metadata={
            "help": "a reading that arrives this long after it was taken is late (a backlog, "
            "a replay): its alarms are recorded and marked late, not paged or escalated"
        },
    )
    receivers: str = field(
        default="",
        metadata={
            "help": "webhooks that notify people (plain JSON, WeCom or DingTalk group robots), "
            "per role, estate and severity: [[receivers]] tables in the settings file, or the "
            "same list as JSON in the environment (see alerts/notify/receivers.py)"
        },
    )
    command_timeout_s: int = field(
        default=30,
        metadata={
            "help": "a remote command (socket.power_off / power_on) the gateway has not "
            "answered within this many seconds (wall clock) is timed_out"
        },
    )
    auto_cutoff: str = field(
        default="",
        metadata={
            "help": "estates where a rule's action (e.g. socket.power_off on ebike-socket-hot) "
            "is sent automatically when its alarm fires: comma-separated estate ids, or 'all'; "
            "empty (default): never automatically, people send commands themselves"
        },
    )
    deadletter_retention_days: int = field(
        default=30, metadata={"help": "days dead letters are kept"}
    )
    log_level: str = field(default="INFO", metadata={"help": "DEBUG, INFO, WARNING or ERROR"})

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def state_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_path / 'estatewatch.db'}"

    @property
    def timeseries_backend(self) -> str:
        """``sqlite``, ``influxdb`` or ``victoriametrics`` (an empty setting resolved)."""
        if self.timeseries:
            return self.timeseries
        return "influxdb" if self.influxdb_url else "sqlite"

    @property
    def raw_store_url(self) -> str:
        """Where raw readings are written through InfluxDB's write API; empty: the local file
        (VictoriaMetrics accepts that API too)."""
        return {"influxdb": self.influxdb_url, "victoriametrics": self.victoriametrics_url}.get(
            self.timeseries_backend, ""
        )

    @property
    def telemetry_path(self) -> Path:
        return self.data_path / "telemetry.db"

    def auto_cutoff_for(self, estate: str) -> bool:
        """Whether rules' actions are sent automatically in this estate (``auto_cutoff``)."""
        chosen = {e.strip() for e in self.auto_cutoff.split(",") if e.strip()}
        return "all" in chosen or estate in chosen

    def shard_telemetry_path(self, shard: int) -> Path:
        """The telemetry file of one ingest shard; the single-process service has one file."""
        if self.ingest_shards <= 1:
            return self.telemetry_path
        return self.data_path / f"telemetry-{shard}of{self.ingest_shards}.db"


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def describe() -> list[tuple[str, str, str]]:
    """(environment variable, default, help) for every setting, for ``--help``."""
    rows = []
    for f in dataclasses.fields(Settings):
        rows.append((env_name(f.name), repr(f.default), str(f.metadata.get("help", ""))))
    return rows


def _coerce(name: str, raw: Any, kind: Any, source: str) -> Any:
    if kind in (int, "int"):
        if isinstance(raw, bool):
            raise SettingsError(f"{source}: {name} must be a whole number, got {raw!r}")
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise SettingsError(f"{source}: {name} must be a whole number, got {raw!r}") from None
    if name == "auto_cutoff" and isinstance(raw, list):
        return ",".join(str(e) for e in raw)  # auto_cutoff = ["estate-a", "estate-b"]
    if name == "mqtt_url" and isinstance(raw, list) and all(isinstance(u, str) for u in raw):
        return ",".join(raw)  # mqtt_url = ["mqtt://a:1883", "mqtt://b:1883"]: a cluster's nodes
    if name == "receivers" and isinstance(raw, list):
        return json.dumps(raw)  # [[receivers]] tables; kept as JSON text, as the variable
    if not isinstance(raw, str):
        raise SettingsError(f"{source}: {name} must be text, got {raw!r}")
    return raw


def load_settings(
    config_file: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """File values first, then environment variables on top; unknown file keys are errors."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    if config_file:
        path = Path(config_file)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SettingsError(f"{path}: settings file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path}: not valid TOML: {exc}") from None
        for key, raw in data.items():
            if key not in fields:
                known = ", ".join(sorted(fields))
                raise SettingsError(f"{path}: unknown setting {key!r}; known settings: {known}")
            values[key] = _coerce(key, raw, fields[key].type, str(path))
    for name, f in fields.items():
        var = env_name(name)
        if var in environ:
            values[name] = _coerce(name, environ[var], f.type, f"environment {var}")
    settings = Settings(**values)
    if settings.mqtt_url:
        try:
            parse_mqtt_url(settings.mqtt_url)
        except EndpointError as exc:
            raise SettingsError(f"mqtt_url: {exc}") from None
    if not 0 <= settings.max_clock_skew_s <= 86_400:
        raise SettingsError(
            f"max_clock_skew_s must be 0 … 86400 (the wire contract's one day), "
            f"got {settings.max_clock_skew_s}"
        )
    if settings.receivers:
        from alerts.notify.receivers import receivers_from_config

        try:
            receivers_from_config(json.loads(settings.receivers))
        except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
            raise SettingsError(f"receivers: {exc}") from None
    if not 1 <= settings.command_timeout_s <= 3600:
        raise SettingsError(
            f"command_timeout_s must be 1 … 3600 seconds, got {settings.command_timeout_s}"
        )
    _check_timeseries(settings)
    if not 100 <= settings.owner_timeout_ms <= 60_000:
        raise SettingsError(
            f"owner_timeout_ms must be 100 … 60000 milliseconds, got {settings.owner_timeout_ms}"
        )
    if settings.late_after_s < 1:
        raise SettingsError(f"late_after_s must be at least 1, got {settings.late_after_s}")
    _check_partitions(settings)
    return settings


def _check_partitions(settings: Settings) -> None:
    if settings.partitions < 0:
        raise SettingsError(f"partitions must be 0 (off) or more, got {settings.partitions}")
    if settings.partitions and not 0 < 2 * settings.lease_renew_s < settings.lease_ttl_s:
        raise SettingsError(
            f"lease_renew_s={settings.lease_renew_s} must be at least 1 and below half of "
            f"lease_ttl_s={settings.lease_ttl_s}: a lease must survive a missed renewal"
        )
    url = settings.state_database_url
    if settings.partitions and not url.startswith(("postgresql", "postgres:")):
        raise SettingsError(
            f"partitions={settings.partitions} keeps its leases in the state database, which "
            "must then be PostgreSQL (ESTATEWATCH_DATABASE_URL=postgresql://…), not SQLite"
        )
    if settings.partitions and settings.timeseries_backend not in NETWORKED_TIMESERIES:
        # cluster mode: no host reads another's files, so readings go to a store all reach
        raise SettingsError(
            f"partitions={settings.partitions} keeps telemetry in a networked store that every "
            'node reads: set timeseries = "victoriametrics" and victoriametrics_url '
            "(ESTATEWATCH_TIMESERIES=victoriametrics, "
            "ESTATEWATCH_VICTORIAMETRICS_URL=http://…:8428), or timeseries = "
            '"influxdb" and influxdb_url, influxdb_token, influxdb_org, influxdb_bucket '
            "(an InfluxDB 2, read through Flux)"
        )


TIMESERIES_BACKENDS = ("sqlite", "influxdb", "victoriametrics")
# the stores cluster mode accepts: every node reads them (charts through their own queries)
NETWORKED_TIMESERIES = ("victoriametrics", "influxdb")


def _check_timeseries(settings: Settings) -> None:
    backend = settings.timeseries_backend
    if backend not in TIMESERIES_BACKENDS:
        raise SettingsError(
            f"timeseries must be one of {', '.join(TIMESERIES_BACKENDS)} (or empty), "
            f"got {settings.timeseries!r}"
        )
    if backend != "sqlite" and not settings.raw_store_url:
        raise SettingsError(
            f"timeseries = {backend!r} needs {backend}_url (ESTATEWATCH_{backend.upper()}_URL), "
            "e.g. http://127.0.0.1:8428 for VictoriaMetrics or :8086 for InfluxDB"
        )
