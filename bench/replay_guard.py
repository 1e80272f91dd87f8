"""The replay guard's look-up (``AlertStore.alarm_caused_at``) against the alarm history's size.

A file SQLite state database (or ``--url``) is given ``--alarms`` closed alarms of one estate
over ``--rules`` rules and ``--subjects`` devices, then asked ``--asks`` times, for a random
(rule, subject) and time, whether a stored alarm is that condition's own. Reported: the
look-up's median and 90th-percentile milliseconds (wall, one process, SQLite in process).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from alerts.store import AlertStore, alarms
from ingest.state import create_engine

ESTATE = "bench-large"
MINUTE = 60_000


def _rows(n: int, rules: int, subjects: int, rng: random.Random) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for i in range(n):
        start = i * MINUTE
        out.append(
            {
                "id": f"al-{i:08d}", "rule": f"rule-{rng.randrange(rules)}", "estate": ESTATE,
                "subject": f"dev-{rng.randrange(subjects)}", "kind": "meter", "gateway": "gw-01",
                "severity": "minor", "state": "resolved", "is_open": False,
                "summary_zh": "", "summary_en": "", "started_ms": start, "updated_ms": start,
                "fired_ms": start, "resolved_ms": start + 5 * MINUTE,
                "resolved_by": rng.choice(("system", "op")), "tags": [], "detail": {},
                "last_ms": start, "count": 1, "for_ms": 0, "flapping": False, "escalated": 0,
                "deadline_breached": False, "late": False,
            }
        )  # fmt: skip
    return out


def measure(url: str, n: int, rules: int, subjects: int, asks: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    engine = create_engine(url)
    try:
        store = AlertStore(engine)
        store.migrate(0)
        with engine.begin() as conn:
            conn.execute(alarms.insert(), _rows(n, rules, subjects, rng))
        ms: list[float] = []
        for _ in range(asks):
            rule, subject = f"rule-{rng.randrange(rules)}", f"dev-{rng.randrange(subjects)}"
            ts = rng.randrange(n) * MINUTE
            t0 = time.perf_counter()
            store.alarm_caused_at(rule, ESTATE, subject, ts)
            ms.append((time.perf_counter() - t0) * 1000)
        return ms
    finally:
        engine.dispose()


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--alarms", type=int, default=20_000)
    p.add_argument("--rules", type=int, default=100)
    p.add_argument("--subjects", type=int, default=500)
    p.add_argument("--asks", type=int, default=2_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--url", help="a state database (default: a new SQLite file)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{Path(tmp) / 'state.db'}"
        ms = measure(url, args.alarms, args.rules, args.subjects, args.asks, args.seed)
    ms.sort()
    print(
        f"alarm_caused_at over {args.alarms:,} alarms: median {statistics.median(ms):.3f} ms, "
        f"p90 {ms[int(len(ms) * 0.9)]:.3f} ms ({args.asks:,} look-ups)"
    )


if __name__ == "__main__":
    main()
