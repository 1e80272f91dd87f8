"""Which windows a 5-minute snapshot writes (issue 15): every series given samples since the
last one written, by the series' own data time, so a backlog's (data hours behind the
engine's clock) is written too, and a series given nothing is not written again."""

from __future__ import annotations

import sqlalchemy as sa

from alerts.tables import windows
from alerts.windows import SeriesWindow
from protocol.messages import Reading
from tests.alerts.conftest import MINUTE, EngineFactory, SimClock, Site

HOUR = 60 * MINUTE


def _saved(site: Site) -> dict[tuple[str, str, str], int | None]:
    return {
        (e, d, m): SeriesWindow.from_bytes(b).last_ts for e, d, m, b in site.engine.store.windows()
    }


def _saved_at(site: Site) -> dict[tuple[str, str, str], int]:
    with site.engine.store.engine.connect() as conn:
        return {
            (r.estate, r.device, r.metric): r.saved_ms for r in conn.execute(sa.select(windows))
        }


def test_a_backlogs_windows_are_in_the_next_snapshot(
    make_engine: EngineFactory, sqlite_url: str, clock: SimClock
) -> None:
    engine = make_engine(sqlite_url)
    site = Site(engine, clock)
    clock.advance(1_000)  # after the start's snapshot time
    key = ("e1", "ws-01", "snow_mm")
    for i in range(10):  # a gateway's backlog: data from two hours ago, arriving now
        t = clock.now - 2 * HOUR + i * MINUTE
        site.deliver(readings=[Reading("ws-01", "weather_station", t, {"snow_mm": 0.5 + i})])
    site.reading("ws-02", "weather_station", snow_mm=0.1)  # live
    clock.advance(5 * MINUTE)
    engine.tick()
    saved = _saved(site)
    assert saved[key] == clock.now - 5 * MINUTE - 2 * HOUR + 9 * MINUTE
    live = ("e1", "ws-02", "snow_mm")
    assert saved[live] == clock.now - 5 * MINUTE
    first = _saved_at(site)

    # The backlog's series given a sample, the live one nothing: only the first written again.
    t = clock.now - 2 * HOUR + 10 * MINUTE
    site.deliver(readings=[Reading("ws-01", "weather_station", t, {"snow_mm": 9.0})])
    clock.advance(5 * MINUTE)
    engine.tick()
    assert _saved(site)[key] == t
    second = _saved_at(site)
    assert second[key] == clock.now and second[live] == first[live]
    engine.stop()  # and at stop, every series
    assert set(_saved_at(site).values()) == {clock.now}
