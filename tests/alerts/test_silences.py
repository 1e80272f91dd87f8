"""Silences match on alarm labels, within their window only."""

from __future__ import annotations

import pytest

from alerts.silences import Matcher, Silence, SilenceBook, SilenceError

LIFT = {
    "rule": "elevator-dangerous-fault",
    "estate": "e1",
    "device": "lift-2",
    "severity": "critical",
}


def silence(*matchers: Matcher, starts: int = 0, ends: int = 100) -> Silence:
    return Silence("s1", matchers, starts, ends, "王工", "年检", 0)


def test_matches_all_of_its_matchers_in_its_window() -> None:
    s = silence(Matcher.parse("estate", "e1"), Matcher.parse("device", "lift-2"))
    assert s.matches(LIFT)
    assert not s.matches({**LIFT, "device": "lift-3"})
    assert not s.matches({**LIFT, "estate": "e2"})
    book = SilenceBook([s])
    assert book.match(LIFT, 50) is s
    assert book.match(LIFT, 100) is None  # ended
    assert s.estate == "e1"


def test_operators() -> None:
    assert Matcher.parse("device", "lift-.*", "=~").matches(LIFT)
    assert not Matcher.parse("device", "lift-1", "=").matches(LIFT)
    assert Matcher.parse("device", "lift-1", "!=").matches(LIFT)
    assert Matcher.parse("severity", "minor|warning", "!~").matches(LIFT)


def test_refuses_what_would_mute_everything_or_nothing() -> None:
    with pytest.raises(SilenceError, match="at least one matcher"):
        silence()
    with pytest.raises(SilenceError, match="end after"):
        silence(Matcher.parse("estate", "e1"), starts=10, ends=10)
    with pytest.raises(SilenceError, match="unknown label"):
        Matcher.parse("colour", "red")
    with pytest.raises(SilenceError, match="not a regular expression"):
        Matcher.parse("device", "lift-(", "=~")
