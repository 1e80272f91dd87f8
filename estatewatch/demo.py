"""``estatewatch demo``: the service on its embedded default plus two simulated estates."""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from estatewatch.service import Service
from gateway.publisher import GatewayPublisher, now_ms
from ingest.state import AlreadyExists
from protocol.endpoint import MqttEndpoint
from simulators.estate import EstateSpec, SimulatedEstate, small_estate

log = logging.getLogger(__name__)

DEMO_ESTATES = (
    small_estate("hohhot-xinhua", "呼和浩特 新华小区", "呼和浩特市", january_mean_c=-11.0),
    small_estate("hailar-beiyuan", "海拉尔 北苑小区", "呼伦贝尔市", january_mean_c=-25.0),
)


def register(service: Service, spec: EstateSpec) -> MqttEndpoint:
    """Register the estate and its gateway as an admin would, and return how the gateway logs in."""
    with contextlib.suppress(AlreadyExists):  # a demo run again on the same data dir
        service.state.add_estate(spec.estate, spec.name, spec.region)
    with contextlib.suppress(AlreadyExists):
        service.state.add_gateway(spec.estate, spec.gateway, "demo gateway")
    service.ingest.registry.reload()
    assert service.endpoint is not None
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


class SimulatedGateway(threading.Thread):
    """One estate's simulator feeding its gateway publisher, in real time."""

    def __init__(self, service: Service, spec: EstateSpec, seed: int) -> None:
        super().__init__(name=f"sim-{spec.estate}", daemon=True)
        self.spec = spec
        self.sim = SimulatedEstate(spec, service.catalog, seed, now_ms())
        self.publisher = GatewayPublisher(
            spec.estate,
            spec.gateway,
            register(service, spec),
            service.settings.data_path / "gateways",
            root=service.settings.mqtt_root,
            fw="estatewatch-sim 0.1",
        )
        self.sent = 0
        self._halt = threading.Event()

    def run(self) -> None:
        self.publisher.start()
        while not self._halt.wait(1.0):
            readings = self.sim.due(now_ms())
            if readings:
                self.publisher.publish_telemetry(readings)
                self.sent += len(readings)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        self.publisher.stop()


def run_demo(service: Service, duration_s: float | None, seed: int = 2026) -> None:
    gateways = [SimulatedGateway(service, spec, seed + i) for i, spec in enumerate(DEMO_ESTATES)]
    for g in gateways:
        g.start()
    print(
        f"\n  estatewatch demo is running · 演示已启动\n"
        f"  open · 打开:  {service.url}/#token={service.token}\n"
        f"  API docs:    {service.url}/docs\n"
        f"  estates:     {', '.join(s.estate for s in DEMO_ESTATES)}\n"
        f"  Ctrl-C stops everything · 按 Ctrl-C 停止\n",
        flush=True,
    )
    started = time.monotonic()
    try:
        while duration_s is None or time.monotonic() - started < duration_s:
            time.sleep(min(5.0, duration_s or 5.0))
            st = service.ingest.stats
            sent = sum(g.sent for g in gateways)
            print(
                f"  [{time.strftime('%H:%M:%S')}] sent {sent} readings · stored {st.readings}"
                f" · dead letters {sum(st.dead_letters.values())}"
                f" · queue {service.ingest.queue_depth}",
                flush=True,
            )
    finally:
        for g in gateways:
            g.stop()
