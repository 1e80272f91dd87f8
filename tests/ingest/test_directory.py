"""What other packages read of the state store's estates and gateways (issue 14: alerts asks
ingest, it runs no SQL on ingest's tables)."""

from __future__ import annotations

from pathlib import Path

from ingest.directory import EstateRecord, estate_records, offline_gateways
from ingest.state import StateStore, create_engine


def test_estates_and_offline_gateways_from_the_state_store(tmp_path: Path) -> None:
    state = StateStore.open(f"sqlite:///{tmp_path / 'state.db'}")
    state.add_estate("north", "北区", "呼和浩特市", zone="hohhot", rescue_arrival_min=60)
    state.add_estate("east", "东区")
    state.add_gateway("north", "gw-01")
    state.add_gateway("north", "gw-02")
    state.set_gateway_status("north", "gw-01", "offline", 1, None, None)
    state.set_gateway_status("north", "gw-02", "online", 1, None, None)

    assert sorted(estate_records(state.engine) or [], key=lambda r: r.id) == [
        EstateRecord("east", "东区"),
        EstateRecord("north", "北区", "呼和浩特市", "hohhot", "", 60),
    ]
    assert offline_gateways(state.engine) == [("north", "gw-01")]
    state.close()


def test_a_database_without_the_state_store_answers_with_nothing(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'alerts-only.db'}")
    assert estate_records(engine) is None  # no state store: not "no estates"
    assert offline_gateways(engine) == []
    engine.dispose()
