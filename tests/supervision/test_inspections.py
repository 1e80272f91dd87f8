from __future__ import annotations

import pytest

from ingest.state import create_engine
from supervision.inspections import MONTH_MS, InspectionBook, draw

ESTATES = [f"estate-{i:02d}" for i in range(40)]


def test_same_seed_same_estates_and_share_rounds_up() -> None:
    a = draw(ESTATES, 0.1, seed=20261128)
    b = draw(list(reversed(ESTATES)), 0.1, seed=20261128)  # order given does not matter
    assert a.chosen == b.chosen and len(a.chosen) == 4
    assert draw(ESTATES, 0.1, seed=1).chosen != a.chosen
    assert len(draw(ESTATES[:7], 0.1, seed=1).chosen) == 1
    with pytest.raises(ValueError, match="share"):
        draw(ESTATES, 0, seed=1)


def test_recently_inspected_estates_are_left_out_and_draws_are_kept(database_url: str) -> None:
    book = InspectionBook(create_engine(database_url))
    t0 = 1_764_288_000_000
    first = book.make_draw(ESTATES, 0.25, exclude_months=6, drawn_by="bureau-li", seed=7, now_ms=t0)
    assert len(first["chosen"]) == 10 and first["verified"]
    second = book.make_draw(
        ESTATES, 0.25, exclude_months=6, drawn_by="bureau-li", seed=7, now_ms=t0 + MONTH_MS
    )
    assert not set(first["chosen"]) & set(second["chosen"])
    assert len(second["candidates"]) == 30
    # seven months on, the first draw's estates are eligible again
    later = book.make_draw(
        ESTATES, 1.0, exclude_months=6, drawn_by="x", seed=1, now_ms=t0 + 7 * MONTH_MS
    )
    assert set(first["chosen"]) <= set(later["candidates"])
    assert [d["id"] for d in book.list()] == [later["id"], second["id"], first["id"]]
    assert book.get(first["id"])["drawn_by"] == "bureau-li"
