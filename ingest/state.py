"""The relational state store: estates, gateways, devices, dead letters.

SQLAlchemy Core, so the same code runs on SQLite (the embedded default) and PostgreSQL.
Schema versions follow Home Assistant's recorder: a new database gets the current schema and
is stamped with the latest version; an older one runs the numbered migrations after its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine

from ingest.model import DeadLetter
from ingest.schema import (
    AlreadyExists,
    NotFound,
    SchemaBusy,
    create_engine,
    migrate_schema,
    version_table,
)
from protocol.clock import now_ms

# Re-exported: these lived here before ingest.schema and ingest.model; import them from there.
__all__ = [
    "AlreadyExists",
    "DeadLetter",
    "NotFound",
    "SchemaBusy",
    "StateStore",
    "create_engine",
    "migrate",
    "migrate_schema",
    "now_ms",
]

SCHEMA_VERSION = 5

# What a dead letter keeps of its message: the first DEADLETTER_HEAD_BYTES, and the SHA-256 and
# size of the whole, so a 64 MiB body costs 4 KiB here and in GET /deadletters (issue 12), and
# the whole can still be matched against a gateway's own copy. Topic and detail are cut too.
DEADLETTER_HEAD_BYTES = 4096
DEADLETTER_TOPIC_CHARS = 512
DEADLETTER_DETAIL_CHARS = 1000

metadata = sa.MetaData()

schema_version = version_table("schema_version", metadata)

estates = sa.Table(
    "estates",
    metadata,
    sa.Column("id", sa.String(63), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("region", sa.String(100), nullable=False, server_default=""),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    # Per-estate domain settings (v3). zone: the climate zone (alerts/zones.yaml) for
    # low-temperature thresholds and the heating season; heating_season "MM-DD/MM-DD" (empty:
    # the zone's); rescue_arrival_min: minutes for the elevator technician to arrive (empty:
    # 30, a city with districts; 60 elsewhere).
    sa.Column("zone", sa.String(32), nullable=False, server_default=""),
    sa.Column("heating_season", sa.String(16), nullable=False, server_default=""),
    sa.Column("rescue_arrival_min", sa.Integer),
)

gateways = sa.Table(
    "gateways",
    metadata,
    sa.Column("estate", sa.String(63), sa.ForeignKey("estates.id"), primary_key=True),
    sa.Column("id", sa.String(63), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(16), nullable=False, server_default="unknown"),
    sa.Column("state_ms", sa.BigInteger),
    sa.Column("fw", sa.String(64)),
    sa.Column("buffered", sa.BigInteger),
    # readings the gateway's store-and-forward buffer had to drop, as its status reports
    sa.Column("dropped", sa.BigInteger),
)

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("estate", sa.String(63), sa.ForeignKey("estates.id"), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("gateway", sa.String(63), nullable=False),
    sa.Column("first_seen_ms", sa.BigInteger, nullable=False),
)

# Devices first seen, as a JSON array of [estate, id, kind, gateway, first_seen_ms] rows.
_ADD_DEVICES_SQLITE = (
    "INSERT INTO devices (estate, id, kind, gateway, first_seen_ms) "
    "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), "
    "json_extract(value, '$[3]'), json_extract(value, '$[4]') FROM json_each(?) "
    "WHERE true ON CONFLICT (estate, id) DO NOTHING"
)

dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("received_ms", sa.BigInteger, nullable=False, index=True),
    sa.Column("topic", sa.Text, nullable=False),
    sa.Column("estate", sa.String(63)),
    sa.Column("gateway", sa.String(63)),
    sa.Column("reason", sa.String(32), nullable=False, index=True),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("item_index", sa.Integer),
    sa.Column("payload", sa.LargeBinary, nullable=False),  # the first DEADLETTER_HEAD_BYTES
    sa.Column("payload_size", sa.BigInteger),  # of the whole message (None: before v3)
    sa.Column("payload_sha256", sa.String(64)),  # hex, of the whole message
)


# Gateways an admin disabled or deleted (a gateway without a row here is enabled); v5.
gateway_access = sa.Table(
    "gateway_access",
    metadata,
    sa.Column("estate", sa.String(63), primary_key=True),
    sa.Column("id", sa.String(63), primary_key=True),
    sa.Column("access", sa.String(16), nullable=False),  # "disabled" or "deleted"
    sa.Column("changed_ms", sa.BigInteger, nullable=False),
)
GATEWAY_ACCESS = ("enabled", "disabled", "deleted")


def _v2_gateway_drops(conn: Connection) -> None:
    conn.execute(sa.text("ALTER TABLE gateways ADD COLUMN dropped BIGINT"))


def _v3_bounded_dead_letters(conn: Connection) -> None:
    conn.execute(sa.text("ALTER TABLE dead_letters ADD COLUMN payload_size BIGINT"))
    conn.execute(sa.text("ALTER TABLE dead_letters ADD COLUMN payload_sha256 VARCHAR(64)"))
    # letters stored whole before: keep their size, cut them to the head (no hash: reading
    # every large body back to hash it would cost what this bound is meant to save)
    head = (
        "substring(payload from 1 for :n)"
        if conn.dialect.name == "postgresql"
        else "substr(payload, 1, :n)"
    )
    conn.execute(
        sa.text(
            f"UPDATE dead_letters SET payload_size = length(payload), payload = {head} "
            "WHERE length(payload) > :n"
        ),
        {"n": DEADLETTER_HEAD_BYTES},
    )


def _v4_estate_settings(conn: Connection) -> None:
    conn.execute(sa.text("ALTER TABLE estates ADD COLUMN zone VARCHAR(32) NOT NULL DEFAULT ''"))
    conn.execute(
        sa.text("ALTER TABLE estates ADD COLUMN heating_season VARCHAR(16) NOT NULL DEFAULT ''")
    )
    conn.execute(sa.text("ALTER TABLE estates ADD COLUMN rescue_arrival_min INTEGER"))


def _v5_gateway_access(conn: Connection) -> None:
    gateway_access.create(conn, checkfirst=True)


# version -> migration from version-1
MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    2: _v2_gateway_drops,
    3: _v3_bounded_dead_letters,
    4: _v4_estate_settings,
    5: _v5_gateway_access,
}

# The estate settings people may change after creation (PATCH /api/v1/estates/{estate}).
ESTATE_SETTINGS = ("name", "region", "zone", "heating_season", "rescue_arrival_min")


def migrate(engine: Engine) -> int:
    """Bring the schema to SCHEMA_VERSION; returns the version found before."""
    with engine.begin() as conn:
        found = migrate_schema(
            conn, metadata, schema_version, SCHEMA_VERSION, MIGRATIONS, now_ms(), "the database"
        )
    return found


class StateStore:
    """Registry and dead letters. Thread-safe: every call takes its own connection."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str) -> StateStore:
        engine = create_engine(url)
        migrate(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    # --- estates -----------------------------------------------------------------------------
    def add_estate(
        self,
        estate_id: str,
        name: str,
        region: str = "",
        zone: str = "",
        heating_season: str = "",
        rescue_arrival_min: int | None = None,
    ) -> dict[str, Any]:
        row = {
            "id": estate_id,
            "name": name,
            "region": region,
            "created_ms": now_ms(),
            "zone": zone,
            "heating_season": heating_season,
            "rescue_arrival_min": rescue_arrival_min,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(estates.insert().values(**row))
        except sa.exc.IntegrityError:
            raise AlreadyExists(f"estate {estate_id!r} already exists") from None
        return row

    def update_estate(self, estate_id: str, **settings: Any) -> dict[str, Any]:
        """Change some of ``ESTATE_SETTINGS``; the estate as it is now."""
        unknown = sorted(set(settings) - set(ESTATE_SETTINGS))
        if unknown:
            raise ValueError(f"not an estate setting: {', '.join(unknown)}")
        if settings:
            with self.engine.begin() as conn:
                done = conn.execute(
                    estates.update().where(estates.c.id == estate_id).values(**settings)
                )
            if done.rowcount == 0:
                raise NotFound(f"estate {estate_id!r} not found")
        return self.get_estate(estate_id)

    def get_estate(self, estate_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(estates).where(estates.c.id == estate_id)).first()
        if row is None:
            raise NotFound(f"estate {estate_id!r} not found")
        return dict(row._mapping)

    def list_estates(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(estates).order_by(estates.c.id)).all()
        return [dict(r._mapping) for r in rows]

    # --- gateways ----------------------------------------------------------------------------
    def add_gateway(self, estate_id: str, gw_id: str, name: str = "") -> dict[str, Any]:
        self.get_estate(estate_id)
        row = {"estate": estate_id, "id": gw_id, "name": name, "created_ms": now_ms()}
        try:
            with self.engine.begin() as conn:
                conn.execute(gateways.insert().values(**row))
        except sa.exc.IntegrityError:
            raise AlreadyExists(
                f"gateway {gw_id!r} already exists in estate {estate_id!r} "
                "(a deleted gateway's id stays taken: its history keeps it)"
            ) from None
        return self.get_gateway(estate_id, gw_id)

    def _gateways_query(self) -> sa.Select[Any]:
        access = sa.func.coalesce(gateway_access.c.access, "enabled").label("access")
        return sa.select(gateways, access, gateway_access.c.changed_ms.label("access_ms")).join(
            gateway_access,
            sa.and_(
                gateway_access.c.estate == gateways.c.estate, gateway_access.c.id == gateways.c.id
            ),
            isouter=True,
        )

    def get_gateway(self, estate_id: str, gw_id: str) -> dict[str, Any]:
        """A gateway with its ``access`` (enabled, disabled or deleted)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                self._gateways_query().where(gateways.c.estate == estate_id, gateways.c.id == gw_id)
            ).first()
        if row is None:
            raise NotFound(f"gateway {gw_id!r} not found in estate {estate_id!r}")
        return dict(row._mapping)

    def list_gateways(
        self, estate_id: str | None = None, include_deleted: bool = False
    ) -> list[dict[str, Any]]:
        q = self._gateways_query().order_by(gateways.c.estate, gateways.c.id)
        if estate_id is not None:
            q = q.where(gateways.c.estate == estate_id)
        if not include_deleted:
            q = q.where(sa.func.coalesce(gateway_access.c.access, "enabled") != "deleted")
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def registered_gateways(self) -> set[tuple[str, str]]:
        """The gateways whose messages are taken: registered, neither disabled nor deleted."""
        q = (
            sa.select(gateways.c.estate, gateways.c.id)
            .join(
                gateway_access,
                sa.and_(
                    gateway_access.c.estate == gateways.c.estate,
                    gateway_access.c.id == gateways.c.id,
                ),
                isouter=True,
            )
            .where(gateway_access.c.access.is_(None))
        )
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return {(r[0], r[1]) for r in rows}

    def set_gateway_access(self, estate_id: str, gw_id: str, access: str) -> dict[str, Any]:
        """Enable, disable or delete a gateway. Deleting keeps its row and its data (its id
        stays taken) and cannot be undone."""
        if access not in GATEWAY_ACCESS:
            raise ValueError(f"access must be one of {', '.join(GATEWAY_ACCESS)}")
        current = self.get_gateway(estate_id, gw_id)["access"]
        if current == "deleted":
            raise NotFound(f"gateway {gw_id!r} of estate {estate_id!r} was deleted")
        key = sa.and_(gateway_access.c.estate == estate_id, gateway_access.c.id == gw_id)
        with self.engine.begin() as conn:
            conn.execute(gateway_access.delete().where(key))
            if access != "enabled":
                conn.execute(
                    gateway_access.insert().values(
                        estate=estate_id, id=gw_id, access=access, changed_ms=now_ms()
                    )
                )
        return self.get_gateway(estate_id, gw_id)

    def set_gateway_status(
        self,
        estate_id: str,
        gw_id: str,
        state: str,
        ts: int,
        fw: str | None,
        buffered: int | None,
        dropped: int | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                gateways.update()
                .where(gateways.c.estate == estate_id, gateways.c.id == gw_id)
                .values(state=state, state_ms=ts, fw=fw, buffered=buffered, dropped=dropped)
            )

    # --- devices -----------------------------------------------------------------------------
    def add_devices(self, rows: Iterable[tuple[str, str, str, str, int]]) -> None:
        """Register devices first seen: (estate, id, kind, gateway, first_seen_ms); known ones
        are left as they are. One INSERT … ON CONFLICT DO NOTHING: an estate's first commit
        brings thousands at once, and a look-up of which exist first (an IN of that many
        pairs) was half of the 0.3 s the first commit waited for them."""
        rows = list(rows)
        if not rows:
            return
        keys = ("estate", "id", "kind", "gateway", "first_seen_ms")
        with self.engine.begin() as conn:
            dialect = conn.dialect.name
            if dialect == "sqlite":
                # One statement: executemany steps once a row, each step letting go of the
                # interpreter lock, and on a busy process each retaking waited for the
                # decoder (4,906 rows took 0.3-2 s, the first commit waiting for it).
                conn.exec_driver_sql(_ADD_DEVICES_SQLITE, (orjson.dumps(rows).decode(),))
                return
            data = [dict(zip(keys, r, strict=True)) for r in rows]
            if dialect == "postgresql":
                stmt = postgresql.insert(devices).on_conflict_do_nothing(
                    index_elements=[devices.c.estate, devices.c.id]
                )
                conn.execute(stmt, data)
                return
            known = {
                (r[0], r[1])
                for r in conn.execute(
                    sa.select(devices.c.estate, devices.c.id).where(
                        sa.tuple_(devices.c.estate, devices.c.id).in_([(r[0], r[1]) for r in rows])
                    )
                )
            }
            fresh = [d for d in data if (d["estate"], d["id"]) not in known]
            if fresh:
                conn.execute(devices.insert(), fresh)

    def get_device(self, estate_id: str, device_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(devices).where(devices.c.estate == estate_id, devices.c.id == device_id)
            ).first()
        if row is None:
            raise NotFound(f"device {device_id!r} not found in estate {estate_id!r}")
        return dict(row._mapping)

    def list_devices(self, estate_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(devices).where(devices.c.estate == estate_id).order_by(devices.c.id)
            ).all()
        return [dict(r._mapping) for r in rows]

    def device_page(
        self,
        estate_id: str,
        kinds: Collection[str] | None = None,
        after: str | None = None,
        limit: int = 500,
        device: str | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of an estate's devices in id order (after the id ``after``), and how many
        match in all: an estate may have 200,000 devices, too many for one answer."""
        where = [devices.c.estate == estate_id]
        if kinds is not None:
            where.append(devices.c.kind.in_(list(kinds)))
        if device is not None:
            where.append(devices.c.id == device)
        with self.engine.connect() as conn:
            total = conn.execute(
                sa.select(sa.func.count()).select_from(devices).where(*where)
            ).scalar_one()
            if after is not None:
                where.append(devices.c.id > after)
            rows = conn.execute(
                sa.select(devices).where(*where).order_by(devices.c.id).limit(limit)
            ).all()
        return [dict(r._mapping) for r in rows], int(total)

    def known_devices(self) -> set[tuple[str, str]]:
        with self.engine.connect() as conn:
            return {(r[0], r[1]) for r in conn.execute(sa.select(devices.c.estate, devices.c.id))}

    # --- dead letters ------------------------------------------------------------------------
    def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Store letters bounded: the head of each payload with the size and SHA-256 of the
        whole (see DEADLETTER_HEAD_BYTES)."""
        if not letters:
            return
        with self.engine.begin() as conn:
            conn.execute(
                dead_letters.insert(),
                [
                    {
                        "received_ms": d.received_ms,
                        "topic": d.topic[:DEADLETTER_TOPIC_CHARS],
                        "estate": d.estate,
                        "gateway": d.gateway,
                        "reason": d.reason,
                        "detail": d.detail[:DEADLETTER_DETAIL_CHARS],
                        "item_index": d.item_index,
                        "payload": d.payload[:DEADLETTER_HEAD_BYTES],
                        "payload_size": len(d.payload),
                        "payload_sha256": hashlib.sha256(d.payload).hexdigest(),
                    }
                    for d in letters
                ],
            )

    def list_dead_letters(
        self,
        reason: str | None = None,
        estate: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        q = sa.select(dead_letters).order_by(dead_letters.c.id.desc()).limit(limit).offset(offset)
        if reason:
            q = q.where(dead_letters.c.reason == reason)
        if estate:
            q = q.where(dead_letters.c.estate == estate)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def count_dead_letters(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(dead_letters.c.reason, sa.func.count()).group_by(dead_letters.c.reason)
            ).all()
        return {r[0]: int(r[1]) for r in rows}

    def purge_dead_letters(self, older_than_ms: int) -> int:
        with self.engine.begin() as conn:
            res = conn.execute(
                dead_letters.delete().where(dead_letters.c.received_ms < older_than_ms)
            )
        return int(res.rowcount or 0)
