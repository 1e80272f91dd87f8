"""Partition ownership across hosts (issue 16): three lease workers (``python -m
cluster.worker``) on three network namespaces, PostgreSQL on a fourth. Kill -9 one: its
partitions move within 30 s. Cut another's link in the middle of a commit (its transaction
open in the database): the server ends that transaction, the worker lets go before anyone
takes over, the others take its partitions, and a commit with its old epoch is fenced.
Restore both: an even spread again. A sampler reads every worker's own view (its status file,
written before it lets a partition go) all along: no partition is ever held by two workers at
once. Every fenced probe row the workers committed meanwhile belongs to one owner's epoch at a
time."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from cluster.partitions import loads
from cluster.worker import FENCED
from tests.cluster.netns import Network
from tests.support import waiter

PARTITIONS = 64
TTL_MS = 5_000  # margin 1 s: a worker lets go 1 s before the database may expire it
RENEW_MS = 1_000
TAKEOVER_S = 30  # the bound; the lease settings make it ≤ TTL + a round


class Views:
    """The workers' own views of what they hold, sampled from their status files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.live: dict[str, Path] = {}
        self.overlaps: list[str] = []
        self.samples = 0
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def status(self, path: Path) -> dict[str, object]:
        try:
            return dict(json.loads(path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def held(self) -> dict[str, dict[int, int]]:
        with self._lock:
            live = dict(self.live)
        out = {}
        for name, path in live.items():
            epochs = self.status(path).get("epochs", {})
            assert isinstance(epochs, dict)
            out[name] = {int(p): int(e) for p, e in epochs.items()}
        return out

    def owners(self) -> dict[int, str]:
        return {p: w for w, ps in self.held().items() for p in ps}

    def _sample(self) -> None:
        while not self._done.wait(0.05):
            seen: dict[int, str] = {}
            for worker, ps in self.held().items():
                for p in ps:
                    if p in seen:
                        self.overlaps.append(f"partition {p}: {seen[p]} and {worker}")
                    seen[p] = worker
            self.samples += 1

    def add(self, worker: str, path: Path) -> None:
        with self._lock:
            self.live[worker] = path

    def drop(self, worker: str) -> None:
        with self._lock:
            del self.live[worker]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _wait(cond: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Seconds until ``cond`` held (the test fails after ``timeout_s``)."""
    start = time.monotonic()
    waiter(timeout_s, every=0.05)(cond, what=what)
    return time.monotonic() - start


def _even(views: Views, workers: list[str]) -> bool:
    owners = views.owners()
    spread = sorted(loads(owners, workers).values())
    return (
        len(owners) == PARTITIONS
        and spread == [21, 21, 22]
        and set(owners.values()) == set(workers)
    )


def test_partitions_move_on_kill_and_cut_and_come_back_even(
    network: Network, netns_postgres: str, tmp_path: Path
) -> None:
    base = [
        sys.executable,
        "-m",
        "cluster.worker",
        "--dsn",
        netns_postgres,
        "--ttl-ms",
        str(TTL_MS),
    ]
    views = Views(tmp_path)
    db = sa.create_engine(netns_postgres.replace("postgresql:", "postgresql+psycopg:"))

    def start(worker: str, host: str, status: str) -> None:
        path = tmp_path / status
        log = (tmp_path / f"{status}.log").open("w")
        argv = [*base, "--worker", worker, "run", "--partitions", str(PARTITIONS)]
        argv += ["--renew-ms", str(RENEW_MS), "--status", str(path)]
        # w2's commits take a while, so its cable can be pulled in the middle of one
        hold = "0.3" if worker == "w2" else "0.05"
        argv += ["--probe-s", "0.3", "--probe-hold-s", hold]
        procs[worker] = network.popen(host, argv, stdout=log, stderr=log, cwd=Path.cwd())
        views.add(worker, path)

    for name in ("w1", "w2", "w3"):
        network.add(name)
    procs: dict[str, object] = {}
    views.start()
    try:
        for name in ("w1", "w2", "w3"):
            start(name, name, f"{name}.json")
        _wait(lambda: _even(views, ["w1", "w2", "w3"]), 40, "64 partitions spread 21/21/22")

        # kill -9 w1: nothing released; its leases expire and w2, w3 claim them
        dead = set(views.held()["w1"])
        procs["w1"].kill()  # type: ignore[attr-defined]
        views.drop("w1")
        took = _wait(lambda: dead <= set(views.owners()), TAKEOVER_S, "w1's partitions move")
        print(f"kill -9: {len(dead)} partitions moved in {took:.1f} s")
        _wait(lambda: _even_two(views, ["w2", "w3"]), 5, "32/32 on w2 and w3")

        # cut w2 off: it lets its partitions go (on its own clock, before they expire), w3 takes
        before = views.held()["w2"]
        pid = _cut_mid_commit(network, "w2", db)
        took = _wait(
            lambda: set(views.held()["w3"]) == set(range(PARTITIONS)), TAKEOVER_S, "w3 takes all"
        )
        print(f"cut link: {len(before)} partitions moved in {took:.1f} s")
        # the server ended the commit w2 was in when cut (idle in transaction, a third of the
        # TTL), so its lease row was free for w3; what it wrote there never landed (below)
        assert _backend(db, pid) is None
        assert views.held()["w2"] == {}
        p, old = min(before.items())
        fenced = network.run(
            "w2", [*base, "--worker", "w2", "commit", "--partition", str(p), "--epoch", str(old)]
        )
        assert fenced.returncode != 0, "cut off: nothing reaches the database"
        network.restore("w2")
        commit = [*base, "--worker", "w2", "commit", "--partition", str(p), "--epoch", str(old)]
        fenced = network.run("w2", commit)
        # The first connection just after the cable is back can be closed by the server (seen
        # once in make test): what is asserted is the verdict once a commit reaches it.
        for _ in range(5):
            if "connection failed" not in fenced.stdout + fenced.stderr:
                break
            time.sleep(1)
            fenced = network.run("w2", commit)
        assert fenced.returncode == FENCED, fenced.stdout + fenced.stderr
        assert "lease lost" in fenced.stdout
        # what w2 was committing when its cable went: failed, never landed (checked below)
        failed = (tmp_path / "w2.json.log").read_text().count("probe: partition")
        print(f"cut link: {failed} of w2's commits failed in flight or after the cut")

        # w1 back (a new process, the same name) and w2 reconnected: an even spread again
        start("w1", "w1", "w1-again.json")
        took = _wait(lambda: _even(views, ["w1", "w2", "w3"]), 30, "rebalanced to 21/21/22")
        print(f"restore: even again in {took:.1f} s")
        # every partition's owner commits through the fence at least once (a busy machine can
        # leave a few unprobed at the moment the spread is even; wait for them, not a race)
        _wait(lambda: _probed(db) == PARTITIONS, 30, "a fenced commit in every partition")
    finally:
        views.stop()
        db.dispose()
    assert views.samples > 100 and not views.overlaps, views.overlaps[:5]
    _check_probe_rows(netns_postgres, views.owners())


def _probed(db: sa.Engine) -> int:
    with db.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(DISTINCT partition) FROM cluster_probe")
            ).scalar_one()
        )


def _backend(db: sa.Engine, pid: int) -> tuple[str, object] | None:
    with db.connect() as conn:
        row = conn.execute(
            sa.text("SELECT state, xact_start FROM pg_stat_activity WHERE pid = :p"), {"p": pid}
        ).one_or_none()
    return None if row is None else (str(row[0]), row[1])


def _cut_mid_commit(network: Network, host: str, db: sa.Engine) -> int:
    """Pull the host's cable while one of its fenced commits is open (seen from the
    database: a probe transaction idle in it); the pid of that transaction's backend."""
    find = sa.text(
        "SELECT pid, xact_start FROM pg_stat_activity WHERE client_addr = :a "
        "AND state = 'idle in transaction' AND query LIKE 'INSERT INTO cluster_probe%' LIMIT 1"
    )
    for _ in range(20):
        with db.connect() as conn:
            row = conn.execute(find, {"a": network.hosts[host].address}).one_or_none()
        if row is None:
            time.sleep(0.02)
            continue
        network.cut(host)
        if _backend(db, row[0]) == ("idle in transaction", row[1]):
            return int(row[0])  # still the same transaction, after the cut: mid-commit
        network.restore(host)  # it committed meanwhile: try the next one
    raise AssertionError(f"{host} never seen in the middle of a commit")


def _even_two(views: Views, workers: list[str]) -> bool:
    owners = views.owners()
    return len(owners) == PARTITIONS and sorted(loads(owners, workers).values()) == [32, 32]


def _check_probe_rows(url: str, owners: dict[int, str]) -> None:
    """The fenced writes: per partition, in commit order, the epochs never go back and each
    epoch is one worker's; the lease table agrees with what the workers say they hold."""
    engine = sa.create_engine(url.replace("postgresql:", "postgresql+psycopg:"))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT partition, worker, epoch FROM cluster_probe ORDER BY id")
            ).all()
            leases = conn.execute(sa.text("SELECT partition, owner FROM cluster_leases")).all()
    finally:
        engine.dispose()
    last: dict[int, int] = {}
    writer: dict[tuple[int, int], str] = {}
    for p, worker, epoch in rows:
        assert epoch >= last.get(p, 0), f"partition {p}: epoch {epoch} committed after {last[p]}"
        assert writer.setdefault((p, epoch), worker) == worker
        last[p] = epoch
    assert len(rows) > PARTITIONS and len(last) == PARTITIONS
    assert {p: o for p, o in leases} == owners
