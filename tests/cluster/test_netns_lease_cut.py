"""A lease round cut off in the middle (found by test_netns_region.py): a worker's host loses
its cable while its renewal transaction holds lease rows (FOR UPDATE). The worker's side gives
up within a third of the TTL (``lease_engine``'s TCP settings), but PostgreSQL's side of that
transaction would stay idle in it, holding the rows, until the server's TCP keepalive gives up
(two hours by default): the other workers claim with SKIP LOCKED and would never take those
partitions. The lease engine's sessions end such a transaction on the server within a third
of the TTL too."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from cluster.pg import LeaseStore, lease_engine
from tests.cluster.netns import Network
from tests.support import waiter

pytestmark = pytest.mark.cluster

TTL_MS = 6_000

# In the worker's host: a lease-round transaction that locks partition 0's row and stays open.
HOLDER = """
import sys, time
import sqlalchemy as sa
from cluster.pg import lease_engine
engine = lease_engine(sys.argv[1], int(sys.argv[2]))
with engine.connect() as conn:
    conn.execute(sa.text("SELECT partition FROM cluster_leases WHERE partition = 0 FOR UPDATE"))
    print("locked", flush=True)
    time.sleep(600)
"""


def _free_rows(db: sa.Engine) -> list[int]:
    """The lease rows another worker's claim can lock now (it claims with SKIP LOCKED)."""
    with db.begin() as conn:
        rows = conn.execute(
            sa.text("SELECT partition FROM cluster_leases FOR UPDATE SKIP LOCKED")
        ).all()
    return sorted(int(r[0]) for r in rows)


def test_a_lease_round_cut_off_mid_transaction_frees_its_rows_within_a_third_of_the_ttl(
    network: Network, netns_postgres: str
) -> None:
    store = LeaseStore(lease_engine(netns_postgres, TTL_MS), 4, TTL_MS)
    store.migrate()
    db = sa.create_engine(netns_postgres.replace("postgresql:", "postgresql+psycopg:"))
    network.add("w1")
    holder = network.popen(
        "w1",
        [sys.executable, "-c", HOLDER, netns_postgres, str(TTL_MS)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path.cwd(),
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        assert _free_rows(db) == [1, 2, 3]
        network.cut("w1")
        cut = time.monotonic()
        waiter(TTL_MS / 1000, every=0.1)(
            lambda: _free_rows(db) == [0, 1, 2, 3], what="partition 0's row free again"
        )
        print(f"\nthe cut-off round's rows free after {time.monotonic() - cut:.1f} s")
    finally:
        db.dispose()
        store.engine.dispose()
