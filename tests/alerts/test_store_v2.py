"""The alerts schema v2 (issue 13): a v1 database gains the alarms' wall-clock times and the
late mark, older rows keep their data times as stand-ins."""

from __future__ import annotations

import sqlalchemy as sa

from alerts.store import SCHEMA_VERSION, AlertStore, alarms, schema_version
from ingest.state import create_engine


def test_a_v1_database_is_migrated_on_sqlite_and_postgresql(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        store = AlertStore(engine)
        store.migrate(1)
        with engine.begin() as conn:  # back to what v1 had
            for col in ("raised_ms", "closed_ms", "late"):
                conn.execute(sa.text(f"ALTER TABLE alert_alarms DROP COLUMN {col}"))
            for col in ("arrived_ms", "arrived_by"):  # and no v2 rescue arrival
                conn.execute(sa.text(f"ALTER TABLE alert_rescues DROP COLUMN {col}"))
            conn.execute(sa.text("ALTER TABLE alert_device_clocks DROP COLUMN data_ms"))  # v5
            conn.execute(sa.text("DROP INDEX ix_alert_alarms_subject"))  # v6
            conn.execute(schema_version.delete())
            conn.execute(schema_version.insert().values(version=1, applied_ms=1))
            conn.execute(
                sa.text(
                    "INSERT INTO alert_alarms (id, rule, estate, subject, kind, severity, state, "
                    "is_open, summary_zh, summary_en, started_ms, updated_ms, fired_ms, acked_ms, "
                    "resolved_ms, tags, detail, last_ms, count, for_ms, flapping, escalated, "
                    "deadline_breached) VALUES ('al-1', 'r', 'e1', 'd', 'elevator', 'major', "
                    "'resolved', FALSE, '困人', 'trapped', 100, 400, 100, 250, 400, '[]', '{}', "
                    "100, 1, 0, FALSE, 0, FALSE)"
                )
            )
        assert AlertStore(engine).migrate(2) == 1
        # v2 the rescue's arrival, v3 the wall-clock times, v4 remote commands, v5 the deadman
        # clocks' data time, v6 the replay guard's index
        assert SCHEMA_VERSION == 6
        (a,) = AlertStore(engine).list_alarms()
        assert (a.raised_ms, a.closed_ms, a.late) == (100, 400, False)
        d = a.as_dict()
        assert (d["to_ack_ms"], d["to_resolve_ms"]) == (150, 300)
        with engine.connect() as conn:
            cols = {c["name"] for c in sa.inspect(conn).get_columns(alarms.name)}
            clock_cols = {c["name"] for c in sa.inspect(conn).get_columns("alert_device_clocks")}
            indexes = {i["name"] for i in sa.inspect(conn).get_indexes(alarms.name)}
        assert {"raised_ms", "closed_ms", "late"} <= cols
        assert "data_ms" in clock_cols
        assert "ix_alert_alarms_subject" in indexes
    finally:
        engine.dispose()
