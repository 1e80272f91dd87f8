"""Lease rules and their properties over random join / leave / crash / pause sequences.

Pure: the lease table is cluster.leases' in-memory reference of the rows, the store's clock is
a number. The PostgreSQL table that applies the same rules: test_pg_leases.py (issue 16).
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from cluster.leases import (
    Lease,
    LeaseTable,
    claim,
    commit_accepted,
    plan,
    release,
    renew,
    takeover_bound_ms,
)

TTL = 15_000
TICK = 5_000


def test_claim_takes_a_free_or_expired_partition_with_the_next_epoch() -> None:
    free = Lease(3)
    held = claim(free, "w1", 1_000, TTL)
    assert held == Lease(3, "w1", 1, 1_000 + TTL)
    assert claim(held, "w2", 1_000 + TTL - 1, TTL) is None  # live: refused
    assert claim(held, "w1", 2_000, TTL) is None  # not even its holder claims it twice
    taken = claim(held, "w2", 1_000 + TTL, TTL)  # expired
    assert taken == Lease(3, "w2", 2, 1_000 + 2 * TTL)


def test_renew_only_by_the_holder_with_the_current_epoch_before_expiry() -> None:
    lease = Lease(0, "w1", 4, 10_000)
    assert renew(lease, "w1", 4, 9_999, TTL) == Lease(0, "w1", 4, 9_999 + TTL)
    assert renew(lease, "w1", 3, 9_000, TTL) is None  # an older epoch
    assert renew(lease, "w2", 4, 9_000, TTL) is None
    assert renew(lease, "w1", 4, 10_000, TTL) is None  # expired: claim again, new epoch


def test_release_keeps_the_epoch_so_the_next_claim_fences_the_releaser() -> None:
    lease = Lease(0, "w1", 4, 10_000)
    assert release(lease, "w2", 4) is None
    gone = release(lease, "w1", 4)
    assert gone == Lease(0, None, 4, 0)
    again = claim(gone, "w2", 5_000, TTL)
    assert again is not None and again.epoch == 5
    assert not commit_accepted(again, "w1", 4, 5_001)


def test_a_commit_is_fenced_by_owner_epoch_and_expiry() -> None:
    lease = Lease(7, "w1", 9, 20_000)
    assert commit_accepted(lease, "w1", 9, 19_999)
    assert not commit_accepted(lease, "w1", 8, 19_999)  # a paused worker's old epoch
    assert not commit_accepted(lease, "w2", 9, 19_999)
    assert not commit_accepted(lease, "w1", 9, 20_000)  # lapsed: renew or claim first


def test_takeover_bound_is_within_the_issues_30_seconds() -> None:
    assert takeover_bound_ms() == 20_000 <= 30_000


WORKERS = ("w0", "w1", "w2", "w3", "w4")


class Cluster(RuleBasedStateMachine):
    """Workers tick every TICK ms (heartbeat, renew, release, claim, then commit what they
    hold); between ticks they join, leave, crash, pause and resume. A resumed worker first
    finishes the commit it was paused in, with the epochs it held when it stopped. A paused
    worker may also be given up for dead and started again under the same name while the old
    process still lives (a zombie): only the epoch tells the two apart.

    Processes are keyed "name#n"; the lease table knows only names."""

    def __init__(self) -> None:
        super().__init__()
        self.table = LeaseTable(partitions=1, ttl_ms=TTL)
        self.now = 0
        self.running: set[str] = set()  # process ids
        self.paused: set[str] = set()
        self.held: dict[str, dict[int, int]] = {}  # process → partition → epoch
        self.granted: dict[int, int] = {}  # partition → newest epoch ever granted
        self.last_change = 0
        self.started = 0

    @initialize(partitions=st.integers(1, 12), first=st.sampled_from(WORKERS))
    def start(self, partitions: int, first: str) -> None:
        self.table = LeaseTable(partitions=partitions, ttl_ms=TTL)
        self._join(first)

    @staticmethod
    def _name(proc: str) -> str:
        return proc.split("#")[0]

    def _names(self, procs: set[str]) -> set[str]:
        return {self._name(p) for p in procs}

    def _join(self, name: str) -> None:
        self.started += 1
        proc = f"{name}#{self.started}"
        self.running.add(proc)
        self.held[proc] = {}
        self.last_change = self.now

    def _commit(self, proc: str) -> None:
        name = self._name(proc)
        for p, epoch in self.held[proc].items():
            if self.table.commit(p, name, epoch, self.now):
                # Accepted only from the newest epoch, by the lease's own owner.
                assert epoch == self.granted[p]
                assert self.table.leases[p].owner == name

    def _tick(self, proc: str) -> None:
        t = self.table
        name = self._name(proc)
        t.heartbeat(name, self.now)
        held = self.held[proc]
        todo = plan(name, held, t.owners(self.now), t.members(self.now), t.partitions)
        for p, epoch in todo.renew.items():
            if not t.renew(p, name, epoch, self.now):
                del held[p]
        for p, epoch in todo.release.items():
            t.release(p, name, epoch)
            del held[p]
        for p in todo.claim:
            epoch = t.claim(p, name, self.now)
            if epoch is not None:
                assert epoch > self.granted.get(p, 0)
                self.granted[p] = epoch
                held[p] = epoch
        self._commit(proc)

    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        self.now += TICK
        order = data.draw(st.permutations(sorted(self.running)))
        for proc in order:
            self._tick(proc)

    @rule(name=st.sampled_from(WORKERS))
    def join(self, name: str) -> None:
        if name not in self._names(self.running | self.paused):
            self._join(name)

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        proc = data.draw(st.sampled_from(sorted(self.running)))
        for p, epoch in self.held.pop(proc).items():
            self.table.release(p, self._name(proc), epoch)
        self.table.leave(self._name(proc))
        self.running.discard(proc)
        self.last_change = self.now

    def _stop_one(self, data: st.DataObject) -> str:
        """A running process, drawn, that stops running now (crashed or paused)."""
        proc = data.draw(st.sampled_from(sorted(self.running)))
        self.running.discard(proc)
        self.last_change = self.now
        return proc

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        del self.held[self._stop_one(data)]  # the process is gone, and what it held with it

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def pause(self, data: st.DataObject) -> None:
        self.paused.add(self._stop_one(data))  # keeps what it believes it holds

    @precondition(lambda self: self.paused)
    @rule(data=st.data())
    def restart_beside_a_zombie(self, data: st.DataObject) -> None:
        """The paused process is taken for dead and a new one starts under its name."""
        proc = data.draw(st.sampled_from(sorted(self.paused)))
        if self._name(proc) not in self._names(self.running):
            self._join(self._name(proc))

    @precondition(lambda self: self.paused)
    @rule(data=st.data())
    def resume(self, data: st.DataObject) -> None:
        proc = data.draw(st.sampled_from(sorted(self.paused)))
        self._commit(proc)  # the commit it was in when it stopped
        self.paused.discard(proc)
        if self._name(proc) in self._names(self.running):
            del self.held[proc]  # its successor runs: the zombie notices and exits
        else:
            self.running.add(proc)
        self.last_change = self.now

    @precondition(lambda self: self.running)
    @rule()
    def settle(self) -> None:
        """No change for one takeover bound: every partition is held by a live lease of a
        running worker, and the loads are balanced."""
        deadline = self.last_change + takeover_bound_ms(TTL, TICK)
        while self.now < deadline:
            self.now += TICK
            for proc in sorted(self.running):
                self._tick(proc)
        owners = self.table.owners(self.now)
        running = self._names(self.running)
        assert all(owners[p] in running for p in owners), owners
        counts = [sum(1 for w in owners.values() if w == r) for r in running]
        assert max(counts) - min(counts) <= 1, counts

    @invariant()
    def one_owner_at_a_time(self) -> None:
        """By the lease rules, at most one process's commit would be accepted per partition."""
        for p in range(self.table.partitions):
            accepting = [
                proc
                for proc, held in self.held.items()
                if p in held and self.table.commit(p, self._name(proc), held[p], self.now)
            ]
            assert len(accepting) <= 1, (p, accepting)

    @invariant()
    def epochs_never_go_back(self) -> None:
        for p, epoch in self.granted.items():
            assert self.table.leases[p].epoch == epoch


TestCluster = Cluster.TestCase
TestCluster.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
