"""A worker whose host is cut off from PostgreSQL must find out in seconds (found by
test_netns_region.py): a statement on a connection whose peer is gone, and a new connection
to a host that does not answer, fail within ``ingest.schema``'s bounds instead of waiting for
the kernel (about two minutes for a connect, fifteen for a statement). Otherwise a worker's
partition hand-over thread, stuck in such a call, never opens the sessions of the partitions it
claims after its cable is back, and their messages wait in the broker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.netns import Network

pytestmark = pytest.mark.cluster

BOUND_S = 15  # the engine's limits are ~5-8 s; the kernel's are minutes

# In the worker's host: one connection up, then (after the test cuts the cable) a statement on
# it and a new connection, each timed.
PROBE = """
import sys, time
import sqlalchemy as sa
from ingest.schema import create_engine
engine = create_engine(sys.argv[1])
conn = engine.connect()
conn.execute(sa.text("SELECT 1"))
print("ready", flush=True)
sys.stdin.readline()
for what, call in (
    ("statement", lambda: conn.execute(sa.text("SELECT 1"))),
    ("connect", lambda: create_engine(sys.argv[1]).connect()),
):
    t = time.monotonic()
    try:
        call()
        print(what, "answered", flush=True)
    except Exception as exc:
        print(what, "failed", f"{time.monotonic() - t:.1f}", type(exc).__name__, flush=True)
"""


def test_a_cut_off_worker_finds_out_in_seconds(network: Network, netns_postgres: str) -> None:
    network.add("w1")
    probe = network.popen(
        "w1",
        [sys.executable, "-c", PROBE, netns_postgres],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path.cwd(),
    )
    assert probe.stdin is not None and probe.stdout is not None
    assert probe.stdout.readline().strip() == "ready"
    network.cut("w1")
    try:
        out, _ = probe.communicate("go\n", timeout=2 * BOUND_S)
    except subprocess.TimeoutExpired:
        probe.kill()
        pytest.fail(f"a cut-off worker's database calls still hang after {2 * BOUND_S} s")
    lines = [line.split() for line in out.splitlines()]
    print(f"\ncut off: {lines}")
    assert [line[:2] for line in lines] == [["statement", "failed"], ["connect", "failed"]]
    assert all(float(line[2]) < BOUND_S for line in lines), lines
