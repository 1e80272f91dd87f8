"""Data files: durations as people write them, YAML problems with their line."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerts.datafile import DataFileError, format_duration, load_yaml, parse_duration


@pytest.mark.parametrize(
    ("text", "ms"),
    [("500ms", 500), ("30s", 30_000), ("5m", 300_000), ("12h", 43_200_000), ("1d", 86_400_000),
     ("1h30m", 5_400_000)],
)  # fmt: skip
def test_durations(text: str, ms: int) -> None:
    assert parse_duration(text) == ms
    assert parse_duration(format_duration(ms)) == ms


@pytest.mark.parametrize("bad", ["", "5", "5 m", "m5", "5min", "-5m", 300])
def test_bad_durations_say_what_is_expected(bad: object) -> None:
    with pytest.raises(ValueError, match="such as 30s, 5m, 12h or 1d"):
        parse_duration(bad)


def test_nodes_know_their_line(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("top:\n  list:\n    - {x: 1}\n    - y: [2\n", encoding="utf-8")
    with pytest.raises(DataFileError, match=f"{path}:5: not valid YAML"):
        load_yaml(path)
    path.write_text("top:\n  list:\n    - {x: 1}\n    - x: two\n", encoding="utf-8")
    second = load_yaml(path).child("top").child("list").seq()[1]
    with pytest.raises(
        DataFileError, match=r"a.yaml:4: expected a number, got a text \(top.list\[1\].x\)"
    ):
        second.child("x").number()
