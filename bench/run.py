"""``make bench``: the eight benchmarks of the project in one run, each figure beside its target,
as ratios against references measured in the same run; records in bench/results/ and the
table in bench/README.md.

Defaults keep the whole run under 20 minutes on a 2-core machine; ``--full`` uses the issue's
sizes (5 minutes per memory level).
"""

from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path
from typing import Any

from bench.common import commit, cpu_model, record

README = Path(__file__).with_name("README.md")
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="the issue's sizes (about 30 minutes)")
    p.add_argument("--only", nargs="*", help="bench names to run, e.g. ingest_throughput")
    args = p.parse_args()
    started = time.monotonic()
    rows: list[tuple[str, str, str, str]] = []
    figures: dict[str, Any] = {}

    def want(name: str) -> bool:
        return not args.only or name in args.only

    def bench(name: str, title: str, **kw: Any) -> dict[str, Any] | None:
        if not want(name):
            return None
        mod = importlib.import_module(f"bench.{name}")
        print(f"\n{title}", flush=True)
        try:
            f: dict[str, Any] = mod.run(**kw)
        except Exception as exc:  # one broken bench must not hide the others' figures
            print(f"  FAILED: {exc!r}", flush=True)
            rows.append((title, "failed", str(exc)[:60], "MISSED"))
            return None
        record(name.replace("_", "-"), f, {k: v for k, v in kw.items()})
        rows.extend(mod.targets(f))
        figures[name] = f
        return f

    one = bench(
        "ingest_throughput", "1. ingest throughput", total=400_000 if args.full else 200_000
    )
    max_rate = 50_000.0
    if one and "r100" in one:
        max_rate = float(one["r100"]["ingest_readings_per_s"])
    bench(
        "alert_latency",
        "2. alert latency at 50 % of the maximum load",
        load_rate=0.5 * max_rate,
        seconds=60 if args.full else 30,
    )
    bench(
        "memory",
        "3. memory under load (10 %, 80 %, 150 %)",
        max_rate=max_rate,
        seconds=300 if args.full else 60,
    )
    bench("rules_scaling", "4. rules scaling (1,000 rules ÷ 10)")
    bench("query_cost", "5. query cost against history (30 days ÷ 1 day)")
    bench("backlog_drain", "6. gateway backlog drain (drain ÷ live)")
    bench(
        "alarm_truth",
        "7. alarms against the truth (a season per climate; --full: the year)",
        full=args.full,
    )
    # Bench 8 (issue 15's "bench 7, the peer": 7 was taken by alarm_truth). Installs Node-RED
    # into ~/.cache/estatewatch on first use (about 7 minutes once).
    bench(
        "nodered_peer",
        "8. the service ÷ a Node-RED flow (drain, interleaved; kill -9 at 25 %)",
        total=400_000 if args.full else 200_000,
        one_reading_messages=40_000 if args.full else 10_000,
        pairs=5 if args.full else 3,
    )

    minutes = (time.monotonic() - started) / 60
    table = ["| figure | measured | target | |", "|---|---|---|---|"]
    table += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    print("\n" + "\n".join(table))
    print(f"\n{len(rows)} figures in {minutes:.1f} min on {cpu_model()}")
    if not args.only:
        section = (
            f"{BEGIN}\nLatest `make bench` ({time.strftime('%Y-%m-%d', time.gmtime())}, "
            f"commit {commit()}, {cpu_model()}, {minutes:.1f} min):\n\n"
            + "\n".join(table)
            + f"\n{END}"
        )
        text = README.read_text() if README.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        README.write_text(head + section + tail)


if __name__ == "__main__":
    main()
