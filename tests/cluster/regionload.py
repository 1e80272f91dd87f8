"""The gateways of the region test (tests/cluster/test_netns_region.py), as a process on a host
of their own: one MQTT client a gateway (``gw-01`` of each estate), a telemetry message every
``--every-s`` seconds with seq 1, 2, 3 … (QoS 1), each reading one point (one metric), so the
points the store must hold are the readings the broker acknowledged. Faults come in on stdin:

    hot E        the estate's charging socket ``ebc-hot`` reports 75 °C in its next three
                 messages, then 30 °C again (ebike-socket-hot: one alarm, no ``for``)
    outage E on  the estate's power meter ``pm-main`` reports 0 V from the next message on
                 (power-outage: ``for: 30s`` of data time, then critical)
    outage E off 230 V again
    stop         stop sending, wait for every acknowledgement, write the status, exit

The status file (JSON, rewritten every second and at the end): per estate the seqs and
readings the broker acknowledged and when (data time) each fault began.

    python -m tests.cluster.regionload --broker mqtt://gw:pw@10.1.2.3:1883
        --estates a,b,c,d --status load.json
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from protocol.endpoint import parse_mqtt_url
from protocol.messages import Reading, encode_telemetry

GATEWAY = "gw-01"
HOT_DEVICE = "ebc-hot"
METER = "pm-main"
HOT_MESSAGES = 3  # a socket hot in this many messages in a row: one fault


@dataclass
class Estate:
    """One simulated gateway's sending and what the broker acknowledged of it."""

    name: str
    client: mqtt.Client
    seq: int = 0
    last_ts: int = 0
    hot_left: int = 0
    outage: bool = False
    faults: list[dict[str, Any]] = field(default_factory=list)
    sent: list[tuple[int, int, mqtt.MQTTMessageInfo]] = field(default_factory=list)  # seq, n

    def acked(self) -> tuple[list[int], int]:
        seqs = [s for s, _, info in self.sent if info.is_published()]
        readings = sum(n for _, n, info in self.sent if info.is_published())
        return seqs, readings


def readings(e: Estate, devices: int, ts: int) -> list[Reading]:
    """One message's readings: ``devices`` pipe sensors, the power meter, the charging socket;
    one metric each, so a reading is one point in the store."""
    out = [
        Reading(f"pipe-{i:02d}", "pipe_temp", ts, {"temp_c": 18.0 + i % 5}) for i in range(devices)
    ]
    out.append(Reading(METER, "power_meter", ts, {"voltage_v": 0.0 if e.outage else 230.0}))
    hot = e.hot_left > 0
    out.append(Reading(HOT_DEVICE, "ebike_charger", ts, {"temp_c": 75.0 if hot else 30.0}))
    e.hot_left = max(0, e.hot_left - 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--broker", required=True)
    p.add_argument("--estates", required=True, help="comma-separated estate ids")
    p.add_argument("--status", required=True)
    p.add_argument("--every-s", type=float, default=0.5)
    p.add_argument("--devices", type=int, default=8)
    args = p.parse_args()
    ep = parse_mqtt_url(args.broker)
    estates: dict[str, Estate] = {}
    for name in args.estates.split(","):
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}.{GATEWAY}")
        c.username_pw_set(ep.username, ep.password)
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(100_000)  # bounded; 50 minutes of this test's load
        c.connect(ep.host, ep.port)  # up before the first message: a refusal ends us here
        c.loop_start()
        estates[name] = Estate(name, c)
    lock = threading.Lock()
    stop = threading.Event()

    def commands() -> None:
        for line in sys.stdin:
            words = line.split()
            with lock:
                if words[:1] == ["stop"]:
                    stop.set()
                    return
                if words[:1] == ["hot"]:
                    estates[words[1]].hot_left = HOT_MESSAGES
                elif words[:1] == ["outage"]:
                    estates[words[1]].outage = words[2] == "on"
        stop.set()  # stdin closed: the test is gone

    def write_status(final: bool) -> None:
        out: dict[str, Any] = {"final": final}
        for e in estates.values():
            seqs, n = e.acked()
            out[e.name] = {"seqs": seqs, "readings": n, "sent": e.seq, "faults": e.faults}
        Path(args.status + ".tmp").write_text(json.dumps(out))
        Path(args.status + ".tmp").replace(args.status)

    threading.Thread(target=commands, daemon=True).start()
    next_at = time.monotonic()
    last_status = 0.0
    while not stop.is_set():
        with lock:
            for e in estates.values():
                ts = max(int(time.time() * 1000), e.last_ts + 1)  # one point per series and ms
                e.last_ts = ts
                if e.hot_left == HOT_MESSAGES:  # the fault's first message
                    e.faults.append({"fault": "hot", "ts": ts, "seq": e.seq + 1})
                opened = [f for f in e.faults if f["fault"] == "outage" and f["until"] is None]
                if e.outage and not opened:
                    e.faults.append({"fault": "outage", "ts": ts, "seq": e.seq + 1, "until": None})
                if not e.outage and opened:
                    opened[0]["until"] = ts
                batch = readings(e, args.devices, ts)
                e.seq += 1
                payload = encode_telemetry(GATEWAY, e.seq, ts, batch)
                topic = f"estates/{e.name}/gw/{GATEWAY}/telemetry"
                e.sent.append((e.seq, len(batch), e.client.publish(topic, payload, 1)))
        if time.monotonic() - last_status > 1:
            write_status(False)
            last_status = time.monotonic()
        next_at += args.every_s
        stop.wait(max(0.0, next_at - time.monotonic()))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(
        info.is_published() for e in estates.values() for _, _, info in e.sent
    ):
        time.sleep(0.1)
    write_status(True)
    for e in estates.values():
        e.client.disconnect()
        e.client.loop_stop()


if __name__ == "__main__":
    main()
