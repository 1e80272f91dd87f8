"""The README's "register an estate and a gateway, then publish as the gateway" example, run as
written (curl and mosquitto_pub, only the addresses, the token file and the shown password put
in) against the running service: the reading it publishes carries the current time, so it is
stored as of now, not refused as from the future or kept as history
(issue 13: the example's reading used a fixed date); its gateway's status makes the gateway and
the device show online, as the README says (issue 11: without it the gateway stayed unknown)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from estatewatch.service import Service
from tests.conftest import mosquitto_pub
from tests.support import waiter

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
TOKEN = "test-admin-token-0123456789"


def readme_example() -> list[str]:
    text = README.read_text(encoding="utf-8")
    head = text.index("Register an estate and a gateway, then publish as the gateway:")
    block = re.search(r"```sh\n(.*?)```", text[head:], re.S)
    assert block, "the README's example is gone"
    return block.group(1).splitlines()


def test_the_readmes_example_reading_is_stored_as_of_now(service: Service, tmp_path: Path) -> None:
    mosquitto_pub()  # says what to install when it is missing
    token = tmp_path / "admin-token"
    token.write_text(TOKEN)
    assert service.endpoint is not None
    lines = readme_example()
    split = next(i for i, line in enumerate(lines) if line.startswith("# →"))

    def run(script: str) -> str:
        script = script.replace("http://127.0.0.1:8000", service.url)
        script = script.replace("data/admin-token", str(token))
        out = subprocess.run(
            ["bash", "-e", "-c", script], capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 0, (script, out.stderr)
        return out.stdout

    answers = run("\n".join(lines[:split]))  # the two curl calls, their answers one after the other
    decoder = json.JSONDecoder()
    estate, end = decoder.raw_decode(answers)
    gateway, _ = decoder.raw_decode(answers[end:].lstrip())
    assert estate["id"] == "hohhot-a" and gateway["mqtt"]["username"] == "hohhot-a.gw-01"
    mqtt = gateway["mqtt"]
    rest = "\n".join(lines[split:])
    rest = rest.replace("-p 1883", f"-h {mqtt['host']} -p {mqtt['port']}")
    rest = rest.replace("-P '…'", f"-P {shlex.quote(mqtt['password'])}")
    before = time.time_ns() // 1_000_000
    run(rest)

    api = httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {TOKEN}"})

    def hydrant() -> dict[str, Any] | None:
        items = api.get("/api/v1/estates/hohhot-a/devices").json()["items"]
        return next((d for d in items if d["last_seen_ms"] is not None), None)

    dev = waiter(20)(hydrant, what="the hydrant's reading")
    assert dev["id"] == "b3-hydrant-07"
    assert before - 5_000 <= dev["last_seen_ms"] <= time.time_ns() // 1_000_000
    assert dev["metrics"]["pressure_mpa"] == 0.31
    # what the README says the estate page shows: the gateway online (its status), the device too
    assert dev["online"] is True

    def online() -> dict[str, Any] | None:
        (gw,) = api.get("/api/v1/estates/hohhot-a/gateways").json()["items"]
        return gw if gw["state"] == "online" else None

    waiter(10)(online, what="the gateway's status")
    assert api.get("/api/v1/deadletters").json()["items"] == []
