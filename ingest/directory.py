"""What other packages may read of the state store's estates and gateways (read only).

Alerts needs each estate's name, region and domain settings, and which gateways are offline;
it asks here rather than running SQL on ingest's tables. A database without the state
store's tables (an alerts engine on a database of its own) answers with nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from ingest.state import estates, gateways

__all__ = ["EstateRecord", "estate_records", "offline_gateways"]


@dataclass(frozen=True, slots=True)
class EstateRecord:
    """One registered estate: what people read and the settings its rules depend on."""

    id: str
    name: str
    region: str = ""
    zone: str = ""
    heating_season: str = ""  # "MM-DD/MM-DD"; empty: the zone's
    rescue_arrival_min: int | None = None


def estate_records(engine: sa.Engine) -> list[EstateRecord] | None:
    """Every registered estate; None when the database has no state store's tables. Raises
    SQLAlchemyError when the database cannot be read."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(estates.name):
            return None
        rows = conn.execute(sa.select(estates)).all()
    return [
        EstateRecord(
            r.id,
            r.name or r.id,
            r.region or "",
            r.zone or "",
            r.heating_season or "",
            r.rescue_arrival_min,
        )
        for r in rows
    ]


def offline_gateways(engine: sa.Engine) -> list[tuple[str, str]]:
    """(estate, gateway) of every gateway whose last status was offline."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(gateways.name):
            return []
        q = sa.select(gateways.c.estate, gateways.c.id).where(gateways.c.state == "offline")
        return [(r[0], r[1]) for r in conn.execute(q)]
