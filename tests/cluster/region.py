"""A region's deployment on test hosts (issue 16): the broker, VictoriaMetrics, ingest workers
and API nodes each on a network namespace of its own (tests/cluster/netns.py), PostgreSQL on
``db`` (the ``netns_postgres`` fixture), every process started as docs/deploy.md starts it:
`estatewatch run --role …` with its ``ESTATEWATCH_*`` settings. The test process reaches every
host over the bridge; the hosts reach each other only by their addresses."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from cluster.partitions import partition_of
from estatewatch.broker import mosquitto_password_hash, wait_for_port
from tests.cluster.netns import Network

TOKEN = "region-admin-token-0123456789"
MQTT_PORT = 1883
TSDB_PORT = 8428
API_PORT = 8000
SERVICE_USER = "estatewatch"
GATEWAY_USER = "gateways"


@dataclass
class Node:
    """An `estatewatch run` process on its host."""

    name: str
    role: str
    proc: subprocess.Popen[bytes]
    url: str
    log: Path


@dataclass
class Region:
    network: Network
    database_url: str
    folder: Path
    partitions: int
    lease_ttl_s: int = 6
    lease_renew_s: int = 2
    nodes: dict[str, Node] = field(default_factory=dict)
    mqtt_url: str = ""  # the service's login on the broker
    gateway_url: str = ""  # the gateways' login
    tsdb_url: str = ""
    client: httpx.Client = field(default_factory=lambda: _client())

    # --- the shared engines ---------------------------------------------------------------
    def start_broker(self) -> None:
        """Mosquitto on host ``broker``: persistence (a partition's session keeps its queue
        while its owner changes), two accounts, large queues (a partition waits for its next
        owner for up to a lease's life)."""
        host = self.network.add("broker")
        folder = self.folder / "broker"
        (folder / "persistence").mkdir(parents=True)
        service_pw, gateway_pw = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        (folder / "passwd").write_text(
            f"{SERVICE_USER}:{mosquitto_password_hash(service_pw)}\n"
            f"{GATEWAY_USER}:{mosquitto_password_hash(gateway_pw)}\n"
        )
        (folder / "mosquitto.conf").write_text(
            "\n".join(
                [
                    f"listener {MQTT_PORT} {host.address}",
                    "allow_anonymous false",
                    f"password_file {folder / 'passwd'}",
                    "persistence true",
                    f"persistence_location {folder / 'persistence'}/",
                    "max_queued_messages 1000000",
                    "max_inflight_messages 10000",
                    f"log_dest file {folder / 'mosquitto.log'}",
                    "user root",
                    "",
                ]
            )
        )
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.network.popen("broker", [exe, "-c", str(folder / "mosquitto.conf")])
        if not wait_for_port(host.address, MQTT_PORT, 20):
            pytest.fail(f"Mosquitto did not start on {host.address}: see {folder}")
        self.mqtt_url = f"mqtt://{SERVICE_USER}:{service_pw}@{host.address}:{MQTT_PORT}"
        self.gateway_url = f"mqtt://{GATEWAY_USER}:{gateway_pw}@{host.address}:{MQTT_PORT}"

    def start_tsdb(self) -> None:
        """VictoriaMetrics on host ``tsdb`` as docs/deploy.md runs it: one point per series and
        millisecond (a replay after a takeover overwrites, never adds)."""
        host = self.network.add("tsdb")
        exe = shutil.which("victoria-metrics")
        if exe is None:
            pytest.fail("victoria-metrics is not installed (.ci/run installs it)")
        log = (self.folder / "tsdb.log").open("wb")
        self.network.popen(
            "tsdb",
            [
                exe,
                f"-httpListenAddr={host.address}:{TSDB_PORT}",
                f"-storageDataPath={self.folder / 'tsdb'}",
                "-retentionPeriod=100y",
                "-dedup.minScrapeInterval=1ms",
                "-search.latencyOffset=0s",  # the test reads what was just written
                "-loggerLevel=ERROR",
            ],
            stdout=log,
            stderr=log,
        )
        if not wait_for_port(host.address, TSDB_PORT, 20):
            pytest.fail("VictoriaMetrics did not start on its host")
        self.tsdb_url = f"http://{host.address}:{TSDB_PORT}"

    # --- estatewatch processes --------------------------------------------------------------
    def env(self, name: str) -> dict[str, str]:
        """A node's settings (docs/deploy.md lists the same ones)."""
        host = self.network.hosts[name]
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.folder / name),
            "ESTATEWATCH_DATA_DIR": str(self.folder / name / "data"),
            "ESTATEWATCH_DATABASE_URL": self.database_url,
            "ESTATEWATCH_MQTT_URL": self.mqtt_url,
            "ESTATEWATCH_TIMESERIES": "victoriametrics",
            "ESTATEWATCH_VICTORIAMETRICS_URL": self.tsdb_url,
            "ESTATEWATCH_PARTITIONS": str(self.partitions),
            "ESTATEWATCH_LEASE_TTL_S": str(self.lease_ttl_s),
            "ESTATEWATCH_LEASE_RENEW_S": str(self.lease_renew_s),
            "ESTATEWATCH_WORKER_ID": name,
            "ESTATEWATCH_API_HOST": host.address,
            "ESTATEWATCH_API_PORT": str(API_PORT),
            "ESTATEWATCH_ADMIN_TOKEN": TOKEN,
            "ESTATEWATCH_COMMIT_INTERVAL_MS": "100",
            "ESTATEWATCH_LOG_LEVEL": "INFO",
        }

    def start(self, name: str, role: str, again: bool = False) -> Node:
        """`estatewatch run --role ROLE` on host ``name`` (made the first time)."""
        if name not in self.network.hosts:
            self.network.add(name)
        (self.folder / name).mkdir(exist_ok=True)
        n = sum(1 for p in self.folder.glob(f"{name}*.log"))
        log = self.folder / (f"{name}-{n}.log" if again else f"{name}.log")
        out = log.open("wb")
        proc = self.network.popen(
            name,
            [sys.executable, "-m", "estatewatch.cli", "run", "--role", role],
            env=self.env(name),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path.cwd(),
        )
        address = self.network.hosts[name].address
        node = Node(name, role, proc, f"http://{address}:{API_PORT}", log)
        self.nodes[name] = node
        return node

    def kill(self, name: str) -> None:
        """kill -9 the process alone (``ip netns exec`` and setpriv exec it: the pid is it)."""
        node = self.nodes.pop(name)
        os.kill(node.proc.pid, signal.SIGKILL)
        node.proc.wait(10)

    def health(self, name: str) -> dict[str, Any] | None:
        node = self.nodes.get(name)
        if node is None:
            return None
        try:
            r = self.client.get(f"{node.url}/healthz", timeout=2)
        except httpx.HTTPError:
            return None
        # 503 is a degraded node's answer (a lane reconnecting): up, and saying so
        return dict(r.json()) if r.status_code in (200, 503) else None

    def up(self, *names: str) -> bool:
        return all(self.health(n) is not None for n in names)

    def held(self, workers: list[str]) -> dict[str, dict[int, int]]:
        """Each reachable worker's own view: partition → epoch it holds."""
        out = {}
        for w in workers:
            h = self.health(w)
            if h is not None and "partitions" in h:
                out[w] = {int(p): int(e) for p, e in h["partitions"]["epochs"].items()}
        return out

    def api(self, name: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.nodes[name].url,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )

    def logs(self, *names: str, tail: int = 3000) -> str:
        out = []
        for n in names or tuple(self.nodes):
            for log in sorted(self.folder.glob(f"{n}*.log")):
                out.append(f"--- {log.name}\n{log.read_text(errors='replace')[-tail:]}")
        return "\n".join(out)

    # --- the gateways -----------------------------------------------------------------------
    def start_load(self, estates: list[str], host: str = "gw") -> subprocess.Popen[str]:
        if host not in self.network.hosts:
            self.network.add(host)
        log = (self.folder / "load.log").open("w")
        argv = [sys.executable, "-m", "tests.cluster.regionload", "--broker", self.gateway_url]
        argv += ["--estates", ",".join(estates), "--status", str(self.folder / "load.json")]
        proc: subprocess.Popen[str] = self.network.popen(
            host, argv, stdin=subprocess.PIPE, stdout=log, stderr=log, text=True, cwd=Path.cwd()
        )
        return proc

    def close(self) -> None:
        self.client.close()
        for node in self.nodes.values():  # TERM first: their leases go at once, logs flush
            with contextlib.suppress(ProcessLookupError):
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.proc.wait(10)


def _client() -> httpx.Client:
    return httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)


# --- who committed what, seen from PostgreSQL ------------------------------------------------
# Triggers write a row into region_audit, in the writer's own transaction, for every lease
# change (owner or epoch) and every dedup-book seq and alarm row a worker writes, with the
# writer's address. A rolled-back transaction leaves none; a sequence number orders them as
# PostgreSQL did: a fenced commit holds its lease row FOR SHARE, so a successor's takeover
# (an UPDATE of that row) is numbered after every write of the commit it waited for.
AUDIT = """
CREATE TABLE region_audit (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    addr inet DEFAULT inet_client_addr(),
    what text NOT NULL,
    partition integer,
    owner text,
    epoch bigint,
    estate text);
CREATE FUNCTION region_audit_lease() RETURNS trigger AS $$
BEGIN
    IF NEW.owner IS DISTINCT FROM OLD.owner OR NEW.epoch <> OLD.epoch THEN
        INSERT INTO region_audit (what, partition, owner, epoch)
        VALUES ('lease', NEW.partition, NEW.owner, NEW.epoch);
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE FUNCTION region_audit_write() RETURNS trigger AS $$
BEGIN
    INSERT INTO region_audit (what, estate) VALUES (TG_TABLE_NAME, NEW.estate);
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER region_audit AFTER UPDATE ON cluster_leases
    FOR EACH ROW EXECUTE FUNCTION region_audit_lease();
CREATE TRIGGER region_audit AFTER INSERT ON telemetry_message_seqs
    FOR EACH ROW EXECUTE FUNCTION region_audit_write();
CREATE TRIGGER region_audit AFTER INSERT OR UPDATE ON alert_alarms
    FOR EACH ROW EXECUTE FUNCTION region_audit_write();
-- the owners before the triggers: CREATE TRIGGER holds off lease changes until this commits
INSERT INTO region_audit (what, partition, owner, epoch)
    SELECT 'lease', partition, owner, epoch FROM cluster_leases;
"""


def install_audit(db: sa.Engine) -> None:
    with db.begin() as conn:
        conn.exec_driver_sql(AUDIT)


@dataclass
class Audit:
    """What the audit table says: writes that came from a worker not then the partition's
    lease holder (must be none), writes per worker, lease changes."""

    foreign: list[str]
    writes: dict[str, int]
    leases: int


def check_audit(db: sa.Engine, workers: dict[str, str], partitions: int) -> Audit:
    """Walk the audit in PostgreSQL's order: every seq or alarm row must come from the host
    of the worker holding its estate's partition at that point. ``workers``: address → name."""
    with db.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT what, host(addr), partition, owner, estate FROM region_audit ORDER BY id"
            )
        ).all()
    owner: dict[int, str | None] = {}
    foreign: list[str] = []
    writes: dict[str, int] = {}
    leases = 0
    for what, addr, partition, who, estate in rows:
        if what == "lease":
            owner[partition] = who
            leases += 1
            continue
        writer = workers.get(addr, addr)
        writes[writer] = writes.get(writer, 0) + 1
        p = partition_of(estate, partitions)
        if owner.get(p) != writer:
            foreign.append(f"{what} of {estate} by {writer} while p{p} was {owner.get(p)}'s")
    return Audit(foreign, writes, leases)
