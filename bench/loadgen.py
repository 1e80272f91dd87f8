"""A load generator in a process of its own: publishes the large estate's readings at a set
rate (readings per second), as one gateway would, with QoS 1. Used by benches 2 and 3.

    python -m bench.loadgen --url mqtt://user:pass@host:port --estate E --gw G --rate 20000
        --per-message 100 --seconds 60
"""

from __future__ import annotations

import argparse
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from protocol.endpoint import parse_mqtt_url
from protocol.messages import Reading, encode_telemetry


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--estate", required=True)
    p.add_argument("--gw", required=True)
    p.add_argument("--rate", type=float, required=True, help="readings per second")
    p.add_argument("--per-message", type=int, default=100)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--first-seq", type=int, default=1)
    args = p.parse_args()
    from bench.ingest_throughput import estate_readings

    ep = parse_mqtt_url(args.url)
    pool = estate_readings(min(200_000, max(args.per_message * 50, int(args.rate * 5))))
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"loadgen-{args.estate}")
    c.username_pw_set(ep.username, ep.password)
    c.max_inflight_messages_set(1000)
    c.connect(ep.host, ep.port)
    c.loop_start()
    topic = f"estates/{args.estate}/gw/{args.gw}/telemetry"
    per_s = args.rate / args.per_message  # messages per second
    start = time.monotonic()
    seq = args.first_seq
    i = 0
    sent = 0
    infos: list[mqtt.MQTTMessageInfo] = []
    while time.monotonic() - start < args.seconds:
        due = start + (seq - args.first_seq) / per_s
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        batch = pool[i : i + args.per_message]
        if len(batch) < args.per_message:
            i = 0
            batch = pool[: args.per_message]
        i += args.per_message
        now = int(time.time() * 1000)
        # fresh timestamps so "now" and the rules' windows see live data
        fresh = [Reading(r.dev, r.kind, now, r.metrics) for r in batch]
        infos.append(c.publish(topic, encode_telemetry(args.gw, seq, now, fresh), 1))
        seq += 1
        sent += len(batch)
    # count only what the broker has taken: wait for every PUBACK before leaving
    for info in infos:
        info.wait_for_publish(120)
    c.disconnect()
    c.loop_stop()
    print(
        f"sent {sent} readings in {seq - args.first_seq} messages, last seq {seq - 1}", flush=True
    )


if __name__ == "__main__":
    main()
