"""Bench 3: memory under load. The service runs as its own process (``estatewatch run`` against
a Mosquitto of the bench; its memory is that of its processes together); the bench first finds
its sustained capacity (readings stored a second while offered more: the whole service, API,
rollups and rules included), then a load generator publishes the large estate's telemetry at
10 %, 80 % and 150 % of it, one after the other; the service's resident memory is sampled every
second. Reported: RSS at the end of each level (its last second of load), its slope (MB/min, a
linear fit over the level's second half), and at 150 %: the ingest queue at its bound
(backpressure), what the broker held, and, after the load stops and the backlog drains,
readings lost (published but not stored: must be 0). Beside the slope (the verdict's, unchanged):
a Theil-Sen slope, the per-30-s minima's, one net of the ingest queue, and each process's heap
(RssAnon) and mapped files (RssFile) with their slopes: whether a missed slope is a floor that
rises or a swing around a flat one (bench/README.md, h16-mem).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from alerts.windows import HOUR_MS, SeriesWindow
from bench.common import cpu_seconds, report, verdict
from estatewatch.broker import ManagedMosquitto, free_port
from ingest.state import StateStore

ESTATE, GW = "bench-memory", "gw-01"


def _tree(pid: int) -> list[int]:
    """The process and its descendants (the service may run parts in processes of their
    own: its memory is theirs together)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):  # (gone meanwhile)
                todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and its parts (RssAnon: heap; RssFile: mapped files, e.g. SQLite's WAL index)
    summed over the service's processes, and Pss (shared pages counted once)."""
    out: dict[str, float] = {}
    for p in _tree(pid):
        try:
            lines = Path(f"/proc/{p}/status").read_text().splitlines()
            lines += Path(f"/proc/{p}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue  # gone meanwhile
        for line in lines:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "Pss"):
                out[key] = out.get(key, 0.0) + int(value.split()[0]) / 1024
    return out


def _slope(points: list[tuple[float, float]]) -> float:
    """Per minute, a linear fit (0 with fewer than 3 points)."""
    if len(points) < 3:
        return 0.0
    return float(np.polyfit([p[0] for p in points], [p[1] for p in points], 1)[0]) * 60


def _noise(points: list[tuple[float, float]]) -> float:
    """MB, the spread of RSS around its linear fit: what the batches in flight swing it by.
    The slope's own uncertainty grows with it (bench/README.md, bench 3)."""
    if len(points) < 3:
        return 0.0
    t, v = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    fit = np.polyval(np.polyfit(t, v, 1), t)
    return float(np.std(v - fit))


def _settled(points: list[tuple[float, float]], seconds: float) -> list[tuple[float, float]]:
    """The samples from when RSS first came within 5 % of the level's second-half median
    (the caches and queues filled), at the earliest a tenth into the level."""
    half = [p[1] for p in points if p[0] >= seconds / 2]
    if not half:
        return points
    near = 0.95 * float(np.median(half))
    start = next((p[0] for p in points if p[1] >= near), 0.0)
    return [p for p in points if p[0] >= max(start, seconds / 10)]


def theil_sen(points: list[tuple[float, float]]) -> float:
    """Per minute, the median of the slopes between every two samples: the trend that a
    swing of the batches in flight (a few samples far off it) does not tilt, unlike the
    least-squares fit (0 with fewer than 3 points)."""
    if len(points) < 3:
        return 0.0
    t, v = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    i, j = np.triu_indices(len(t), k=1)
    dt = t[j] - t[i]
    keep = dt > 0
    return float(np.median((v[j] - v[i])[keep] / dt[keep])) * 60


def floor_points(
    points: list[tuple[float, float]], every_s: float = 30
) -> list[tuple[float, float]]:
    """The lowest sample of each ``every_s`` seconds (whole spans only), at its time: RSS with
    the fewest readings in flight, the floor that real growth lifts and a swing does not."""
    spans: dict[int, tuple[float, float]] = {}
    for t, v in points:
        k = int(t // every_s)
        if k not in spans or v < spans[k][1]:
            spans[k] = (t, v)
    first, last = points[0][0] if points else 0, points[-1][0] if points else 0
    whole = [k for k in spans if k * every_s >= first and (k + 1) * every_s <= last + 1]
    return [spans[k] for k in sorted(whole)]


def by_process(pid: int) -> dict[str, dict[str, float]]:
    """VmRSS, RssAnon (heap) and RssFile (mapped files: SQLite's WAL index, libraries) of
    each of the service's processes (the service, its store process)."""
    out: dict[str, dict[str, float]] = {}
    for p in _tree(pid):
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes()
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        name = "store" if b"store_process" in cmd else "service" if p == pid else str(p)
        mine = out.setdefault(name, {})
        for line in status.splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                mine[key] = mine.get(key, 0.0) + int(value.split()[0]) / 1024
    return out


def by_process_mb(pid: int) -> dict[str, float]:
    """VmRSS of each of the service's processes (the service, its store process)."""
    return {k: v.get("VmRSS", 0.0) for k, v in by_process(pid).items()}


class Service:
    """``estatewatch run`` against a Mosquitto of the bench, one gateway's credentials."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir()
        self.broker = ManagedMosquitto(
            folder / "broker", free_port(), max_queued_messages=2_000_000
        )
        self.broker.start()
        data = folder / "data"
        data.mkdir()
        state = StateStore.open(f"sqlite:///{data / 'estatewatch.db'}")
        state.add_estate(ESTATE, "内存测试小区")
        state.add_gateway(ESTATE, GW)
        state.close()
        creds = self.broker.issue_gateway_credentials(ESTATE, GW, "estates")
        assert creds is not None
        ep = self.broker.endpoint
        api_port = free_port()
        env = {
            **os.environ,
            "ESTATEWATCH_DATA_DIR": str(data),
            "ESTATEWATCH_MQTT_URL": f"mqtt://{ep.username}:{ep.password}@{ep.host}:{ep.port}",
            "ESTATEWATCH_API_PORT": str(api_port),
            "ESTATEWATCH_ADMIN_TOKEN": "bench-admin-token-0123456789",
            "ESTATEWATCH_LOG_LEVEL": "WARNING",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "estatewatch.cli", "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.api = httpx.Client(
            base_url=f"http://127.0.0.1:{api_port}",
            headers={"Authorization": "Bearer bench-admin-token-0123456789"},
            timeout=10,
        )
        self.url = f"mqtt://{creds.username}:{creds.password}@{creds.host}:{creds.port}"
        self.seq = 1
        self.published = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.api.get("/healthz").json().get("broker", {}).get("connected"):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)

    def ingest(self) -> dict[str, Any]:
        return dict(self.api.get("/healthz").json()["ingest"])

    def load(self, rate: float, seconds: float) -> dict[str, Any]:
        """Publish at ``rate`` for ``seconds``; every second the service's memory and
        readings stored, and the ingest queue's depth."""
        gen = subprocess.Popen(
            [
                *(sys.executable, "-m", "bench.loadgen", "--url", self.url),
                *("--estate", ESTATE, "--gw", GW, "--rate", str(rate), "--per-message", "100"),
                *("--seconds", str(seconds), "--first-seq", str(self.seq)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        cpu0 = cpu_seconds(self.proc.pid)
        t0 = time.monotonic()
        samples: list[tuple[float, float]] = []  # (s, RSS MB)
        stored: list[tuple[float, float]] = []  # (s, readings stored)
        queued: list[tuple[float, float]] = []  # (s, MB in the ingest queue)
        parts: list[dict[str, float]] = []
        each: list[dict[str, dict[str, float]]] = []  # by process, every second
        depth_max = bytes_max = 0
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                mem = memory_mb(self.proc.pid)
                samples.append((time.monotonic() - t0, mem.get("VmRSS", 0.0)))
                parts.append(mem)
                each.append(by_process(self.proc.pid))
                time.sleep(1.0)

        sampler = threading.Thread(target=sample)
        sampler.start()
        while gen.poll() is None:
            try:
                h = self.ingest()
                stored.append((time.monotonic() - t0, float(h["readings"])))
                queued.append((stored[-1][0], h["queued_bytes"] / 2**20))
                depth_max = max(depth_max, h["queue_depth"])
                bytes_max = max(bytes_max, h["queued_bytes"])
            except (httpx.HTTPError, KeyError):
                pass
            time.sleep(1.0)
        stop.set()
        sampler.join()
        processes = by_process_mb(self.proc.pid)
        cpu = cpu_seconds(self.proc.pid) - cpu0
        out = gen.stdout.read() if gen.stdout else ""
        last = [ln for ln in out.splitlines() if ln.startswith("sent ")]
        failed = None
        if not last:  # it failed: say how, since "published" is then unknown
            print(f"  load generator gave no count (exit {gen.returncode}):", flush=True)
            print("    " + "\n    ".join(out.strip().splitlines()[-8:]), flush=True)
            failed = out.strip().splitlines()[-3:]
        sent = int(last[-1].split()[1]) if last else 0
        self.seq = int(last[-1].split()[-1]) + 1 if last else self.seq
        self.published += sent
        return {
            "samples": samples,
            "stored": stored,
            "queued": queued,
            "parts": parts,
            "each": each,
            "cpu_s": cpu,
            "processes": processes,
            "sent": sent,
            "failed": failed,
            "depth_max": depth_max,
            "bytes_max": bytes_max,
        }

    def drain(self, timeout: float = 600) -> dict[str, Any]:
        """Wait until every published reading is stored (or the timeout)."""
        deadline = time.monotonic() + timeout
        h = self.ingest()
        while h["readings"] < self.published and time.monotonic() < deadline:
            time.sleep(1)
            h = self.ingest()
        return h

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.broker.stop()


def capacity(folder: Path, rate: float, seconds: float) -> tuple[float, dict[str, Any]]:
    """The whole service's sustained capacity: readings stored a second (the slope over the
    probe's second half) while a load beyond it is offered, so that the telemetry queue is
    at its bound and the broker holds the rest. If the service stored as fast as it was fed
    (the load generator's own limit), that rate: a lower bound, said so. A service of its
    own, stopped after: the overload's memory must not be counted in the levels after."""
    svc = Service(folder)
    try:
        got = svc.load(rate, seconds)
    finally:
        svc.stop()
    half = [p for p in got["stored"] if p[0] >= seconds / 2]
    per_s = _slope(half) / 60
    offered = got["sent"] / seconds
    info = {
        "offered_readings_per_s": round(offered),
        "stored_readings_per_s": round(per_s),
        "queue_depth_max": got["depth_max"],
        "lower_bound": per_s >= 0.95 * offered,
    }
    return per_s, info


DEVICES = 4_906  # the large estate's, which the load generator's readings cycle through


def window_bytes(per_device_s: float, bucket_ms: int, seconds: float = 3600) -> dict[str, int]:
    """Bytes a 1-hour window series holds (its numpy arrays) once full, at ``per_device_s``
    readings a second, kept as summaries of ``bucket_ms`` (a reporting interval) and, the
    reference, every sample (as before issue 15): what the rules' windows come to at a load,
    with no other process's noise in it."""
    out = {}
    for name, bucket in (("summaries", bucket_ms), ("every_sample", 0)):
        w = SeriesWindow(HOUR_MS, bucket_ms=bucket)
        step = 1000.0 / per_device_s
        for i in range(int(seconds * per_device_s)):
            w.append(int(i * step), 20.0 + (i % 17) / 10)
        w._flush()
        arrays = (w._ts, w._val, w._cum, w._ncum)
        out[name] = sum(a.nbytes for a in arrays if a is not None)
    return out


def net_of_queue(
    points: list[tuple[float, float]], queued: list[tuple[float, float]]
) -> tuple[float, float]:
    """Per minute, the trend of RSS with the ingest queue's bytes (at the nearest poll) fitted
    beside it, RSS = a + b t + c queued: the growth that is not payloads waiting; and c, MB of
    RSS a MB queued. (0, 0) with too few points."""
    if len(points) < 5 or len(queued) < 5:
        return 0.0, 0.0
    qt, qv = np.array([q[0] for q in queued]), np.array([q[1] for q in queued])
    t, v = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    q = qv[np.clip(np.searchsorted(qt, t), 0, len(qt) - 1)]
    coef = np.linalg.lstsq(np.column_stack([np.ones_like(t), t, q]), v, rcond=None)[0]
    return float(coef[1]) * 60, float(coef[2])


def robust_figures(
    samples: list[tuple[float, float]],
    each: list[dict[str, dict[str, float]]],
    seconds: float,
    queued: list[tuple[float, float]],
) -> dict[str, Any]:
    """Beside the verdict's least-squares slope over the second half (the issue's figure,
    unchanged): the Theil-Sen slope over the same samples, the slope of the per-30-s minima
    from 30 s in (the floor under the batches in flight), and each process's heap
    (RssAnon) and mapped files (RssFile) with their second-half slopes and every 10 s."""
    half = [p for p in samples if p[0] >= seconds / 2]
    floors = floor_points([p for p in samples if p[0] >= 30])
    net, per_queued = net_of_queue(half, queued)
    out: dict[str, Any] = {
        "slope_net_of_queue_mb_per_min": round(net, 2),
        "rss_mb_per_queued_mb": round(per_queued, 2),
        "slope_theil_sen_mb_per_min": round(theil_sen(half), 2),
        "slope_floor_30s_mb_per_min": round(_slope(floors), 2),
        "floor_30s_mb": [round(v, 1) for _, v in floors],
    }
    procs: dict[str, Any] = {}
    for name in sorted({k for e in each for k in e}):
        for key in ("RssAnon", "RssFile"):
            pts = [
                (t, e[name][key])
                for (t, _), e in zip(samples, each, strict=True)
                if key in e.get(name, {})
            ]
            h = [p for p in pts if p[0] >= seconds / 2]
            procs[f"{name}_{key}"] = {
                "slope_mb_per_min": round(_slope(h), 2),
                "slope_theil_sen_mb_per_min": round(theil_sen(h), 2),
                "every_10s": [round(v, 1) for _, v in pts[::10]],
            }
    out["by_process"] = procs
    return out


def run(
    max_rate: float,
    seconds: float = 60.0,
    shares: tuple[float, ...] = (0.10, 0.80, 1.50),
    probe_seconds: float = 30.0,
) -> dict[str, Any]:
    """Levels are shares of the sustained capacity the bench measures first (probing at
    1.5 × ``max_rate``); ``probe_seconds`` 0: shares of ``max_rate`` itself."""
    figures: dict[str, Any] = {"max_rate": max_rate, "seconds_per_level": seconds}
    with tempfile.TemporaryDirectory() as tmp:
        base = max_rate
        if probe_seconds > 0:
            base, info = capacity(Path(tmp) / "probe", 1.5 * max_rate, probe_seconds)
            figures["capacity"] = info
            bound = " (the load generator's limit: a lower bound)" if info["lower_bound"] else ""
            print(
                f"  sustained capacity: {base:,.0f} readings/s stored while "
                f"{info['offered_readings_per_s']:,} were offered{bound}",
                flush=True,
            )
        figures["capacity_readings_per_s"] = round(base)
        svc = Service(Path(tmp) / "levels")
        try:
            for share in shares:
                rate = base * share
                got = svc.load(rate, seconds)
                # while the load was offered: once the generator stops publishing (then waits
                # for its last acknowledgement) the batches in flight go, and the last sample
                # came 9-10 MB under the one 10 s before in four of seven runs (2026-12-06): a fall
                # that the end and the fit read, though no load was left
                n = sum(1 for p in got["samples"] if p[0] <= seconds) or len(got["samples"])
                samples, parts = got["samples"][:n], got["parts"][:n]
                robust = robust_figures(samples, got["each"][:n], seconds, got["queued"])
                if got["failed"]:
                    figures["load_generator_failed"] = got["failed"]
                half = [p for p in samples if p[0] >= seconds / 2]
                slope = _slope(half)
                settled = _settled(samples, seconds)
                h = svc.ingest()
                key = f"load_{int(share * 100)}pct"
                figures[key] = {
                    "rate": round(rate),
                    "published_readings": got["sent"],
                    "rss_mb_end": round(samples[-1][1], 1) if samples else None,
                    "rss_mb_max": round(max(p[1] for p in samples), 1) if samples else None,
                    "slope_mb_per_min": round(slope, 2),
                    # beside the verdict's slope: the fit over the whole level once settled,
                    # and the spread around the second half's fit (what the slope is read in)
                    "slope_settled_mb_per_min": round(_slope(settled), 2),
                    "settled_from_s": round(settled[0][0]) if settled else None,
                    "rss_spread_mb": round(_noise(half), 1),
                    "rss_mb_by_process_end": {k: round(v, 1) for k, v in got["processes"].items()},
                    "queue_depth_max": got["depth_max"],
                    "service_cpu_s": round(got["cpu_s"], 1),
                    "load_average": os.getloadavg(),
                    "queue_capacity": h["queue_capacity"],
                    "queued_mb_max": round(got["bytes_max"] / 2**20, 1),
                    "queued_mb_capacity": round(h["queued_bytes_capacity"] / 2**20, 1),
                    # where the memory is at the end, and RSS every 10 s (for the README's plot)
                    "parts_mb_end": {k: round(v, 1) for k, v in parts[-1].items()} if parts else {},
                    "rss_mb_every_10s": [round(v, 1) for _, v in samples[::10]],
                    **robust,
                }
                print(
                    f"  {share:>4.0%} load ({rate:,.0f} readings/s): RSS "
                    f"{figures[key]['rss_mb_end']} MB, slope {slope:+.2f} MB/min "
                    f"(settled: {figures[key]['slope_settled_mb_per_min']:+.2f}; spread "
                    f"±{figures[key]['rss_spread_mb']} MB), "
                    f"queue max {got['depth_max']}/{h['queue_capacity']} messages, "
                    f"{got['bytes_max'] / 2**20:.1f}/{h['queued_bytes_capacity'] / 2**20:.0f} MiB",
                    flush=True,
                )
                moves = ", ".join(
                    f"{k} {v['slope_mb_per_min']:+.2f}" for k, v in robust["by_process"].items()
                )
                print(
                    f"        beside it: Theil-Sen {robust['slope_theil_sen_mb_per_min']:+.2f}, "
                    f"per-30-s minima {robust['slope_floor_30s_mb_per_min']:+.2f}, net of the "
                    f"queue {robust['slope_net_of_queue_mb_per_min']:+.2f} MB/min "
                    f"(minima {robust['floor_30s_mb']}); by process, MB/min: {moves}",
                    flush=True,
                )
            # What the windows alone grow by at the 80 % level's rate a device, a 60-s kind.
            if "load_80pct" in figures:
                per_device = figures["load_80pct"]["rate"] / DEVICES
                wb = window_bytes(per_device, 60_000)
                figures["window_bytes_per_series"] = {**wb, "per_device_s": per_device}
                print(
                    f"  a full 1-h window at {per_device:.1f} readings/s a device: "
                    f"{wb['summaries']:,} bytes as summaries, {wb['every_sample']:,} keeping "
                    "every sample",
                    flush=True,
                )
            # the backlog the broker held drains; then nothing may be missing
            h = svc.drain()
            published = svc.published
            figures["published_readings"] = published
            figures["stored_readings"] = h["readings"]
            # a generator that failed gave no count: what it published is unknown, so is the loss
            failed = "load_generator_failed" in figures
            lost = None if failed else published - h["readings"]
            figures["lost_readings"] = lost
            figures["dead_letters"] = h["dead_letters"]
            print(
                f"  after the load: published {published:,}, stored {h['readings']:,}, "
                f"lost {'unknown (a load generator failed)' if lost is None else f'{lost:,}'}",
                flush=True,
            )
        finally:
            svc.stop()
    return figures


def targets(f: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The rows of the levels that ran (a diagnosis may run one alone)."""
    m80, m150 = f.get("load_80pct"), f.get("load_150pct")
    rows = []
    if m80:
        rss80 = m80["rss_mb_max"] or 0
        slope = m80["slope_mb_per_min"]
        rows.append(
            (
                "3: RSS at 80 % load (slope)",
                f"{rss80:.0f} MB ({slope:+.2f} MB/min)"
                + (f" at {m80['rate']:,}/s" if "rate" in m80 else ""),
                "≤ 300 MB, slope ≤ 1 MB/min",
                verdict(rss80 <= 300 and abs(slope) <= 1.0),
            )
        )
        if m150:
            rss150 = m150["rss_mb_max"] or 0
            rows.append(
                (
                    "3: RSS at 150 % ÷ at 80 %",
                    f"{rss150 / max(rss80, 1):.2f}",
                    "≤ 2, no crash, none lost",
                    verdict(rss150 <= 2 * rss80 and f.get("lost_readings", 1) == 0),
                )
            )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--max-rate",
        type=float,
        default=50_000,
        help="the maximum ingest rate (bench 1's figure under make bench); the capacity "
        "probe offers 1.5 times it",
    )
    p.add_argument(
        "--probe-seconds",
        type=float,
        default=30,
        help="the capacity probe's length (0: levels are shares of --max-rate)",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=60,
        help="per load level (the issue's 5 minutes: --seconds 300)",
    )
    p.add_argument(
        "--levels",
        type=float,
        nargs="+",
        default=[0.10, 0.80, 1.50],
        help="load levels as shares of --max-rate (a diagnosis may run one alone)",
    )
    args = p.parse_args()
    print("bench 3: memory under load", flush=True)
    f = run(args.max_rate, args.seconds, tuple(args.levels), args.probe_seconds)
    report("memory", f, vars(args), targets(f))


if __name__ == "__main__":
    main()
