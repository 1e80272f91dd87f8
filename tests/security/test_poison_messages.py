"""Adversary tests of ingest (issue 12, finding 1): one message from any gateway must not stop
ingest for every estate, nor across a restart.

Each poison message goes from a registered gateway (its own broker credentials, issued by the
API) through the service's real Mosquitto to the running service, between good messages of
two other estates. Each must be dead-lettered with a reason (bounded), the good messages before
and after it stored, ingest still committing and healthy, and after a restart nothing stuck:
the poison is not delivered again and new messages flow.

To add a case: append a ``Poison`` to POISONS (the payload and the reasons it may be
dead-lettered with)."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from estatewatch.broker import ManagedMosquitto, free_port
from estatewatch.service import Service
from ingest.state import DEADLETTER_HEAD_BYTES, StateStore
from ingest.telemetry import TelemetryReader
from protocol.clock import now_ms
from tests.conftest import service_settings
from tests.support import run_env, seed_state, start_run, stop_run, waiter

pytestmark = pytest.mark.integration

GOOD_A, GOOD_B, ATTACKER = "good-a", "good-b", "attacker"
GW = "gw-01"
TOKEN = "test-admin-token-0123456789"


wait_for = waiter(timeout=20.0, every=0.1)


class Gateway:
    """A registered gateway: a bare paho client with the credentials the API issued for it,
    QoS 1, each publish waited for until the broker has it (PUBACK)."""

    def __init__(self, estate: str, creds: dict[str, Any]) -> None:
        self.estate = estate
        self.prefix = creds["topic_prefix"]
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{estate}-{GW}")
        self.client.username_pw_set(creds["username"], creds["password"])
        self.client.connect(creds["host"], creds["port"])
        self.client.loop_start()

    def publish(self, channel: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(self.prefix + channel, payload, qos=1, retain=retain)
        info.wait_for_publish(10)
        assert info.is_published(), f"the broker did not take a message on {channel}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def hydrant(seq: int, pressure: float, dev: str = "h-1") -> bytes:
    reading = {"dev": dev, "kind": "fire_hydrant", "ts": now_ms(), "m": {"pressure_mpa": pressure}}
    return orjson.dumps({"v": 1, "gw": GW, "seq": seq, "sent": now_ms(), "readings": [reading]})


def trapped(seq: int, data: bytes = b'{"floor":3}', dev: str = "lift-1") -> bytes:
    """An event batch with one elevator.trapped event; ``data`` as raw JSON (orjson will not
    encode more than 254 levels, an attacker's encoder will)."""
    event = {"dev": dev, "kind": "elevator", "ts": now_ms(), "type": "elevator.trapped"}
    doc = {"v": 1, "gw": GW, "seq": seq, "sent": now_ms(), "events": [dict(event, data="D")]}
    return orjson.dumps(doc).replace(b'"D"', data, 1)


def with_seq(payload: bytes, seq: int) -> bytes:
    """``payload`` with its seq written by hand (orjson refuses integers beyond 64 bits)."""
    doc = orjson.loads(payload)
    marker = b'"seq":%d' % doc["seq"]
    assert marker in payload
    return payload.replace(marker, b'"seq":%d' % seq, 1)


def status(**fields: Any) -> bytes:
    doc = {"v": 1, "gw": GW, "state": "online", "ts": now_ms(), "fw": "1.0", "buffered": 0}
    doc.update(fields)
    return orjson.dumps(doc)


@dataclass(frozen=True)
class Poison:
    name: str
    channel: str
    payload: Callable[[int], bytes]  # seq -> bytes
    reasons: frozenset[str]


POISONS = [
    # Each of these stopped ingest for every estate, across restarts, before.
    Poison("seq 2^63", "telemetry", lambda s: hydrant(2**63, 0.5), frozenset({"bad_envelope"})),
    Poison(
        "seq 2^64-1", "telemetry", lambda s: hydrant(2**64 - 1, 0.5), frozenset({"bad_envelope"})
    ),
    Poison(
        "seq 2^64 (beyond 64 bits)",
        "telemetry",
        lambda s: with_seq(hydrant(1, 0.5), 2**64),
        frozenset({"bad_envelope", "invalid_json"}),
    ),
    Poison("events seq 2^63", "events", lambda s: trapped(2**63), frozenset({"bad_envelope"})),
    Poison("seq 2^53", "telemetry", lambda s: hydrant(2**53, 0.5), frozenset({"bad_envelope"})),
    Poison(
        "status buffered 2^63",
        "status",
        lambda s: status(buffered=2**63),
        frozenset({"bad_envelope"}),
    ),
    Poison(
        "status dropped 2^63",
        "status",
        lambda s: status(dropped=2**63),
        frozenset({"bad_envelope"}),
    ),
    Poison(
        "status buffered_readings 2^64-1",
        "status",
        lambda s: status(buffered_readings=2**64 - 1),
        frozenset({"bad_envelope"}),
    ),
    Poison(
        "event data nested 300 deep",
        "events",
        lambda s: trapped(s, b'{"a":' * 299 + b"{}" + b"}" * 299),
        frozenset({"bad_item"}),
    ),
    Poison(
        "event data of 70 KiB",
        "events",
        lambda s: trapped(s, orjson.dumps({"blob": "x" * 70_000})),
        frozenset({"too_large"}),
    ),
    Poison(
        "a 200 KiB body that is not JSON",
        "telemetry",
        lambda s: b"{" + b"x" * 200_000,
        frozenset({"invalid_json"}),
    ),
]


class Site:
    """The service with three registered estates (one gateway each) and their gateways."""

    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        self.settings = service_settings(tmp_path, **settings)
        self.service = Service(self.settings)
        self.service.start()
        self.api = self._api()
        self.gateways: dict[str, Gateway] = {}
        self.creds: dict[str, dict[str, Any]] = {}
        for estate in (GOOD_A, GOOD_B, ATTACKER):
            r = self.api.post("/api/v1/estates", json={"id": estate, "name": estate})
            assert r.status_code == 201, r.text
            r = self.api.post(f"/api/v1/estates/{estate}/gateways", json={"id": GW})
            assert r.status_code == 201, r.text
            self.creds[estate] = r.json()["mqtt"]
        self.connect_gateways()
        self.seq = 0

    def _api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.service.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )

    def connect_gateways(self) -> None:
        self.gateways = {e: Gateway(e, c) for e, c in self.creds.items()}

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def restart(self) -> None:
        for gw in self.gateways.values():
            gw.close()
        self.api.close()
        self.service.stop()
        self.service = Service(self.settings)
        self.service.start()
        self.api = self._api()
        self.connect_gateways()

    def readings(self, estate: str) -> dict[str, dict[str, tuple[int, Any]]]:
        return TelemetryReader(self.settings.telemetry_path).latest(estate)

    def events(self, estate: str) -> list[dict[str, Any]]:
        return TelemetryReader(self.settings.telemetry_path).recent_events(estate)

    def letters(self, estate: str) -> list[dict[str, Any]]:
        body = self.api.get("/api/v1/deadletters", params={"estate": estate}).json()
        return list(body["items"])

    def health(self) -> dict[str, Any]:
        r = self.api.get("/healthz")
        assert r.status_code == 200
        return dict(r.json())

    def good_pair(self, pressure: float) -> None:
        """One good reading from each good estate, and one good event of estate B."""
        seq = self.next_seq()
        self.gateways[GOOD_A].publish("telemetry", hydrant(seq, pressure))
        self.gateways[GOOD_B].publish("telemetry", hydrant(seq, pressure))
        self.gateways[GOOD_B].publish("events", trapped(self.next_seq(), dev=f"lift-{seq}"))

    def wait_stored(self, pressure: float) -> None:
        def both() -> bool:
            a = self.readings(GOOD_A).get("h-1", {}).get("pressure_mpa")
            b = self.readings(GOOD_B).get("h-1", {}).get("pressure_mpa")
            return bool(a and b and a[1] == pressure and b[1] == pressure)

        wait_for(both, what=f"the good readings of {pressure} MPa from both estates")

    def close(self) -> None:
        for gw in self.gateways.values():
            gw.close()
        self.api.close()
        self.service.stop()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    s.close()


@pytest.mark.parametrize("poison", POISONS, ids=[p.name for p in POISONS])
def test_a_poison_message_is_dead_lettered_and_ingest_goes_on(site: Site, poison: Poison) -> None:
    site.good_pair(0.21)
    site.wait_stored(0.21)
    payload = poison.payload(site.next_seq())
    retained = poison.channel == "status"  # as gateways publish their status
    site.gateways[ATTACKER].publish(poison.channel, payload, retain=retained)
    site.good_pair(0.22)

    # dead-lettered, with a reason, bounded
    letters = wait_for(lambda: site.letters(ATTACKER), what=f"a dead letter of {poison.name}")
    assert len(letters) == 1, letters
    letter = letters[0]
    assert letter["reason"] in poison.reasons, letter
    assert letter["detail"] and letter["topic"].endswith(poison.channel)
    assert len(letter["payload"]) <= DEADLETTER_HEAD_BYTES
    if letter["item_index"] is None:  # the whole message: its size and hash
        assert letter["payload_size"] == len(payload)
        assert letter["payload_sha256"] == hashlib.sha256(payload).hexdigest()

    # the good messages after it are stored, ingest keeps going
    site.wait_stored(0.22)
    wait_for(lambda: len(site.events(GOOD_B)) == 2, what="both good events of estate B")
    health = site.health()
    assert health["status"] == "ok" and health["writer"]["ok"] is True, health
    assert health["ingest"]["commit_failures"] == 0
    assert site.service.ingest is not None
    assert site.service.ingest.queue_depth == 0

    # after a restart nothing is stuck: the poison is not delivered again, new messages flow,
    # the attacker's own gateway included
    site.restart()
    site.good_pair(0.23)
    site.gateways[ATTACKER].publish("telemetry", hydrant(site.next_seq(), 0.33, dev="h-9"))
    site.wait_stored(0.23)
    wait_for(lambda: "h-9" in site.readings(ATTACKER), what="the attacker's next good reading")
    again = site.letters(ATTACKER)
    # a retained status comes again with every new subscription (MQTT): dead-lettered again,
    # once a start; anything else was acknowledged and is gone
    assert len(again) in ((1, 2) if retained else (1,)), again
    assert {x["reason"] for x in again} == {letter["reason"]}
    health = site.health()
    assert health["status"] == "ok" and health["writer"]["ok"] is True, health


def test_a_message_the_store_refuses_is_found_dead_lettered_and_acknowledged(site: Site) -> None:
    """Defence in depth: a message the decoder lets through but a store refuses (here a
    trigger of the telemetry database refuses one device's events, as a constraint would) is
    split out of its commit and dead-lettered as store_refused; its neighbours are stored."""
    with sqlite3.connect(site.settings.telemetry_path) as conn:
        conn.execute(
            "CREATE TRIGGER refuse_device BEFORE INSERT ON events "
            "WHEN NEW.device = 'refused-1' BEGIN SELECT RAISE(ABORT, 'refused here'); END"
        )
    site.good_pair(0.41)
    site.gateways[ATTACKER].publish("events", trapped(site.next_seq(), dev="refused-1"))
    site.gateways[ATTACKER].publish("events", trapped(site.next_seq(), dev="lift-ok"))
    site.good_pair(0.42)
    letters = wait_for(lambda: site.letters(ATTACKER), what="the refused message's dead letter")
    assert [x["reason"] for x in letters] == ["store_refused"]
    assert "refused here" in letters[0]["detail"]
    site.wait_stored(0.42)
    wait_for(lambda: len(site.events(GOOD_B)) == 2, what="both good events of estate B")
    wait_for(lambda: [e["dev"] for e in site.events(ATTACKER)] == ["lift-ok"], what="lift-ok")
    health = site.health()
    assert health["writer"]["ok"] is True and health["writer"]["poison_messages"] == 1
    metrics = site.api.get("/metrics").text
    assert "estatewatch_ingest_poison_messages_total 1.0" in metrics
    site.restart()
    site.good_pair(0.43)
    site.wait_stored(0.43)
    assert len(site.letters(ATTACKER)) == 1  # acknowledged: not delivered again


def test_a_locked_store_is_retried_not_dead_lettered_health_degraded_sigterm_prompt(
    mosquitto: ManagedMosquitto, tmp_path: Path
) -> None:
    """A store that fails itself (its database locked by another writer) is no message's
    fault: nothing is dead-lettered, /healthz says degraded, SIGTERM still stops the service
    at once (it took 65-93 s), and after a restart the message is stored."""
    data = tmp_path / "data"
    seed_state(data, GOOD_A, GOOD_A, GW)
    port = free_port()
    env = run_env(data, mosquitto.endpoint, port, TOKEN, ESTATEWATCH_INGEST_STALL_S="2")

    def start() -> subprocess.Popen[bytes]:
        return start_run(env)

    def health() -> dict[str, Any] | None:
        try:
            return dict(httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json())
        except httpx.HTTPError:
            return None

    creds = mosquitto.issue_gateway_credentials(GOOD_A, GW, "estates")
    assert creds is not None
    gw = Gateway(
        GOOD_A,
        {
            "topic_prefix": f"estates/{GOOD_A}/gw/{GW}/",
            "username": creds.username,
            "password": creds.password,
            "host": creds.host,
            "port": creds.port,
        },
    )
    telemetry = data / "telemetry.db"
    service = start()
    lock: sqlite3.Connection | None = None
    try:
        wait_for(lambda: (h := health()) and h["broker"]["connected"], 30, "the service")
        gw.publish("telemetry", hydrant(1, 0.51))
        wait_for(lambda: telemetry.exists() and _stored(telemetry, 0.51), what="the first reading")
        lock = sqlite3.connect(telemetry, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # another writer holds the database
        gw.publish("telemetry", hydrant(2, 0.52))
        degraded = wait_for(
            lambda: (h := health()) and h["status"] == "degraded" and h, 20, "degraded health"
        )
        assert degraded["writer"]["ok"] is False
        assert degraded["writer"]["state"] in ("stalled", "retrying")
        started = time.monotonic()
        service.send_signal(signal.SIGTERM)
        service.wait(20)
        took = time.monotonic() - started
        assert took < 12, f"SIGTERM took {took:.1f} s"
        lock.execute("ROLLBACK")
        lock.close()
        lock = None
        assert not _stored(telemetry, 0.52)
        service = start()  # the broker delivers the unacknowledged message again
        wait_for(lambda: _stored(telemetry, 0.52), 30, "the message after the restart")
        wait_for(lambda: (h := health()) and h["status"] == "ok", 20, "healthy again")
        letters = StateStore.open(f"sqlite:///{data / 'estatewatch.db'}")
        assert letters.list_dead_letters() == []
        letters.close()
    finally:
        if lock is not None:
            lock.close()
        gw.close()
        stop_run(service, 15)


def _stored(path: Path, pressure: float) -> bool:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            row = conn.execute("SELECT 1 FROM readings WHERE num = ?", (pressure,)).fetchone()
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return False
    return row is not None


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_seq_jumps_keep_the_gap_book_small(site: Site) -> None:
    """Issue 12: 40 messages with seq jumps of 100,001 kept 4.1 M missing seqs in memory
    (RSS 230 → 634 MB) and rewrote a 31 MB JSON on every commit. Gaps are ranges now."""
    gw = site.gateways[ATTACKER]
    gw.publish("telemetry", hydrant(1, 0.3))
    wait_for(lambda: "h-1" in site.readings(ATTACKER), what="the first reading")
    before = _rss_bytes()
    for i in range(1, 41):
        gw.publish("telemetry", hydrant(1 + i * 100_001, 0.3 + i / 1000))
    wait_for(
        lambda: site.health()["ingest"]["lost_messages"] == 40 * 100_000,
        what="every gap counted",
    )
    grown = _rss_bytes() - before
    assert grown < 100_000_000, f"RSS grew {grown / 1e6:.0f} MB"
    with sqlite3.connect(f"file:{site.settings.telemetry_path}?mode=ro", uri=True) as conn:
        (missing,) = conn.execute(
            "SELECT missing FROM gateway_seqs WHERE estate = ?", (ATTACKER,)
        ).fetchone()
    assert len(missing) < 2_000  # 40 ranges, not 4 M seqs
    gateways = site.api.get(f"/api/v1/estates/{ATTACKER}/gateways").json()["items"]
    assert [g["lost_messages"] for g in gateways if g["id"] == GW] == [40 * 100_000]
    site.good_pair(0.61)
    site.wait_stored(0.61)
