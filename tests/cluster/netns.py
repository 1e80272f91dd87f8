"""Test hosts as Linux network namespaces (issue 16): each host is a namespace with its own
address on one bridge (in the root namespace, so the test process reaches every host), joined
by a veth pair. A host's link can be cut (its bridge port set down: packets vanish, no reset,
as a pulled cable or a partitioned network) and restored. Everything made here is undone by
``close``, which the fixture calls whatever happened, and every process started in a host is
killed then (``ip netns del`` alone would leave it running in an anonymous namespace). Should
the test process itself be killed, its hosts' processes get SIGKILL from the kernel (parent
death signal) and the next ``Network`` removes the namespaces and links it left (a ledger per
network in ``LEDGER``, with the pid that made it).

Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) and iproute2; ``available`` says why not.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LEDGER = Path("/tmp/estatewatch-netns")
DIE_WITH_PARENT = ("setpriv", "--pdeathsig", "KILL", "--")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10)


def available() -> str | None:
    """None when namespaces can be made here, else the reason they cannot."""
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_SYS_ADMIN, CAP_NET_ADMIN)"
    probe = f"ewprobe{uuid.uuid4().hex[:6]}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def sweep() -> None:
    """Remove what networks of test processes that no longer run left behind."""
    for ledger in LEDGER.glob("*"):
        pid, *names = ledger.read_text().split()
        if pid.isdigit() and _alive(int(pid)):
            continue
        for name in names:  # namespaces and links; one of the two `del`s fails, quietly
            _ip("netns", "del", name, check=False)
            _ip("link", "del", name, check=False)
        ledger.unlink(missing_ok=True)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.0.0.0/8 no interface here uses (another test run may hold one)."""
    used = _ip("-4", "-o", "addr").stdout
    for _ in range(50):
        net = ipaddress.IPv4Network(f"10.{200 + os.urandom(1)[0] % 50}.{os.urandom(1)[0]}.0/24")
        if f" {net.network_address + 1}/" not in used and str(net)[:-5] not in used:
            return net
    raise RuntimeError("no free 10.x.y.0/24 for the test network")


@dataclass
class Host:
    name: str
    netns: str
    address: str
    port: str  # the veth end on the bridge, in the root namespace


class Network:
    """Hosts on one bridge. Names of links stay within Linux's 15 characters."""

    def __init__(self) -> None:
        sweep()
        self.tag = uuid.uuid4().hex[:5]
        LEDGER.mkdir(exist_ok=True)
        self.ledger = LEDGER / self.tag
        self.subnet = _free_subnet()
        self.bridge = f"ewbr{self.tag}"
        self.gateway = str(self.subnet.network_address + 1)  # the root namespace's address
        self.hosts: dict[str, Host] = {}
        self.procs: list[subprocess.Popen[Any]] = []
        self._record(self.bridge)
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def add(self, name: str) -> Host:
        n = len(self.hosts)
        host = Host(
            name,
            f"ew{self.tag}-{name}",
            str(self.subnet.network_address + 10 + n),
            f"ewv{self.tag}{n}",
        )
        inside = f"ewi{self.tag}{n}"
        self.hosts[name] = host
        self._record(host.netns, host.port)
        _ip("netns", "add", host.netns)
        _ip("link", "add", host.port, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", host.netns)
        _ip("link", "set", host.port, "master", self.bridge, "up")
        for args in (
            ("link", "set", "lo", "up"),
            ("link", "set", inside, "name", "eth0"),
            ("addr", "add", f"{host.address}/24", "dev", "eth0"),
            ("link", "set", "eth0", "up"),
        ):
            _ip("-n", host.netns, *args)
        return host

    def popen(self, host: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the host (``ip netns exec`` execs it: same pid); killed at
        close. Its own process group, so a kill reaches what it starts."""
        proc = subprocess.Popen(
            # `ip netns exec` and setpriv exec in turn (one pid, the test's child), which
            # dies with SIGKILL when the test process dies, however it dies
            ["ip", "netns", "exec", self.hosts[host].netns, *DIE_WITH_PARENT, *argv],
            start_new_session=True,
            **kw,
        )
        self.procs.append(proc)
        return proc

    def run(
        self, host: str, argv: Sequence[str], timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the host to its end; its output as text."""
        cmd = ["ip", "netns", "exec", self.hosts[host].netns, *argv]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def cut(self, host: str) -> None:
        """The host's cable pulled: its packets go nowhere, its connections get no reset."""
        _ip("link", "set", self.hosts[host].port, "down")

    def restore(self, host: str) -> None:
        _ip("link", "set", self.hosts[host].port, "up")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
        for host in self.hosts.values():  # takes the veth pairs with them
            _ip("netns", "del", host.netns, check=False)
            _ip("link", "del", host.port, check=False)
        _ip("link", "del", self.bridge, check=False)
        self.ledger.unlink(missing_ok=True)

    def _record(self, *names: str) -> None:
        """Into the ledger before it exists, so a killed run's leftovers can be found."""
        if not self.ledger.exists():
            self.ledger.write_text(str(os.getpid()))
        with self.ledger.open("a") as f:
            f.write("".join(f" {n}" for n in names))
