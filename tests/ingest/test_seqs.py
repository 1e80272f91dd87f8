from __future__ import annotations

from ingest.seqs import MAX_TRACKED_GAP, GatewaySeqs, Verdict


def test_in_order_messages_are_new_and_nothing_is_lost() -> None:
    g = GatewaySeqs()
    for seq in range(1, 6):
        assert g.judge(seq) is Verdict.NEW
        g.accept(seq)
    assert (g.max_seq, g.lost) == (5, 0)
    assert g.judge(3) is Verdict.UNSURE  # below max and not a gap: the store must say


def test_a_jump_is_a_gap_until_the_missing_messages_arrive() -> None:
    g = GatewaySeqs()
    g.accept(1)
    g.accept(5)  # a live event sent first, while 2..4 wait in the gateway's buffer
    assert g.missing == {2, 3, 4} and g.lost == 3
    assert g.judge(3) is Verdict.FILLS_GAP
    g.accept(3)
    assert g.lost == 2
    g.accept(2)
    g.accept(4)
    assert g.lost == 0 and g.max_seq == 5


def test_a_huge_jump_is_counted_not_remembered() -> None:
    g = GatewaySeqs()
    g.accept(1)
    g.accept(MAX_TRACKED_GAP + 10)
    assert g.missing == set()
    assert g.lost == MAX_TRACKED_GAP + 8
