"""Partition leases in PostgreSQL (issue 16): the I/O edge of ``cluster.leases``.

Two tables in the state database. ``cluster_leases``: one row per partition (owner, epoch,
expires_at). ``cluster_members``: one row per live worker, its heartbeat. Each method below is
one transaction applying one rule of ``cluster.leases`` in SQL, so the check and the write are
one atomic step, and every expiry is judged by the database's ``clock_timestamp()`` (not
``now()``, which is the transaction's start): one clock for all workers.

``fence`` is what committing code calls inside its own transaction: it locks the partition's
row ``FOR SHARE`` and raises ``LeaseLost`` unless the caller still holds the lease at its epoch.
A claim by another worker has to wait for (or skip) that row lock, so a commit that passed the
fence is ordered before any new epoch: the new owner sees all of it, and nothing of the old
owner's lands after the takeover. A fenced transaction whose client vanishes (host cut off)
is ended by the server after ``idle_in_transaction_session_timeout``, which ``fence`` sets
below the lease TTL, so the row lock never outlives the lease.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from cluster.leases import LEASE_TTL_MS, Lease, commit_accepted

__all__ = [
    "FENCE_IDLE_TIMEOUT_MS",
    "LeaseLost",
    "LeaseStore",
    "PartitionCountMismatch",
    "Snapshot",
    "fence",
    "fenced",
    "lease_engine",
]

# A fenced transaction left idle this long (its client gone) is ended by the server, which
# frees the row lock well before the lease (TTL 15 s by default) can be claimed by another.
FENCE_IDLE_TIMEOUT_MS = 5_000
# Renew and release wait this long at most for a row that a commit of ours holds FOR SHARE.
LOCK_WAIT_MS = 2_000
_MEMBER_FORGET = "1 hour"  # dead members' rows are deleted this long after they expired

_MS = "(extract(epoch from {}) * 1000)::bigint"
_NOW_MS = _MS.format("clock_timestamp()")
_TTL = "clock_timestamp() + make_interval(secs => :ttl_ms / 1000.0)"
_FREE = "(owner IS NULL OR expires_at IS NULL OR expires_at <= clock_timestamp())"

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS cluster_leases (
        partition integer PRIMARY KEY,
        owner text,
        epoch bigint NOT NULL DEFAULT 0,
        expires_at timestamptz,
        changed_at timestamptz NOT NULL DEFAULT clock_timestamp())""",
    """CREATE TABLE IF NOT EXISTS cluster_members (
        worker text PRIMARY KEY,
        expires_at timestamptz NOT NULL,
        joined_at timestamptz NOT NULL DEFAULT clock_timestamp())""",
)


class LeaseLost(RuntimeError):
    """The worker no longer holds the partition's lease (expired, taken over, released): stop
    working on the partition and drop everything held in memory for it (windows, timers,
    batches not committed); the partition's next owner starts from what was committed."""

    def __init__(
        self, partition: int, worker: str, epoch: int, holder: str | None, holder_epoch: int
    ) -> None:
        self.partition, self.worker, self.epoch = partition, worker, epoch
        self.holder, self.holder_epoch = holder, holder_epoch
        super().__init__(
            f"lease lost: partition {partition} is no longer {worker}'s at epoch {epoch} "
            f"(held by {holder or 'nobody'} at epoch {holder_epoch}): stop, drop its in-memory "
            "state"
        )


class PartitionCountMismatch(ValueError):
    """The lease table was made for another partition count (fixed for a deployment's life)."""


@dataclass(frozen=True)
class Snapshot:
    """The lease table and the live members as one worker read them, in one transaction."""

    now_ms: int  # the database's clock
    leases: dict[int, Lease]
    members: list[str]

    def owners(self) -> dict[int, str | None]:
        """Partition → holder of a live lease, or None (the input of ``cluster.leases.plan``)."""
        now = self.now_ms
        return {p: le.owner if now < le.expires_ms else None for p, le in self.leases.items()}


def _lock_wait(conn: sa.Connection, ms: int) -> None:
    conn.execute(sa.text("SELECT set_config('lock_timeout', :v, true)"), {"v": f"{ms}ms"})


def _lease(row: Sequence[Any]) -> Lease:
    partition, owner, epoch, expires_ms = row[:4]
    free = owner is None or expires_ms is None
    return Lease(int(partition), None if free else str(owner), int(epoch), int(expires_ms or 0))


_LEASE_COLUMNS = f"partition, owner, epoch, {_MS.format('expires_at')}"


def fence(
    conn: sa.Connection,
    partition: int,
    worker: str,
    epoch: int,
    idle_timeout_ms: int = FENCE_IDLE_TIMEOUT_MS,
) -> None:
    """Inside the caller's transaction, before its writes for ``partition``: lock the lease row
    (FOR SHARE, until the transaction ends) and raise ``LeaseLost`` unless ``worker`` holds a
    live lease at ``epoch``. The caller rolls back on LeaseLost (leaving the ``with`` block
    does) and stops the partition."""
    conn.execute(
        sa.text("SELECT set_config('idle_in_transaction_session_timeout', :v, true)"),
        {"v": str(idle_timeout_ms)},
    )
    row = conn.execute(
        sa.text(
            f"SELECT {_LEASE_COLUMNS}, {_NOW_MS} FROM cluster_leases WHERE partition = :p FOR SHARE"
        ),
        {"p": partition},
    ).one_or_none()
    if row is None:
        raise LeaseLost(partition, worker, epoch, None, 0)
    lease = _lease(row)
    if not commit_accepted(lease, worker, epoch, int(row[4])):
        raise LeaseLost(partition, worker, epoch, lease.owner, lease.epoch)


@contextlib.contextmanager
def fenced(
    engine: sa.Engine,
    partition: int,
    worker: str,
    epoch: int,
    idle_timeout_ms: int = FENCE_IDLE_TIMEOUT_MS,
) -> Iterator[sa.Connection]:
    """A transaction that commits only while ``worker`` holds ``partition`` at ``epoch``:
    ``with fenced(engine, p, me, epoch) as conn: ...writes...`` (raises LeaseLost, rolled
    back, when it does not)."""
    with engine.begin() as conn:
        fence(conn, partition, worker, epoch, idle_timeout_ms)
        yield conn


class LeaseStore:
    """The lease and member tables over a PostgreSQL engine (the state database's)."""

    def __init__(self, engine: sa.Engine, partitions: int, ttl_ms: int = LEASE_TTL_MS) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError(
                f"partition leases need PostgreSQL (the state database is {engine.dialect.name})"
            )
        if partitions < 1:
            raise ValueError(f"partitions must be at least 1, not {partitions}")
        self.engine, self.partitions, self.ttl_ms = engine, partitions, ttl_ms

    def migrate(self) -> None:
        """Make the tables and one row per partition; refuse another partition count."""
        with self.engine.begin() as conn:
            # workers starting at once would race on CREATE TABLE IF NOT EXISTS
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('cluster_leases'))"))
            for ddl in _SCHEMA:
                conn.execute(sa.text(ddl))
            have = conn.execute(sa.text("SELECT count(*) FROM cluster_leases")).scalar_one()
            if have and have != self.partitions:
                raise PartitionCountMismatch(
                    f"the lease table has {have} partitions, the setting says "
                    f"{self.partitions}: the count is fixed for a deployment (changing it "
                    f"moves almost every estate); set ESTATEWATCH_PARTITIONS={have}"
                )
            conn.execute(
                sa.text(
                    "INSERT INTO cluster_leases (partition) SELECT generate_series(0, :n - 1) "
                    "ON CONFLICT DO NOTHING"
                ),
                {"n": self.partitions},
            )

    def read(self, worker: str | None = None) -> Snapshot:
        """Heartbeat ``worker`` (when given) and read the leases and live members, at once."""
        with self.engine.begin() as conn:
            if worker is not None:
                conn.execute(
                    sa.text(
                        f"INSERT INTO cluster_members (worker, expires_at) VALUES (:w, {_TTL}) "
                        "ON CONFLICT (worker) DO UPDATE SET expires_at = EXCLUDED.expires_at"
                    ),
                    {"w": worker, "ttl_ms": self.ttl_ms},
                )
                conn.execute(
                    sa.text(
                        "DELETE FROM cluster_members WHERE expires_at < "
                        f"clock_timestamp() - interval '{_MEMBER_FORGET}'"
                    )
                )
            now = int(conn.execute(sa.text(f"SELECT {_NOW_MS}")).scalar_one())
            rows = conn.execute(sa.text(f"SELECT {_LEASE_COLUMNS} FROM cluster_leases"))
            leases = {int(r[0]): _lease(r) for r in rows}
            members = conn.execute(
                sa.text(
                    "SELECT worker FROM cluster_members "
                    "WHERE expires_at > clock_timestamp() ORDER BY worker"
                )
            )
            return Snapshot(now, leases, [str(m) for (m,) in members])

    def claim(self, worker: str, partitions: Collection[int]) -> dict[int, int]:
        """Claim the free ones of ``partitions``; partition → new epoch of those won. A row
        locked by a commit in flight (its holder's, fenced) is skipped until the next tick."""
        if not partitions:
            return {}
        with self.engine.begin() as conn:
            rows = conn.execute(
                sa.text(
                    f"UPDATE cluster_leases SET owner = :w, epoch = epoch + 1, "
                    f"expires_at = {_TTL}, changed_at = clock_timestamp() "
                    "WHERE partition IN (SELECT partition FROM cluster_leases "
                    f"WHERE partition = ANY(:ps) AND {_FREE} FOR UPDATE SKIP LOCKED) "
                    "RETURNING partition, epoch"
                ),
                {"w": worker, "ps": sorted(partitions), "ttl_ms": self.ttl_ms},
            )
            return {int(p): int(e) for p, e in rows}

    def renew(self, worker: str, held: Mapping[int, int]) -> set[int]:
        """Renew the leases ``worker`` holds (partition → epoch) that are still its and live;
        the partitions renewed. One missing from the answer is lost."""
        if not held:
            return set()
        ps = sorted(held)
        with self.engine.begin() as conn:
            _lock_wait(conn, LOCK_WAIT_MS)
            rows = conn.execute(
                sa.text(
                    f"UPDATE cluster_leases l SET expires_at = {_TTL} "
                    "FROM unnest(CAST(:ps AS integer[]), CAST(:es AS bigint[])) AS h(p, e) "
                    "WHERE l.partition = h.p AND l.owner = :w AND l.epoch = h.e "
                    "AND l.expires_at > clock_timestamp() RETURNING l.partition"
                ),
                {"w": worker, "ps": ps, "es": [held[p] for p in ps], "ttl_ms": self.ttl_ms},
            )
            return {int(p) for (p,) in rows}

    def release(self, worker: str, partition: int, epoch: int) -> bool:
        """Give a partition back (rebalancing, stopping); the epoch stays for the next claim."""
        with self.engine.begin() as conn:
            _lock_wait(conn, LOCK_WAIT_MS)
            done = conn.execute(
                sa.text(
                    "UPDATE cluster_leases SET owner = NULL, expires_at = NULL, "
                    "changed_at = clock_timestamp() "
                    "WHERE partition = :p AND owner = :w AND epoch = :e"
                ),
                {"p": partition, "w": worker, "e": epoch},
            )
            return bool(done.rowcount)

    def leave(self, worker: str) -> None:
        """Leave the members at once (a clean stop), so the others rebalance at their next
        tick instead of a TTL later."""
        with self.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM cluster_members WHERE worker = :w"), {"w": worker})


def lease_engine(url: str, ttl_ms: int = LEASE_TTL_MS) -> sa.Engine:
    """An engine for the lease rounds: a call to a database that cannot be reached fails
    within a third of the TTL (connect timeout, TCP user timeout, keepalives) instead of
    hanging the round past the lease, so a cut-off worker notices and stops in time."""
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    limit_s = max(1, ttl_ms // 3000)
    return sa.create_engine(
        url,
        pool_pre_ping=True,
        pool_size=2,
        connect_args={
            "connect_timeout": limit_s,
            "tcp_user_timeout": limit_s * 1000,
            "keepalives": 1,
            "keepalives_idle": 1,
            "keepalives_interval": 1,
            "keepalives_count": limit_s,
            # the server's side too: a round cut off mid-transaction would hold its lease rows
            # (FOR UPDATE) until the server's keepalive gives up, hours later, and the others
            # claim with SKIP LOCKED (tests/cluster/test_netns_lease_cut.py)
            "options": f"-c idle_in_transaction_session_timeout={limit_s * 1000}",
        },
    )
