"""Partition leases in a real PostgreSQL (cluster.pg, cluster.owner), in one process: the
lease rules applied by SQL with the database's clock, the commit fence, and workers that
claim, keep, hand over and take over partitions. The same across hosts: test_netns_leases.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.leases import LeaseTable
from cluster.owner import PartitionOwner
from cluster.partitions import loads, partition_of
from cluster.pg import LeaseLost, LeaseStore, PartitionCountMismatch, fence, fenced, lease_engine
from tests.support import waiter

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

TTL_MS = 1_200
RENEW_MS = 200


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    eng = lease_engine(database_url, TTL_MS)
    yield eng
    eng.dispose()


def _store(engine: sa.Engine, partitions: int = 8, ttl_ms: int = TTL_MS) -> LeaseStore:
    store = LeaseStore(engine, partitions, ttl_ms)
    store.migrate()
    return store


def _wait(cond: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Seconds until ``cond`` held (the test fails after ``timeout_s``)."""
    start = time.monotonic()
    waiter(timeout_s, every=0.02)(cond, what=what)
    return time.monotonic() - start


def test_claim_renew_release_follow_the_lease_rules(engine: sa.Engine) -> None:
    store = _store(engine)
    assert store.claim("w1", [0, 1]) == {0: 1, 1: 1}
    assert store.claim("w2", [0, 1, 2]) == {2: 1}  # live leases are not claimed, not even twice
    assert store.claim("w1", [0]) == {}
    assert store.renew("w1", {0: 1, 1: 7}) == {0}  # a wrong epoch renews nothing
    assert store.release("w1", 1, 1) and not store.release("w2", 0, 1)
    snap = store.read("w1")
    assert snap.owners() == {0: "w1", 1: None, 2: "w2"} | {p: None for p in range(3, 8)}
    assert snap.members == ["w1"] and snap.leases[1].epoch == 1  # release keeps the epoch
    assert store.claim("w2", [1]) == {1: 2}
    time.sleep(TTL_MS / 1000 + 0.1)  # expiry by the database's clock
    assert store.renew("w2", {1: 2}) == set()  # too late: the holder must claim again
    assert store.read().owners() == dict.fromkeys(range(8))
    assert store.claim("w2", [1]) == {1: 3}  # a new epoch even for the same worker
    assert store.read().members == []  # w1's heartbeat expired too


def test_the_partition_count_is_fixed(engine: sa.Engine) -> None:
    _store(engine, 8)
    with pytest.raises(PartitionCountMismatch, match="ESTATEWATCH_PARTITIONS=8"):
        _store(engine, 16)


def test_a_commit_with_a_lost_epoch_is_fenced(engine: sa.Engine) -> None:
    store = _store(engine)
    assert store.claim("w1", [3]) == {3: 1}
    with fenced(engine, 3, "w1", 1) as conn:
        conn.execute(sa.text("CREATE TABLE book (p int, who text)"))
        conn.execute(sa.text("INSERT INTO book VALUES (3, 'w1')"))
    time.sleep(TTL_MS / 1000 + 0.1)
    assert store.claim("w2", [3]) == {3: 2}
    late = r"no longer w1's at epoch 1 \(held by w2 at epoch 2\)"
    with pytest.raises(LeaseLost, match=late), fenced(engine, 3, "w1", 1) as conn:
        conn.execute(sa.text("INSERT INTO book VALUES (3, 'w1 late')"))
    with fenced(engine, 3, "w2", 2) as conn:
        conn.execute(sa.text("INSERT INTO book VALUES (3, 'w2')"))
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT who FROM book ORDER BY who")).scalars().all()
    assert rows == ["w1", "w2"]  # the late write was rolled back with its fence


def test_a_takeover_waits_for_a_commit_in_flight_and_a_vanished_one_is_ended(
    engine: sa.Engine,
) -> None:
    store = _store(engine, ttl_ms=300)
    assert store.claim("w1", [5]) == {5: 1}
    conn = engine.connect()
    tx = conn.begin()
    fence(conn, 5, "w1", 1, idle_timeout_ms=1_500)  # w1 mid-commit, then silent (cut off)
    time.sleep(0.4)  # its lease has expired, its row lock has not
    assert store.claim("w2", [5]) == {}  # skipped while the commit may still land
    # the server ends the silent transaction: its lock goes, its commit never lands
    _wait(lambda: store.claim("w2", [5]) == {5: 2}, 5, "the idle fenced transaction is ended")
    with pytest.raises(sa.exc.DBAPIError):
        tx.commit()
    conn.close()


class Worker:
    def __init__(self, store: LeaseStore, name: str, log: list[tuple[str, str, int]]) -> None:
        self.owner = PartitionOwner(
            store,
            name,
            on_acquire=lambda p, e: log.append(("acquire", name, p)),
            on_lose=lambda p: log.append(("lose", name, p)),
            renew_ms=RENEW_MS,
        )


def test_workers_spread_hand_over_and_take_over_partitions(engine: sa.Engine) -> None:
    store = _store(engine, partitions=16)
    events: list[tuple[str, str, int]] = []
    workers = {n: Worker(LeaseStore(engine, 16, TTL_MS), n, events) for n in ("a", "b", "c")}
    overlap: list[str] = []
    sampling = threading.Event()

    def sample() -> None:  # no partition is ever held by two workers at once
        while not sampling.is_set():
            seen: dict[int, str] = {}
            for n, w in list(workers.items()):
                for p in w.owner.held:
                    if p in seen:
                        overlap.append(f"{p}: {seen[p]} and {n}")
                    seen[p] = n
            time.sleep(0.005)

    def held() -> dict[int, str]:
        return {p: n for n, w in workers.items() for p in w.owner.held}

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        workers["a"].owner.start()
        _wait(lambda: len(held()) == 16, 3, "a alone holds all 16")
        workers["b"].owner.start()
        workers["c"].owner.start()
        _wait(
            lambda: sorted(loads(held(), list(workers)).values()) == [5, 5, 6],
            5,
            "a join rebalances to 5/5/6",
        )
        b = workers.pop("b").owner  # dead: no longer sampled
        dead = b.held
        b.stop(release=False)  # as kill -9 or a pause: nothing released, the leases expire
        took = _wait(
            lambda: set(dead) <= {p for p, n in held().items() if n in "ac"},
            5,
            "b's partitions move to a and c",
        )
        assert took <= (TTL_MS + 2 * RENEW_MS) / 1000 + 0.5
        assert sorted(loads(held(), ["a", "c"]).values()) == [8, 8]
        a = workers["a"].owner
        names = [f"estate-{i}" for i in range(100)]
        mine = next(e for e in names if partition_of(e, 16) in a.held)
        other = next(e for e in names if partition_of(e, 16) not in a.held)
        assert a.owns(mine) and not a.owns(other)
        # b was paused, not dead: it wakes still thinking it holds its partitions (its
        # threads were stopped, so only the fence can tell it), and its next commit is fenced
        p = min(dead)
        assert p in b.held
        with pytest.raises(LeaseLost), engine.begin() as conn:
            b.fence(conn, p)
        assert p not in b.held and ("lose", "b", p) in events
        workers["c"].owner.stop()  # a clean stop: a takes c's at its next round
        _wait(lambda: len(workers["a"].owner.held) == 16, 1, "a takes over c's at once")
    finally:
        sampling.set()
        sampler.join()
        for w in workers.values():
            w.owner.stop()
    assert not overlap
    assert store.read().members == []


# One operation on the lease table: (what, worker, partition, epoch offset from the current).
_OPS = st.tuples(
    st.sampled_from(["claim", "renew", "release", "commit", "expire"]),
    st.sampled_from(["w1", "w2"]),
    st.integers(0, 2),
    st.integers(-1, 1),
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(_OPS, max_size=20))
def test_the_sql_applies_the_same_rules_as_the_pure_lease_table(
    engine: sa.Engine, ops: list[tuple[str, str, int, int]]
) -> None:
    """cluster.pg against cluster.leases.LeaseTable, its reference: the same answers and the
    same rows after any sequence of claims, renewals, releases, commits and expiries (the
    model's clock stands still; an expiry moves a row's expiry into the past in both)."""
    store = _store(engine, partitions=3, ttl_ms=600_000)
    with engine.begin() as conn:
        fresh = "UPDATE cluster_leases SET owner = NULL, epoch = 0, expires_at = NULL"
        conn.execute(sa.text(fresh))
    model = LeaseTable(partitions=3, ttl_ms=600_000)
    for what, worker, p, offset in ops:
        epoch = model.leases[p].epoch + offset
        if what == "claim":
            got: object = store.claim(worker, [p]).get(p)
            want: object = model.claim(p, worker, 0)
        elif what == "renew":
            got, want = store.renew(worker, {p: epoch}) == {p}, model.renew(p, worker, epoch, 0)
        elif what == "release":
            got, want = store.release(worker, p, epoch), model.release(p, worker, epoch)
        elif what == "commit":
            try:
                with fenced(engine, p, worker, epoch):
                    got = True
            except LeaseLost:
                got = False
            want = model.commit(p, worker, epoch, 0)
        else:
            with engine.begin() as conn:
                past = "clock_timestamp() - interval '1 second'"
                conn.execute(
                    sa.text(f"UPDATE cluster_leases SET expires_at = {past} WHERE partition = :p"),
                    {"p": p},
                )
            model.leases[p] = replace(model.leases[p], expires_ms=0)
            got = want = None
        assert got == want, (what, worker, p, epoch)
        snap = store.read()
        assert snap.owners() == model.owners(0)
        assert {q: le.epoch for q, le in snap.leases.items()} == {
            q: le.epoch for q, le in model.leases.items()
        }
