"""Where a broker is and how to log in: shared by the gateway, ingest and the service.

A clustered broker is one address with several nodes: ``mqtt://a:1883,mqtt://b:1883`` (later
parts may be just ``host:port``). The nodes share one scheme and one set of credentials (a
cluster's accounts are the cluster's); clients start on the first and move to the next when a
connection is lost (protocol/failover.py)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit


class EndpointError(ValueError):
    """An MQTT URL that cannot be used; the message shows the expected form."""


@dataclass(frozen=True, slots=True)
class MqttEndpoint:
    host: str  # the first node
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    more_nodes: tuple[tuple[str, int], ...] = ()  # the cluster's other nodes, in order

    @property
    def nodes(self) -> tuple[tuple[str, int], ...]:
        return ((self.host, self.port), *self.more_nodes)

    def node_url(self, node: tuple[str, int]) -> str:
        """One node's address without the password, for logs, messages and /healthz."""
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{node[0]}:{node[1]}"

    @property
    def url(self) -> str:
        """The address (every node) without the password, for logs and messages."""
        return ",".join(self.node_url(n) for n in self.nodes)


def parse_mqtt_url(url: str | list[str] | tuple[str, ...]) -> MqttEndpoint:
    """``mqtt://user:pass@host:port`` (``mqtts://`` for TLS) into its parts; a cluster's nodes
    as a comma-separated text or a list of URLs."""
    parts = url.split(",") if isinstance(url, str) else list(url)
    parts = [p.strip() for p in parts if p.strip()]
    if not parts:
        raise EndpointError("MQTT URL is empty, e.g. mqtt://127.0.0.1:1883")
    first = _parse_one(parts[0])
    more: list[tuple[str, int]] = []
    for part in parts[1:]:
        node = _parse_one(part if "://" in part else f"{'mqtts' if first.tls else 'mqtt'}://{part}")
        if node.tls != first.tls or (
            "@" in part and (node.username, node.password) != (first.username, first.password)
        ):
            raise EndpointError(
                f"MQTT URL {part!r}: a cluster's nodes share one scheme and one login; give "
                "the credentials once, on the first, e.g. mqtt://user:pass@a:1883,b:1883"
            )
        more.append((node.host, node.port))
    if len({(first.host, first.port), *more}) != 1 + len(more):
        raise EndpointError(f"MQTT URL {url!r} names a node twice")
    return MqttEndpoint(
        first.host, first.port, first.username, first.password, first.tls, None, tuple(more)
    )


def _parse_one(url: str) -> MqttEndpoint:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise EndpointError(
            f"MQTT URL {url!r}: the scheme must be mqtt:// or mqtts://, e.g. mqtt://127.0.0.1:1883"
        )
    if not parts.hostname:
        raise EndpointError(f"MQTT URL {url!r} has no host, e.g. mqtt://127.0.0.1:1883")
    tls = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port
    except ValueError:
        raise EndpointError(f"MQTT URL {url!r} has a port that is not a number") from None
    return MqttEndpoint(
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,
    )
