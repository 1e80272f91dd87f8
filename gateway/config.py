"""``estatewatch gateway --config gateway.toml``: the gateway's settings as a file.

```toml
[gateway]
estate = "hohhot-xinhua"
id = "gw-01"
state_dir = "data/gateway"          # where the buffer lives
# root = "estates", fw = "…", poll_interval_s = 0.2, status_interval_s = 30

[broker]
url = "mqtts://broker.example.cn:8883"      # a cluster: "mqtts://a:8883,mqtts://b:8883" or a list
username = "hohhot-xinhua.gw-01"
password_file = "/etc/estatewatch/gw-01.password"   # or password = "…"
ca_file = "/etc/estatewatch/ca.pem"                 # TLS: the broker's CA; client_cert/key too
# keepalive_s = 30, reconnect_min_s = 0.5, reconnect_max_s = 60, max_inflight = 20

[buffer]
max_mb = 256                        # oldest telemetry dropped beyond this; events kept
batch_max_readings = 2000
batch_max_kb = 256
batch_linger_ms = 1000
durable = true                      # fsync every commit (survives power loss)

[[adapters]]
type = "simulator"                  # or "modbus", "gbt26875": gateway/registry.py builds them
spec = "hohhot-typical"
```

Modbus and GB/T 26875.3 adapter tables are described in ``gateway/modbus.py`` and
``gateway/fire_receiver.py``; ``gateway/examples/plant-and-fire.toml`` has both.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gateway.buffer import MAX_BATCH_BYTES
from protocol.endpoint import EndpointError, MqttEndpoint, parse_mqtt_url
from protocol.messages import MAX_ITEMS
from protocol.topics import DEFAULT_ROOT, is_valid_id


class ConfigError(ValueError):
    """A gateway config that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class BufferSettings:
    max_mb: float = 256.0
    batch_max_readings: int = 2000
    batch_max_kb: float = 256.0
    batch_linger_ms: int = 1000
    durable: bool = True


@dataclass(frozen=True)
class GatewayConfig:
    estate: str
    gw: str
    endpoint: MqttEndpoint
    state_dir: Path
    root: str = DEFAULT_ROOT
    fw: str = "estatewatch-gateway 0.2"
    poll_interval_s: float = 0.2
    status_interval_s: float = 30.0
    keepalive_s: int = 30
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 60.0
    max_inflight: int = 20
    client_cert: str | None = None
    client_key: str | None = None
    buffer: BufferSettings = field(default_factory=BufferSettings)
    adapters: tuple[dict[str, Any], ...] = ()
    source: str = "<code>"
    base_dir: Path = Path(".")  # relative paths in adapter tables (maps, mappings) start here

    @property
    def buffer_path(self) -> Path:
        return self.state_dir / f"{self.estate}.{self.gw}.buffer.db"


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, what: str) -> ConfigError:
        return ConfigError(f"gateway config {self.source}: {where}: {what}")

    def table(self, doc: dict[str, Any], key: str, allowed: set[str]) -> dict[str, Any]:
        value = doc.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(f"[{key}]", "must be a table")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.fail(
                f"[{key}]",
                f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})",
            )
        return value

    def num(
        self, tbl: dict[str, Any], key: str, where: str, default: float, lo: float, hi: float
    ) -> float:
        value = tbl.get(key, default)
        if type(value) not in (int, float) or not lo <= value <= hi:
            raise self.fail(
                f"{where}.{key}", f"must be a number from {lo:g} to {hi:g}, got {value!r}"
            )
        return float(value)


def parse_gateway_config(doc: dict[str, Any], source: str, base: Path) -> GatewayConfig:
    r = _Reader(source)
    unknown = sorted(set(doc) - {"gateway", "broker", "buffer", "adapters"})
    if unknown:
        raise r.fail("top level", f"unknown table(s) {', '.join(unknown)}")
    gw = r.table(
        doc,
        "gateway",
        {"estate", "id", "state_dir", "root", "fw", "poll_interval_s", "status_interval_s"},
    )
    for key in ("estate", "id"):
        if not isinstance(gw.get(key), str) or not is_valid_id(gw[key]):
            raise r.fail(f"gateway.{key}", "is required and must match [a-z0-9][a-z0-9-]{0,62}")
    br = r.table(
        doc,
        "broker",
        {
            "url", "username", "password", "password_file", "ca_file", "client_cert",
            "client_key", "keepalive_s", "reconnect_min_s", "reconnect_max_s", "max_inflight",
        },
    )  # fmt: skip
    url = br.get("url")
    if not isinstance(url, str) and not (
        isinstance(url, list) and url and all(isinstance(u, str) for u in url)
    ):
        raise r.fail(
            "broker.url",
            'is required, e.g. url = "mqtt://127.0.0.1:1883", or a cluster\'s nodes: '
            'url = ["mqtt://a:1883", "mqtt://b:1883"]',
        )
    try:
        ep = parse_mqtt_url(url)
    except EndpointError as exc:
        raise r.fail("broker.url", str(exc)) from None
    password = br.get("password", ep.password)
    if "password_file" in br:
        pw_path = base / str(br["password_file"])
        try:
            password = pw_path.read_text().strip()
        except OSError as exc:
            raise r.fail("broker.password_file", f"cannot read {pw_path}: {exc.strerror}") from None
    ca_file = br.get("ca_file")
    if ca_file is not None and not (base / ca_file).exists():
        raise r.fail("broker.ca_file", f"{base / ca_file} does not exist")
    endpoint = replace(
        ep,
        username=br.get("username", ep.username),
        password=password,
        tls=ep.tls or ca_file is not None,
        ca_file=str(base / ca_file) if ca_file else None,
    )
    bu = r.table(
        doc,
        "buffer",
        {"max_mb", "batch_max_readings", "batch_max_kb", "batch_linger_ms", "durable"},
    )
    buffer = BufferSettings(
        max_mb=r.num(bu, "max_mb", "buffer", 256, 1, 1_000_000),
        batch_max_readings=int(r.num(bu, "batch_max_readings", "buffer", 2000, 1, MAX_ITEMS)),
        batch_max_kb=r.num(bu, "batch_max_kb", "buffer", 256, 1, MAX_BATCH_BYTES / 1024),
        batch_linger_ms=int(r.num(bu, "batch_linger_ms", "buffer", 1000, 0, 600_000)),
        durable=bool(bu.get("durable", True)),
    )
    adapters = doc.get("adapters", [])
    if not isinstance(adapters, list) or not all(isinstance(a, dict) for a in adapters):
        raise r.fail("adapters", "must be an array of tables: [[adapters]]")
    for i, a in enumerate(adapters):
        if not isinstance(a.get("type"), str):
            raise r.fail(f"[[adapters]] #{i + 1}", 'needs type = "…" (e.g. "simulator")')
    return GatewayConfig(
        estate=gw["estate"],
        gw=gw["id"],
        endpoint=endpoint,
        state_dir=base / str(gw.get("state_dir", "data/gateway")),
        root=str(gw.get("root", DEFAULT_ROOT)),
        fw=str(gw.get("fw", "estatewatch-gateway 0.2")),
        poll_interval_s=r.num(gw, "poll_interval_s", "gateway", 0.2, 0.01, 60),
        status_interval_s=r.num(gw, "status_interval_s", "gateway", 30, 0.2, 3600),
        keepalive_s=int(r.num(br, "keepalive_s", "broker", 30, 5, 3600)),
        reconnect_min_s=r.num(br, "reconnect_min_s", "broker", 0.5, 0.05, 600),
        reconnect_max_s=r.num(br, "reconnect_max_s", "broker", 60, 0.05, 3600),
        max_inflight=int(r.num(br, "max_inflight", "broker", 20, 1, 1000)),
        client_cert=str(base / br["client_cert"]) if "client_cert" in br else None,
        client_key=str(base / br["client_key"]) if "client_key" in br else None,
        buffer=buffer,
        adapters=tuple(adapters),
        source=source,
        base_dir=base,
    )


def load_gateway_config(path: str | Path) -> GatewayConfig:
    file = Path(path)
    try:
        doc = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"gateway config {file}: cannot read it: {exc.strerror}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"gateway config {file}: not valid TOML: {exc}") from None
    # Relative paths in the file are relative to the file, as people expect.
    return parse_gateway_config(doc, str(file), file.parent)
