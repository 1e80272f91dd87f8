"""Simulated gateway → real Mosquitto → ingest → SQLite → the API, with bad input beside good."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from estatewatch.service import Service
from gateway.publisher import GatewayPublisher
from protocol.clock import now_ms
from protocol.endpoint import MqttEndpoint
from simulators.estate import SimulatedEstate, small_estate
from tests.conftest import mosquitto_pub
from tests.support import waiter

pytestmark = pytest.mark.integration

ESTATE, GW = "e2e-estate", "gw-01"


wait_for = waiter(timeout=20.0, every=0.2)


def pub(service: Service, topic: str, payload: bytes) -> None:
    ep = service.endpoint
    assert ep is not None and ep.username and ep.password
    subprocess.run(
        [
            mosquitto_pub(),
            "-h",
            ep.host,
            "-p",
            str(ep.port),
            "-u",
            ep.username,
            "-P",
            ep.password,
            "-q",
            "1",
            "-t",
            topic,
            "-s",
        ],
        input=payload,
        check=True,
        timeout=10,
    )


def reading(dev: str, kind: str, m: dict[str, Any], ts: int | None = None) -> dict[str, Any]:
    return {"dev": dev, "kind": kind, "ts": ts or now_ms(), "m": m}


def telemetry(readings: list[dict[str, Any]], seq: int, gw: str = GW, v: Any = 1) -> bytes:
    return orjson.dumps({"v": v, "gw": gw, "seq": seq, "sent": now_ms(), "readings": readings})


def test_simulated_gateway_to_api_with_bad_input_dead_lettered(
    service: Service, tmp_path: Path
) -> None:
    api = httpx.Client(
        base_url=service.url, headers={"Authorization": "Bearer test-admin-token-0123456789"}
    )
    assert api.get("/healthz").json()["broker"]["connected"] is True
    assert (
        api.post(
            "/api/v1/estates", json={"id": ESTATE, "name": "端到端小区", "region": "呼和浩特市"}
        ).status_code
        == 201
    )
    r = api.post(f"/api/v1/estates/{ESTATE}/gateways", json={"id": GW})
    assert r.status_code == 201
    creds = r.json()["mqtt"]
    assert creds["username"] == f"{ESTATE}.{GW}" and creds["password"]
    assert creds["topic_prefix"] == f"estates/{ESTATE}/gw/{GW}/"

    # The gateway logs in with the credentials the API just issued.
    spec = small_estate(ESTATE, "端到端小区", "呼和浩特市", -11.0, buildings=2, gateway=GW)
    sim = SimulatedEstate(spec, service.catalog, seed=7, start_ms=now_ms() - 5000)
    publisher = GatewayPublisher(
        ESTATE,
        GW,
        MqttEndpoint(creds["host"], creds["port"], creds["username"], creds["password"]),
        tmp_path / "gw",
    )
    assert publisher.start(), "gateway could not log in with the issued credentials"
    readings = sim.due(now_ms())
    assert len(readings) == len(spec.devices)
    for info in publisher.publish_telemetry(readings):
        info.wait_for_publish(5)

    # Every bad-input kind of CONTRACT.md, published beside the good data.
    topic = f"estates/{ESTATE}/gw/{GW}/telemetry"
    good = reading("b1-hydrant-1", "fire_hydrant", {"pressure_mpa": 0.287})
    good2 = reading("b2-hydrant-1", "fire_hydrant", {"pressure_mpa": 0.301})
    bad_cases: list[tuple[str, str, bytes]] = [
        ("invalid_json", topic, b"{not json"),
        ("unknown_version", topic, telemetry([good], 1001, v=2)),
        ("gw_mismatch", topic, telemetry([good], 1002, gw="gw-99")),
        ("unknown_kind", topic, telemetry([reading("x-1", "toaster", {"temp_c": 1})], 1003)),
        (
            "unknown_metric",
            topic,
            telemetry([reading("b1-hydrant-1", "fire_hydrant", {"flow_lpm": 3})], 1004),
        ),
        (
            "bad_value_type",
            topic,
            telemetry([reading("b1-hydrant-1", "fire_hydrant", {"pressure_mpa": "high"})], 1005),
        ),
        (
            "out_of_range",
            topic,
            telemetry([reading("b1-hydrant-1", "fire_hydrant", {"pressure_mpa": 99.0})], 1006),
        ),
        (
            "future_timestamp",
            topic,
            telemetry(
                [
                    reading(
                        "b1-hydrant-1",
                        "fire_hydrant",
                        {"pressure_mpa": 0.3},
                        ts=now_ms() + 3 * 86_400_000,
                    )
                ],
                1007,
            ),
        ),
        ("too_large", topic, b'{"v":1,"pad":"' + b"x" * (1_100_000) + b'"}'),
        (
            "unknown_event_type",
            f"estates/{ESTATE}/gw/{GW}/events",
            orjson.dumps(
                {
                    "v": 1,
                    "gw": GW,
                    "seq": 1008,
                    "sent": now_ms(),
                    "events": [
                        {
                            "dev": "b1-lift-1",
                            "kind": "elevator",
                            "ts": now_ms(),
                            "type": "elevator.flying",
                            "data": {},
                        }
                    ],
                }
            ),
        ),
        ("unknown_estate", "estates/nowhere/gw/gw-01/telemetry", telemetry([good], 1)),
        (
            "unknown_gateway",
            f"estates/{ESTATE}/gw/gw-77/telemetry",
            telemetry([good], 1, gw="gw-77"),
        ),
    ]
    for _, t, payload in bad_cases:
        pub(service, t, payload)
    # A mixed batch: two good readings around two bad ones; only the bad ones are rejected.
    mixed = telemetry(
        [
            good,
            reading("b1-hydrant-2", "fire_hydrant", {"pressure_mpa": -5.0}),
            {"dev": "b2-hydrant-2"},
            good2,
        ],
        1009,
    )
    pub(service, topic, mixed)

    expected_reasons = [c[0] for c in bad_cases] + ["out_of_range", "bad_item"]

    def dead_letters() -> list[dict[str, Any]] | None:
        body = api.get("/api/v1/deadletters", params={"limit": 100}).json()
        return body["items"] if len(body["items"]) >= len(expected_reasons) else None

    letters = wait_for(dead_letters, what="dead letters of every bad-input kind")
    assert sorted(d["reason"] for d in letters) == sorted(expected_reasons)
    assert all(d["detail"] for d in letters)
    by_reason = {d["reason"]: d for d in letters}
    assert by_reason["unknown_estate"]["topic"] == "estates/nowhere/gw/gw-01/telemetry"
    assert by_reason["invalid_json"]["payload"] == "{not json"
    # Bad items are kept one by one with their place in the batch; the six single-reading
    # cases at index 0, the mixed batch's two at 1 and 2.
    item_letters = [d for d in letters if d["item_index"] is not None]
    assert sorted(d["item_index"] for d in item_letters) == [0] * 6 + [1, 2]
    assert (
        orjson.loads(next(d for d in item_letters if d["item_index"] == 1)["payload"])["dev"]
        == "b1-hydrant-2"
    )

    # The good readings of the mixed batch and of the simulator are stored and shown.
    def devices() -> dict[str, Any] | None:
        items = api.get(f"/api/v1/estates/{ESTATE}/devices").json()["items"]
        got = {d["id"]: d for d in items}
        ok = (
            len(got) == len(spec.devices)
            and got["b2-hydrant-1"]["metrics"].get("pressure_mpa") == 0.301
        )
        return got if ok else None

    got = wait_for(devices, what="all simulated devices in the API")
    for dev, kind in spec.devices:
        d = got[dev]
        assert d["kind"] == kind
        assert d["online"] is True, d
        assert d["last_seen_ms"] is not None
        assert set(d["metrics"]) == set(service.catalog.kinds[kind].metrics)
    assert got["b1-hydrant-1"]["metrics"]["pressure_mpa"] == 0.287
    assert isinstance(got["b1-lift-1"]["metrics"]["running"], bool)
    # b1-hydrant-2's only reading was the bad one of the mixed batch: its simulator value stands.
    assert got["b1-hydrant-2"]["metrics"]["pressure_mpa"] >= 0

    health = api.get("/healthz").json()
    assert health["ingest"]["dead_letters"]["out_of_range"] == 2
    assert health["ingest"]["readings"] == len(readings) + 2
    publisher.stop()

    # The gateway's retained Last-Will-style status reaches the registry.
    def offline() -> bool:
        gws = api.get(f"/api/v1/estates/{ESTATE}/gateways").json()["items"]
        return gws[0]["state"] == "offline"

    wait_for(offline, what="gateway status offline")
