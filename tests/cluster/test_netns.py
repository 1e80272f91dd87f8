"""The test hosts themselves (tests/cluster/netns.py): hosts reach each other by address, a
cut host reaches nobody and is reached by nobody until restored, and closing the network
takes every namespace, link and process with it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.cluster.netns import Network, available

# a one-line TCP server and client, as hosts here have no ping or netcat
SERVE = (
    "import socket,sys;s=socket.create_server((sys.argv[1],7000));print('up',flush=True)\n"
    "while True: c,_=s.accept(); c.sendall(b'hi'); c.close()"
)
ASK = "import socket,sys;print(socket.create_connection((sys.argv[1],7000),timeout=1).recv(2))"


def _ask(net: Network, host: str, address: str) -> bool:
    return net.run(host, [sys.executable, "-c", ASK, address], timeout=10).returncode == 0


def test_hosts_talk_a_cut_host_is_alone_and_close_leaves_nothing() -> None:
    why = available()
    if why is not None:
        pytest.skip(f"network namespaces cannot be made here: {why}")
    net = Network()
    try:
        a, b = net.add("a"), net.add("b")
        server = net.popen("a", [sys.executable, "-c", SERVE, a.address], stdout=subprocess.PIPE)
        assert server.stdout is not None and server.stdout.readline() == b"up\n"
        assert _ask(net, "b", a.address)
        net.cut("a")
        assert not _ask(net, "b", a.address)
        net.restore("a")
        assert _ask(net, "b", a.address)
        assert not _ask(net, "b", "127.0.0.1")  # its own loopback: a's server is not there
    finally:
        net.close()
    assert server.poll() is not None  # killed
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert a.netns not in listed and b.netns not in listed
    assert net.bridge not in links and a.port not in links and b.port not in links
