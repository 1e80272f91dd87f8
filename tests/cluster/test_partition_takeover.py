"""Ingest by partition across a worker's death (issue 16): two `estatewatch run --role ingest`
workers and a `run --role api` node as real processes, on one Mosquitto, PostgreSQL and
VictoriaMetrics, with short leases (TTL 6 s, renewals every 2 s). Gateways of four estates in
four partitions send seq-numbered readings; one worker is killed -9 (the process alone) in the
middle of the load. Its partitions move to the other worker within 30 s (measured, printed),
every reading is stored exactly once (the store's dedup book and VictoriaMetrics' export), so
nothing the dead worker acknowledged was left uncommitted; and an alarm of an estate that moved
is raised by the survivor and acknowledged through the API node, which routes it to the
partition's address (``p{N}``) that the survivor now serves."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion

from cluster.partitions import partition_of
from estatewatch.broker import ManagedMosquitto, free_port
from tests.support import run_env, waiter

pytestmark = [
    pytest.mark.integration,
    pytest.mark.cluster,  # several processes: in make cluster-test too
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]

TOKEN = "test-admin-token-0123456789"
PARTITIONS = 8
# four estates in four partitions of 8 (crc32), so both workers hold some of them
ESTATES = ("north-1", "north-2", "north-3", "north-5")
RATE = 40  # messages a second, all estates together
SECONDS = 12  # of load; the kill comes after a third of it
wait_for = waiter(every=0.2)


@dataclasses.dataclass
class Node:
    proc: subprocess.Popen[bytes]
    http: httpx.Client
    log: Path

    def health(self) -> dict[str, Any] | None:
        try:
            r = self.http.get("/healthz", timeout=2)
        except httpx.HTTPError:
            return None
        return dict(r.json()) if r.status_code in (200, 503) else None

    def held(self) -> list[int]:
        h = self.health()
        return list(h["partitions"]["held"]) if h and "partitions" in h else []

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def _start(tmp: Path, name: str, env: dict[str, str], role: str) -> Node:
    port = int(env["ESTATEWATCH_API_PORT"])
    log = tmp / f"{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "estatewatch.cli", "run", "--role", role],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    http = httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    return Node(proc, http, log)


@pytest.fixture
def nodes(
    tmp_path: Path, mosquitto: ManagedMosquitto, database_url: str, victoriametrics: str
) -> Iterator[dict[str, Node]]:
    started: dict[str, Node] = {}
    for name, role in (("w1", "ingest"), ("w2", "ingest"), ("api", "api")):
        env = run_env(
            tmp_path / name,  # hosts of their own: nothing read from another's files
            mosquitto.endpoint,
            free_port(),
            TOKEN,
            ESTATEWATCH_DATABASE_URL=database_url,
            ESTATEWATCH_PARTITIONS=str(PARTITIONS),
            ESTATEWATCH_LEASE_TTL_S="6",
            ESTATEWATCH_LEASE_RENEW_S="2",
            ESTATEWATCH_WORKER_ID=name,
            ESTATEWATCH_TIMESERIES="victoriametrics",
            ESTATEWATCH_VICTORIAMETRICS_URL=victoriametrics,
            ESTATEWATCH_INGEST_STORE_PROCESS="false",  # one process a worker: killed alone
            ESTATEWATCH_COMMIT_INTERVAL_MS="50",
            ESTATEWATCH_LOG_LEVEL="INFO",
        )
        started[name] = _start(tmp_path, name, env, role)
    try:
        wait_for(
            lambda: all(n.health() is not None for n in started.values()), 60, "three processes"
        )
        yield started
    finally:
        for n in started.values():
            if n.proc.poll() is None:
                n.proc.send_signal(signal.SIGTERM)
        for n in started.values():
            try:
                n.proc.wait(15)
            except subprocess.TimeoutExpired:
                n.proc.kill()
            n.http.close()


class Gateways:
    """One gateway a estate (its broker account), sending seq-numbered weather readings, one
    a message, a second of data time apart, from an hour ago."""

    def __init__(self, broker: ManagedMosquitto) -> None:
        self.clients: dict[str, mqtt.Client] = {}
        self.sent: dict[str, int] = dict.fromkeys(ESTATES, 0)
        self.t0 = int(time.time() * 1000) - 3_600_000
        for e in ESTATES:
            creds = broker.issue_gateway_credentials(e, "gw-01", "estates")
            assert creds is not None
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=creds.username)
            c.username_pw_set(creds.username, creds.password)
            c.max_queued_messages_set(0)
            c.connect(creds.host, creds.port)
            c.loop_start()
            self.clients[e] = c
        for e, c in self.clients.items():
            wait_for(c.is_connected, 10, f"{e}'s gateway connected")

    def send(self, estate: str) -> None:
        seq = self.sent[estate] + 1
        now = int(time.time() * 1000)
        reading = {
            "dev": "ws-01",
            "kind": "weather_station",
            "ts": self.t0 + seq * 1000,
            "m": {"temp_c": float(seq % 40)},
        }
        body = {"v": 1, "gw": "gw-01", "seq": seq, "sent": now, "readings": [reading]}
        topic = f"estates/{estate}/gw/gw-01/telemetry"
        self.clients[estate].publish(topic, orjson.dumps(body), 1).wait_for_publish(10)
        self.sent[estate] = seq

    def fire(self, estate: str) -> None:
        now = int(time.time() * 1000)
        event = {"dev": "fap-1", "kind": "fire_panel", "ts": now, "type": "fire.alarm"}
        body = {"v": 1, "gw": "gw-01", "seq": self.sent[estate] + 1, "sent": now}
        body["events"] = [event]
        topic = f"estates/{estate}/gw/gw-01/events"
        self.clients[estate].publish(topic, orjson.dumps(body), 1).wait_for_publish(10)
        self.sent[estate] += 1

    def close(self) -> None:
        for c in self.clients.values():
            c.disconnect()
            c.loop_stop()


def _vm_timestamps(vm: str) -> dict[str, list[int]]:
    """Per estate, every stored timestamp of the weather stations' temperature (repeats kept)."""
    r = httpx.get(f"{vm}/api/v1/export", params={"match[]": "weather_station_temp_c"}, timeout=10)
    r.raise_for_status()
    out: dict[str, list[int]] = {}
    for line in r.text.splitlines():
        if line.strip():
            series = orjson.loads(line)
            out.setdefault(series["metric"]["estate"], []).extend(series["timestamps"])
    return out


def _book(database_url: str) -> dict[str, tuple[int, int, int]]:
    """Per estate, from the dedup book in PostgreSQL: (seqs stored, distinct seqs, the
    weather station's latest data time)."""
    engine = sa.create_engine(database_url.replace("postgresql:", "postgresql+psycopg:"))
    try:
        with engine.connect() as conn:
            seqs = conn.execute(
                sa.text(
                    "SELECT estate, count(*), count(DISTINCT seq) FROM telemetry_message_seqs "
                    "GROUP BY estate"
                )
            ).all()
            latest: dict[str, int] = dict(
                conn.execute(
                    sa.text(
                        "SELECT estate, ts FROM telemetry_latest "
                        "WHERE device = 'ws-01' AND metric = 'temp_c'"
                    )
                ).all()
            )
    finally:
        engine.dispose()
    return {e: (n, d, latest.get(e, 0)) for e, n, d in seqs}


@pytest.mark.parametrize("fault", ["kill", "pause"])
def test_a_lost_workers_partitions_move_and_every_reading_is_stored_once(
    nodes: dict[str, Node],
    mosquitto: ManagedMosquitto,
    victoriametrics: str,
    database_url: str,
    fault: str,
) -> None:
    """``kill``: kill -9. ``pause``: SIGSTOP until the other worker holds every partition,
    then SIGCONT: the paused one wakes holding leases it lost (its commits are fenced, its
    sessions were taken over by the broker) and lets them go, then rejoins and takes its share
    back (a rebalance under load)."""
    assert len({partition_of(e, PARTITIONS) for e in ESTATES}) == len(ESTATES)
    api = nodes["api"].http
    for e in ESTATES:
        assert api.post("/api/v1/estates", json={"id": e, "name": e}).status_code == 201
        assert api.post(f"/api/v1/estates/{e}/gateways", json={"id": "gw-01"}).status_code == 201
    workers = {n: nodes[n] for n in ("w1", "w2")}

    def shared() -> bool:
        held = [set(w.held()) for w in workers.values()]
        return sorted(map(len, held)) == [4, 4] and held[0] | held[1] == set(range(PARTITIONS))

    wait_for(shared, 40, "the 8 partitions shared 4/4")

    def subscribed() -> set[str]:
        found: set[str] = set()
        for w in workers.values():
            h = w.health()
            if h and isinstance(h["ingest"]["estates"], list):
                found.update(h["ingest"]["estates"])
        return found

    wait_for(lambda: subscribed() == set(ESTATES), 20, "every estate subscribed by its owner")
    # the worker to kill: the one holding the partition of the first estate
    p_first = partition_of(ESTATES[0], PARTITIONS)
    victim = "w1" if p_first in workers["w1"].held() else "w2"
    survivor = "w2" if victim == "w1" else "w1"
    moved = workers[victim].held()
    health = workers[victim].health()
    assert health is not None
    sessions = health["partitions"]["sessions"]
    assert sorted(int(p) for p in sessions) == moved
    assert all(all(s["connected"].values()) for s in sessions.values()), sessions

    gws = Gateways(mosquitto)
    killed_at = 0.0
    try:
        for i in range(RATE * SECONDS):
            gws.send(ESTATES[i % len(ESTATES)])
            if i == RATE * SECONDS // 3:
                # the process alone
                workers[victim].proc.send_signal(
                    signal.SIGKILL if fault == "kill" else signal.SIGSTOP
                )
                killed_at = time.monotonic()
            time.sleep(1 / RATE)
        wait_for(
            lambda: sorted(workers[survivor].held()) == list(range(PARTITIONS)),
            30 - (time.monotonic() - killed_at),
            "the survivor to hold every partition",
        )
        took = time.monotonic() - killed_at

        def ingesting() -> bool:  # the moved partitions' sessions open and connected
            h = workers[survivor].health()
            sessions = h["partitions"]["sessions"] if h else {}
            return len(sessions) == PARTITIONS and all(
                all(s["connected"].values()) for s in sessions.values()
            )

        wait_for(ingesting, 30, "the survivor's sessions of every partition")
        print(
            f"takeover: partitions {moved} moved {took:.1f} s after the {fault}, their "
            f"sessions connected at {time.monotonic() - killed_at:.1f} s"
        )
        if fault == "pause":
            workers[victim].proc.send_signal(signal.SIGCONT)
            woke = time.monotonic()
            for i in range(RATE * 4):  # load goes on while it lets go and rejoins
                gws.send(ESTATES[i % len(ESTATES)])
                time.sleep(1 / RATE)
            wait_for(shared, 30, "the woken worker to take its share back")
            print(f"rebalanced 4/4 {time.monotonic() - woke:.1f} s after SIGCONT")
            said = workers[victim].log.read_text(errors="replace")
            # woken, it judged its leases lost on its own clock (or by a fenced commit)
            why = ("not renewed in time", "was fenced", "renewal was refused")
            let_go = [
                ln
                for ln in said.splitlines()
                if "lets partition" in ln and any(w in ln for w in why)
            ]
            assert let_go, said[-3000:]
            print("\n".join(let_go[:4]))
            dropped = [ln for ln in said.splitlines() if "dropped unacknowledged" in ln]
            print(f"{len(dropped)} fenced commits of the woken worker:", *dropped[:3], sep="\n")

        counts: dict[str, tuple[int, int]] = {}

        def stored() -> bool:
            got = _vm_timestamps(victoriametrics)
            counts.update({e: (len(set(got.get(e, []))), gws.sent[e]) for e in ESTATES})
            return all(have == sent for have, sent in counts.values())

        try:
            wait_for(stored, 30, "every reading in VictoriaMetrics")
        finally:
            print(f"stored/sent per estate: {counts}")
        got = _vm_timestamps(victoriametrics)
        for e in ESTATES:
            want = [gws.t0 + s * 1000 for s in range(1, gws.sent[e] + 1)]
            assert sorted(got[e]) == want, f"{e}: stored {len(got[e])} of {len(want)} readings"
        # the dedup book moved with the partitions: each seq once, "now" the last reading
        book = _book(database_url)
        assert book == {e: (n, n, gws.t0 + n * 1000) for e, n in gws.sent.items()}, book
        for name, w in workers.items():
            h = w.health()
            if h is not None:
                print(
                    f"{name} committed {h['ingest']['committed_messages']} of "
                    f"{sum(gws.sent.values())} messages "
                    f"({h['ingest']['duplicates']} repeats dropped)"
                )
        # an alarm of an estate that moved, raised by the survivor, acknowledged through the
        # API node (routed to p{N}, which the survivor now serves)
        gws.fire(ESTATES[0])

        def firing() -> list[dict[str, Any]]:
            r = api.get("/api/v1/alarms", params={"estate": ESTATES[0], "state": "firing"})
            return [a for a in r.json()["items"] if a["device"] == "fap-1"]

        alarm = wait_for(firing, 20, "the fire alarm of the moved estate")[0]
        r = api.post(f"/api/v1/alarms/{alarm['id']}/ack", json={"note": "到场"})
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "acknowledged"
    except BaseException:
        for name, n in nodes.items():
            print(f"--- {name} ---\n{n.tail()}")
        raise
    finally:
        gws.close()
