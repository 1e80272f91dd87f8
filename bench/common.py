"""What every benchmark shares: recording a result, the machine it ran on, the table."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from estatewatch.broker import ManagedMosquitto, free_port

RESULTS = Path(__file__).parent / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def record(name: str, figures: dict[str, Any], settings: dict[str, Any]) -> Path:
    """Append one JSON record to bench/results/ and return its path."""
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = RESULTS / f"{stamp}-{name}.json"
    path.write_text(
        json.dumps(
            {
                "bench": name,
                "when": stamp,
                "commit": commit(),
                "cpu": cpu_model(),
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "settings": settings,
                "figures": figures,
            },
            indent=2,
            ensure_ascii=False,
        )
        + "\n"
    )
    return path


def report(
    name: str, figures: dict[str, Any], settings: dict[str, Any], rows: Iterable[tuple[str, ...]]
) -> None:
    """A bench run alone (``python -m bench.<name>``): record it, print each figure beside its
    target."""
    path = record(name, figures, settings)
    for row in rows:
        print("  " + " | ".join(row))
    print(f"  recorded in {path}")


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def target(figure: str, value: str, goal: str, ok: bool) -> tuple[str, str, str, str]:
    """A row of the table: the figure, its value, the target and whether it was met."""
    return (figure, value, goal, verdict(ok))


@contextmanager
def queueing_broker() -> Iterator[tuple[ManagedMosquitto, Path]]:
    """A Mosquitto of the bench's own on a free port, in a temporary folder (also yielded),
    queueing up to 2,000,000 messages for a session that is away; stopped at the end."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        broker = ManagedMosquitto(folder / "broker", free_port(), max_queued_messages=2_000_000)
        broker.start()
        try:
            yield broker, folder
        finally:
            broker.stop()


def parse_with_full(p: argparse.ArgumentParser, full: str, **settings: Any) -> argparse.Namespace:
    """Adds ``--full`` (described by ``full``), parses, and under --full sets ``settings``."""
    p.add_argument("--full", action="store_true", help=full)
    args = p.parse_args()
    if args.full:
        for name, value in settings.items():
            setattr(args, name, value)
    return args


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and of its live children (the service's writer
    process), summed."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(OSError):  # ended meanwhile
                total += cpu_seconds(int(child))
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return total + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
