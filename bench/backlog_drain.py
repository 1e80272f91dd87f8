"""Bench 6: gateway backlog drain, the rate a gateway empties a 1-hour backlog over its live rate.

A real gateway (``runtime.Gateway`` + ``GatewayPublisher`` + ``ForwardBuffer`` with the shipped
defaults: durable, 2,000 readings or 256 KB a message, 20 in flight) plays one simulated hour of
the 500-device estate (``hohhot-typical``) through ``simulators.adapter.SimulatorAdapter`` into
a local Mosquitto. A subscriber on the broker counts what is delivered (readings in each
message, each ``seq`` once): that count is the ground truth.

- live: the broker is up and the adapter produces as fast as the gateway takes it: its clock
  steps ``--live-fragment-s`` of simulated time (300 s, ~3,500 readings) per poll, polled
  every 2 ms, whenever fewer than two messages' worth of readings wait unsealed, so a full
  message is always ready and no backlog builds up. Rate: the hour's readings over the time
  from the first poll to the last reading received. This is the whole live path: simulate,
  encode, write durably, seal, publish, acknowledge.
- drain: a second gateway plays the same hour while the broker is stopped, in the fragments a
  real outage leaves (``--backlog-fragment-s``, 0.2 s of simulated time per poll: the shipped
  poll interval at real speed; the poll loop spins meanwhile, so building takes seconds, and
  goes back to 0.2 s before the broker returns). Rate: the hour's readings over the time from
  the gateway's reconnect to the last reading received (the gateway's own ``buffered == 0``
  moment is recorded beside it).

Both phases run ``--rounds`` times in turn (fresh gateways each time); the figure is the median
of the per-round ratios.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import parse_with_full, report, verdict
from estatewatch.broker import ManagedMosquitto, free_port
from gateway.buffer import ForwardBuffer
from gateway.publisher import GatewayPublisher, LinkSettings
from gateway.runtime import Gateway
from protocol.catalog import default_catalog
from protocol.endpoint import MqttEndpoint
from simulators.adapter import SimulatorAdapter
from simulators.clock import SimClock
from simulators.estate import SimulatedEstate
from simulators.spec import load_spec

ESTATE = "hohhot-typical"
START_MS = 1_768_438_800_000  # 2026-01-15 08:00 +08:00, as the store-and-forward test
HOUR = 3_600_000
SEQ = re.compile(rb'"seq":(\d+)')


@dataclass
class Tally:
    """Delivered telemetry of one gateway: each seq once."""

    seqs: set[int] = field(default_factory=set)
    readings: int = 0
    duplicates: int = 0
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (time, readings so far)

    def crossing(self, readings: int) -> tuple[float, int, int]:
        """(time, readings, messages) at the message that brought the count to ``readings``."""
        for i, (t, n) in enumerate(self.arrivals):
            if n >= readings:
                return t, n, i + 1
        raise ValueError(f"only {self.readings:,} of {readings:,} readings arrived")


class DeliveryCounter:
    """The ground truth: a persistent QoS 1 subscriber that counts readings per gateway."""

    def __init__(self, broker: ManagedMosquitto) -> None:
        self.tallies: dict[str, Tally] = {}
        self.cond = threading.Condition()
        ep = broker.endpoint
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-counter", clean_session=False)
        c.username_pw_set(ep.username, ep.password)
        # Back quickly when the broker restarts (paho takes floats; its stub says int).
        c.reconnect_delay_set(0.05, 0.2)  # type: ignore[arg-type]
        subscribed = threading.Event()
        c.on_connect = lambda cl, *_: cl.subscribe(f"estates/{ESTATE}/gw/+/telemetry", 1)
        c.on_subscribe = lambda *_: subscribed.set()
        c.on_message = self._on_message
        c.connect(ep.host, ep.port)
        c.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("the counting subscriber could not subscribe")
        self.client = c

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        gw = msg.topic.split("/")[3]
        payload = bytes(msg.payload)
        m = SEQ.search(payload, 0, 256)
        seq = int(m.group(1)) if m else -1
        # Counting items, not decoding them: the counter must not be what limits the rate.
        n = payload.count(b'{"dev":')
        with self.cond:
            t = self.tallies.setdefault(gw, Tally())
            if seq in t.seqs:
                t.duplicates += 1
            else:
                t.seqs.add(seq)
                t.readings += n
                t.arrivals.append((now, t.readings))
            self.cond.notify_all()

    def wait_for(self, gw: str, readings: int, timeout: float) -> Tally:
        with self.cond:
            ok = self.cond.wait_for(
                lambda: self.tallies.get(gw, Tally()).readings >= readings, timeout
            )
            t = self.tallies.get(gw, Tally())
            if not ok:
                raise RuntimeError(
                    f"{gw}: {t.readings:,} of {readings:,} readings after {timeout} s"
                )
            return t

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class PacedClock(SimClock):
    """Simulated time that steps one fragment per poll while ``ready()``: the adapter then
    produces as fast as the gateway takes it (or, with ``ready`` always true, as fast as it
    is polled)."""

    def __init__(self, start_ms: int, step_ms: int, ready: Callable[[], bool]) -> None:
        super().__init__(start_ms)
        self.t = start_ms
        self.step_ms = step_ms
        self.ready = ready
        self.first_step_s: float | None = None

    def now_ms(self) -> int:
        if self.ready():
            if self.first_step_s is None:
                self.first_step_s = time.perf_counter()
            self.t += self.step_ms
        return self.t


@dataclass
class Rig:
    broker: ManagedMosquitto
    counter: DeliveryCounter
    folder: Path
    hour_ms: int
    seed: int
    hour_readings: int = 0
    creds: dict[str, MqttEndpoint] = field(default_factory=dict)

    def gateway(
        self,
        gw: str,
        step_ms: int,
        poll_s: float,
        ready: Callable[[ForwardBuffer], bool],
        end_ms: int,
    ) -> tuple[Gateway, PacedClock]:
        buffer = ForwardBuffer(self.folder / f"{gw}.buffer.db")  # the shipped defaults
        publisher = GatewayPublisher(
            ESTATE,
            gw,
            self.creds[gw],
            self.folder,
            buffer=buffer,
            link=LinkSettings(reconnect_min_s=0.1, reconnect_max_s=0.5),
        )
        estate = SimulatedEstate(load_spec(ESTATE), default_catalog(), self.seed, START_MS)
        clock = PacedClock(START_MS, step_ms, lambda: ready(buffer))
        adapter = SimulatorAdapter(estate, clock, end_ms=end_ms)
        return Gateway(publisher, [adapter], poll_interval_s=poll_s), clock


def live(rig: Rig, gw: str, fragment_ms: int) -> dict[str, float]:
    def ready(buffer: ForwardBuffer) -> bool:
        # Two messages' worth waiting to be sealed keeps the link busy without a backlog
        # (the count is private; reading an int from another thread is safe).
        return int(buffer._unsealed_readings) < 2 * buffer.batch_max_readings

    # Polled often: the pacing, not the poll timer, decides how fast readings come. The
    # adapter plays on past the hour, so the hour's last message is sealed because it is
    # full, not after the linger time of a stream's end.
    end = START_MS + rig.hour_ms + 20 * 60_000
    gateway, clock = rig.gateway(gw, fragment_ms, 0.002, ready, end)
    # Connected first, then polling starts: the live rate includes no connection time.
    if not gateway.start(10):
        gateway.stop()
        raise RuntimeError("the live gateway could not connect")
    try:
        tally = rig.counter.wait_for(gw, rig.hour_readings, 300)
        assert clock.first_step_s is not None
        t, readings, messages = tally.crossing(rig.hour_readings)
        span = t - clock.first_step_s
    finally:
        gateway.stop()
    return {
        "readings": readings,
        "messages": messages,
        "seconds": span,
        "readings_per_s": readings / span,
        "messages_per_s": messages / span,
    }


def drain(rig: Rig, gw: str, fragment_ms: int) -> dict[str, float]:
    rig.broker.stop()
    # The backlog as an outage leaves it: one fragment per poll of real time, written as fast
    # as the poll loop turns (no wait between polls while the hour is being played).
    gateway, _clock = rig.gateway(gw, fragment_ms, 0.0, lambda _b: True, START_MS + rig.hour_ms)
    publisher = gateway.publisher
    adapter = gateway.adapters[0]
    assert isinstance(adapter, SimulatorAdapter)
    gateway.start(0)  # the link thread keeps trying the stopped broker
    try:
        while not adapter.finished:
            time.sleep(0.01)
        gateway.poll_interval_s = 0.2  # back to the shipped rhythm: no busy poll loop
        time.sleep(0.3)  # the last poll's readings reach the buffer
        produced = gateway.counters.readings
        backlog = publisher.buffered
        assert backlog.readings == produced == rig.hour_readings, (
            f"{backlog.readings} buffered, {produced} produced, {rig.hour_readings} in the hour"
        )
        rig.broker.start()
        while not publisher.connected:
            time.sleep(0.001)
        reconnect = time.perf_counter()
        while publisher.buffered.messages:
            time.sleep(0.002)
        emptied = time.perf_counter()
        tally = rig.counter.wait_for(gw, produced, 300)
        # A small backlog can be delivered before this thread sees the link up (a 1 ms sleep
        # takes far longer on a loaded machine): the drain began no later than its first
        # reading arrived.
        reconnect = min(reconnect, tally.arrivals[0][0])
        span = tally.crossing(produced)[0] - reconnect
    finally:
        gateway.stop()
    return {
        "readings": produced,
        "backlog_messages": backlog.messages,
        "backlog_mb": backlog.bytes / 1e6,
        "messages": len(tally.seqs),
        "seconds": span,
        "buffer_empty_s": emptied - reconnect,
        "readings_per_s": produced / span,
        "messages_per_s": len(tally.seqs) / span,
    }


def run(
    rounds: int = 5,
    hour_ms: int = HOUR,
    live_fragment_s: float = 300.0,
    backlog_fragment_s: float = 0.2,
    seed: int = 11,
) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        broker = ManagedMosquitto(folder / "broker", free_port())
        broker.start()
        counter: DeliveryCounter | None = None
        try:
            counter = DeliveryCounter(broker)
            rig = Rig(broker, counter, folder, hour_ms, seed)
            sim = SimulatedEstate(load_spec(ESTATE), default_catalog(), seed, START_MS)
            rig.hour_readings = len(sim.due(START_MS + hour_ms))
            for i in range(rounds):
                for gw in (f"gw-live-{i}", f"gw-drain-{i}"):
                    c = broker.issue_gateway_credentials(ESTATE, gw, "estates")
                    rig.creds[gw] = MqttEndpoint(c.host, c.port, c.username, c.password)
            time.sleep(0.3)  # Mosquitto re-reads its password file on the SIGHUP
            for i in range(rounds):
                lv = live(rig, f"gw-live-{i}", int(live_fragment_s * 1000))
                dr = drain(rig, f"gw-drain-{i}", int(backlog_fragment_s * 1000))
                results.append(
                    {"live": lv, "drain": dr, "ratio": dr["readings_per_s"] / lv["readings_per_s"]}
                )
                print(
                    f"  round {i + 1}: live {lv['readings_per_s']:>8,.0f} readings/s "
                    f"({lv['messages_per_s']:.1f} msg/s) | drain {dr['readings_per_s']:>8,.0f} "
                    f"readings/s ({dr['messages_per_s']:.1f} msg/s, buffer empty after "
                    f"{dr['buffer_empty_s']:.2f} s) | ratio {results[-1]['ratio']:.3f}",
                    flush=True,
                )
        finally:
            if counter is not None:
                counter.close()
            broker.stop()
    live_rates = [r["live"]["readings_per_s"] for r in results]
    drain_rates = [r["drain"]["readings_per_s"] for r in results]
    first = results[0]
    return {
        "rounds": rounds,
        "readings_per_hour": first["live"]["readings"],
        "backlog_messages": first["drain"]["backlog_messages"],
        "backlog_mb": round(first["drain"]["backlog_mb"], 1),
        "live_readings_per_s": round(statistics.median(live_rates)),
        "drain_readings_per_s": round(statistics.median(drain_rates)),
        "live_messages_per_s": round(
            statistics.median(r["live"]["messages_per_s"] for r in results), 1
        ),
        "drain_messages_per_s": round(
            statistics.median(r["drain"]["messages_per_s"] for r in results), 1
        ),
        "drain_buffer_empty_s": round(
            statistics.median(r["drain"]["buffer_empty_s"] for r in results), 2
        ),
        "ratio": round(statistics.median(r["ratio"] for r in results), 3),
        "ratios": [round(r["ratio"], 3) for r in results],
    }


def targets(f: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [
        (
            "6: backlog drain ÷ live rate",
            f"{f['ratio']:.2f}",
            "≥ 0.8",
            verdict(f["ratio"] >= 0.8),
        )
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument(
        "--live-fragment-s", type=float, default=300.0, help="live: simulated seconds per poll"
    )
    p.add_argument(
        "--backlog-fragment-s",
        type=float,
        default=0.2,
        help="backlog: simulated seconds per poll (0.2: a gateway polling at real speed)",
    )
    p.add_argument("--seed", type=int, default=11)
    args = parse_with_full(p, "ten rounds", rounds=10)
    print("bench 6: gateway backlog drain", flush=True)
    f = run(args.rounds, HOUR, args.live_fragment_s, args.backlog_fragment_s, args.seed)
    settings = {
        **vars(args),
        "estate": ESTATE,
        "backlog": "1 simulated hour, built while the broker was stopped",
        "gateway": "shipped defaults: durable buffer, 2000 readings/256 KB a message, 20 in flight",
    }
    print(
        f"  1 h of {ESTATE}: {f['readings_per_hour']:,} readings, backlog "
        f"{f['backlog_messages']:,} messages ({f['backlog_mb']} MB)\n"
        f"  live  {f['live_readings_per_s']:>8,} readings/s ({f['live_messages_per_s']} msg/s)\n"
        f"  drain {f['drain_readings_per_s']:>8,} readings/s ({f['drain_messages_per_s']} msg/s); "
        f"ratio {f['ratio']:.3f} (per round {f['ratios']})",
        flush=True,
    )
    report("backlog-drain", f, settings, targets(f))


if __name__ == "__main__":
    main()
