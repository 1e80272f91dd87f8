"""What the recorder acknowledges to the broker, and what it drops as no longer its own.

A message is acknowledged (PUBACK) only once stored, on the connection it came on: an ack on a
newer connection would name another message there. A scaled-out worker (issue 16) drops the
messages of a partition it lost (their session ``revoked``) and those of estates whose commit
was fenced (``NotOwner``): neither stored nor acknowledged, so the broker gives them to the
partition's next owner. Every message's bytes go back to its lane's budget either way.
"""

from __future__ import annotations

from ingest.handoff import ByteBudget
from ingest.lanes import Lane, Outcome, Received, ack_all
from ingest.model import NotOwner

# (lane, the lane's connection then, message ids): a lane's PUBACKs, sent in one write
Acks = list[tuple[Lane, int, list[int]]]


def send_acks(acks: Acks) -> None:
    """PUBACKs, a lane's in one write; none on a connection newer than the messages' (they
    named other messages there) or of a partition lost meanwhile."""
    for lane, generation, mids in acks:
        if lane.generation == generation and not lane.revoked:
            ack_all(lane.client, mids)


def acks_due(pending: list[Received]) -> Acks:
    """(lane, its connection, message ids) of what of ``pending`` is to be acknowledged."""
    acks: dict[Lane, list[int]] = {}
    for item in pending:
        # an ack on a newer connection would name another message: skip it, the
        # broker redelivers and the seq book drops the repeat
        # (QoS 1 at most: the subscriptions are QoS 1, so the broker sends no QoS 2);
        # nor is one of a partition no longer ours acknowledged (its session is closed)
        mine = item.outcome is not Outcome.NOT_OWNER and not item.lane.revoked
        if item.qos > 0 and item.generation == item.lane.generation and mine:
            acks.setdefault(item.lane, []).append(item.mid)
    return [(lane, lane.generation, mids) for lane, mids in acks.items()]


def free(pending: list[Received]) -> None:
    """Give the messages' bytes back to their lanes' budgets."""
    freed: dict[ByteBudget, int] = {}
    for item in pending:
        freed[item.lane.budget] = freed.get(item.lane.budget, 0) + item.weight
    for budget, weight in freed.items():  # one wake-up a lane, not one a message
        budget.release(weight)


def acknowledge(pending: list[Received]) -> None:
    """Acknowledge a committed batch, a lane's PUBACKs in one write, and free its bytes."""
    send_acks(acks_due(pending))
    free(pending)


def drop_revoked(pending: list[Received]) -> list[Received]:
    """Messages of a partition lost while they waited (their session ``revoked``) are
    dropped before the store: not stored, not acknowledged, their bytes freed; the rest."""
    dropped = [p for p in pending if p.lane.revoked]
    if not dropped:
        return pending
    for p in dropped:
        p.outcome = Outcome.NOT_OWNER
    acknowledge(dropped)  # acknowledges none of them: frees their bytes
    return [p for p in pending if p.outcome is None]


def drop_fenced(items: list[Received], written: list[bool], exc: NotOwner) -> int:
    """The store's transaction was fenced: this worker no longer owns ``exc.estates``.
    Nothing of it was written (it rolled back: ``written`` as before it), so their messages
    are marked dropped; how many (0: none of those estates here, not ours to drop)."""
    for p, was in zip(items, written, strict=True):
        p.written = was  # rolled back: that write never happened
    dropped = 0
    for p in items:
        d = p.delivery
        if p.outcome is None and d is not None and d.estate in exc.estates:
            p.outcome = Outcome.NOT_OWNER
            dropped += 1
    return dropped
