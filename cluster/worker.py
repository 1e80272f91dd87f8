"""``python -m cluster.worker``: the lease runner on its own, for testing a deployment's
database and network (and the multi-host tests): ``run`` claims and keeps partitions like
``estatewatch run --role ingest`` does, and with ``--probe-s`` writes one fenced row per held
partition into ``cluster_probe`` that often (what a recorder's commit does, in small);
``commit`` tries one fenced write with a given epoch and says whether the fence let it in.

Exit status of ``commit``: 0 written, 3 fenced (lease lost), 1 the database failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import sqlalchemy as sa

from cluster.owner import PartitionOwner
from cluster.partitions import DEFAULT_PARTITIONS
from cluster.pg import LeaseLost, LeaseStore, fenced, lease_engine

log = logging.getLogger("cluster.worker")

PROBE_DDL = """CREATE TABLE IF NOT EXISTS cluster_probe (
    id bigserial PRIMARY KEY, partition integer NOT NULL, worker text NOT NULL,
    epoch bigint NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())"""
FENCED = 3


def probe_write(conn: sa.Connection, partition: int, worker: str, epoch: int) -> None:
    conn.execute(
        sa.text("INSERT INTO cluster_probe (partition, worker, epoch) VALUES (:p, :w, :e)"),
        {"p": partition, "w": worker, "e": epoch},
    )


def _migrate_probe(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('cluster_probe'))"))
        conn.execute(sa.text(PROBE_DDL))


_status_lock = threading.Lock()


def _write_status(path: Path | None, owner: PartitionOwner) -> None:
    """The held partitions, replaced atomically (another process reads it at any moment);
    read and written under one lock, so an older view never replaces a newer one."""
    if path is None:
        return
    with _status_lock:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(owner.status()))
        tmp.replace(path)


def run(args: argparse.Namespace) -> int:
    engine = lease_engine(args.dsn, args.ttl_ms)
    store = LeaseStore(engine, args.partitions, args.ttl_ms)
    status = Path(args.status) if args.status else None
    owner = PartitionOwner(store, args.worker, renew_ms=args.renew_ms)
    # written from the callbacks too, before on_lose returns: a reader never sees a partition
    # in the file after this worker let it go
    owner.on_lose = lambda p: _write_status(status, owner)
    owner.on_acquire = lambda p, e: _write_status(status, owner)
    stop = threading.Event()

    def _term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    if args.probe_s:
        _migrate_probe(engine)
    owner.start()
    _write_status(status, owner)
    log.info("worker %s: %d partitions, TTL %d ms", args.worker, args.partitions, args.ttl_ms)
    while not stop.wait(args.probe_s or 1.0):
        if args.probe_s:
            _probe(engine, owner, args.probe_hold_s)
        _write_status(status, owner)
    owner.stop()
    _write_status(status, owner)
    return 0


def _probe(engine: sa.Engine, owner: PartitionOwner, hold_s: float) -> None:
    for p in sorted(owner.held):
        try:
            with engine.begin() as conn:
                epoch = owner.fence(conn, p)
                probe_write(conn, p, owner.worker, epoch)
                time.sleep(hold_s)  # a commit that takes a while: a cut lands in the middle
        except LeaseLost as exc:
            log.info("probe: %s", exc)
        except sa.exc.DBAPIError as exc:
            log.warning("probe: partition %d: %s", p, str(exc).splitlines()[0])
            return


def commit(args: argparse.Namespace) -> int:
    engine = lease_engine(args.dsn, args.ttl_ms)
    try:
        _migrate_probe(engine)
        with fenced(engine, args.partition, args.worker, args.epoch) as conn:
            probe_write(conn, args.partition, args.worker, args.epoch)
    except LeaseLost as exc:
        print(exc)
        return FENCED
    except sa.exc.DBAPIError as exc:
        print(f"database: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    print(f"committed partition {args.partition} at epoch {args.epoch}")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cluster.worker", description=__doc__)
    p.add_argument("--dsn", required=True, help="postgresql://user@host:port/db")
    p.add_argument("--worker", default=f"{socket.gethostname()}-{os.getpid()}")
    p.add_argument("--ttl-ms", type=int, default=15_000)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="claim and keep partitions until SIGTERM")
    r.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS)
    r.add_argument("--renew-ms", type=int, default=5_000)
    r.add_argument("--status", help="file to keep the held partitions in (JSON)")
    r.add_argument("--probe-s", type=float, default=0.0, help="fenced probe writes this often")
    r.add_argument("--probe-hold-s", type=float, default=0.0, help="each held open this long")
    c = sub.add_parser("commit", help="one fenced write to cluster_probe")
    c.add_argument("--partition", type=int, required=True)
    c.add_argument("--epoch", type=int, required=True)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s {args.worker} %(levelname)s %(message)s"
    )
    return run(args) if args.command == "run" else commit(args)


if __name__ == "__main__":
    sys.exit(main())
