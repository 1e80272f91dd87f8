"""Shared parts of the alerts tests: a simulated clock, notifiers that record, an engine on a
database, and a way to feed it what ingest would commit."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import sqlalchemy as sa

from alerts.engine import AlertEngine
from alerts.notify import Notification, NotifyError
from ingest.pipeline import Delivery
from ingest.state import create_engine
from ingest.telemetry import EstateBatch
from protocol.catalog import default_catalog
from protocol.messages import Event, Reading, Status, Value

# 2026-01-10 00:00 UTC: a winter's day.
START = 1_768_003_200_000
SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE


class SimClock:
    """Simulated time: tests move it, the engine reads it."""

    def __init__(self, now: int = START) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> int:
        self.now += ms
        return self.now


class RecordingNotifier:
    """A receiver that keeps what it got; ``failures`` sends fail first."""

    def __init__(self, name: str, failures: int = 0) -> None:
        self._name = name
        self.failures = failures
        self.sent: list[Notification] = []

    @property
    def name(self) -> str:
        return self._name

    def send(self, notification: Notification) -> None:
        if self.failures:
            self.failures -= 1
            raise NotifyError(f"{self._name} is down")
        self.sent.append(notification)

    def events(self) -> list[str]:
        """What it was told about alarms (plans and drills left out)."""
        return [n.event for n in self.sent if "alarm" in n.payload]

    def about(self, rule: str) -> list[str]:
        return [
            n.payload["alarm"]["subject"]
            for n in self.sent
            if n.payload.get("alarm", {}).get("rule") == rule
        ]


class Site:
    """One estate behind one gateway, fed to an engine as ingest would after a commit."""

    def __init__(
        self, engine: AlertEngine, clock: SimClock, estate: str = "e1", gateway: str = "gw-01"
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.estate = estate
        self.gateway = gateway

    def deliver(
        self,
        readings: list[Reading] | None = None,
        events: list[Event] | None = None,
        status: str | None = None,
    ) -> None:
        d = Delivery(
            topic=f"estates/{self.estate}/gw/{self.gateway}/telemetry",
            received_ms=self.clock.now,
            estate=self.estate,
            gateway=self.gateway,
        )
        if readings or events:
            d.batch = EstateBatch(self.estate, self.gateway, readings or [], events or [])
        if status is not None:
            d.status = Status(self.gateway, status, self.clock.now, None, None, {})
        self.engine.on_committed([d])

    def reading(self, dev: str, kind: str, **metrics: Value) -> None:
        self.deliver(readings=[Reading(dev, kind, self.clock.now, dict(metrics))])

    def event(self, dev: str, kind: str, type_: str, **data: Any) -> None:
        self.deliver(events=[Event(dev, kind, self.clock.now, type_, dict(data))])

    def alarms(self, **filters: Any) -> list[dict[str, Any]]:
        return self.engine.list_alarms(estate=self.estate, **filters)

    def open_alarms(self, rule: str | None = None) -> list[dict[str, Any]]:
        return [
            a
            for a in self.alarms(state=["pending", "firing", "acknowledged"])
            if rule is None or a["rule"] == rule
        ]


EngineFactory = Callable[..., AlertEngine]


@pytest.fixture
def clock() -> SimClock:
    return SimClock()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'alerts.db'}"


@pytest.fixture
def make_engine(clock: SimClock) -> Iterator[EngineFactory]:
    """``make_engine(url, **kwargs)``: a new AlertEngine on that database (a second call on
    the same URL is a restart)."""
    made: list[tuple[AlertEngine, sa.Engine]] = []

    def make(url: str, **kwargs: Any) -> AlertEngine:
        db = create_engine(url)
        kwargs.setdefault("weather_every_ms", MINUTE)
        engine = AlertEngine(db, default_catalog(), clock, **kwargs)
        made.append((engine, db))
        return engine

    yield make
    for engine, db in made:
        engine.stop()
        db.dispose()


@pytest.fixture
def receivers() -> dict[str, RecordingNotifier]:
    return {
        "control_room": RecordingNotifier("cr"),
        "supervisor": RecordingNotifier("sup"),
        "authority": RecordingNotifier("auth"),
    }


def roles(receivers: dict[str, RecordingNotifier]) -> dict[str, list[Any]]:
    return {role: [n] for role, n in receivers.items()}


@pytest.fixture
def site(make_engine: EngineFactory, sqlite_url: str, clock: SimClock) -> Site:
    return Site(make_engine(sqlite_url), clock)


@pytest.fixture
def paged_site(
    make_engine: EngineFactory,
    sqlite_url: str,
    clock: SimClock,
    receivers: dict[str, RecordingNotifier],
) -> Site:
    """A site whose engine pages the three roles through ``receivers``, which record it."""
    return Site(make_engine(sqlite_url, receivers=roles(receivers)), clock)


class Paged(NamedTuple):
    """A paged site with the clock it runs on and the receivers that record its pages."""

    site: Site
    clock: SimClock
    receivers: dict[str, RecordingNotifier]


@pytest.fixture
def paged(paged_site: Site, clock: SimClock, receivers: dict[str, RecordingNotifier]) -> Paged:
    return Paged(paged_site, clock, receivers)
