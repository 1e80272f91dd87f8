"""Adversary tests: an operator's silence cannot stall the alert engine.

Before, matchers were Python regexes run against every open alarm (other estates' too: the
estate matcher ran last) at creation and every second, so ``(.*.*.*)*!`` held the interpreter
lock for seconds per alarm. Device ids here are 11 characters: about 4 s of backtracking per
match under Python ``re``, microseconds under RE2.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from alerts.engine import AlertEngine
from alerts.silences import Matcher, Silence, SilenceBook, SilenceError
from alerts.store import AlertStore
from protocol.catalog import default_catalog
from tests.alerts.conftest import HOUR, SimClock, Site
from tests.api.test_alerts_api import World, world  # noqa: F401  (the fixture)

EVIL = "(.*.*.*)*!"
LONG_ID = "abcdefghijk"  # 11 characters


def test_a_backtracking_pattern_matches_in_linear_time() -> None:
    m = Matcher.parse("device", EVIL, "=~")
    started = time.perf_counter()
    assert not m.matches({"device": LONG_ID})
    assert time.perf_counter() - started < 0.2
    started = time.perf_counter()
    assert not m.matches({"device": "a" * 10_000})  # Python's re: longer than the universe
    assert time.perf_counter() - started < 0.2


def test_what_re2_cannot_run_in_linear_time_is_refused_with_the_reason() -> None:
    with pytest.raises(SilenceError, match="RE2"):
        Matcher.parse("device", r"(lift)-\1", "=~")  # a backreference
    with pytest.raises(SilenceError, match="RE2"):
        Matcher.parse("device", "(?=lift)lift-1", "=~")  # lookahead
    with pytest.raises(SilenceError, match="at most"):
        Matcher.parse("device", "a" * 1000, "=")


def silence_on_e1(pattern: str, comment: str = "试探") -> dict[str, Any]:
    """The body of an hour's silence in e1 of the devices whose id matches ``pattern``."""
    return {
        "estate": "e1",
        "matchers": [{"name": "device", "op": "=~", "value": pattern}],
        "duration_min": 60,
        "comment": comment,
    }


def test_a_post_with_a_backtracking_pattern_answers_at_once(world: World) -> None:  # noqa: F811
    Site(world.engine, world.clock, estate="e1").reading(LONG_ID, "fire_pump", fault=True)
    body = silence_on_e1(EVIL)
    started = time.perf_counter()
    r = world.post("op1", "/api/v1/silences", body)
    assert r.status_code == 201, r.text
    assert time.perf_counter() - started < 1.0
    (alarm,) = world.engine.list_alarms(estate="e1")
    assert alarm["silenced_by"] is None  # no "!" in the id: matched by nothing


def test_a_pattern_re2_refuses_is_a_clear_error_at_creation(world: World) -> None:  # noqa: F811
    body = silence_on_e1("(?=lift)lift-1", "lookahead")
    r = world.post("op1", "/api/v1/silences", body)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "invalid_request" and "RE2" in error["message"]
    assert world.engine.list_silences() == []


def test_another_estates_alarms_flow_while_a_silence_is_active(world: World) -> None:  # noqa: F811
    e2 = Site(world.engine, world.clock, estate="e2")
    for i in range(2):
        e2.reading(f"{LONG_ID[:-1]}{i}", "fire_pump", fault=True)
    body = silence_on_e1(EVIL)
    started = time.perf_counter()
    assert world.post("op1", "/api/v1/silences", body).status_code == 201
    for _ in range(5):  # five seconds of the engine's clock
        world.clock.advance(1000)
        world.engine.tick()
    e2.reading("abcdefghijz", "fire_pump", fault=True)
    assert time.perf_counter() - started < 2.0
    alarms = world.engine.list_alarms(estate="e2")
    assert len(alarms) == 3 and all(a["silenced_by"] is None for a in alarms)


def test_matching_is_indexed_by_estate_and_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = Silence.matches

    def counted(self: Silence, labels: Mapping[str, str]) -> bool:
        calls.append(self.id)
        return real(self, labels)

    monkeypatch.setattr(Silence, "matches", counted)
    e1 = Silence("s-e1", (Matcher.parse("device", "lift-.*", "=~"),
                          Matcher.parse("estate", "e1")), 0, 100, "op1", "", 0)  # fmt: skip
    everywhere = Silence("s-all", (Matcher.parse("rule", "drill"),), 0, 200, "admin", "", 0)
    book = SilenceBook([e1, everywhere])
    lift_e1 = {"estate": "e1", "device": "lift-1", "rule": "r"}
    lift_e2 = {"estate": "e2", "device": "lift-1", "rule": "r"}

    assert book.match(lift_e2, 10) is None
    assert calls == ["s-all"]  # e1's silence is never tried on e2's alarm
    calls.clear()
    assert book.match(lift_e1, 10) is e1
    for now in range(11, 60):  # the engine asks every second: answered from the cache
        assert book.match(lift_e1, now) is e1
        assert book.match(lift_e2, now) is None
    assert calls == ["s-e1"]
    calls.clear()
    assert book.match(lift_e1, 100) is None  # e1's silence ended: asked again
    assert calls == ["s-all"]
    calls.clear()
    book.add(Silence("s-new", (Matcher.parse("device", "lift-1"),), 0, 300, "admin", "", 0))
    assert book.match(lift_e2, 101) is not None and calls  # a new silence: asked again


def test_the_estate_matcher_runs_first() -> None:
    seen: list[str] = []

    class Labels(dict[str, str]):
        def get(self, key: str, default: str = "") -> str:  # type: ignore[override]
            seen.append(key)
            return super().get(key, default)

    # as the API stores it: the operator's matchers, then the estate
    s = Silence("s", (Matcher.parse("device", EVIL, "=~"), Matcher.parse("estate", "e1")),
                0, 100, "op1", "", 0)  # fmt: skip
    assert not s.matches(Labels(estate="e2", device=LONG_ID))
    assert seen == ["estate"]


def test_a_stored_python_regex_re2_refuses_is_disabled_not_a_crash(tmp_path: Path) -> None:
    db = sa.create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    clock = SimClock()
    store = AlertStore(db)
    store.migrate(clock.now)
    # written by an older version, which took Python regexes
    lookahead = Matcher("device", "(?=lift)lift-1", "=~")
    store.save_silence(
        Silence(
            "si-old",
            (lookahead, Matcher("estate", "e1")),
            clock.now - HOUR,
            clock.now + HOUR,
            "op1",
            "旧",
            clock.now - HOUR,
        )
    )
    engine = AlertEngine(db, default_catalog(), clock)
    try:
        (listed,) = engine.list_silences()
        disabled = [m for m in listed["matchers"] if "disabled" in m]
        assert [m["value"] for m in disabled] == ["(?=lift)lift-1"]
        assert "RE2" in disabled[0]["disabled"]
        # a disabled matcher matches nothing: the alarm is told, not muted
        Site(engine, clock, estate="e1").reading("lift-1", "fire_pump", fault=True)
        (alarm,) = engine.list_alarms(estate="e1")
        assert alarm["silenced_by"] is None
        engine.tick()
    finally:
        engine.stop()
