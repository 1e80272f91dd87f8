"""Wiring the pieces into the one-process service (``estatewatch run``)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor
from datetime import UTC
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
import uvicorn
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from alerts.engine import AlertEngine
from alerts.estates import EstateDirectory
from alerts.notices import notifiers_for
from alerts.notify import NotifyError
from alerts.notify.mqtt import NoticeClient
from alerts.notify.receivers import receivers_from_config
from alerts.plans import load_plans
from alerts.queries import ReadParts, StoredQueries
from alerts.remote import CommandDesk
from alerts.store import AlertStore
from alerts.zones import load_zones
from api.app import create_app
from api.context import ApiContext
from api.live import LiveHub, device_updates
from api.owners import OwnerParts, OwnerRouter, serve
from api.users import UserStore
from cluster.owner import PartitionOwner
from cluster.owners import partition_address, partition_owner, shard_address, shard_owner
from cluster.partitions import partition_of, session_id, subscriptions
from cluster.pg import LeaseLost, LeaseStore, lease_engine
from estatewatch.broker import Broker, BrokerFolderBusy, choose_port, local_broker, port_is_free
from estatewatch.datafiles import check_data_files, state_opened
from estatewatch.owner_link import OwnerLink
from estatewatch.settings import Settings
from ingest.consumer import ApplyRollupTask, Ingest, PartitionSessions, PurgeTask
from ingest.datafiles import explain_corruption, sqlite_path
from ingest.directory import estate_records, offline_gateways
from ingest.metrics import ingest_registry
from ingest.model import NotOwner
from ingest.net_telemetry import NetworkTelemetryReader, NetworkTelemetryStore
from ingest.pipeline import Delivery
from ingest.shards import ShardedTelemetryReader
from ingest.state import SchemaBusy, StateStore
from ingest.store_process import telemetry_store
from ingest.telemetry import TelemetryReader, TelemetryStore, TelemetryWriter
from ingest.victoria import RemoteChartsReader, VictoriaMetricsReader
from protocol.catalog import default_catalog
from protocol.clock import now_ms
from protocol.endpoint import MqttEndpoint, parse_mqtt_url
from supervision.inspections import InspectionBook

if TYPE_CHECKING:  # InfluxDB's client (~13 MB resident) only when one is configured
    from ingest.flux import FluxChartsReader
    from ingest.influx import InfluxTelemetrySink

log = logging.getLogger(__name__)


T = TypeVar("T")


def _sent_by_owners(topic: str, payload: bytes, retain: bool) -> None:
    raise NotifyError("an API node sends no command itself: the estate's owner sends it")


def retry_schema(make: Callable[[], T], what: str, attempts: int = 10) -> T:
    """The processes of a deployment may start at once on a new database: one creates the
    tables while the others find them half made ("already exists", "locked"). Try again."""
    for attempt in range(attempts):
        try:
            return make()
        except (
            sa.exc.OperationalError,
            sa.exc.IntegrityError,
            sa.exc.ProgrammingError,
            SchemaBusy,
        ) as exc:
            if attempt == attempts - 1:
                raise
            log.info("%s: schema busy (%s); trying again", what, str(exc).splitlines()[0])
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


class StartupError(RuntimeError):
    """The service cannot start; the message says what to change."""


MIN_ADMIN_TOKEN = 24  # characters: the bootstrap admin's token can do everything


def admin_token(settings: Settings) -> str:
    """The configured token, else one generated once and kept (0600) in the data dir. A
    token shorter than MIN_ADMIN_TOKEN is refused: it could be guessed."""
    if settings.admin_token:
        if len(settings.admin_token) < MIN_ADMIN_TOKEN:
            raise StartupError(
                f"ESTATEWATCH_ADMIN_TOKEN has {len(settings.admin_token)} characters: use at "
                f"least {MIN_ADMIN_TOKEN} (e.g. the output of "
                "`python3 -c 'import secrets; print(secrets.token_urlsafe(24))'`), or leave it "
                "empty to have one generated in the data dir"
            )
        return settings.admin_token
    path = settings.data_path / "admin-token"
    if path.exists():
        token = path.read_text().strip()
        if len(token) < MIN_ADMIN_TOKEN:
            raise StartupError(
                f"{path} holds a token of {len(token)} characters: use at least "
                f"{MIN_ADMIN_TOKEN}, or delete the file to have a new one generated"
            )
        return token
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


# The send buffer of the API's connections (they inherit it from the listening socket), fixed
# rather than autotuned up to 4 MiB: a client that stops reading (a stalled live stream) then
# holds about twice this of kernel memory, and its stream meets backpressure after one chunk
# instead of after megabytes of frames encoded for nobody.
API_SEND_BUFFER = 256 << 10


def api_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, API_SEND_BUFFER)
    return sock


ROLES = ("all", "ingest", "api")
ROLLUP_MAX_ROWS = 2_000_000  # raw rows folded per merge (~30 s of a large estate under load)


class Service:
    """The service's parts for one role: ``all`` (one process), ``ingest`` (one shard of the
    estates: broker → store, with its rollups; with ``partitions``, a worker ingesting the
    partitions whose leases it holds) or ``api`` (REST and pages over every shard)."""

    def __init__(
        self,
        settings: Settings,
        pick_free_api_port: bool = False,
        role: str = "all",
        shard: int = 0,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        if role not in ROLES:
            raise StartupError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
        self.settings = settings
        self.clock = clock  # the alert engine's time; tests play scenarios in simulated time
        self.role = role
        self.shard = shard
        # Scaled out (issue 16): ingest workers own partitions through leases, not --shard.
        self.scaled_out = role in ("ingest", "api") and settings.partitions > 0
        self.worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.pick_free_api_port = pick_free_api_port
        self.broker: Broker | None = None
        self.notices: NoticeClient | None = None
        self.endpoint: MqttEndpoint | None = None
        self.ingest: Ingest | None = None
        # charts from the networked store: VictoriaMetrics, or InfluxDB 2 in cluster mode
        self.timeseries: VictoriaMetricsReader | FluxChartsReader | None = None
        self.alerts: AlertEngine | None = None
        self.command_client: NoticeClient | None = None
        self.commands: CommandDesk | None = None
        # Scaled out: the one owner look-up (estate -> address), the link to the owners and
        # the router that applies people's actions where the estate's state is.
        self.owner_of = (
            partition_owner(settings.partitions)
            if self.scaled_out
            else shard_owner(settings.ingest_shards)
        )
        self.owner_link: OwnerLink | None = None
        self.owners: OwnerRouter | None = None
        self.partitions: PartitionOwner | None = None  # the leases of --role ingest
        # a partition's engine adopt/release and session start, in order, off the lease thread
        self._handover: ThreadPoolExecutor | None = None
        self._partition_lock = threading.Lock()  # a partition's sessions open or close whole
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
        if self.role != "all" and not s.mqtt_url and self.role == "ingest":
            raise StartupError(
                "--role ingest shares one broker with the other processes: set "
                "ESTATEWATCH_MQTT_URL (e.g. mqtt://user:pass@127.0.0.1:1883)"
            )
        if self.role == "all" and s.partitions:
            raise StartupError(
                f"ESTATEWATCH_PARTITIONS={s.partitions} is for a scaled-out deployment: run "
                "`estatewatch run --role ingest` workers and `--role api` nodes, or set it to 0 "
                "for the one-process service"
            )
        if self.role == "ingest" and self.scaled_out:
            if self.shard or s.ingest_shards > 1:
                log.warning(
                    "--shard %d / ESTATEWATCH_INGEST_SHARDS=%d are ignored: with "
                    "ESTATEWATCH_PARTITIONS=%d this worker ingests the partitions it holds",
                    self.shard,
                    s.ingest_shards,
                    s.partitions,
                )
            self.shard = 0
        elif self.role == "ingest" and not 0 <= self.shard < max(s.ingest_shards, 1):
            raise StartupError(
                f"--shard {self.shard} is not below ESTATEWATCH_INGEST_SHARDS={s.ingest_shards}"
            )
        check_data_files(s)
        with explain_corruption(sqlite_path(s.state_database_url), "state database"):
            self.state = retry_schema(lambda: StateStore.open(s.state_database_url), "state")
        state_opened(s)
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self._rollup_lock = threading.Lock()
        self.registry = CollectorRegistry()
        self.live = LiveHub()
        if self.role in ("all", "ingest"):
            self._start_ingest()
        if self.role in ("all", "api"):
            self.scheduler.add_job(
                self._purge_dead_letters, "interval", hours=1, id="purge-dead-letters"
            )
        if self.role != "all":
            self._start_owners()
        if self.role == "ingest" and self.scaled_out:  # after the owner link: it serves them
            self._start_partitions()
        self.scheduler.start()
        self._start_api()

    def _start_ingest(self) -> None:
        s = self.settings
        if s.mqtt_url:
            self.endpoint = parse_mqtt_url(s.mqtt_url)
            log.info("broker: %s (given by ESTATEWATCH_MQTT_URL)", self.endpoint.url)
        else:
            self.broker = local_broker(s.data_path / "broker", s.broker_port, s.mqtt_root)
            try:
                self.broker.start()
            except BrokerFolderBusy as exc:
                raise StartupError(str(exc)) from None
            self.endpoint = self.broker.endpoint
            log.info("broker: %s started by the service on %s", self.broker.name, self.endpoint.url)
        path = s.shard_telemetry_path(self.shard)
        if s.raw_store_url:
            from ingest.influx import InfluxTelemetrySink
        self.influx = (  # InfluxDB, or VictoriaMetrics through its InfluxDB write API
            InfluxTelemetrySink(
                s.raw_store_url, s.influxdb_token, s.influxdb_org, s.influxdb_bucket, self.catalog
            )
            if s.raw_store_url
            else None
        )
        if self.scaled_out:  # cluster mode: nothing on this host's disk (ingest.net_telemetry)
            sink = self._networked_raw_store()
            # every commit fenced by the partitions' leases in its own transaction
            self.telemetry_writer: TelemetryStore = retry_schema(
                lambda: NetworkTelemetryStore(s.state_database_url, sink, self._fence_commit),
                "telemetry",
            )
        else:
            with explain_corruption(path, "telemetry database"):
                self.telemetry_writer = retry_schema(
                    lambda: telemetry_store(path, self.influx, s.ingest_store_process), "telemetry"
                )
        self.ingest = Ingest(
            self.endpoint,
            self.state,
            self.telemetry_writer,
            self.catalog,
            root=s.mqtt_root,
            queue_size=s.ingest_queue_size,
            queue_bytes=s.ingest_queue_mb << 20,
            linger_s=s.commit_interval_ms / 1000,
            max_batch_readings=s.commit_max_readings,
            shard=(self.shard, s.ingest_shards)
            if self.role == "ingest" and not self.scaled_out
            else None,
            stall_s=s.ingest_stall_s,
            max_future_ms=s.max_clock_skew_s * 1000,
            partitions=PartitionSessions(s.partitions, session_id, subscriptions)
            if self.scaled_out
            else None,
        )
        self.registry, self.ingest.commit_seconds = ingest_registry(self.ingest)
        self._broker_metrics()
        self.ingest.add_listener(self._push_live)
        self._start_alerts()
        self.ingest.start()
        if s.raw_store_url:  # no raw row stays in the local file: nothing to fold or purge
            log.info(
                "telemetry: raw readings go to %s at %s, which downsamples them itself: the "
                "local rollup and raw purge jobs are off (retention trims the seqs only)",
                s.timeseries_backend,
                s.raw_store_url,
            )
        else:
            self._every(self.rollup, "rollup", seconds=s.rollup_interval_s)
        self._every(self.purge_telemetry, "retention", hours=1)
        if self.ingest.shard or self.ingest.partitions:  # new registrations within 5 s
            self.scheduler.add_job(
                self.ingest.subscribe_new_estates, "interval", seconds=5, id="subscribe-new-estates"
            )

    def _start_partitions(self) -> None:
        """Claim and keep partitions of the estates through leases in the state database
        (issue 16), and ingest exactly those: each acquired partition's estates are adopted
        by the alert engine, its two MQTT sessions opened and its owner address served; a
        lost one is stopped at once (``_partition_acquired`` / ``_partition_lost``)."""
        s = self.settings
        ttl_ms = s.lease_ttl_s * 1000
        engine = lease_engine(s.state_database_url, ttl_ms)
        self._handover = ThreadPoolExecutor(1, thread_name_prefix="partition-handover")
        try:
            store = LeaseStore(engine, s.partitions, ttl_ms)
            self.partitions = PartitionOwner(
                store,
                self.worker_id,
                on_acquire=self._partition_acquired,
                on_lose=self._partition_lost,
                renew_ms=s.lease_renew_s * 1000,
            )
            retry_schema(self.partitions.start, "partition leases")
            owner = self.partitions
            Gauge(
                "estatewatch_partitions_held",
                "partitions whose leases this worker holds (and ingests)",
                registry=self.registry,
            ).set_function(lambda: float(len(owner.held)))
        except ValueError as exc:  # not PostgreSQL; another partition count; timings
            engine.dispose()
            raise StartupError(str(exc)) from None

    def _partition_estates(self, partition: int) -> list[str]:
        """The registered estates of a partition (the state database's list)."""
        count = self.settings.partitions
        return sorted(
            e["id"] for e in self.state.list_estates() if partition_of(e["id"], count) == partition
        )

    def _owns_estate(self, estate: str) -> bool:
        """The alert engine's and the command desk's ``owns``: the estate's partition is
        held here now (False until the leases start)."""
        return self.partitions is not None and self.partitions.owns(estate)

    def _partition_acquired(self, partition: int, epoch: int) -> None:
        # On the lease thread: quick, no database (a slow callback delays the renewals).
        log.info("partition %d is ours at epoch %d", partition, epoch)
        if self._handover is not None:
            self._handover.submit(self._take_partition, partition, epoch)

    def _take_partition(self, partition: int, epoch: int) -> None:
        """On the hand-over thread: the engine and the command desk take the partition's
        estates (alarm state, timers, plans; commands awaiting their answers: from the
        database) before their messages flow, then the sessions open and the owner address
        is served. Jobs run in order, so a loss that comes meanwhile is handled after this
        (its release follows the adopt)."""
        try:
            estates = self._partition_estates(partition)
            for part in (self.alerts, self.commands):  # alarm state; commands awaiting answers
                if part is not None:
                    part.adopt(estates)
            with self._partition_lock:
                if self.partitions is None or self.partitions.held.get(partition) != epoch:
                    return  # lost meanwhile: nothing opened
                if self.ingest is not None:
                    self.ingest.open_partition(partition)
                if self.owner_link is not None:
                    self.owner_link.serve(partition_address(partition))
            log.info("partition %d: %d estates, sessions opened", partition, len(estates))
        except Exception:  # e.g. the database away for a moment: again while still held
            log.exception("partition %d: could not start it; trying again in 1 s", partition)
            retry = threading.Timer(1.0, self._retake, (partition, epoch))
            retry.daemon = True
            retry.start()

    def _retake(self, partition: int, epoch: int) -> None:
        held = self.partitions is not None and self.partitions.held.get(partition) == epoch
        if held and self._handover is not None and not self._stopped:
            with contextlib.suppress(RuntimeError):  # stopping
                self._handover.submit(self._take_partition, partition, epoch)

    def _partition_lost(self, partition: int) -> None:
        """At once (before the release reaches the database): stop serving its address and
        close its sessions (nothing uncommitted is acknowledged; the recorder drops what of
        it is pending), then, on the hand-over thread, the engine lets its estates go."""
        with self._partition_lock:
            if self.owner_link is not None:
                self.owner_link.unserve(partition_address(partition))
            if self.ingest is not None:
                self.ingest.close_partition(partition)
        log.info("partition %d is no longer ours", partition)
        if self._handover is not None:
            with contextlib.suppress(RuntimeError):  # stopping: the engine stops too
                self._handover.submit(self._release_partition, partition)

    def _release_partition(self, partition: int) -> None:
        try:
            estates = self._partition_estates(partition)
            for part in (self.alerts, self.commands):
                if part is not None:
                    part.release(estates)
        except Exception:
            log.exception("partition %d: the alert engine could not let it go", partition)

    def _fence_commit(self, conn: sa.Connection, estates: Collection[str]) -> None:
        """The first statement of a commit that writes for ``estates`` (the telemetry store's
        dedup book, the alert engine's alarm state): with partitions, check this worker's lease
        on each of their partitions inside that transaction; NotOwner (the caller rolls back)
        when one is no longer held. Without partitions every commit is this process's own."""
        if not self.scaled_out:
            return
        if self.partitions is None:  # the leases have not started: nothing is ours yet
            raise NotOwner(estates, "this worker holds no partition yet")
        count = self.settings.partitions
        for partition in sorted({partition_of(e, count) for e in estates}):
            try:
                self.partitions.fence(conn, partition)
            except LeaseLost as exc:
                lost = [e for e in estates if partition_of(e, count) == partition]
                raise NotOwner(lost, str(exc)) from exc

    def _every(self, job: Callable[[], object], job_id: str, **interval: float) -> None:
        """A periodic job that runs one at a time; runs missed while it was busy are one run."""
        self.scheduler.add_job(
            job, "interval", id=job_id, max_instances=1, coalesce=True, **interval
        )

    def _start_alerts(self) -> None:
        """Rules over what ingest commits; alarms, weather levels and plans. Runs with ingest:
        its windows and timers are per device, and a shard owns its estates' devices."""
        assert self.ingest is not None and self.endpoint is not None
        ingest = self.ingest
        s = self.settings
        shard = ingest.shard
        # Alarm and plan notices on a session of their own, never behind telemetry; a
        # worker's client ids are its own (two sessions with one id throw each other out).
        suffix = f"-{shard[0]}of{shard[1]}" if shard else ""
        if self.scaled_out:
            suffix = f"-{self.worker_id}"
        self.notices = NoticeClient(self.endpoint, f"estatewatch-notices{suffix}")
        self.notices.start()
        publish = self.notices.publish
        # the estates this process owns: the one owner look-up, as the API nodes route by
        mine = shard_address(self.shard)
        owns: Callable[[str], bool] | None = (lambda e: self.owner_of(e) == mine) if shard else None
        if self.scaled_out:
            owns = self._owns_estate
        rules = s.data_path / "rules"
        receivers = receivers_from_config(json.loads(s.receivers)) if s.receivers else None
        db = self.state.engine
        self.alerts = retry_schema(
            lambda: AlertEngine(
                db,
                self.catalog,
                clock=self.clock,
                publish=publish,
                root=s.mqtt_root,
                override_dir=rules if rules.is_dir() else None,
                owns=owns,
                late_after_ms=s.late_after_s * 1000,
                # Who is told (MQTT notices, webhooks per role), and what alerts may read of
                # ingest's estates and gateways: wired here, injected.
                notify=notifiers_for(publish, s.mqtt_root, receivers),
                estate_records=functools.partial(estate_records, db),
                estate_region=self._estate_region,
                offline_gateways=functools.partial(offline_gateways, db),
                fence=self._fence_commit if self.scaled_out else None,
            ),
            "alerts",
        )
        self.alerts.add_listener(self._push_alert_change)
        ingest.add_listener(self.alerts.on_committed)
        self.alerts.start()
        self._every(self.alerts.tick, "alerts-tick", seconds=1)
        self._start_commands(self.endpoint, f"estatewatch-commands{suffix}", owns)

    def _start_commands(
        self, endpoint: MqttEndpoint, client_id: str, owns: Callable[[str], bool] | None
    ) -> None:
        """Remote commands to devices (socket cut-off): sent on an MQTT session of their own,
        answered on ``cmd/ack`` through ingest, timed out on the wall clock; a rule's action
        taken when its alarm fires where ``auto_cutoff`` says so. On ``--role api`` (no
        ingest) it only sends: the ingest shard that owns the estate settles the answer in
        the shared database, and this process's reads see it."""
        s = self.settings
        client = NoticeClient(endpoint, client_id, max_queued=1000)
        self.command_client = client
        client.start()

        def publish(topic: str, payload: bytes, retain: bool) -> None:
            # Not queued for a later connection: a command that leaves late may switch a
            # socket long after the person gave up on it (and after its time-out).
            if not client.connected.is_set():
                raise NotifyError(f"not connected to {client.endpoint.url}")
            client.publish(topic, payload, retain)

        self.commands = CommandDesk(
            self.state,
            publish,
            root=s.mqtt_root,
            timeout_ms=s.command_timeout_s * 1000,
            auto_action=self._auto_action,
            owns=owns,
        )
        self.commands.add_listener(self._push_alert_change)
        states = Counter(
            "estatewatch_commands",
            "remote commands (socket cut-off) by the state they reached: sent, acknowledged, "
            "failed, timed_out",
            ["state"],
            registry=self.registry,
        )
        self.commands.add_listener(lambda change: states.labels(change["action"]).inc())
        if self.ingest is not None:
            self.ingest.add_listener(self.commands.on_committed)
        if self.alerts is not None:
            self.alerts.add_listener(self.commands.on_alarm_change)
        self.commands.start()
        self._every(self.commands.tick, "commands-tick", seconds=1)

    def _start_owners(self) -> None:
        """People's actions from any node, applied by the estate's owner (issue 16): an ingest
        shard answers the requests to its address over the broker and applies its own
        estates' actions itself; an API node sends every action to the owner."""
        s = self.settings
        if not s.mqtt_url:  # an API process without the broker: reads only
            log.warning("owners: no ESTATEWATCH_MQTT_URL: alarm and plan actions are off here")
            return
        node = f"{self.role}-{socket.gethostname()}-{os.getpid()}".replace("/", "_")
        node = node.replace("+", "_").replace("#", "_")
        local = OwnerParts(self.alerts, self.commands) if self.role == "ingest" else None
        handler = functools.partial(serve, local) if local is not None else None
        # An API node's live stream: the owners' alarm, plan and command changes (device
        # readings stay on the owners' own streams: relaying every commit would double the
        # broker's traffic).
        on_live = self.live.publish if self.role == "api" else None
        link = OwnerLink(parse_mqtt_url(s.mqtt_url), node, s.mqtt_root, handler, on_live=on_live)
        self.owner_link = link
        if local is not None and not self.scaled_out:  # a worker serves its partitions'
            link.serve(shard_address(self.shard))
            for source in (self.alerts, self.commands):
                if source is not None:
                    source.add_listener(self._relay_change)
        link.start()
        self.owners = OwnerRouter(
            self.owner_of, link.request, local, link.serves, s.owner_timeout_ms / 1000
        )
        if self.role == "api":
            alerts_store = AlertStore(self.state.engine)  # its tables, if no shard made them
            retry_schema(lambda: alerts_store.migrate(now_ms()), "alerts")
            # Commands are sent by the estate's owner; this desk only reads them.
            self.commands = CommandDesk(self.state, _sent_by_owners, root=s.mqtt_root)

    def _alert_reads(self) -> StoredQueries:
        """An API node's alarm, plan and drill reads: the tables the owners write."""
        db = self.state.engine
        regions = EstateDirectory(functools.partial(estate_records, db), load_zones())
        return StoredQueries(ReadParts(AlertStore(db), load_plans(), now_ms, regions.region))

    def _auto_action(self, estate: str, rule_id: str) -> str | None:
        """The action of the rule in force for the estate, if automatic actions are on there."""
        if self.alerts is None or not self.settings.auto_cutoff_for(estate):
            return None
        rules = self.alerts.rules
        rule = rules.estates.get(estate, {}).get(rule_id) or rules.defaults.get(rule_id)
        return rule.action if rule is not None and rule.enabled else None

    def _broker_metrics(self) -> None:
        Gauge(
            "estatewatch_broker_up",
            "1 while the service is connected to its broker (and the broker it runs is running)",
            registry=self.registry,
        ).set_function(lambda: 1.0 if self.broker_state() == "up" else 0.0)
        Gauge(
            "estatewatch_broker_restarts",
            "times the broker the service runs died and was started again",
            registry=self.registry,
        ).set_function(lambda: float(self.broker.restarts if self.broker else 0))

    def broker_state(self) -> str:
        """``up``, or ``down`` while the broker the service runs is not running or the service
        is not connected to its broker (/healthz answers 503 then)."""
        if self.broker is not None and not self.broker.running:
            return "down"
        return "up" if self.ingest is not None and self.ingest.connected else "down"

    def _estate_region(self, estate: str) -> str:
        try:
            return str(self.state.get_estate(estate)["region"])
        except LookupError:
            return ""

    def _push_alert_change(self, change: dict[str, Any]) -> None:
        estate = change.get("estate")
        if estate and self.live.subscribers:
            self.live.publish(str(estate), str(change.get("type", "alarm")), change)

    def _relay_change(self, change: dict[str, Any]) -> None:
        """An owner's alarm, plan or command change, to the API nodes' live streams."""
        estate = change.get("estate")
        if estate and self.owner_link is not None:
            self.owner_link.tell(str(estate), str(change.get("type", "alarm")), change)

    def _push_live(self, deliveries: Sequence[Delivery]) -> None:
        if self.live.subscribers:
            self.live.publish_many(device_updates(deliveries))

    def rollup(self) -> int:
        """Fold new readings into the rollups; returns rows folded. Reading and aggregating
        run on this (scheduler) thread over a read-only connection; only the merge runs on
        the writer thread, so events waiting to be committed wait for the upserts alone."""
        assert self.ingest is not None
        writer = self.telemetry_writer
        total = 0
        with self._rollup_lock:  # the rollup and retention jobs both fold
            while not self._stopped and (plan := writer.prepare_rollup(ROLLUP_MAX_ROWS)):
                try:
                    total += self.ingest.run_task(ApplyRollupTask(plan)).result(timeout=300)
                except CancelledError:  # stopping: the next start folds these rows
                    break
                if plan.end - plan.start < ROLLUP_MAX_ROWS:
                    break
        return total

    def purge_telemetry(self) -> int:
        assert self.ingest is not None
        s = self.settings
        now = now_ms()
        raw_cutoff = now - s.raw_retention_days * 86_400_000
        minute_cutoff = now - s.minute_rollup_retention_days * 86_400_000
        if not s.raw_store_url:  # with a remote store the purge below trims seqs only
            self.rollup()  # raw rows go only once they are in the rollups
        try:
            n = self.ingest.run_task(PurgeTask(raw_cutoff, minute_cutoff)).result(timeout=3600)
        except CancelledError:  # stopping: the next run purges
            return 0
        if n:
            log.info("retention: deleted %d raw values older than %d days", n, s.raw_retention_days)
        return n

    def _networked_raw_store(self) -> InfluxTelemetrySink:
        """Cluster mode's raw store (settings refuse to load without one; a Settings built in
        code is checked here)."""
        if self.influx is None:
            raise StartupError(
                f"partitions={self.settings.partitions} (cluster mode) keeps telemetry in a "
                'networked store every node reads: set timeseries = "victoriametrics" and '
                'victoriametrics_url, or timeseries = "influxdb" and influxdb_url'
            )
        return self.influx

    def _telemetry_reader(
        self,
    ) -> TelemetryReader | ShardedTelemetryReader | NetworkTelemetryReader:
        s = self.settings
        if s.partitions:
            # cluster mode, any role: "now", events and seq health from the state PostgreSQL,
            # charts from the networked store; no host reads another's files
            charts: VictoriaMetricsReader | FluxChartsReader
            if s.timeseries_backend == "victoriametrics":
                charts = VictoriaMetricsReader(s.victoriametrics_url)
            elif s.timeseries_backend == "influxdb":  # read through Flux (ingest.flux)
                from ingest.flux import FluxChartsReader

                charts = FluxChartsReader(
                    s.influxdb_url,
                    s.influxdb_token,
                    s.influxdb_org,
                    s.influxdb_bucket,
                    self.catalog,
                )
            else:
                raise StartupError(
                    f"partitions={s.partitions} (cluster mode) reads charts from a networked "
                    'store: set timeseries = "victoriametrics" and victoriametrics_url, or '
                    'timeseries = "influxdb" and influxdb_url (an InfluxDB 2)'
                )
            self.timeseries = charts
            return retry_schema(
                lambda: NetworkTelemetryReader(self.state.engine, charts, self._device_kind),
                "telemetry",
            )
        if s.influxdb_url:
            from ingest.influx import InfluxTelemetrySink
        influx = (
            InfluxTelemetrySink(
                s.influxdb_url, s.influxdb_token, s.influxdb_org, s.influxdb_bucket, self.catalog
            )
            if s.influxdb_url
            else None
        )
        if self.role == "all":
            return TelemetryReader(s.telemetry_path, influx)
        if self.role == "ingest":
            return TelemetryReader(s.shard_telemetry_path(self.shard), influx)
        paths = [s.shard_telemetry_path(i) for i in range(max(s.ingest_shards, 1))]
        for path in paths:  # the API may start before an ingest shard has made its file
            if not path.exists():
                make = functools.partial(TelemetryWriter, path)
                retry_schema(make, f"telemetry {path.name}").close()
        return ShardedTelemetryReader(paths, influx)

    def _device_kind(self, estate: str, device: str) -> str:
        return str(self.state.get_device(estate, device)["kind"])

    def _chart_reader(
        self, local: TelemetryReader | ShardedTelemetryReader | NetworkTelemetryReader
    ) -> TelemetryReader | ShardedTelemetryReader | RemoteChartsReader | NetworkTelemetryReader:
        """Charts from VictoriaMetrics when it is the store; the rest stays local."""
        if isinstance(local, NetworkTelemetryReader):  # reads every part from the network
            return local
        if self.settings.timeseries_backend != "victoriametrics":
            return local
        self.timeseries = VictoriaMetricsReader(self.settings.victoriametrics_url)
        return RemoteChartsReader(local, self.timeseries, self._device_kind)

    def _start_api(self) -> None:
        s = self.settings
        if not port_is_free(self.api_port, s.api_host):
            if not self.pick_free_api_port:
                raise StartupError(
                    f"port {self.api_port} on {s.api_host} is in use: stop what uses it or set "
                    "ESTATEWATCH_API_PORT to another port"
                )
            self.api_port = choose_port(0)
        ingest = self.ingest
        if self.alerts is None:  # an API-only process: its reports read the alert tables
            retry_schema(lambda: AlertStore(self.state.engine).migrate(now_ms()), "alerts")
        ctx = ApiContext(
            state=self.state,
            telemetry=self._chart_reader(self._telemetry_reader()),
            catalog=self.catalog,
            admin_token=self.token,
            issue_credentials=self._issue_credentials if self.broker else None,
            rotate_credentials=self._rotate_credentials if self.broker else None,
            revoke_credentials=self._revoke_credentials if self.broker else None,
            users=retry_schema(lambda: UserStore(self.state.engine), "users"),
            live=self.live,
            inspections=retry_schema(lambda: InspectionBook(self.state.engine), "inspections"),
            alerts=self.alerts,
            commands=self.commands,
            alert_reads=self._alert_reads() if self.alerts is None else None,
            owners=self.owners,
            health=self.health,
            on_gateway_registered=(lambda e, g: ingest.registry.reload())
            if ingest
            else (lambda e, g: None),
            on_gateway_changed=(lambda e, g: ingest.registry.reload())
            if ingest
            else (lambda e, g: None),
            metrics=lambda: generate_latest(self.registry),
        )
        config = uvicorn.Config(
            create_app(ctx),
            host=s.api_host,
            port=self.api_port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,  # open live streams must not hold up a stop
        )
        self._server = uvicorn.Server(config)
        listening = api_socket(s.api_host, self.api_port)
        self._api_thread = threading.Thread(
            target=self._server.run, args=([listening],), name="api", daemon=True
        )
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

    def _rotate_credentials(self, estate: str, gw: str) -> dict[str, Any] | None:
        assert self.broker is not None
        creds = self.broker.rotate_gateway_credentials(estate, gw, self.settings.mqtt_root)
        return dataclasses.asdict(creds) if creds else None

    def _revoke_credentials(self, estate: str, gw: str) -> bool:
        assert self.broker is not None
        return self.broker.revoke_gateway_credentials(estate, gw)

    def _purge_dead_letters(self) -> None:
        cutoff = now_ms() - self.settings.deadletter_retention_days * 86_400_000
        n = self.state.purge_dead_letters(cutoff)
        if n:
            log.info(
                "purged %d dead letters older than %d days",
                n,
                self.settings.deadletter_retention_days,
            )

    def _broker_nodes(self) -> dict[str, dict[str, Any]]:
        clients = (
            [(lane.name, lane.failover) for lane in self.ingest.lanes.sessions]
            if self.ingest
            else []
        )
        clients += [
            (n, c.failover)
            for n, c in (("notices", self.notices), ("commands", self.command_client))
            if c
        ]
        return {
            name: {"node": f.node_url, "connected": f.up, "failovers": f.failovers}
            for name, f in clients
        }

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = {"role": self.role}
        if self.owner_link is not None:
            link = self.owner_link
            body["owners"] = {"node": link.node, "connected": link.connected.is_set()}
        if self.timeseries is not None:
            body["timeseries"] = self.timeseries.health()
        if self.ingest is None:
            if self.command_client is not None:  # an API node's commands session
                body["broker"] = {"nodes": self._broker_nodes()}
            return body
        st = self.ingest.stats
        body["broker"] = {
            "state": self.broker_state(),
            "url": self.endpoint.url if self.endpoint else None,
            "managed": self.broker.name if self.broker else None,
            "connected": self.ingest.connected,
            "nodes": self._broker_nodes(),  # which node of a clustered broker each client is on
        }
        if self.broker is not None:
            body["broker"]["running"] = self.broker.running
            body["broker"]["restarts"] = self.broker.restarts
            body["broker"]["client_ids_bound"] = self.broker.binds_client_ids
        by_estate = self.ingest.shard or self.ingest.partitions
        body["ingest"] = {
            "shard": list(self.ingest.shard) if self.ingest.shard else None,
            "estates": self.ingest.subscribed_estates if by_estate else "all",
            "queue_depth": self.ingest.queue_depth,
            "queue_capacity": self.ingest.queue_capacity,
            "queued_bytes": self.ingest.queued_bytes,
            "queued_bytes_capacity": self.ingest.queued_bytes_capacity,
            "received_messages": st.received,
            "committed_messages": st.committed_messages,
            "readings": st.readings,
            "events": st.events,
            "duplicates": st.duplicates,
            "dead_letters": st.dead_letter_counts(),
            "lost_messages": sum(st.gateway_lost.values()),
            "last_commit_ms": st.last_commit_ms,
            "commit_failures": st.commit_failures,
        }
        body["writer"] = self.ingest.writer_health()
        if self.partitions is not None:
            body["partitions"] = self.partitions.status()
            # each held partition's sessions: client id, connected, broker node, estates
            sessions = self.ingest.partition_sessions()
            body["partitions"]["sessions"] = {str(p): v for p, v in sessions.items()}
            # held, sessions not open yet: the engine still adopting them (or retrying)
            starting = set(body["partitions"]["held"]) - set(sessions)
            body["partitions"]["starting"] = sorted(starting)
        return body

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._server:
            self.live.close()  # open dashboards' streams end, so the server stops at once
            self._server.should_exit = True
        if self._api_thread:
            self._api_thread.join(10)
        # start() may have failed part way: stop only what it got to
        if hasattr(self, "scheduler") and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self.partitions is not None:  # handed over at once, not a lease TTL later
            self.partitions.stop()
            self.partitions.store.engine.dispose()
        if self._handover is not None:
            self._handover.shutdown(wait=True, cancel_futures=True)
        # a writer stuck in a failing commit is not waited for (it is a daemon thread; what it
        # holds is unacknowledged); its store is then not closed under it
        writer_stopped = self.ingest.stop() if self.ingest is not None else True
        if self.alerts is not None:
            self.alerts.stop()
        if self.notices is not None:
            self.notices.stop()
        if self.command_client is not None:
            self.command_client.stop()
        if self.owner_link is not None:
            self.owner_link.stop()
        if hasattr(self, "telemetry_writer") and writer_stopped:
            self.telemetry_writer.close()
        if hasattr(self, "state"):
            self.state.close()
        if self.timeseries is not None:
            self.timeseries.close()
        if self.broker:
            self.broker.stop()
