"""Where a broker is and how to log in: shared by the gateway, ingest and the service."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit


class EndpointError(ValueError):
    """An MQTT URL that cannot be used; the message shows the expected form."""


@dataclass(frozen=True, slots=True)
class MqttEndpoint:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None

    @property
    def url(self) -> str:
        """The address without the password, for logs and messages."""
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def parse_mqtt_url(url: str) -> MqttEndpoint:
    """``mqtt://user:pass@host:port`` (``mqtts://`` for TLS) into its parts."""
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
