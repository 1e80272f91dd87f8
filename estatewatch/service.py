"""Wiring the pieces into the one-process service (``estatewatch run``)."""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import threading
import time
from datetime import UTC
from typing import Any

import uvicorn
from apscheduler.schedulers.background import BackgroundScheduler

from api.app import create_app
from api.context import ApiContext
from estatewatch.broker import Broker, choose_port, local_broker, port_is_free
from estatewatch.settings import Settings
from ingest.consumer import Ingest
from ingest.state import StateStore, now_ms
from ingest.telemetry import TelemetryReader, TelemetryWriter
from protocol.catalog import default_catalog
from protocol.endpoint import MqttEndpoint, parse_mqtt_url

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The service cannot start; the message says what to change."""


def admin_token(settings: Settings) -> str:
    """The configured token, else one generated once and kept (0600) in the data dir."""
    if settings.admin_token:
        return settings.admin_token
    path = settings.data_path / "admin-token"
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


class Service:
    def __init__(self, settings: Settings, pick_free_api_port: bool = False) -> None:
        self.settings = settings
        self.pick_free_api_port = pick_free_api_port
        self.broker: Broker | None = None
        self.endpoint: MqttEndpoint | None = None
        self.api_port = settings.api_port
        self._server: uvicorn.Server | None = None
        self._api_thread: threading.Thread | None = None
        self._stopped = False

    @property
    def url(self) -> str:
        return f"http://{self.settings.api_host}:{self.api_port}"

    def start(self) -> None:
        s = self.settings
        s.data_path.mkdir(parents=True, exist_ok=True)
        self.token = admin_token(s)
        self.catalog = default_catalog()

        if s.mqtt_url:
            self.endpoint = parse_mqtt_url(s.mqtt_url)
            log.info("broker: %s (given by ESTATEWATCH_MQTT_URL)", self.endpoint.url)
        else:
            self.broker = local_broker(s.data_path / "broker", s.broker_port, s.mqtt_root)
            self.broker.start()
            self.endpoint = self.broker.endpoint
            log.info("broker: %s started by the service on %s", self.broker.name, self.endpoint.url)

        self.state = StateStore.open(s.state_database_url)
        self.telemetry_writer = TelemetryWriter(s.telemetry_path)
        self.telemetry_reader = TelemetryReader(s.telemetry_path)
        self.ingest = Ingest(
            self.endpoint,
            self.state,
            self.telemetry_writer,
            self.catalog,
            root=s.mqtt_root,
            queue_size=s.ingest_queue_size,
            linger_s=s.commit_interval_ms / 1000,
            max_batch_readings=s.commit_max_readings,
        )
        self.ingest.start()

        self.scheduler = BackgroundScheduler(timezone=UTC)
        self.scheduler.add_job(
            self._purge_dead_letters, "interval", hours=1, id="purge-dead-letters"
        )
        self.scheduler.start()

        self._start_api()

    def _start_api(self) -> None:
        s = self.settings
        if not port_is_free(self.api_port, s.api_host):
            if not self.pick_free_api_port:
                raise StartupError(
                    f"port {self.api_port} on {s.api_host} is in use: stop what uses it or set "
                    "ESTATEWATCH_API_PORT to another port"
                )
            self.api_port = choose_port(0)
        ctx = ApiContext(
            state=self.state,
            telemetry=self.telemetry_reader,
            catalog=self.catalog,
            admin_token=self.token,
            issue_credentials=self._issue_credentials if self.broker else None,
            health=self.health,
            on_gateway_registered=lambda e, g: self.ingest.registry.reload(),
        )
        config = uvicorn.Config(
            create_app(ctx),
            host=s.api_host,
            port=self.api_port,
            log_level="warning",
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._api_thread = threading.Thread(target=self._server.run, name="api", daemon=True)
        self._api_thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._api_thread.is_alive():
                raise StartupError(f"the API did not start on {self.url}")
            time.sleep(0.05)

    def _issue_credentials(self, estate: str, gw: str) -> dict[str, Any] | None:
        assert self.broker is not None
        creds = self.broker.issue_gateway_credentials(estate, gw, self.settings.mqtt_root)
        return dataclasses.asdict(creds) if creds else None

    def _purge_dead_letters(self) -> None:
        cutoff = now_ms() - self.settings.deadletter_retention_days * 86_400_000
        n = self.state.purge_dead_letters(cutoff)
        if n:
            log.info(
                "purged %d dead letters older than %d days",
                n,
                self.settings.deadletter_retention_days,
            )

    def health(self) -> dict[str, Any]:
        st = self.ingest.stats
        return {
            "broker": {
                "url": self.endpoint.url if self.endpoint else None,
                "managed": self.broker.name if self.broker else None,
                "connected": self.ingest.connected,
            },
            "ingest": {
                "queue_depth": self.ingest.queue_depth,
                "received_messages": st.received,
                "committed_messages": st.committed_messages,
                "readings": st.readings,
                "events": st.events,
                "dead_letters": dict(st.dead_letters),
                "last_commit_ms": st.last_commit_ms,
                "commit_failures": st.commit_failures,
            },
        }

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._server:
            self._server.should_exit = True
        if self._api_thread:
            self._api_thread.join(10)
        if hasattr(self, "scheduler"):
            self.scheduler.shutdown(wait=False)
        if hasattr(self, "ingest"):
            self.ingest.stop()
        if hasattr(self, "telemetry_writer"):
            self.telemetry_writer.close()
        if hasattr(self, "state"):
            self.state.close()
        if self.broker:
            self.broker.stop()
