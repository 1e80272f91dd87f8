"""Bench 2: alert latency, publish → alarm on the live stream, under load.

The whole service runs in this process (its own Mosquitto, SQLite, ingest, alert engine, API).
A load generator in another process publishes the large estate's telemetry at a share of the
maximum ingest rate; every 100 ms a probe gateway publishes a ``fire.alarm`` event from a new
fire panel (a critical alarm at once). The figure is the time from publishing the probe to the
alarm arriving on the dashboard's Server-Sent Events stream. Reference in the same run: a bare
paho subscriber's publish-to-receive time for the same probe messages.
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from api.live import read_frames
from bench.common import report, verdict
from estatewatch.broker import ManagedMosquitto, free_port
from estatewatch.cli import tune_interpreter
from estatewatch.service import Service
from estatewatch.settings import Settings

ESTATE, LOAD_GW, PROBE_GW = "bench-latency", "gw-load", "gw-probe"


def _client(creds: Any, client_id: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    c.username_pw_set(creds.username, creds.password)
    c.connect(creds.host, creds.port)
    c.loop_start()
    return c


def run(load_rate: float, seconds: float = 30.0, probes_per_s: float = 10.0) -> dict[str, Any]:
    tune_interpreter()  # as `estatewatch run` does
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=str(Path(tmp) / "data"),
            broker_port=free_port(),
            api_port=free_port(),
            admin_token="bench-admin-token-0123456789",
            log_level="WARNING",
        )
        service = Service(settings)
        service.start()
        gc.freeze()  # as `estatewatch run` does once started
        try:
            return _measure(service, load_rate, seconds, probes_per_s)
        finally:
            service.stop()


def _measure(
    service: Service, load_rate: float, seconds: float, probes_per_s: float
) -> dict[str, Any]:
    broker = service.broker
    assert isinstance(broker, ManagedMosquitto) and service.ingest is not None
    service.state.add_estate(ESTATE, "延迟测试小区")
    for gw in (LOAD_GW, PROBE_GW):
        service.state.add_gateway(ESTATE, gw)
    service.ingest.registry.reload()
    load = broker.issue_gateway_credentials(ESTATE, LOAD_GW, "estates")
    probe = broker.issue_gateway_credentials(ESTATE, PROBE_GW, "estates")
    assert load and probe
    sent: dict[str, float] = {}
    on_stream: dict[str, float] = {}
    on_bare: dict[str, float] = {}
    stop = threading.Event()

    def stream() -> None:
        headers = {"Authorization": "Bearer bench-admin-token-0123456789"}
        url = f"{service.url}/api/v1/estates/{ESTATE}/stream"
        with httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(5, read=60)) as r:
            try:
                for event, data in read_frames(r.iter_lines()):
                    if stop.is_set():
                        return
                    if event == "alarm":
                        subject = (data.get("alarm") or {}).get("subject", "")
                        if subject.startswith("probe-") and subject not in on_stream:
                            on_stream[subject] = time.time()
            except httpx.HTTPError:
                if not stop.is_set():  # the service stopping after the probes is the end
                    raise

    reader = threading.Thread(target=stream, daemon=True)
    reader.start()
    ep = broker.endpoint
    bare = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare-latency")
    bare.username_pw_set(ep.username, ep.password)

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        dev = orjson.loads(msg.payload)["events"][0]["dev"]
        on_bare.setdefault(dev, time.time())

    subscribed = threading.Event()
    bare.on_message = on_message
    bare.on_subscribe = lambda *a: subscribed.set()
    bare.on_connect = lambda c, *a: c.subscribe(f"estates/{ESTATE}/gw/{PROBE_GW}/events", 1)
    bare.connect(ep.host, ep.port)
    bare.loop_start()
    subscribed.wait(10)
    gen = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--url",
            f"mqtt://{load.username}:{load.password}@{load.host}:{load.port}",
            "--estate",
            ESTATE,
            "--gw",
            LOAD_GW,
            "--rate",
            str(load_rate),
            "--per-message",
            "100",
            "--seconds",
            str(seconds + 5),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(5)  # the load runs before the first probe
    pc = _client(probe, "bench-probe")
    seq = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        seq += 1
        dev = f"probe-{seq:05d}"
        now = int(time.time() * 1000)
        payload = orjson.dumps(
            {
                "v": 1,
                "gw": PROBE_GW,
                "seq": seq,
                "sent": now,
                "events": [
                    {
                        "dev": dev,
                        "kind": "fire_panel",
                        "ts": now,
                        "type": "fire.alarm",
                        "data": {"zone": "bench"},
                    }
                ],
            }
        )
        sent[dev] = time.time()
        pc.publish(f"estates/{ESTATE}/gw/{PROBE_GW}/events", payload, 1)
        time.sleep(1 / probes_per_s)
    time.sleep(3)
    stop.set()
    gen.wait(60)
    pc.disconnect()
    bare.disconnect()
    pc.loop_stop()
    bare.loop_stop()
    stream_ms = np.array([(on_stream[d] - t) * 1000 for d, t in sent.items() if d in on_stream])
    bare_ms = np.array([(on_bare[d] - t) * 1000 for d, t in sent.items() if d in on_bare])
    st = service.ingest.stats
    figures = {
        "load_readings_per_s": load_rate,
        "probes": len(sent),
        "alarms_on_stream": len(stream_ms),
        "bare_received": len(bare_ms),
        "stream_p50_ms": round(float(np.percentile(stream_ms, 50)), 1) if len(stream_ms) else None,
        "stream_p99_ms": round(float(np.percentile(stream_ms, 99)), 1) if len(stream_ms) else None,
        "bare_p50_ms": round(float(np.percentile(bare_ms, 50)), 1) if len(bare_ms) else None,
        "bare_p99_ms": round(float(np.percentile(bare_ms, 99)), 1) if len(bare_ms) else None,
        "readings_stored": st.readings,
        "queue_depth_at_end": service.ingest.queue_depth,
    }
    print(
        f"  load {load_rate:,.0f} readings/s: alarm on stream p50 {figures['stream_p50_ms']} "
        f"ms p99 {figures['stream_p99_ms']} ms | bare subscriber p50 {figures['bare_p50_ms']} "
        f"ms p99 {figures['bare_p99_ms']} ms | {len(stream_ms)}/{len(sent)} probes",
        flush=True,
    )
    return figures


def targets(f: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    if f.get("stream_p99_ms") is None or f.get("bare_p99_ms") is None:
        return [("2: alert p99", "no alarms arrived", "≤ bare p99 + 250 ms", "MISSED")]
    limit = f["bare_p99_ms"] + 250
    ok = f["stream_p99_ms"] <= limit and f["alarms_on_stream"] == f["probes"]
    return [
        (
            "2: alert p99 (bare p99)",
            f"{f['stream_p99_ms']:.0f} ms ({f['bare_p99_ms']:.0f} ms)",
            "≤ bare p99 + 250 ms, every probe",
            verdict(ok),
        )
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--load",
        type=float,
        default=30_000,
        help="background readings/s (bench 1's maximum × 0.5 under make bench)",
    )
    p.add_argument("--seconds", type=float, default=30)
    args = p.parse_args()
    print("bench 2: alert latency", flush=True)
    f = run(args.load, args.seconds)
    report("alert-latency", f, vars(args), targets(f))


if __name__ == "__main__":
    main()
