"""Every duration from one definition (issue 13): over random alarm timelines (late data,
restarts, acknowledgements before and after escalation), no negative or impossible duration
in the API, the dashboard's formatting or the yearly report."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.alarms.model import alarm_durations
from alerts.engine import AlertEngine
from ingest.pipeline import Delivery
from ingest.state import StateStore
from ingest.telemetry import EstateBatch
from protocol.catalog import default_catalog
from protocol.clock import SHANGHAI
from protocol.messages import Event, Reading
from supervision.report import ReportInputs, estate_report

CAT = default_catalog()
MIN = 60_000
HOUR = 60 * MIN
T0 = int(datetime(2026, 3, 2, 9, 0, tzinfo=SHANGHAI).timestamp() * 1000)
STATIC = Path(__file__).resolve().parents[2] / "api" / "static"

# One step of a timeline: (what, lag of the data behind the wall clock, a number)
step = st.one_of(
    st.tuples(st.just("advance"), st.just(0), st.integers(1, 40 * MIN)),
    st.tuples(st.just("pressure"), st.sampled_from([0, 0, 3 * MIN, 2 * HOUR]), st.booleans()),
    st.tuples(st.just("trapped"), st.sampled_from([0, 0, 30 * MIN, 3 * HOUR]), st.integers(0, 1)),
    st.tuples(st.just("released"), st.sampled_from([0, 30 * MIN]), st.integers(0, 1)),
    st.tuples(st.just("ack"), st.just(0), st.integers(0, 5)),
    st.tuples(st.just("resolve"), st.just(0), st.integers(0, 5)),
    st.tuples(st.just("restart"), st.just(0), st.just(0)),
    st.tuples(st.just("tick"), st.just(0), st.integers(1, 8)),
)

seen_durations: list[int] = []


def _delivery(now: int, readings: list[Reading] = (), events: list[Event] = ()) -> Delivery:  # type: ignore[assignment]
    return Delivery(
        topic="estates/e1/gw/gw-01/telemetry",
        received_ms=now,
        estate="e1",
        gateway="gw-01",
        batch=EstateBatch("e1", "gw-01", list(readings), list(events)),
    )


def _check_alarm(a: dict[str, Any], now: int) -> None:
    raised, acked, closed = a["raised_ms"], a["acked_ms"], a["closed_ms"]
    for key in ("to_ack_ms", "to_resolve_ms"):
        v = a[key]
        if v is not None:
            assert 0 <= v <= now - raised, (key, a)
            seen_durations.append(v)
    if a["state"] != "pending":
        assert raised is not None and raised <= now
        assert a["fired_ms"] is not None and a["fired_ms"] <= raised  # data never ahead
    if acked is not None:
        assert raised <= acked <= now, a  # acknowledged after it reached the control room
    if closed is not None:
        assert raised is None or raised <= closed <= now, a
        assert acked is None or acked <= closed, a
    if a["resolved_ms"] is not None:
        assert a["started_ms"] <= a["resolved_ms"], a
    assert a == {**a, **alarm_durations(raised, acked, closed)}  # one definition


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(step, min_size=3, max_size=25))
def _timeline(tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, int, int]]) -> None:
    db = tmp_path_factory.mktemp("t") / "s.db"
    state = StateStore.open(f"sqlite:///{db}")
    state.add_estate("e1", "东苑小区", "呼和浩特市")
    state.add_gateway("e1", "gw-01")
    state.add_devices(
        [("e1", f"lift-{i}", "elevator", "gw-01", T0) for i in range(2)]
        + [("e1", "wp-1", "water_pressure", "gw-01", T0)]
    )
    now = [T0]
    engine = AlertEngine(state.engine, CAT, clock=lambda: now[0], startup_grace_ms=0)
    try:
        for what, lag, n in steps:
            data = now[0] - lag
            if what == "advance":
                now[0] += n
            elif what == "pressure":
                m = {"pressure_mpa": 0.05 if n else 0.3}
                engine.on_committed(
                    [_delivery(now[0], [Reading("wp-1", "water_pressure", data, m)])]
                )
            elif what in ("trapped", "released"):
                ev = Event(f"lift-{n}", "elevator", data, f"elevator.{what}", {"floor": 3})
                engine.on_committed([_delivery(now[0], events=[ev])])
            elif what in ("ack", "resolve"):
                open_ = engine.list_alarms("e1", ["firing", "acknowledged"], None, 100, 0)
                if open_:
                    a = open_[n % len(open_)]
                    if what == "ack" and a["state"] == "firing":
                        engine.acknowledge(a["id"], "op")
                    elif what == "resolve":
                        engine.resolve(a["id"], "op")
            elif what == "restart":
                engine.stop()
                engine = AlertEngine(state.engine, CAT, clock=lambda: now[0], startup_grace_ms=0)
            else:
                for _ in range(n):
                    now[0] += 37_000  # escalation steps fall due within a few ticks
                    engine.tick()
        for a in engine.list_alarms("e1", None, None, 1000, 0):
            _check_alarm(a, now[0])
        for r in engine.rescues("e1"):
            assert r["duration_ms"] is None or r["duration_ms"] >= 0, r
        report = estate_report(
            ReportInputs(state, CAT, engine.plans, lambda _e, _lo, _hi: {}),
            {"id": "e1", "name": "东苑小区", "region": "呼和浩特市"},
            2026,
            now[0],
        )
        for key in ("mean_ack_min", "mean_resolve_min"):
            assert report[key] is None or report[key] >= 0, report
        rescues = report["rescues"]
        for key in ("mean_min", "max_min"):
            assert rescues[key] is None or rescues[key] >= 0, rescues
    finally:
        engine.stop()
        state.close()


def test_no_negative_or_impossible_duration_over_random_alarm_timelines(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    seen_durations.clear()
    _timeline(tmp_path_factory)
    # The dashboard formats exactly these figures; its formatter never shows a negative one
    # (nor turns one into a plausible positive: it used Math.abs).
    values = [*sorted(set(seen_durations)), -169 * MIN, -1, 0, 59_999, 61 * MIN]
    shown = _format_in_the_dashboard(values)
    for v, text in zip(values, shown, strict=True):
        assert "-" not in text and "−" not in text, (v, text)
        if v < 0:
            assert text == _format_in_the_dashboard([0])[0]


def _format_in_the_dashboard(values: list[int]) -> list[str]:
    script = f"""
globalThis.localStorage = {{ getItem: () => null, setItem: () => {{}} }};
const fs = await import("node:fs");
globalThis.fetch = async () => ({{ ok: true, json: async () =>
  JSON.parse(fs.readFileSync({json.dumps(str(STATIC / "messages.json"))}, "utf8")) }});
const m = await import({json.dumps((STATIC / "i18n.js").as_uri())});
await m.loadMessages();
console.log(JSON.stringify({json.dumps(values)}.map((v) => m.fmtDuration(v))));
"""
    out = subprocess.run(
        ["node", "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout))
