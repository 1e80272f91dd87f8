"""``estatewatch gateway`` and ``estatewatch simulate``: the estate-side processes.

``gateway --config FILE`` runs a gateway with the adapters its file lists; ``simulate`` is the
same gateway with one simulated estate built from flags, and a progress display.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import fields, replace
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from gateway.adapter import DeviceAdapter
from gateway.buffer import BufferError, ForwardBuffer
from gateway.config import ConfigError, GatewayConfig, load_gateway_config, parse_gateway_config
from gateway.publisher import GatewayPublisher, LinkSettings
from gateway.registry import build_adapter, known_types, register
from gateway.runtime import Gateway
from protocol.catalog import Catalog, default_catalog
from protocol.clock import SHANGHAI, now_ms
from protocol.endpoint import EndpointError, MqttEndpoint, parse_mqtt_url
from simulators.adapter import SimulatorAdapter
from simulators.clock import SimClock
from simulators.estate import SimulatedEstate
from simulators.scenario import load_scenario, parse_duration_ms, parse_start_ms
from simulators.spec import SpecError, load_spec

SIMULATOR_KEYS = {"type", "spec", "scenario", "seed", "speed", "start", "for"}
# The gateway's broker password for `simulate`, when not in a file (never on the command line).
PASSWORD_ENV = "ESTATEWATCH_GATEWAY_PASSWORD"


def add_estate_commands(sub: Any) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    gw = sub.add_parser(
        "gateway",
        help="run an estate gateway (adapters → on-disk buffer → MQTT)",
        description=(
            "Run a gateway: poll its device adapters (simulator, modbus, gbt26875), keep "
            "everything in an on-disk buffer until the broker acknowledges it, receive "
            "commands. The config file format is in gateway/config.py; a sample with a Modbus "
            "line and a GB/T 26875.3 fire-panel listener is gateway/examples/plant-and-fire.toml."
        ),
        formatter_class=fmt,
    )
    gw.add_argument("--config", required=True, help="gateway config file (TOML)")
    gw.add_argument("--progress-every", type=float, default=10.0, help="seconds between lines")

    sim = sub.add_parser(
        "simulate",
        help="play a simulated estate through a gateway",
        description=(
            "Play an estate spec and a scenario through a gateway to a broker, faster than "
            "real time if asked. Bundled specs: small, hailar-small, hohhot-typical, large; "
            "scenarios: quiet-day, winter-storm, cold-wave, spring-sandstorm, faults."
        ),
        formatter_class=fmt,
    )
    sim.add_argument("--spec", default="small", help="estate spec: a bundled name or a file")
    sim.add_argument("--scenario", default="quiet-day", help="scenario: bundled name or file")
    sim.add_argument("--speed", type=float, default=1.0, help="60 plays an hour a minute")
    sim.add_argument("--seed", type=int, default=1, help="same seed, same readings")
    sim.add_argument("--start", help="simulated start, e.g. 2026-01-15T06:00 (Asia/Shanghai)")
    sim.add_argument(
        "--for",
        dest="duration",
        help="simulated time to play, e.g. 2h (default: the scenario's duration)",
    )
    sim.add_argument("--config", help="gateway config file for broker and buffer settings")
    sim.add_argument(
        "--broker",
        help="mqtt://user@host:port (default 127.0.0.1:1883), a cluster's nodes comma-separated "
        "(mqtt://a:1883,mqtt://b:1883: the next one when a node is lost); the password from "
        f"--password-file or {PASSWORD_ENV}, not here, where ps shows it",
    )
    sim.add_argument("--password-file", help="file holding the gateway's MQTT password")
    sim.add_argument("--state-dir", help="where the gateway buffer lives (default data/gateway)")
    sim.add_argument("--progress-every", type=float, default=None, help="seconds between lines")
    sim.add_argument(
        "--truth",
        help="write the ground truth here when done: one JSON line per injected fault and per "
        "weather episode at a CMA level, with what it must produce and by when "
        "(estatewatch score reads it)",
    )


def simulator_adapter(spec_cfg: dict[str, Any], where: str) -> SimulatorAdapter:
    """Build the simulator adapter a ``[[adapters]] type = "simulator"`` table describes."""
    unknown = sorted(set(spec_cfg) - SIMULATOR_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)} "
            f"(allowed: {', '.join(sorted(SIMULATOR_KEYS))})"
        )
    spec = load_spec(str(spec_cfg.get("spec", "small")))
    scenario = load_scenario(str(spec_cfg.get("scenario", "quiet-day")))
    try:
        if spec_cfg.get("start"):
            start = parse_start_ms(str(spec_cfg["start"]))
        else:
            start = scenario.start_ms or now_ms()
        duration = (
            parse_duration_ms(str(spec_cfg["for"])) if spec_cfg.get("for") else scenario.duration_ms
        )
        speed = float(spec_cfg.get("speed", 1.0))
        seed = int(spec_cfg.get("seed", 1))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    estate = SimulatedEstate(spec, default_catalog(), seed, start, scenario)
    end = start + duration if duration else None
    return SimulatorAdapter(
        estate, SimClock(start, speed, fast_until_ms=_catch_up(start, speed, where)), end
    )


def _catch_up(start: int, speed: float, where: str) -> int | None:
    """Where a faster-than-real clock started in the past meets the wall clock: from there it
    runs in real time, so no reading is stamped later than now (the service refuses those)."""
    wall = now_ms()
    if start > wall + 60_000:
        raise ConfigError(
            f"{where}: start is in the future; a gateway cannot send readings taken later "
            "than now (start in the past and fast-forward instead)"
        )
    if speed <= 1:
        return None
    return start + int(max(0, wall - start) * speed / (speed - 1))


def _simulator(cfg: dict[str, Any], where: str, _catalog: Catalog, _base: Path) -> DeviceAdapter:
    return simulator_adapter(cfg, where)


register("simulator", _simulator)


def build_gateway(cfg: GatewayConfig) -> tuple[Gateway, list[SimulatorAdapter]]:
    if not cfg.adapters:
        raise ConfigError(
            f"gateway config {cfg.source}: no [[adapters]]: add at least one "
            f"(types: {', '.join(known_types())})"
        )
    adapters: list[DeviceAdapter] = []
    catalog = default_catalog()
    try:
        for i, a in enumerate(cfg.adapters):
            where = f"gateway config {cfg.source}: [[adapters]] #{i + 1}"
            adapters.append(build_adapter(a, where, catalog, cfg.base_dir))
    except BaseException:
        for built in adapters:  # listeners and pollers already started stop again
            built.close()
        raise
    sims = [a for a in adapters if isinstance(a, SimulatorAdapter)]
    b = cfg.buffer
    buffer = ForwardBuffer(
        cfg.buffer_path,
        max_bytes=int(b.max_mb * 1024 * 1024),
        batch_max_readings=b.batch_max_readings,
        batch_max_bytes=int(b.batch_max_kb * 1024),
        batch_linger_ms=b.batch_linger_ms,
        durable=b.durable,
    )
    # the config names every link setting as LinkSettings does
    link = LinkSettings(**{f.name: getattr(cfg, f.name) for f in fields(LinkSettings)})
    publisher = GatewayPublisher(
        cfg.estate, cfg.gw, cfg.endpoint, cfg.state_dir, cfg.root, cfg.fw, buffer=buffer, link=link
    )
    network_down = None
    if sims:
        network_down = lambda: any(s.network_down() for s in sims)  # noqa: E731
    return Gateway(publisher, adapters, cfg.poll_interval_s, network_down), sims


def _describe(adapter: DeviceAdapter) -> str:
    health = gateway_health(adapter)
    if health.get("type") == "modbus":
        return f"{adapter.name}: {health['link']}, {len(health['devices'])} slave(s)"
    if health.get("type") == "gbt26875":
        return f"{adapter.name}: listening on {health['listen']} (GB/T 26875.3)"
    return adapter.name


def gateway_health(adapter: DeviceAdapter) -> dict[str, Any]:
    health = getattr(adapter, "health", None)
    return health() if callable(health) else {}


def _field_summary(gateway: Gateway) -> list[str]:
    """One short phrase per field adapter for the progress line."""
    parts = []
    for adapter in gateway.adapters:
        h = gateway_health(adapter)
        if h.get("type") == "modbus":
            bad = [f"{d} {s['state']}" for d, s in h["devices"].items() if s["state"] != "ok"]
            parts.append(f"modbus {', '.join(bad) if bad else 'all slaves ok'}")
        elif h.get("type") == "gbt26875":
            bad = sum(h["bad_frames"].values())
            parts.append(f"26875 frames {h['frames']} bad {bad} links {h['connections']}")
    return parts


def _progress_line(gateway: Gateway, sims: list[SimulatorAdapter]) -> str:
    st = gateway.publisher.buffered
    link = gateway.publisher.stats
    parts = []
    if sims:
        sim = sims[0]
        clock = datetime.fromtimestamp(sim.estate.now_ms / 1000, SHANGHAI)
        parts.append(f"sim {clock:%Y-%m-%d %H:%M:%S} ×{sim.clock.speed:g}")
    parts += [
        f"readings {gateway.counters.readings:,}",
        f"events {gateway.counters.events}",
        f"sent {link.sent_messages:,} msgs",
        f"buffered {st.messages:,} msgs ({st.readings:,} readings)",
        f"dropped {st.dropped_readings:,}",
        f"seq {st.last_seq}",
        _link_state(gateway),
        *_field_summary(gateway),
    ]
    return " · ".join(parts)


def _link_state(gateway: Gateway) -> str:
    pub = gateway.publisher
    link = pub.stats
    if link.connected:
        return f"link up ({pub.node_url})"
    if link.refused:
        return f"credentials refused by {pub.endpoint.url} · 认证被拒绝"
    return f"link down ({link.last_error or 'connecting'})"


def _run(cfg: GatewayConfig, progress_every: float, truth: str | None = None) -> int:
    try:
        gateway, sims = build_gateway(cfg)
    except (SpecError, ConfigError, BufferError, ValueError) as exc:
        print(f"estatewatch: {exc}", file=sys.stderr)
        return 2
    recorders = []
    if truth:
        from scoring.record import TruthRecorder

        for s in sims:
            rec = TruthRecorder(s.estate)
            s.observers.append(rec)
            recorders.append(rec)
    tty = sys.stdout.isatty()
    print(
        f"gateway {cfg.estate}/{cfg.gw} → {cfg.endpoint.url} · buffer {cfg.buffer_path}"
        + "".join(
            f"\n  simulating {s.estate.spec.source} ({len(s.estate.spec.devices)} devices), "
            f"scenario {s.estate.scenario.name}, speed ×{s.clock.speed:g}"
            for s in sims
        )
        + "".join(f"\n  {_describe(a)}" for a in gateway.adapters if a not in sims),
        flush=True,
    )
    gateway.start()
    done = threading.Event()
    last_line = 0.0
    told_link = False
    nl = "\n" if tty else ""  # off the progress line a terminal redraws
    try:
        while not done.wait(0.25 if tty else min(progress_every, 0.25)):
            now = time.monotonic()
            link = gateway.publisher.stats
            if link.connected and not told_link:
                told_link = True
                print(
                    f"{nl}connected to broker {gateway.publisher.node_url} · 已连接",
                    flush=True,
                )
            elif link.refused and not told_link:
                told_link = True
                print(
                    f"{nl}the broker {cfg.endpoint.url} refused the gateway's "
                    f"credentials ({link.last_error}); check the username and password "
                    f"(--password-file or {PASSWORD_ENV})",
                    file=sys.stderr,
                    flush=True,
                )
            finished = bool(sims) and all(s.finished for s in sims)
            if finished and gateway.publisher.buffered.messages == 0:
                done.set()
            if tty:
                print("\r" + _progress_line(gateway, sims) + "\x1b[K", end="", flush=True)
            elif now - last_line >= progress_every or done.is_set():
                print(_progress_line(gateway, sims), flush=True)
                last_line = now
    except KeyboardInterrupt:
        print("\nstopping · 正在停止 …", flush=True)
    finally:
        gateway.stop()
    if tty:
        print()
    st = gateway.publisher.buffered
    if done.is_set():
        print(f"done: every reading delivered · 全部送达 (last seq {st.last_seq})", flush=True)
    else:
        print(f"stopped with {st.messages} messages buffered; they go out on the next start")
    if truth:
        written = sum(_write_truth(rec, truth, len(recorders)) for rec in recorders)
        print(f"ground truth: {written} causes in {truth}", flush=True)
    return 0


def _write_truth(rec: Any, path: str, many: int) -> int:
    """One ledger file; with several simulated estates, one per estate beside it."""
    target = Path(path)
    if many > 1:
        target = target.with_name(f"{target.stem}-{rec.estate.spec.estate}{target.suffix}")
    n: int = rec.write(target)
    return n


def _stop_on_sigterm() -> None:
    def handler(_sig: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def run_estate_command(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    _stop_on_sigterm()
    try:
        if args.command == "gateway":
            return _run(load_gateway_config(args.config), args.progress_every)
        return _run(_simulate_config(args), args.progress_every or 5.0, args.truth)
    except (SpecError, ConfigError, EndpointError) as exc:
        print(f"estatewatch {args.command}: {exc}", file=sys.stderr)
        return 2


def _with_password(ep: MqttEndpoint, args: argparse.Namespace) -> MqttEndpoint:
    """The password from --password-file, else the environment, else as given (a password
    in --broker works, with a warning: every user of the machine can read it in ps)."""
    if args.password_file:
        try:
            text = Path(args.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"--password-file: cannot read {args.password_file}: {exc}") from None
        if not text:
            raise ConfigError(f"--password-file: {args.password_file} is empty")
        return replace(ep, password=text)
    env = os.environ.get(PASSWORD_ENV)
    if env:
        return replace(ep, password=env)
    if ep.password and args.broker and ":" in args.broker.split("@")[0].split("//")[-1]:
        print(
            f"estatewatch simulate: warning: the password in --broker is visible in ps; "
            f"use --password-file or {PASSWORD_ENV}",
            file=sys.stderr,
        )
    return ep


def _simulate_config(args: argparse.Namespace) -> GatewayConfig:
    if args.speed <= 0:
        raise ConfigError(f"--speed must be above 0, got {args.speed}")
    spec = load_spec(args.spec)
    adapter = {"type": "simulator", "spec": args.spec, "scenario": args.scenario}
    adapter |= {"seed": args.seed, "speed": args.speed}
    if args.start:
        adapter["start"] = args.start
    if args.duration:
        adapter["for"] = args.duration
    if args.config:
        cfg = load_gateway_config(args.config)
    else:
        doc = {
            "gateway": {"estate": spec.estate, "id": spec.gateway},
            "broker": {"url": "mqtt://127.0.0.1:1883"},
        }
        cfg = parse_gateway_config(doc, "(command line)", Path.cwd())
    if args.broker:
        cfg = replace(cfg, endpoint=parse_mqtt_url(args.broker))
    cfg = replace(cfg, endpoint=_with_password(cfg.endpoint, args))
    if args.state_dir:
        cfg = replace(cfg, state_dir=Path(args.state_dir))
    return replace(cfg, adapters=(adapter,))
