"""Bench 3: memory under load. The service runs as its own process (``estatewatch run`` against
a Mosquitto of the bench); a load generator publishes the large estate's telemetry at 10 %, 80 %
and 150 % of the maximum ingest rate, one after the other; the service's resident memory is
sampled every second. Reported: RSS at the end of each level, its slope (MB/min, a linear fit
over the level's second half), and at 150 %: the ingest queue at its bound (backpressure), what
the broker held, and, after the load stops and the backlog drains, readings lost (published but
not stored: must be 0).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.common import report, verdict
from estatewatch.broker import ManagedMosquitto, free_port
from ingest.state import StateStore

ESTATE, GW = "bench-memory", "gw-01"


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and its parts (RssAnon: heap; RssFile: mapped files, e.g. SQLite's WAL index)."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(value.split()[0]) / 1024
    return out


def run(
    max_rate: float, seconds: float = 60.0, shares: tuple[float, ...] = (0.10, 0.80, 1.50)
) -> dict[str, Any]:
    figures: dict[str, Any] = {"max_rate": max_rate, "seconds_per_level": seconds}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        broker = ManagedMosquitto(folder / "broker", free_port(), max_queued_messages=2_000_000)
        broker.start()
        data = folder / "data"
        data.mkdir()
        state = StateStore.open(f"sqlite:///{data / 'estatewatch.db'}")
        state.add_estate(ESTATE, "内存测试小区")
        state.add_gateway(ESTATE, GW)
        state.close()
        creds = broker.issue_gateway_credentials(ESTATE, GW, "estates")
        assert creds is not None
        ep = broker.endpoint
        api_port = free_port()
        env = {
            **os.environ,
            "ESTATEWATCH_DATA_DIR": str(data),
            "ESTATEWATCH_MQTT_URL": f"mqtt://{ep.username}:{ep.password}@{ep.host}:{ep.port}",
            "ESTATEWATCH_API_PORT": str(api_port),
            "ESTATEWATCH_ADMIN_TOKEN": "bench-admin-token-0123456789",
            "ESTATEWATCH_LOG_LEVEL": "WARNING",
        }
        service = subprocess.Popen(
            [sys.executable, "-m", "estatewatch.cli", "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        api = httpx.Client(
            base_url=f"http://127.0.0.1:{api_port}",
            headers={"Authorization": "Bearer bench-admin-token-0123456789"},
            timeout=10,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if api.get("/healthz").json().get("broker", {}).get("connected"):
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.3)
            url = f"mqtt://{creds.username}:{creds.password}@{creds.host}:{creds.port}"
            seq = 1
            published = 0
            for share in shares:
                rate = max_rate * share
                samples: list[tuple[float, float]] = []
                parts: list[dict[str, float]] = []
                depth_max = bytes_max = 0
                gen = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bench.loadgen",
                        "--url",
                        url,
                        "--estate",
                        ESTATE,
                        "--gw",
                        GW,
                        "--rate",
                        str(rate),
                        "--per-message",
                        "100",
                        "--seconds",
                        str(seconds),
                        "--first-seq",
                        str(seq),
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                t0 = time.monotonic()
                stop = threading.Event()

                def sample(
                    samples: list[tuple[float, float]],
                    parts: list[dict[str, float]],
                    stop: threading.Event,
                    t0: float,
                ) -> None:
                    while not stop.is_set():
                        mem = memory_mb(service.pid)
                        samples.append((time.monotonic() - t0, mem["VmRSS"]))
                        parts.append(mem)
                        time.sleep(1.0)

                sampler = threading.Thread(target=sample, args=(samples, parts, stop, t0))
                sampler.start()
                while gen.poll() is None:
                    try:
                        h = api.get("/healthz").json()["ingest"]
                        depth_max = max(depth_max, h["queue_depth"])
                        bytes_max = max(bytes_max, h["queued_bytes"])
                    except (httpx.HTTPError, KeyError):
                        pass
                    time.sleep(1.0)
                stop.set()
                sampler.join()
                out = gen.stdout.read() if gen.stdout else ""
                last = [ln for ln in out.splitlines() if ln.startswith("sent ")]
                if not last:  # it failed: say how, since "published" is then unknown
                    print(f"  load generator gave no count (exit {gen.returncode}):", flush=True)
                    print("    " + "\n    ".join(out.strip().splitlines()[-8:]), flush=True)
                    figures["load_generator_failed"] = out.strip().splitlines()[-3:]
                sent = int(last[-1].split()[1]) if last else 0
                seq = int(last[-1].split()[-1]) + 1 if last else seq
                published += sent
                half = [s for s in samples if s[0] >= seconds / 2]
                slope = (
                    float(np.polyfit([s[0] for s in half], [s[1] for s in half], 1)[0]) * 60
                    if len(half) >= 3
                    else 0.0
                )
                h = api.get("/healthz").json()["ingest"]
                key = f"load_{int(share * 100)}pct"
                figures[key] = {
                    "rate": round(rate),
                    "published_readings": sent,
                    "rss_mb_end": round(samples[-1][1], 1) if samples else None,
                    "rss_mb_max": round(max(s[1] for s in samples), 1) if samples else None,
                    "slope_mb_per_min": round(slope, 2),
                    "queue_depth_max": depth_max,
                    "queue_capacity": h["queue_capacity"],
                    "queued_mb_max": round(bytes_max / 2**20, 1),
                    "queued_mb_capacity": round(h["queued_bytes_capacity"] / 2**20, 1),
                    # where the memory is at the end, and RSS every 10 s (for the README's plot)
                    "parts_mb_end": {k: round(v, 1) for k, v in parts[-1].items()} if parts else {},
                    "rss_mb_every_10s": [round(v, 1) for _, v in samples[::10]],
                }
                print(
                    f"  {share:>4.0%} load ({rate:,.0f} readings/s): RSS "
                    f"{figures[key]['rss_mb_end']} MB, slope {slope:+.2f} MB/min, "
                    f"queue max {depth_max}/{h['queue_capacity']} messages, "
                    f"{bytes_max / 2**20:.1f}/{h['queued_bytes_capacity'] / 2**20:.0f} MiB",
                    flush=True,
                )
            # the backlog the broker held drains; then nothing may be missing
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                h = api.get("/healthz").json()["ingest"]
                if h["readings"] >= published:
                    break
                time.sleep(1)
            h = api.get("/healthz").json()["ingest"]
            figures["published_readings"] = published
            figures["stored_readings"] = h["readings"]
            figures["lost_readings"] = published - h["readings"]
            figures["dead_letters"] = h["dead_letters"]
            print(
                f"  after the load: published {published:,}, stored {h['readings']:,}, "
                f"lost {published - h['readings']:,}",
                flush=True,
            )
        finally:
            service.terminate()
            try:
                service.wait(30)
            except subprocess.TimeoutExpired:
                service.kill()
            broker.stop()
    return figures


def targets(f: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The rows of the levels that ran (a diagnosis may run one alone)."""
    m80, m150 = f.get("load_80pct"), f.get("load_150pct")
    rows = []
    if m80:
        rss80 = m80["rss_mb_max"] or 0
        slope = m80["slope_mb_per_min"]
        rows.append(
            (
                "3: RSS at 80 % load (slope)",
                f"{rss80:.0f} MB ({slope:+.2f} MB/min)",
                "≤ 300 MB, flat",
                verdict(rss80 <= 300 and abs(slope) <= 1.0),
            )
        )
        if m150:
            rss150 = m150["rss_mb_max"] or 0
            rows.append(
                (
                    "3: RSS at 150 % ÷ at 80 %",
                    f"{rss150 / max(rss80, 1):.2f}",
                    "≤ 2, no crash, none lost",
                    verdict(rss150 <= 2 * rss80 and f.get("lost_readings", 1) == 0),
                )
            )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--max-rate",
        type=float,
        default=50_000,
        help="the maximum ingest rate (bench 1's figure under make bench)",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=60,
        help="per load level (the issue's 5 minutes: --seconds 300)",
    )
    p.add_argument(
        "--levels",
        type=float,
        nargs="+",
        default=[0.10, 0.80, 1.50],
        help="load levels as shares of --max-rate (a diagnosis may run one alone)",
    )
    args = p.parse_args()
    print("bench 3: memory under load", flush=True)
    f = run(args.max_rate, args.seconds, tuple(args.levels))
    report("memory", f, vars(args), targets(f))


if __name__ == "__main__":
    main()
