"""The broker the service runs itself when no ``ESTATEWATCH_MQTT_URL`` is given.

A local Mosquitto when one is on the PATH (with persistence, per-gateway passwords and an ACL),
else an embedded Python broker (amqtt) so that a machine without Mosquitto still runs the demo.
The tests start their own Mosquitto through the same class, on a free port.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
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


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
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
    endpoint: MqttEndpoint  # how the service itself connects
    enforces_credentials: bool

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def issue_gateway_credentials(
        self, estate: str, gw: str, root: str
    ) -> GatewayCredentials | None: ...
    def rotate_gateway_credentials(
        self, estate: str, gw: str, root: str
    ) -> GatewayCredentials | None: ...
    def revoke_gateway_credentials(self, estate: str, gw: str) -> bool: ...


class ManagedMosquitto:
    """A Mosquitto process with its own config, persistence, password file and ACL."""

    name = "mosquitto"
    enforces_credentials = True

    def __init__(
        self,
        folder: Path,
        port: int,
        host: str = "127.0.0.1",
        executable: str | None = None,
        root: str = "estates",
        max_queued_messages: int = MAX_QUEUED_MESSAGES,
    ) -> None:
        self.folder = folder
        self.host = host
        self.port = port
        self.root = root
        self.executable = executable or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.max_queued_messages = max_queued_messages
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        folder.mkdir(parents=True, exist_ok=True)
        self._passwords = self._load_passwords()
        if SERVICE_USER not in self._passwords:
            self._passwords[SERVICE_USER] = (secrets.token_urlsafe(18), "")
        self._write_auth_files()
        self.endpoint = MqttEndpoint(
            host=host, port=port, username=SERVICE_USER, password=self._passwords[SERVICE_USER][0]
        )

    @property
    def conf_path(self) -> Path:
        return self.folder / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.folder / "mosquitto.log"

    @staticmethod
    def available(executable: str | None = None) -> bool:
        return bool(executable or shutil.which("mosquitto")) or Path("/usr/sbin/mosquitto").exists()

    # The clear passwords are kept (0600) beside the hashed file so credentials can be shown
    # again to an admin; the broker itself reads only the hashed file.
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
        pw_lines = [f"{u}:{mosquitto_password_hash(p)}" for u, (p, _) in self._passwords.items()]
        _write_private(self.folder / "passwd", "\n".join(pw_lines) + "\n")
        acl = [f"user {SERVICE_USER}", f"topic readwrite {self.root}/#", ""]
        for user, (_, prefix) in sorted(self._passwords.items()):
            if user == SERVICE_USER or not prefix:
                continue
            # A gateway publishes only under its own prefix and reads only its own commands.
            acl += [f"user {user}", f"topic write {prefix}#", f"topic read {prefix}cmd", ""]
        _write_private(self.folder / "acl", "\n".join(acl))

    def _write_conf(self) -> None:
        persistence = self.folder / "persistence"
        persistence.mkdir(exist_ok=True)
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous false",
            f"password_file {self.folder / 'passwd'}",
            f"acl_file {self.folder / 'acl'}",
            "persistence true",
            f"persistence_location {persistence}/",
            "autosave_interval 10",
            f"max_queued_messages {self.max_queued_messages}",
            "max_inflight_messages 10000",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else Mosquitto switches to a user that cannot write here
        self.conf_path.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        self._write_conf()
        self._proc = subprocess.Popen(
            [self.executable, "-c", str(self.conf_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        # The port answering is not enough: another broker may hold it while ours exits.
        up = wait_for_port(self.host, self.port, 10)
        time.sleep(0.2)
        if not up or self._proc.poll() is not None:
            err = b""
            if self._proc.poll() is not None and self._proc.stderr:
                err = self._proc.stderr.read()
            self.stop()
            raise RuntimeError(
                f"Mosquitto did not start on {self.host}:{self.port}: "
                f"{err.decode(errors='replace').strip()} (see {self.log_path})"
            )
        log.info("Mosquitto running on %s:%d (config %s)", self.host, self.port, self.conf_path)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc and proc.stderr:
            proc.stderr.close()

    def kill(self) -> None:
        """Stop without a clean shutdown, as a crash or power loss would."""
        if self._proc and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5)
        self._proc = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def issue_gateway_credentials(self, estate: str, gw: str, root: str) -> GatewayCredentials:
        user = gateway_username(estate, gw)
        prefix = gateway_prefix(estate, gw, root)
        with self._lock:
            if user not in self._passwords:
                self._passwords[user] = (secrets.token_urlsafe(18), prefix)
                self._write_auth_files()
                if self._proc and self._proc.poll() is None:
                    self._proc.send_signal(signal.SIGHUP)  # Mosquitto reloads passwords and ACL
            password = self._passwords[user][0]
        return GatewayCredentials(user, password, self.host, self.port, prefix)

    # --- a gateway's account: rotate and revoke ----------------------------------------------
    # Mosquitto (2.0) re-checks every connected client's username and password when SIGHUP
    # reloads the password file, and disconnects the ones that no longer match: so a new
    # password or a removed account also cuts the gateway's current connection, at once.
    # (tests/security/test_credentials.py holds this against the installed Mosquitto.)

    def _reload_auth(self) -> None:
        """Rewrite the password file and ACL and make the running broker read them."""
        self._write_auth_files()
        if self._proc and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGHUP)

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


class EmbeddedBroker:
    """amqtt in a thread of its own, for machines without Mosquitto. It does not check
    credentials or ACLs: fine for a demo on one machine, not for an estate network."""

    name = "embedded amqtt"
    enforces_credentials = False

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
        log.info("embedded amqtt broker running on %s:%d", self.host, self.port)

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
    """Mosquitto when installed, else the embedded broker; the port is the preferred one when
    free (1883 is often taken by a system Mosquitto)."""
    port = choose_port(preferred_port)
    if ManagedMosquitto.available():
        return ManagedMosquitto(folder, port, root=root)
    return EmbeddedBroker(port)


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
