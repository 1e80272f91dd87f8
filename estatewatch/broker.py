"""The broker the service runs itself when no ``ESTATEWATCH_MQTT_URL`` is given.

A local Mosquitto when one is on the PATH (with persistence, per-gateway passwords and an ACL),
else an embedded Python broker (amqtt) so that a machine without Mosquitto still runs the demo.
The tests start their own Mosquitto through the same class, on a free port.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from protocol.endpoint import MqttEndpoint
from protocol.topics import gateway_prefix

log = logging.getLogger(__name__)

SERVICE_USER = "estatewatch-service"
# Mosquitto drops QoS 1 messages for a slow subscriber beyond 1,000 queued (its default). The
# service applies backpressure instead, so the broker must be allowed to hold a storm's backlog.
MAX_QUEUED_MESSAGES = 200_000
# ... but not without bound: 2 GiB of queued payloads per session (about 200,000 messages of
# 10 KiB); beyond either bound Mosquitto drops, and the gateways' seq gaps count the loss.
MAX_QUEUED_BYTES = 2 << 30
# CONTRACT.md: a message is at most 1 MiB; 64 KiB more for the topic and MQTT headers. Mosquitto
# refuses (disconnects) a bigger packet before holding it in memory.
MAX_PACKET_SIZE = (1 << 20) + (64 << 10)
# Mosquitto notes a SIGHUP in a flag it clears when the reload ends, so one that arrives while
# it reloads is lost (seen: a gateway registered just after another was refused for 7 s, its
# password never read): one more SIGHUP follows the last change by this long.
RELOAD_AGAIN_S = 1.0


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


# Ports free_port picks from: below Linux's ephemeral range (32768-60999), from which the kernel
# gives every outgoing connection its local port and bind(0) its port, so a port picked here
# and bound a moment later by a child process is not taken meanwhile by some client's
# connection (seen: an API node of a test found its port in use); at random, so processes
# picking at once seldom pick alike.
PICK_PORTS = range(20000, 32768)


def free_port(host: str = "127.0.0.1") -> int:
    for _ in range(100):
        port = secrets.choice(PICK_PORTS)
        if port_is_free(port, host):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # that range is full
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


def mosquitto_password_hash(password: str, salt: bytes | None = None, iterations: int = 101) -> str:
    """The ``$7$`` (PBKDF2-SHA512) form Mosquitto 2 reads from its password file."""
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def gateway_username(estate: str, gw: str) -> str:
    # Ids never contain a dot, so "estate.gw" cannot be ambiguous.
    return f"{estate}.{gw}"


@dataclass(frozen=True)
class GatewayCredentials:
    username: str
    password: str
    host: str
    port: int
    topic_prefix: str


class Broker(Protocol):
    """What the service needs from a broker it runs itself."""

    name: str
    enforces_credentials: bool
    binds_client_ids: bool  # a gateway can connect only with its own client id
    restarts: int  # times the supervisor found the broker dead and started another

    @property
    def endpoint(self) -> MqttEndpoint: ...  # how the service itself connects
    @property
    def running(self) -> bool: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def issue_gateway_credentials(
        self, estate: str, gw: str, root: str
    ) -> GatewayCredentials | None: ...
    def rotate_gateway_credentials(
        self, estate: str, gw: str, root: str
    ) -> GatewayCredentials | None: ...
    def revoke_gateway_credentials(self, estate: str, gw: str) -> bool: ...


class BrokerFolderBusy(RuntimeError):
    """Another service already runs the broker over this folder's persistence."""


class ManagedMosquitto:
    """A Mosquitto process with its own config, persistence, password files and ACLs.

    Two listeners. Gateways connect to ``port`` with ``use_username_as_clientid``: whatever
    client id a gateway sends, the broker uses its username (``estate.gw``), so it can reach
    only its own session and never the service's (ids without a dot). The service connects to
    ``service_port`` (loopback), whose password file holds only the service's account, so its
    lanes keep the client ids they choose. Both ports are recorded in the folder and kept.

    Supervised: a lock (``broker.lock``, held while this object runs the broker) keeps a second
    service off the folder; the pid of the Mosquitto is recorded (``mosquitto.pid``), so a
    service restarted after a crash stops the broker its predecessor left running (cleanly: it
    saves its queued messages) before starting its own on the same ports; a thread restarts a
    Mosquitto that dies.
    """

    name = "mosquitto"
    enforces_credentials = True
    binds_client_ids = True

    def __init__(
        self,
        folder: Path,
        port: int,
        host: str = "127.0.0.1",
        executable: str | None = None,
        root: str = "estates",
        max_queued_messages: int = MAX_QUEUED_MESSAGES,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
        max_packet_size: int = MAX_PACKET_SIZE,
        supervise_interval_s: float = 0.5,
        port_fallback: bool = False,
    ) -> None:
        self.folder = folder.resolve()  # Mosquitto's command line names it: one spelling
        self.conf_path = self.folder / "mosquitto.conf"
        self.log_path = self.folder / "mosquitto.log"
        self.pid_path = self.folder / "mosquitto.pid"
        self.ports_path = self.folder / "ports.json"
        self.host = host
        self.requested_port = port
        self.port = port  # the gateways' listener, settled by start()
        self.service_port = 0  # the service's own listener (loopback), settled by start()
        self.root = root
        self.executable = executable or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.max_queued_messages = max_queued_messages
        self.max_queued_bytes = max_queued_bytes
        self.max_packet_size = max_packet_size
        self.supervise_interval_s = supervise_interval_s
        # False: ``port`` or fail (tests, benchmarks); True: the service's choice, see
        # _settle_ports
        self.port_fallback = port_fallback
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()
        self._folder_lock: int | None = None  # fd holding the flock on broker.lock
        self._stopped = threading.Event()  # stop() was called: the supervisor ends
        self._supervisor: threading.Thread | None = None
        self._reload_again: threading.Timer | None = None
        self.folder.mkdir(parents=True, exist_ok=True)
        self._passwords = self._load_passwords()
        if SERVICE_USER not in self._passwords:
            self._passwords[SERVICE_USER] = (secrets.token_urlsafe(18), "")
        self._write_auth_files()

    @property
    def endpoint(self) -> MqttEndpoint:
        """How the service itself connects: its own listener, its own account."""
        return MqttEndpoint(
            host="127.0.0.1",
            port=self.service_port or self.port,
            username=SERVICE_USER,
            password=self._passwords[SERVICE_USER][0],
        )

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @staticmethod
    def available(executable: str | None = None) -> bool:
        return bool(executable or shutil.which("mosquitto")) or Path("/usr/sbin/mosquitto").exists()

    # The clear passwords are kept (0600) beside the hashed files so credentials can be shown
    # again to an admin; the broker itself reads only the hashed files.
    def _load_passwords(self) -> dict[str, tuple[str, str]]:
        path = self.folder / "credentials.txt"
        out: dict[str, tuple[str, str]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                user, _, rest = line.partition(" ")
                password, _, prefix = rest.partition(" ")
                if user and password:
                    out[user] = (password, prefix)
        return out

    def _write_auth_files(self) -> None:
        clear = self.folder / "credentials.txt"
        lines = [f"{u} {p} {prefix}".rstrip() for u, (p, prefix) in sorted(self._passwords.items())]
        _write_private(clear, "\n".join(lines) + "\n")
        gateways = {u: v for u, v in self._passwords.items() if u != SERVICE_USER and v[1]}
        pw_lines = [f"{u}:{mosquitto_password_hash(p)}" for u, (p, _) in sorted(gateways.items())]
        _write_private(self.folder / "passwd", "\n".join(pw_lines) + "\n")
        acl: list[str] = []
        for user, (_, prefix) in sorted(gateways.items()):
            # A gateway publishes only under its own prefix and reads only its own commands.
            acl += [f"user {user}", f"topic write {prefix}#", f"topic read {prefix}cmd", ""]
        _write_private(self.folder / "acl", "\n".join(acl))
        service_pw = mosquitto_password_hash(self._passwords[SERVICE_USER][0])
        _write_private(self.folder / "service.passwd", f"{SERVICE_USER}:{service_pw}\n")
        _write_private(
            self.folder / "service.acl", f"user {SERVICE_USER}\ntopic readwrite {self.root}/#\n"
        )

    def _write_conf(self) -> None:
        persistence = self.folder / "persistence"
        persistence.mkdir(exist_ok=True)
        lines = [
            "per_listener_settings true",
            "persistence true",
            f"persistence_location {persistence}/",
            "autosave_interval 10",
            f"max_queued_messages {self.max_queued_messages}",
            f"max_queued_bytes {self.max_queued_bytes}",
            f"max_packet_size {self.max_packet_size}",
            "max_inflight_messages 10000",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "",
            "# gateways: the client id is the username, so no one takes another's session",
            f"listener {self.port} {self.host}",
            "use_username_as_clientid true",
            "allow_anonymous false",
            f"password_file {self.folder / 'passwd'}",
            f"acl_file {self.folder / 'acl'}",
            "",
            "# the service's lanes and notices: only the service's account exists here",
            f"listener {self.service_port} 127.0.0.1",
            "allow_anonymous false",
            f"password_file {self.folder / 'service.passwd'}",
            f"acl_file {self.folder / 'service.acl'}",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else Mosquitto switches to a user that cannot write here
        _write_private(self.conf_path, "\n".join(lines) + "\n")

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            self._take_folder()
            try:
                self._stop_orphan()
                self._settle_ports()
                self._launch()
            except BaseException:
                self._release_folder()
                raise
            self._stopped.clear()
        if self._supervisor is None or not self._supervisor.is_alive():
            self._supervisor = threading.Thread(
                target=self._supervise, name="broker-supervisor", daemon=True
            )
            self._supervisor.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(20)
        self._supervisor = None
        with self._lock:
            if self._reload_again is not None:
                self._reload_again.cancel()
            proc, self._proc = self._proc, None
            if proc and proc.poll() is None:
                proc.terminate()  # Mosquitto saves its persistence on the way down
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            with contextlib.suppress(FileNotFoundError):
                self.pid_path.unlink()
            self._release_folder()

    def kill(self) -> None:
        """SIGKILL the Mosquitto, as a crash would; the supervisor starts it again."""
        proc = self._proc
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait(5)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _take_folder(self) -> None:
        if self._folder_lock is not None:
            return
        path = self.folder / "broker.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # not inherited by Mosquitto
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise BrokerFolderBusy(
                f"another estatewatch service (pid {holder}) runs the broker over {self.folder}: "
                "stop it first, or give this one its own ESTATEWATCH_DATA_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._folder_lock = fd

    def _release_folder(self) -> None:
        fd, self._folder_lock = self._folder_lock, None
        if fd is not None:
            os.close(fd)  # closing drops the flock

    def _stop_orphan(self) -> None:
        """Stop the Mosquitto a previous service left running over this folder (killed with
        SIGKILL, that service could not stop it), so never two run over one persistence. Found
        by its recorded pid and by the process table (a Mosquitto started with our config)."""
        try:
            recorded = {int(self.pid_path.read_text().split()[0])}
        except (FileNotFoundError, ValueError, IndexError):
            recorded = set()
        pids = {p for p in recorded | set(mosquittos_over(self.conf_path)) if p != self.pid}
        for pid in sorted(p for p in pids if _is_our_mosquitto(p, self.conf_path)):
            log.warning(
                "the Mosquitto a previous run of the service started is still running (pid "
                "%d), left behind when that run ended without stopping it; stopping it cleanly "
                "(it saves its queued messages to %s) and starting a new one on the same port",
                pid,
                self.folder / "persistence",
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not _wait_gone(pid, self.conf_path, 30):
                log.warning("Mosquitto pid %d did not stop within 30 s; killing it", pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, self.conf_path, 5)

    def _settle_ports(self) -> None:
        """With ``port_fallback``, the gateways' port stays what it was (gateways are
        configured with it) unless the setting was changed, and is a free one when neither is
        free; the service's port is kept when free."""
        try:
            recorded = json.loads(self.ports_path.read_text())
        except (FileNotFoundError, ValueError):
            recorded = {}
        if not isinstance(recorded, dict):
            recorded = {}
        was_port = int(recorded.get("port") or 0)
        same_setting = int(recorded.get("requested") or 0) == self.requested_port
        order = [was_port, self.requested_port] if same_setting else [self.requested_port, was_port]
        port = next((p for p in order if p and port_is_free(p, self.host)), 0)
        if not self.port_fallback and self.requested_port:
            port = self.requested_port  # taken: Mosquitto says so
        elif not port:
            port = free_port(self.host)
            if was_port or self.requested_port:
                log.warning(
                    "broker port %s is in use; gateways must be told the new port %d",
                    was_port or self.requested_port,
                    port,
                )
        elif was_port and port != was_port:
            log.warning("broker port changes from %d to %d: tell the gateways", was_port, port)
        service_port = int(recorded.get("service_port") or 0)
        if not service_port or service_port == port or not port_is_free(service_port):
            service_port = free_port()
            while service_port == port:
                service_port = free_port()
        self.port, self.service_port = port, service_port
        record = {"port": port, "service_port": service_port, "requested": self.requested_port}
        _write_private(self.ports_path, json.dumps(record) + "\n")

    def _launch(self) -> None:
        self._write_conf()
        stderr_path = self.folder / "mosquitto.stderr"
        with open(stderr_path, "wb") as err:  # a file, not a pipe: the broker outlives us
            proc = subprocess.Popen(
                [self.executable, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self._proc = proc
        _write_private(self.pid_path, f"{proc.pid}\n")
        # The port answering is not enough: another broker may hold it while ours exits.
        up = wait_for_port(self.host, self.port, 10) and wait_for_port(
            "127.0.0.1", self.service_port, 5
        )
        time.sleep(0.2)
        if not up or proc.poll() is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)
            self._proc = None
            with contextlib.suppress(FileNotFoundError):
                self.pid_path.unlink()
            err_text = stderr_path.read_text(errors="replace").strip()
            raise RuntimeError(
                f"Mosquitto did not start on {self.host}:{self.port} and "
                f"127.0.0.1:{self.service_port}: {err_text} (see {self.log_path})"
            )
        log.info(
            "Mosquitto running (pid %d) on %s:%d for gateways, 127.0.0.1:%d for the service "
            "(config %s)",
            proc.pid,
            self.host,
            self.port,
            self.service_port,
            self.conf_path,
        )

    def _supervise(self) -> None:
        """Start the Mosquitto again when it dies, on the same ports, with a growing pause
        while it keeps failing; the service's clients reconnect by themselves."""
        delay = 1.0
        while not self._stopped.wait(self.supervise_interval_s):
            with self._lock:
                if self._stopped.is_set():
                    return
                proc = self._proc
                if proc is not None and proc.poll() is None:
                    continue
                if proc is not None:
                    log.warning(
                        "Mosquitto (pid %d) died (exit code %s); restarting it on port %d. "
                        "Its log ends: %s",
                        proc.pid,
                        proc.returncode,
                        self.port,
                        _tail(self.log_path),
                    )
                    self._proc = None
                    # counted when its death is seen, before the new one listens: the service's
                    # clients reconnect within a quarter second of that, /healthz with them
                    self.restarts += 1
                try:
                    self._launch()
                except (RuntimeError, OSError) as exc:
                    log.error("Mosquitto did not restart (%s); trying again in %.0f s", exc, delay)
                else:
                    delay = 1.0
                    continue
            self._stopped.wait(delay)
            delay = min(delay * 2, 30.0)

    def issue_gateway_credentials(self, estate: str, gw: str, root: str) -> GatewayCredentials:
        user = gateway_username(estate, gw)
        prefix = gateway_prefix(estate, gw, root)
        with self._lock:
            if user not in self._passwords:
                self._passwords[user] = (secrets.token_urlsafe(18), prefix)
                self._reload_auth()
            password = self._passwords[user][0]
        return GatewayCredentials(user, password, self.host, self.port, prefix)

    # --- a gateway's account: rotate and revoke ----------------------------------------------
    # Mosquitto (2.0) re-checks every connected client's username and password when SIGHUP
    # reloads the password file, and disconnects the ones that no longer match: so a new
    # password or a removed account also cuts the gateway's current connection, at once.
    # (tests/security/test_credentials.py holds this against the installed Mosquitto.)

    def _reload_auth(self) -> None:
        """Rewrite the password file and ACL and make the running broker read them (under
        ``_lock``): SIGHUP now, and again RELOAD_AGAIN_S after the last change."""
        self._write_auth_files()
        self._signal_reload()
        if self._reload_again is not None:
            self._reload_again.cancel()
        self._reload_again = threading.Timer(RELOAD_AGAIN_S, self._reload_once_more)
        self._reload_again.daemon = True
        self._reload_again.start()

    def _signal_reload(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGHUP)  # Mosquitto reloads passwords and ACL

    def _reload_once_more(self) -> None:
        with self._lock:
            if not self._stopped.is_set():
                self._signal_reload()

    def rotate_gateway_credentials(self, estate: str, gw: str, root: str) -> GatewayCredentials:
        """A new password for the gateway (its account is made if it has none); the old one
        stops working and a connection made with it is cut."""
        user = gateway_username(estate, gw)
        prefix = gateway_prefix(estate, gw, root)
        password = secrets.token_urlsafe(18)
        with self._lock:
            self._passwords[user] = (password, prefix)
            self._reload_auth()
        return GatewayCredentials(user, password, self.host, self.port, prefix)

    def revoke_gateway_credentials(self, estate: str, gw: str) -> bool:
        """Remove the gateway's account and ACL entries and cut its connection; False when
        it had none."""
        user = gateway_username(estate, gw)
        with self._lock:
            if self._passwords.pop(user, None) is None:
                return False
            self._reload_auth()
        return True


def mosquittos_over(conf_path: Path) -> list[int]:
    """Live processes started with this config, from the process table (Linux's /proc;
    elsewhere none are found)."""
    try:
        entries = [e.name for e in Path("/proc").iterdir() if e.name.isdigit()]
    except OSError:
        return []
    return [int(pid) for pid in entries if _is_our_mosquitto(int(pid), conf_path)]


def _is_our_mosquitto(pid: int, conf_path: Path) -> bool:
    """A live process started with this folder's config (a recorded pid may be reused)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[:1]
    return state != ["Z"] and str(conf_path).encode() in args


def _wait_gone(pid: int, conf_path: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _is_our_mosquitto(pid, conf_path):
            return True
        time.sleep(0.05)
    return False


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:]) or "(empty)"
    except OSError:
        return "(no log)"


class EmbeddedBroker:
    """amqtt in a thread of its own, for machines without Mosquitto. It does not check
    credentials, ACLs or client ids (any client may take the service's session) and is not
    supervised: fine for a demo on one machine, not for an estate network."""

    name = "embedded amqtt"
    enforces_credentials = False
    binds_client_ids = False
    restarts = 0

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.endpoint = MqttEndpoint(host=host, port=port)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    def start(self) -> None:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            from amqtt.broker import Broker as AmqttBroker

            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            config = {
                "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
                "plugins": {
                    "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
                },
            }

            async def main() -> None:
                broker = AmqttBroker(config)
                try:
                    await broker.start()
                except BaseException as exc:  # reported to the caller of start()
                    errors.append(exc)
                    ready.set()
                    return
                ready.set()
                while not self._stopped.is_set():
                    await asyncio.sleep(0.2)
                await broker.shutdown()

            loop.run_until_complete(main())
            loop.close()

        self._thread = threading.Thread(target=run, name="embedded-broker", daemon=True)
        self._thread.start()
        ready.wait(15)
        if errors:
            raise RuntimeError(f"embedded MQTT broker did not start: {errors[0]}")
        if not wait_for_port(self.host, self.port, 10):
            raise RuntimeError(f"embedded MQTT broker did not listen on {self.host}:{self.port}")
        log.warning(
            "embedded amqtt broker running on %s:%d: it checks no credentials, ACLs or client "
            "ids, so any client on the network can read, publish and take the service's "
            "session; install Mosquitto for an estate network",
            self.host,
            self.port,
        )

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread:
            self._thread.join(10)

    def issue_gateway_credentials(self, estate: str, gw: str, root: str) -> None:
        return None  # nothing to issue: this broker lets anyone in

    def rotate_gateway_credentials(self, estate: str, gw: str, root: str) -> None:
        return None

    def revoke_gateway_credentials(self, estate: str, gw: str) -> bool:
        return False  # no accounts here: ingest's registry is what turns the gateway away


def choose_port(preferred: int) -> int:
    return preferred if preferred and port_is_free(preferred) else free_port()


def local_broker(folder: Path, preferred_port: int, root: str) -> Broker:
    """Mosquitto when installed, else the embedded broker. Mosquitto keeps the port it had
    (recorded in the folder), else takes the preferred one when free (1883 is often taken by a
    system Mosquitto), else a free one."""
    if ManagedMosquitto.available():
        return ManagedMosquitto(folder, preferred_port, root=root, port_fallback=True)
    return EmbeddedBroker(choose_port(preferred_port))


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
