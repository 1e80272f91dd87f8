"""The data dir's databases, checked before ``estatewatch run`` opens them (see
``ingest.datafiles``): a damaged or emptied file stops the start with one line."""

from __future__ import annotations

from estatewatch.settings import Settings
from ingest.datafiles import (
    check_sqlite_file,
    check_state_not_emptied,
    mark_state_initialised,
    sqlite_path,
)


def check_data_files(s: Settings) -> None:
    state = sqlite_path(s.state_database_url)
    if state is not None:
        check_state_not_emptied(s.data_path, state)
        check_sqlite_file(state, "state database")
    for shard in range(max(s.ingest_shards, 1)):
        check_sqlite_file(s.shard_telemetry_path(shard), "telemetry database")


def state_opened(s: Settings) -> None:
    state = sqlite_path(s.state_database_url)
    if state is not None:
        mark_state_initialised(s.data_path, state)
