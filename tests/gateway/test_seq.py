from __future__ import annotations

from pathlib import Path

from gateway.publisher import SeqCounter


def test_seq_continues_after_restart_without_reuse(tmp_path: Path) -> None:
    a = SeqCounter(tmp_path / "gw.seq")
    assert [a.next() for _ in range(3)] == [1, 2, 3]
    b = SeqCounter(tmp_path / "gw.seq")  # a new process after a crash
    assert b.last == 3
    assert b.next() == 4
