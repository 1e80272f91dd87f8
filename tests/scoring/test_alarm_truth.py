"""A simulated day through a real Mosquitto and the real service, scored: the scorer must find
every injected fault as a true positive, and the weather episodes of the ledger must be the
ones the scenario states (winter-storm: snowstorm blue at 4 h, yellow at 5 h, orange at
6 h 48 min), each reached by the snowstorm plan. Also ``estatewatch score`` on the ledger file.
"""

from __future__ import annotations

import io
import re
import tempfile
from contextlib import redirect_stdout
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from alerts.quality import alarm_quality, raised_alarms
from bench.alarm_truth import TOKEN, SimTime, play
from estatewatch.cli import main
from estatewatch.service import Service
from scoring.ledger import FAULT_EXPECT, read_ledger, write_ledger
from scoring.score import fetch, score
from simulators.scenario import Fault, load_scenario
from simulators.spec import load_spec
from tests.conftest import service_settings

pytestmark = pytest.mark.integration

HOUR = 3_600_000
MIN = 60_000


def test_a_simulated_day_is_scored_every_fault_found(tmp_path: Path) -> None:
    spec = load_spec("small")
    storm = load_scenario("winter-storm")  # 2026-01-15 06:00 Hohhot; three faults of its own
    extra = [
        Fault("fire_alarm", 13 * HOUR, 10 * MIN, kind="smoke_detector", nth=2),
        Fault("hydrant_pressure_loss", 14 * HOUR, HOUR, kind="fire_hydrant", nth=3),
        Fault("gas_leak", 16 * HOUR, 15 * MIN, kind="gas_detector"),
        Fault("device_silent", 18 * HOUR, 40 * MIN, kind="water_pressure", nth=2),
        Fault("heating_failure", 9 * HOUR, 6 * HOUR, building=1),
        Fault("fire_pump_failure", 20 * HOUR, 40 * MIN, kind="fire_pump"),
        # the gateway's connection lost for 30 min, and a fire alarm 5 min into it: the
        # gateway sends it when it is back, 25 min old, so it is judged and marked late; the
        # panel is reset 15 min after the gateway is back
        Fault("gateway_offline", 22 * HOUR, 30 * MIN),
        Fault("fire_alarm", 22 * HOUR + 5 * MIN, 40 * MIN, kind="smoke_detector", nth=1),
    ]
    scenario = replace(storm, faults=tuple(sorted([*storm.faults, *extra], key=lambda f: f.at_ms)))
    assert storm.start_ms is not None
    start, end = storm.start_ms, storm.start_ms + 24 * HOUR
    clock = SimTime(start)
    service = Service(
        service_settings(tmp_path, admin_token=TOKEN, commit_interval_ms=10), clock=clock
    )
    service.start()
    try:
        played = play(service, clock, spec, scenario, start, end, seed=5)
        alarms, activations = fetch(service.url, TOKEN, spec.estate)
        result = score(played.causes, alarms, activations, start, end)

        faults = [c for c in played.causes if c.cause == "fault"]
        assert sorted(c.what for c in faults) == sorted(
            [f.type for f in extra] + ["elevator_trapped", "charger_overheat", "telecom_down"]
        )
        for c in faults:
            assert c.rules == FAULT_EXPECT[c.what][0]
        # every fault found in time: a true positive each, none missed
        assert [c.key for c in result.missed if c.cause == "fault"] == []
        for c in faults:
            assert result.causes[c.what].detected == result.causes[c.what].causes
        offline = [a for a in alarms if a["rule"] == "gateway-offline"]
        assert len(offline) == 1 and offline[0]["fired_ms"] == start + 22 * HOUR + 2 * MIN
        in_outage = [
            a
            for a in alarms
            if a["rule"] == "fire-alarm-detector" and a["fired_ms"] >= start + 22 * HOUR + 5 * MIN
        ]
        # judged from the backlog at its data time, reaching the control room when the gateway
        # was back; still standing then, so promoted to an emergency now (not left as history)
        assert len(in_outage) == 1
        assert in_outage[0]["fired_ms"] == start + 22 * HOUR + 5 * MIN
        assert in_outage[0]["raised_ms"] >= start + 22 * HOUR + 30 * MIN
        got = httpx.get(
            f"{service.url}/api/v1/alarms/{in_outage[0]['id']}",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ).json()
        caught_up = [e for e in got["timeline"] if (e.get("detail") or {}).get("caught_up")]
        assert caught_up and caught_up[0]["detail"]["late_since_ms"] == in_outage[0]["fired_ms"]
        # a fire alarm ends when the panel is reset (issue 11): each detector's alarm is closed
        # at its fault's end, by the equipment's fire.reset (the outage's from the backlog)
        fire_ends = sorted(c.end_ms for c in faults if c.what == "fire_alarm")
        fire = sorted(
            (a for a in alarms if a["rule"] == "fire-alarm-detector"), key=lambda a: a["fired_ms"]
        )
        # nobody acknowledged them: those that reached the control room live stay listed,
        # cleared, until someone does (ISA-18.2 RTN unack); history (late) ones are closed
        assert len(fire) == len(fire_ends) and any(a["state"] == "cleared" for a in fire)
        assert [(a["state"], a["resolved_ms"]) for a in fire] == [
            ("resolved" if a["late"] else "cleared", end)
            for a, end in zip(fire, fire_ends, strict=True)
        ]
        assert all((a["resolved_by"], a["acked_by"]) == ("rules", None) for a in fire)
        # the devices' silence while the gateway was away is the outage's, not a cause's
        assert [a["rule"] for a in result.no_cause] == []
        # the weather episodes are the scenario's own crossings, from the station's readings
        snow = {c.level: c for c in played.causes if c.what == "snowstorm"}
        assert set(snow) == {"blue", "yellow", "orange"}
        for level, at in (("blue", 4 * HOUR), ("yellow", 5 * HOUR), ("orange", int(6.8 * HOUR))):
            assert at <= snow[level].start_ms - start <= at + 2 * MIN, level
            assert (
                snow[level].plans["snowstorm"] == {"blue": "Ⅳ", "yellow": "Ⅲ", "orange": "Ⅱ"}[level]
            )
            assert result.causes[f"snowstorm/{level}"].detected == 1
        # the figures are the pure function's over what the API shows
        q = alarm_quality(raised_alarms(alarms), start, end)
        assert (result.quality.alarms, result.quality.chattering) == (q.alarms, q.chattering)
        assert result.quality.alarms == sum(r["alarms"] for r in result.by_rule.values())
        assert [a for a in result.quality.stale if a["rule"].startswith("fire-")] == []
        assert result.quality.closed_unacked >= len(fire)  # nobody here acknowledged them

        # the same through the command line, from the ledger file
        ledger = tmp_path / "truth.jsonl"
        write_ledger(ledger, played.causes)
        assert len(read_ledger(ledger)) == len(played.causes)
        out = io.StringIO()
        with redirect_stdout(out):
            rc = main(["score", "--truth", str(ledger), "--url", service.url, "--token", TOKEN])
        assert rc == 0
        text = out.getvalue()
        assert "| fire_alarm | 2 | 2 | 0 | 100% |" in text
        assert "| gateway_offline | 1 | 1 | 0 | 100% |" in text
        assert "| snowstorm/orange | 1 | 1 | 0 | 100% |" in text
        # the alarms from the outage's backlog reached the room late: said so
        said = re.search(
            r"clocks: rates and floods by arrival \((\d+) arrived, (\d+) of them late", text
        )
        late = [a for a in alarms if a["fired_ms"] and a["raised_ms"] - a["fired_ms"] >= 10 * MIN]
        assert said and int(said.group(2)) == len(late) >= 1, text[-700:]  # the outage's backlog
    finally:
        service.stop()


def test_a_ledger_line_that_is_not_one_is_named(tmp_path: Path) -> None:
    bad = Path(tempfile.mkstemp(dir=tmp_path, suffix=".jsonl")[1])
    bad.write_text('{"cause": "fault"}\n')
    with pytest.raises(ValueError, match=r"\.jsonl:1: not a ledger line"):
        read_ledger(bad)


def test_score_names_a_missing_ledger_and_an_unreachable_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["score", "--truth", str(tmp_path / "none.jsonl"), "--token", "x"])
    assert rc == 2 and "none.jsonl" in capsys.readouterr().err
    ledger = tmp_path / "empty.jsonl"
    ledger.write_text("")
    rc = main(["score", "--truth", str(ledger), "--token", "x", "--url", "http://127.0.0.1:9"])
    assert rc == 1 and "cannot read http://127.0.0.1:9" in capsys.readouterr().err
