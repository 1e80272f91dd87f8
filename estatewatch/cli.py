"""The ``estatewatch`` command."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from estatewatch.settings import SettingsError, describe, load_settings
from ingest.malloc import tune_malloc


def _settings_help() -> str:
    lines = [
        "settings (a TOML file given with --config, each overridden by its environment variable):"
    ]
    for env, default, text in describe():
        lines.append(f"  {env:<38} {text} (default {default})")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="estatewatch",
        description="智慧小区物联网监测 · smart-estate IoT monitoring service",
        epilog=_settings_help(),
        formatter_class=fmt,
    )
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run", help="run the service in one process", epilog=_settings_help(), formatter_class=fmt
    )
    run.add_argument("--config", help="settings file (TOML)")
    run.add_argument(
        "--role",
        choices=["all", "ingest", "api"],
        default="all",
        help="all: everything in one process (default); ingest: one shard of the estates, "
        "broker to store (needs ESTATEWATCH_MQTT_URL); api: REST and pages over all shards",
    )
    run.add_argument(
        "--shard",
        type=int,
        default=0,
        help="with --role ingest: which of the ESTATEWATCH_INGEST_SHARDS shares this process takes",
    )
    demo = sub.add_parser(
        "demo",
        help="run the service with two simulated estates",
        epilog=_settings_help(),
        formatter_class=fmt,
    )
    demo.add_argument("--config", help="settings file (TOML)")
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    demo.add_argument("--seed", type=int, default=2026, help="simulation seed")
    demo.add_argument(
        "--speed",
        type=float,
        default=40.0,
        help="how much faster than real time the storm is replayed until it reaches now "
        "(a faster one reaches now sooner: make demo-check's compressed run)",
    )
    demo.add_argument(
        "--field-protocols",
        action="store_true",
        help="the first estate's plant on Modbus (local pymodbus server), its fire panel "
        "in GB/T 26875.3 (simulated transmission device)",
    )
    score = sub.add_parser(
        "score",
        help="score the service's alarms and plans against a simulator's ground truth",
        description=(
            "Read a ledger (estatewatch simulate --truth FILE) and the service's alarms and "
            "plan activations through its API; print per fault kind and hazard level the "
            "detections, misses and delays, per rule and plan the alarms without a cause, and "
            "the ISA-18.2 / EEMUA 191 alarm-management figures."
        ),
    )
    score.add_argument("--truth", required=True, help="the ledger: one JSON line per cause")
    score.add_argument("--url", default="http://127.0.0.1:8080", help="the service's address")
    score.add_argument("--token", required=True, help="an admin or authority API token")
    score.add_argument("--estate", help="only this estate (default: the ledger's)")
    score.add_argument(
        "--from", dest="since", help="period start (default: the first cause or alarm)"
    )
    score.add_argument(
        "--to", dest="until", help="period end (default: the last deadline or alarm)"
    )
    score.add_argument("--json", action="store_true", help="print the figures as JSON")
    from estatewatch.estate_cli import add_estate_commands

    add_estate_commands(sub)  # gateway, simulate: estate-side processes
    return p


def _stop_on_sigterm() -> None:
    def handler(_sig: int, _frame: FrameType | None) -> None:
        # the first TERM stops cleanly; more while stopping must not interrupt the stop
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def _fewer_collections() -> None:
    """The cyclic collector runs every 700 net allocations by default: a 2,000-reading commit
    makes tens of thousands of short-lived dicts and tuples (freed by reference counting, but
    counted), so it ran dozens of times a commit, each walking the young objects, and the
    full collections walked every rule window. A commit's worth between young collections,
    and no full collection of what exists at start (gc.freeze) after set-up."""
    gc.set_threshold(50_000, 20, 20)


def tune_interpreter() -> None:
    """Process-wide settings for the service (and the benchmarks that run its parts)."""
    tune_malloc()  # two arenas, and their free pages given back every few seconds
    _fewer_collections()


def main(argv: Sequence[str] | None = None) -> int:
    tune_interpreter()
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo" and args.speed < 1:
        parser.error(f"--speed must be at least 1 (real time), got {args.speed:g}")
    if args.command == "score":
        return run_score(args)
    if args.command in ("gateway", "simulate"):
        from estatewatch.estate_cli import run_estate_command

        return run_estate_command(args)
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"estatewatch: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # a 1-s job still running when its next turn comes is skipped on purpose (coalesce)
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    from estatewatch.service import Service, StartupError

    service = Service(
        settings,
        pick_free_api_port=args.command == "demo",
        role=getattr(args, "role", "all"),
        shard=getattr(args, "shard", 0),
    )
    _stop_on_sigterm()
    try:
        service.start()
        gc.freeze()  # what set-up made (catalog, rules, plans) is never collected: skip it
        if args.command == "demo":
            from estatewatch.demo import run_demo

            run_demo(service, args.duration, args.seed, args.field_protocols, args.speed)
        else:
            print(
                f"estatewatch {service.role} running: {service.url}  (API docs {service.url}/docs)",
                flush=True,
            )
            threading.Event().wait()
    except KeyboardInterrupt:
        print("\nstopping · 正在停止 …", flush=True)
    except (StartupError, RuntimeError, OSError) as exc:
        print(f"estatewatch: {exc}", file=sys.stderr)
        return 1
    finally:
        service.stop()
    return 0


def run_score(args: argparse.Namespace) -> int:
    import time

    import httpx
    import orjson

    from scoring.ledger import read_ledger
    from scoring.score import fetch, format_score, score
    from simulators.scenario import parse_start_ms

    try:
        causes = read_ledger(args.truth)
        start = parse_start_ms(args.since) if args.since else None
        end = parse_start_ms(args.until) if args.until else None
    except (OSError, ValueError) as exc:
        print(f"estatewatch score: {exc}", file=sys.stderr)
        return 2
    estates = {c.estate for c in causes}
    estate = args.estate or (next(iter(estates)) if len(estates) == 1 else None)
    try:
        alarms, activations = fetch(args.url, args.token, estate)
    except httpx.HTTPError as exc:
        print(f"estatewatch score: cannot read {args.url}: {exc}", file=sys.stderr)
        return 1
    # By default the period is everything the ledger and the service know of: the first
    # cause or alarm to the last deadline or alarm.
    raised = [int(a["fired_ms"]) for a in alarms if a.get("fired_ms") is not None]
    if start is None:
        start = min([c.start_ms for c in causes] + raised, default=int(time.time() * 1000))
    if end is None:
        end = max([max(c.end_ms, c.deadline_ms) for c in causes] + raised, default=start) + 1
    end = max(end, start + 1)
    result = score(causes, alarms, activations, start, end)
    if args.json:
        print(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(format_score(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
