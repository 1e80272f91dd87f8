"""Actions applied by the estate's owner (issue 16): the router's answers, an owner's replies,
and the request/reply link over a real Mosquitto (who may ask, what a silent owner gives)."""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from api.errors import ApiError
from api.owners import OwnerParts, OwnerRouter, refusal, serve
from cluster.owners import partition_address, shard_address, shard_owner
from estatewatch.broker import ManagedMosquitto
from estatewatch.owner_link import OwnerLink, request_topic
from ingest.model import NotOwner
from ingest.shards import shard_of
from ingest.state import NotFound


def test_the_owner_is_the_estates_shard() -> None:
    owner_of = shard_owner(4)
    for estate in ("shard-a", "shard-d", "estate-00017", ""):
        assert owner_of(estate) == shard_address(shard_of(estate, 4))
    assert shard_owner(1)("anything") == "shard-0"
    assert partition_address(17) == "p17"


def test_a_silent_owner_is_a_503_that_says_what_to_do() -> None:
    asked: list[tuple[str, dict[str, Any], float]] = []

    def request(address: str, body: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        asked.append((address, body, timeout))
        return None

    router = OwnerRouter(shard_owner(2), request, timeout_s=0.5)
    with pytest.raises(ApiError) as err:
        router.act("shard-d", "acknowledge", {"alarm": "al-1"}, "张工")
    assert err.value.status == 503 and err.value.code == "owner_unavailable"
    assert "shard-d" in err.value.message and "shard-1" in err.value.message
    assert "没有应答" in err.value.message and "did not answer" in err.value.message
    assert asked == [
        ("shard-1", {"action": "acknowledge", "args": {"alarm": "al-1"}, "by": "张工"}, 0.5)
    ]


def test_the_owners_refusal_reaches_the_caller_unchanged() -> None:
    def request(address: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        return {"status": 409, "error": {"code": "conflict", "message": "alarm al-1 is resolved"}}

    with pytest.raises(ApiError) as err:
        OwnerRouter(shard_owner(2), request).act("shard-a", "resolve", {"alarm": "al-1"}, "u")
    assert (err.value.status, err.value.code, err.value.message) == (
        409,
        "conflict",
        "alarm al-1 is resolved",
    )


def test_an_owner_answers_every_request_and_never_raises() -> None:
    nothing = OwnerParts(None, None)
    assert serve(nothing, {"action": "fly", "args": {}, "by": "u"})["status"] == 422
    assert serve(nothing, {"action": "acknowledge", "by": "u"})["status"] == 422
    answer = serve(nothing, {"action": "acknowledge", "args": {"alarm": "a"}, "by": "u"})
    assert answer["status"] == 503
    not_found = refusal(NotFound("alarm 'x' not found"))
    assert not_found is not None and not_found.status == 404
    assert refusal(RuntimeError("a fault")) is None
    # a worker whose lease on the estate's partition went while it applied the action: rolled
    # back, and the caller is told to try again (the next owner serves the address by then)
    moved = refusal(NotOwner(["e7"], "lease lost"))
    assert moved is not None and (moved.status, moved.code) == (503, "owner_moved")
    assert "e7" in moved.message and "重试" in moved.message and "Try again" in moved.message


def test_requests_and_replies_over_the_broker(mosquitto: ManagedMosquitto) -> None:
    applied: list[dict[str, Any]] = []

    def handler(request: dict[str, Any]) -> dict[str, Any]:
        applied.append(request)
        return {"status": 200, "body": {"done": request["action"], "by": request["by"]}}

    owner = OwnerLink(mosquitto.endpoint, "owner-test", handler=handler)
    owner.serve("shard-0")
    api = OwnerLink(mosquitto.endpoint, "api-test")
    owner.start()
    api.start()
    try:
        body = {"action": "acknowledge", "args": {"alarm": "al-1"}, "by": "张工"}
        reply = api.request("shard-0", body, 5.0)
        assert reply is not None and reply["status"] == 200
        assert reply["body"] == {"done": "acknowledge", "by": "张工"}
        # nobody serves shard-1: no answer, within the wait asked for
        t = time.monotonic()
        assert api.request("shard-1", body, 0.3) is None
        assert time.monotonic() - t < 2
        # a gateway's account cannot ask an owner anything (the broker's ACL)
        creds = mosquitto.issue_gateway_credentials("e1", "gw-01", "estates")
        assert creds is not None
        gw = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=creds.username)
        gw.username_pw_set(creds.username, creds.password)
        gw.connect(creds.host, creds.port)
        gw.loop_start()
        forged = orjson.dumps(
            {**body, "v": 1, "id": "x", "reply_to": "estates/_owners/_reply/api-test", "by": "gw"}
        )
        gw.publish(request_topic("estates", "shard-0"), forged, 1).wait_for_publish(5)
        gw.disconnect()
        gw.loop_stop()
        # a request after it: the forged one would have been applied before it
        assert api.request("shard-0", body, 5.0) is not None
        assert [r["by"] for r in applied] == ["张工", "张工"]
    finally:
        api.stop()
        owner.stop()


def test_an_owner_that_cannot_keep_up_says_busy(mosquitto: ManagedMosquitto) -> None:
    release = threading.Event()

    def slow(request: dict[str, Any]) -> dict[str, Any]:
        release.wait(5)
        return {"status": 200, "body": None}

    owner = OwnerLink(mosquitto.endpoint, "owner-slow", handler=slow, max_queued=1)
    owner.serve("shard-0")
    api = OwnerLink(mosquitto.endpoint, "api-many")
    owner.start()
    api.start()
    try:
        answers: list[dict[str, Any] | None] = []
        body = {"action": "acknowledge", "args": {"alarm": "a"}, "by": "u"}
        threads = [
            threading.Thread(target=lambda: answers.append(api.request("shard-0", body, 3.0)))
            for _ in range(4)
        ]
        for th in threads:
            th.start()
            time.sleep(0.1)
        time.sleep(0.3)
        release.set()
        for th in threads:
            th.join(10)
        busy = [a for a in answers if a is not None and a["status"] == 503]
        assert busy and busy[0]["error"]["code"] == "owner_busy"
    finally:
        release.set()
        api.stop()
        owner.stop()
