"""``estatewatch demo``: the service on its embedded default plus two simulated estates playing
a winter storm faster than real time, so alarms and plans have something to show within minutes.

Each estate runs the real gateway (on-disk buffer, QoS 1, status, commands) with the simulator
as its adapter. The simulated clock starts in the past and runs at ``DEMO_SPEED`` so that the
scenario ends exactly now, then at real speed: data time catches up with the wall clock and
never passes it (see :func:`catch_up_clock`).

With ``--field-protocols`` the first estate's plant answers on Modbus (a local pymodbus server,
read by the gateway's Modbus adapter through the shipped register maps) and its fire panel and
detectors report in GB/T 26875.3 through a simulated transmission device to the gateway's
receiver: the same path real equipment takes (``estatewatch/field_demo.py``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import datetime
from typing import Any

from estatewatch.service import Service
from gateway.publisher import GatewayPublisher
from gateway.runtime import Gateway
from ingest.schema import AlreadyExists
from protocol.clock import SHANGHAI, now_ms
from protocol.endpoint import MqttEndpoint
from simulators.adapter import SimulatorAdapter
from simulators.clock import SimClock
from simulators.estate import SimulatedEstate
from simulators.scenario import load_scenario
from simulators.spec import EstateSpec, load_spec

log = logging.getLogger(__name__)

DEMO_SPECS = ("small", "hailar-small")  # 呼和浩特 新华小区, 海拉尔 北苑小区
DEMO_SCENARIO = "winter-storm"
DEMO_SPEED = 40.0  # the storm's blue snowstorm level comes after 6 minutes, orange after 10


def register(service: Service, spec: EstateSpec) -> MqttEndpoint:
    """Register the estate and its gateway as an admin would, and return how the gateway logs in."""
    with contextlib.suppress(AlreadyExists):  # a demo run again on the same data dir
        service.state.add_estate(spec.estate, spec.name, spec.region, zone=spec.zone)
    with contextlib.suppress(AlreadyExists):
        service.state.add_gateway(spec.estate, spec.gateway, "demo gateway")
    assert service.ingest is not None and service.endpoint is not None
    service.ingest.registry.reload()
    creds = (
        service.broker.issue_gateway_credentials(
            spec.estate, spec.gateway, service.settings.mqtt_root
        )
        if service.broker
        else None
    )
    if creds is None:
        return service.endpoint
    return MqttEndpoint(creds.host, creds.port, creds.username, creds.password)


def catch_up_clock(duration_ms: int, speed: float, wall_ms: int) -> SimClock:
    """A clock that plays ``duration_ms`` of simulated time at ``speed`` and reaches the wall
    clock as it ends: it starts ``duration_ms − duration_ms / speed`` ago, so simulated time
    is behind (never ahead of) the wall clock and goes on in real time once caught up."""
    start = wall_ms - duration_ms + int(duration_ms / speed)
    return SimClock(start, speed, fast_until_ms=start + duration_ms)


def simulated_gateway(
    service: Service,
    spec_name: str,
    seed: int,
    field_protocols: bool = False,
    speed: float = DEMO_SPEED,
) -> tuple[Gateway, SimulatorAdapter]:
    spec = load_spec(spec_name, service.catalog)
    scenario = load_scenario(DEMO_SCENARIO)
    clock = catch_up_clock(scenario.duration_ms or 0, speed, now_ms())
    estate = SimulatedEstate(spec, service.catalog, seed, clock.start_ms, scenario)
    adapter = SimulatorAdapter(estate, clock)
    publisher = GatewayPublisher(
        spec.estate,
        spec.gateway,
        register(service, spec),
        service.settings.data_path / "gateways",
        root=service.settings.mqtt_root,
        fw="estatewatch-sim 0.2",
    )
    if field_protocols:
        from estatewatch.field_demo import field_adapters

        adapters = field_adapters(adapter, service.catalog)
        return Gateway(publisher, adapters, network_down=adapter.network_down), adapter
    return Gateway(publisher, [adapter], network_down=adapter.network_down), adapter


def run_demo(
    service: Service,
    duration_s: float | None,
    seed: int = 2026,
    field_protocols: bool = False,
    speed: float = DEMO_SPEED,
) -> None:
    pairs = [
        simulated_gateway(service, name, seed + i, field_protocols and i == 0, speed)
        for i, name in enumerate(DEMO_SPECS)
    ]
    from scoring.record import TruthRecorder

    recorders = [TruthRecorder(a.estate) for _, a in pairs]  # the ground truth, for scoring
    for (_, adapter), rec in zip(pairs, recorders, strict=True):
        adapter.observers.append(rec)
    for gateway, _ in pairs:
        gateway.start()
    estates = ", ".join(a.estate.spec.estate for _, a in pairs)
    print(
        f"\n  estatewatch demo is running · 演示已启动\n"
        f"  open · 打开:  {service.url}/#token={service.token}\n"
        f"  API docs:    {service.url}/docs\n"
        f"  estates:     {estates}\n"
        f"  scenario:    {DEMO_SCENARIO} at ×{speed:g}, replayed to end now "
        f"(snowstorm blue → yellow → orange; catching up with the clock)\n"
        f"  Ctrl-C stops everything · 按 Ctrl-C 停止\n",
        flush=True,
    )
    if field_protocols:
        first = pairs[0][0]
        links: list[dict[str, Any]] = [getattr(a, "health", dict)() for a in first.adapters[1:]]
        print(
            f"  field:       {pairs[0][1].estate.spec.estate} plant on Modbus "
            f"({links[0].get('link')}), fire panel in GB/T 26875.3 ({links[1].get('listen')})\n",
            flush=True,
        )
    started = time.monotonic()
    try:
        while duration_s is None or time.monotonic() - started < duration_s:
            time.sleep(min(5.0, duration_s or 5.0))
            assert service.ingest is not None
            st = service.ingest.stats
            sent = sum(g.counters.readings for g, _ in pairs)
            clock = datetime.fromtimestamp(pairs[0][1].estate.now_ms / 1000, SHANGHAI)
            print(
                f"  [{time.strftime('%H:%M:%S')}] sim {clock:%m-%d %H:%M} · sent {sent} readings"
                f" · stored {st.readings} · dead letters {sum(st.dead_letter_counts().values())}"
                f" · queue {service.ingest.queue_depth}",
                flush=True,
            )
    finally:
        for gateway, _ in pairs:
            gateway.stop()
        for rec in recorders:  # estatewatch score --truth data/truth-<estate>.jsonl
            rec.write(service.settings.data_path / f"truth-{rec.estate.spec.estate}.jsonl")
