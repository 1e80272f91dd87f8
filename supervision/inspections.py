"""Random inspection sampling ("double random, one public", 双随机一公开).

A draw picks a share of the eligible estates with a recorded seed: anyone can re-run it from
the record and get the same estates. Estates drawn in the last N months are left out. Draws are
kept with who made them and are never changed afterwards.
"""

from __future__ import annotations

import math
import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from protocol import clock

MONTH_MS = 30 * 86_400_000

metadata = sa.MetaData()
draws = sa.Table(
    "inspection_draws",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("drawn_ms", sa.BigInteger, nullable=False),
    sa.Column("drawn_by", sa.String(64), nullable=False),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("share", sa.Float, nullable=False),
    sa.Column("exclude_months", sa.Integer, nullable=False),
    sa.Column("region", sa.String(100), nullable=False, server_default=""),
    sa.Column("candidates", sa.Text, nullable=False),  # JSON list, the order the draw used
    sa.Column("chosen", sa.Text, nullable=False),  # JSON list
    sa.Column("note", sa.Text, nullable=False, server_default=""),
)


@dataclass(frozen=True)
class Draw:
    seed: int
    share: float
    candidates: tuple[str, ...]
    chosen: tuple[str, ...]


def draw(candidates: Sequence[str], share: float, seed: int) -> Draw:
    """Pure and reproducible: the same candidates, share and seed give the same estates."""
    if not 0 < share <= 1:
        raise ValueError("share must be above 0 and at most 1 (e.g. 0.1 for 10 %)")
    pool = tuple(sorted(set(candidates)))
    k = min(len(pool), math.ceil(share * len(pool)))
    chosen = tuple(sorted(random.Random(seed).sample(pool, k)))
    return Draw(seed, share, pool, chosen)


def eligible(estates: Sequence[str], recently_drawn: set[str]) -> list[str]:
    return [e for e in estates if e not in recently_drawn]


class InspectionBook:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine)

    def recently_drawn(self, since_ms: int) -> set[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(draws.c.chosen).where(draws.c.drawn_ms >= since_ms))
            return {e for (chosen,) in rows for e in orjson.loads(chosen)}

    def make_draw(
        self,
        estates: Sequence[str],
        share: float,
        exclude_months: int,
        drawn_by: str,
        seed: int | None = None,
        region: str = "",
        note: str = "",
        now_ms: int | None = None,
    ) -> dict[str, Any]:
        now = clock.now_ms() if now_ms is None else now_ms
        recent = self.recently_drawn(now - exclude_months * MONTH_MS) if exclude_months else set()
        pool = eligible(estates, recent)
        if not pool:
            raise ValueError(
                f"no estate is eligible: every one was drawn in the last {exclude_months} months"
            )
        d = draw(pool, share, seed if seed is not None else secrets.randbits(48))
        row = {
            "drawn_ms": now,
            "drawn_by": drawn_by,
            "seed": d.seed,
            "share": share,
            "exclude_months": exclude_months,
            "region": region,
            "note": note,
            "candidates": orjson.dumps(list(d.candidates)).decode(),
            "chosen": orjson.dumps(list(d.chosen)).decode(),
        }
        with self.engine.begin() as conn:
            key = conn.execute(draws.insert().values(**row)).inserted_primary_key
        assert key is not None
        return self.get(int(key[0]))

    def get(self, draw_id: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(draws).where(draws.c.id == draw_id)).first()
        if row is None:
            raise LookupError(f"inspection draw {draw_id} not found")
        out = dict(row._mapping)
        out["candidates"] = orjson.loads(out["candidates"])
        out["chosen"] = orjson.loads(out["chosen"])
        # Anyone can check the record: the same seed over the same candidates.
        out["verified"] = (
            list(draw(out["candidates"], out["share"], out["seed"]).chosen) == out["chosen"]
        )
        return out

    def list(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            ids = conn.execute(sa.select(draws.c.id).order_by(draws.c.id.desc()).limit(limit))
            return [self.get(i) for (i,) in ids]
