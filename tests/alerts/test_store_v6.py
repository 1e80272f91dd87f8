"""The alerts schema v6 (issue 15): the replay guard's look-up (``alarm_caused_at``) gets an
index on (rule, estate, subject, started_ms); a v5 database gains it, answers unchanged."""

from __future__ import annotations

import sqlalchemy as sa

from alerts.store import SYSTEM, AlertStore, alarms, schema_version
from ingest.state import create_engine

_INDEX = "ix_alert_alarms_subject"


def _alarm(id_: str, subject: str, started: int, **more: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": id_, "rule": "r", "estate": "e1", "subject": subject, "kind": "meter",
        "severity": "minor", "state": "resolved", "is_open": False, "summary_zh": "",
        "summary_en": "", "started_ms": started, "updated_ms": started, "fired_ms": started,
        "resolved_ms": started + 100, "resolved_by": SYSTEM, "tags": [], "detail": {},
        "last_ms": started, "count": 1, "for_ms": 0, "flapping": False, "escalated": 0,
        "deadline_breached": False,
    }  # fmt: skip
    row.update(more)
    return row


def _indexes(engine: sa.Engine) -> set[str | None]:
    with engine.connect() as conn:
        return {i["name"] for i in sa.inspect(conn).get_indexes(alarms.name)}


def test_a_v5_database_gains_the_replay_guards_index(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        AlertStore(engine).migrate(1)
        assert _INDEX in _indexes(engine)  # made with the table on a new database
        with engine.begin() as conn:  # back to v5: no index
            conn.execute(sa.text(f"DROP INDEX {_INDEX}"))
            conn.execute(schema_version.delete())
            conn.execute(schema_version.insert().values(version=5, applied_ms=1))
            conn.execute(
                alarms.insert(),
                [
                    _alarm("al-1", "d1", 1_000),  # closed by the system at 1_100
                    _alarm("al-2", "d1", 2_000, resolved_by="op"),  # closed by a person
                    _alarm("al-3", "d1", 3_000, state="firing", is_open=True, resolved_ms=None,
                           resolved_by=None),
                    _alarm("al-4", "d2", 1_050),
                ],
            )  # fmt: skip
        assert _INDEX not in _indexes(engine)
        store = AlertStore(engine)
        assert store.migrate(2) == 5
        assert _INDEX in _indexes(engine)
        assert store.migrate(3) == 6  # and once is enough

        def caused(subject: str, ts: int) -> str | None:
            found = store.alarm_caused_at("r", "e1", subject, ts)
            return None if found is None else found.id

        # the newest alarm that began then, or that the system closed after the condition began
        assert caused("d1", 1_000) == "al-1"
        assert caused("d1", 1_050) == "al-1"
        assert caused("d1", 1_101) is None  # closed before the condition began
        assert caused("d1", 2_000) == "al-2"  # began then (a person's close no matter)
        assert caused("d1", 2_050) is None  # a person closed it: a new condition is new
        assert caused("d1", 3_000) == "al-3"
        assert caused("d1", 3_050) is None  # open and begun earlier: not this one's
        assert caused("d2", 1_100) == "al-4"
        assert caused("d2", 1_000) is None  # began later
        assert store.alarm_caused_at("r", "e2", "d1", 1_000) is None  # another estate's
    finally:
        engine.dispose()
