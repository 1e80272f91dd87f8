"""`estatewatch demo` as a user runs it: a fresh data dir, devices of both estates updating."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

pytestmark = pytest.mark.integration


def test_demo_shows_both_estates_updating_within_30_s(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ESTATEWATCH_DATA_DIR": str(tmp_path / "data"),
        "ESTATEWATCH_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "estatewatch.cli", "demo", "--duration", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    started = time.monotonic()
    try:
        assert proc.stdout is not None
        url = token = None
        for line in proc.stdout:
            m = re.search(r"(http://[\d.]+:\d+)/#token=(\S+)", line)
            if m:
                url, token = m.groups()
                break
        assert url and token, "the demo did not print the URL to open"
        api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"})
        assert {e["id"] for e in api.get("/api/v1/estates").json()["items"]} == {
            "hohhot-xinhua",
            "hailar-beiyuan",
        }
        first: dict[str, dict[str, int]] = {"hohhot-xinhua": {}, "hailar-beiyuan": {}}
        updated: set[str] = set()
        while time.monotonic() - started < 30 and len(updated) < 2:
            for estate, seen_first in first.items():
                items = api.get(f"/api/v1/estates/{estate}/devices").json()["items"]
                for d in items:
                    if not d["online"]:
                        continue
                    before = seen_first.setdefault(d["id"], d["last_seen_ms"])
                    if d["last_seen_ms"] > before:
                        updated.add(estate)
            time.sleep(1)
        assert updated == {"hohhot-xinhua", "hailar-beiyuan"}, (first, updated)
        assert api.get("/api/v1/deadletters").json()["items"] == []
        proc.send_signal(2)  # Ctrl-C
        assert proc.wait(20) == 0
        # the ground truth of what each estate played, for estatewatch score
        for estate in first:
            lines = (tmp_path / "data" / f"truth-{estate}.jsonl").read_text().splitlines()
            assert all(orjson.loads(x)["estate"] == estate for x in lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
