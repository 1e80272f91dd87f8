"""Rule files: the shipped defaults load, cover every kind, and mistakes are refused with the
file, the line and what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerts.rules.loader import RuleFileError, load_rules
from alerts.rules.spec import Composite, EventCount, EventMatch, NoData, Severity, ValueTest
from protocol.catalog import default_catalog

CATALOG = default_catalog()


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_load_and_cover_every_kind_of_the_catalog() -> None:
    rules = load_rules(CATALOG)
    covered = {
        k
        for r in rules.defaults.values()
        if not isinstance(r.condition, NoData) and r.kinds is not None
        for k in r.kinds
    }
    assert covered == set(CATALOG.kinds)
    assert isinstance(rules.defaults["no-data"].condition, NoData)
    assert rules.defaults["no-data"].kinds is None
    fire = rules.defaults["fire-alarm"]
    assert isinstance(fire.condition, EventMatch) and fire.severity is Severity.CRITICAL
    assert fire.for_ms == 0
    assert isinstance(rules.defaults["fire-alarm-frequent"].condition, EventCount)
    assert isinstance(rules.defaults["ebike-power-after-full"].condition, Composite)
    trapped = rules.defaults["elevator-trapped"]
    assert trapped.deadline_ms == 30 * 60_000 and trapped.rescue
    assert trapped.clear_events == {"elevator.released"}
    assert [s.after_ms for s in rules.chains["elevator-trapped"].steps[:2]] == [0, 5 * 60_000]
    assert {i.id for i in rules.inhibit} == {
        "gateway-offline-hides-no-data",
        "elevator-maintenance-hides-faults",
        "outside-heating-season-hides-heating",  # issue 11
    }


def test_threshold_with_hysteresis() -> None:
    test = load_rules(CATALOG).defaults["hydrant-pressure-low"].condition
    assert isinstance(test, ValueTest)
    assert test.hit(0.069) and not test.hit(0.07)
    assert not test.clear(0.075) and test.clear(0.08)  # in between: neither
    assert test.text == "pressure_mpa < 0.07"


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("rules:\n  - id: a\n    kinds: [lift]\n", 3, "unknown kind 'lift'"),
        (
            "rules:\n  - id: a\n    kinds: [fire_hydrant]\n    severity: major\n"
            "    summary: x\n    when: {metric: presure_mpa, below: 0.1}\n",
            6,
            "kind 'fire_hydrant' has no metric 'presure_mpa'",
        ),
        (
            "rules:\n  - id: a\n    kinds: [fire_hydrant]\n    severity: major\n"
            "    summary: x\n    fro: 5m\n    when: {metric: pressure_mpa, below: 0.1}\n",
            6,
            "unknown key 'fro'",
        ),
        (
            "rules:\n  - id: a\n    kinds: [fire_hydrant]\n    severity: major\n"
            "    summary: x\n    for: 5 minutes\n    when: {metric: pressure_mpa, below: 0.1}\n",
            6,
            "expected a duration",
        ),
        (
            "rules:\n  - id: a\n    kinds: [fire_hydrant]\n    severity: urgent\n"
            "    summary: x\n    when: {metric: pressure_mpa, below: 0.1}\n",
            4,
            "severity must be one of",
        ),
        (
            "rules:\n  - id: a\n    kinds: [fire_hydrant]\n    severity: major\n    summary: x\n"
            "    when: {metric: pressure_mpa, below: 0.1, clear: 0.05}\n",
            6,
            "clear level must not be below",
        ),
        (
            "rules:\n  - id: a\n    kinds: [elevator]\n    severity: major\n    summary: x\n"
            "    when: {metric: mode, equals: repair}\n",
            6,
            "'repair' is not one of",
        ),
        (
            "rules:\n  - id: a\n    kinds: [elevator]\n    severity: major\n    summary: x\n"
            "    when: {event: elevator.stuck}\n",
            6,
            "unknown event type 'elevator.stuck'",
        ),
        ("rules:\n  - id: a\n    kinds: [elevator\n", 4, "not valid YAML"),
    ],
)
def test_a_mistake_is_refused_with_file_line_and_problem(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    path = write(tmp_path / "rules", "site.yaml", text)
    with pytest.raises(RuleFileError) as err:
        load_rules(CATALOG, tmp_path / "rules")
    message = str(err.value)
    assert f"{path}:{line}:" in message
    assert problem in message


def test_every_mistake_of_every_file_is_listed(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    write(folder, "a.yaml", "rules:\n  - id: x\n    kinds: [nope]\n")
    write(folder, "b.yaml", "chains:\n  slow: []\n")
    with pytest.raises(RuleFileError) as err:
        load_rules(CATALOG, folder)
    assert len(err.value.problems) == 2
    assert any("a.yaml:3:" in p for p in err.value.problems)
    assert any("b.yaml:2:" in p and "has no steps" in p for p in err.value.problems)


def test_duplicate_ids_name_both_places(tmp_path: Path) -> None:
    rule = (
        "  - id: dup\n    kinds: [room_temp]\n    severity: minor\n    summary: x\n"
        "    when: {metric: temp_c, below: 16}\n"
    )
    path = write(tmp_path / "r", "a.yaml", "rules:\n" + rule + rule)
    with pytest.raises(RuleFileError, match=f"{path}:7: rule id 'dup' is defined twice"):
        load_rules(CATALOG, tmp_path / "r")


def test_an_estate_overrides_only_the_keys_it_names(tmp_path: Path) -> None:
    overrides = tmp_path / "estates"
    write(
        overrides / "hailar-a",
        "rules.yaml",
        "rules:\n"
        "  - {id: elevator-trapped, rescue_deadline: 1h}\n"
        "  - {id: room-temp-low, enabled: false}\n"
        "  - id: boiler-room-cold\n    kinds: [room_temp]\n    severity: major\n"
        "    summary: {zh: 锅炉房温度低}\n    when: {metric: temp_c, below: 5}\n",
    )
    rules = load_rules(CATALOG, override_dir=overrides)
    here = {r.id: r for r in rules.rules_for("hailar-a")}
    assert here["elevator-trapped"].deadline_ms == 3_600_000
    assert here["elevator-trapped"].escalation == "elevator-trapped"  # the rest is the default's
    assert "room-temp-low" not in here
    assert here["boiler-room-cold"].estate == "hailar-a"
    elsewhere = {r.id: r for r in rules.rules_for("hohhot-b")}
    assert elsewhere["elevator-trapped"].deadline_ms == 30 * 60_000
    assert "room-temp-low" in elsewhere and "boiler-room-cold" not in elsewhere
