"""The scorer: the ledger's causes against the alarms and plan activations the service shows
through its API.

- A fault is detected (a true positive) when an alarm of its rule family is raised on one of
  its devices between its start (less a minute: clocks) and its deadline; the delay is from
  the fault's start to the first such alarm.
- A weather episode is detected when every plan it names reaches the level it names, between
  the episode's start (less 10 minutes: a level judged a reading earlier) and its deadline,
  or already stands there at the start.
- An alarm has a cause when a fault touched its subject from a minute before its start to
  :data:`~scoring.ledger.AFTERMATH_MS` after its end (or its deadline, if later), or when it is
  a ``weather-*`` rule on the station within an hour of an episode. Otherwise it has no cause:
  a control room would have been woken for nothing.
- A plan activation has a cause when each of its raises has one: a weather episode that names
  the plan at that level or higher, or a fault whose rules activate the plan.

Everything is read through the API (``/api/v1/alarms``, ``/api/v1/plans/activations``), as a
control room would see it; :func:`score` itself is pure.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from alerts.plans import Plan, ResponseLevel, load_plans
from alerts.quality import AlarmQuality, alarm_quality, percentile, raised_alarms
from protocol.clock import SHANGHAI
from scoring.ledger import AFTERMATH_MS, MIN, Cause

EARLY_MS = MIN  # an alarm a little before the fault's recorded start still counts
WEATHER_EARLY_MS = 10 * MIN
WEATHER_ALARM_SLACK_MS = 60 * MIN
_ROMAN = {"-": 0, "Ⅳ": 1, "Ⅲ": 2, "Ⅱ": 3, "Ⅰ": 4}
MONTH_MS = 30 * 86_400_000


@dataclass
class Row:
    """One line of the recall table: a fault type or a hazard/level."""

    key: str
    causes: int = 0
    detected: int = 0
    delays_s: list[float] = field(default_factory=list)

    @property
    def missed(self) -> int:
        return self.causes - self.detected

    @property
    def recall(self) -> float:
        return self.detected / self.causes if self.causes else 1.0


@dataclass
class Score:
    start_ms: int
    end_ms: int
    estates: int
    causes: dict[str, Row]
    missed: list[Cause]
    by_rule: dict[str, dict[str, int]]  # rule -> alarms, caused, no_cause
    by_plan: dict[str, dict[str, int]]  # plan -> activations, caused, no_cause, expected, reached
    no_cause: list[dict[str, Any]]  # alarms without a cause
    plans_no_cause: list[dict[str, Any]]
    quality: AlarmQuality

    @property
    def months(self) -> float:
        return (self.end_ms - self.start_ms) / MONTH_MS

    @property
    def no_cause_per_estate_month(self) -> float:
        return len(self.no_cause) / max(self.months * self.estates, 1e-9)

    def as_dict(self) -> dict[str, Any]:
        return {
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "estates": self.estates,
            "causes": {
                k: {
                    "causes": r.causes,
                    "detected": r.detected,
                    "missed": r.missed,
                    "recall": round(r.recall, 4),
                    "delay_p50_s": percentile(r.delays_s, 50),
                    "delay_p99_s": percentile(r.delays_s, 99),
                }
                for k, r in sorted(self.causes.items())
            },
            "missed": [c.as_json() for c in self.missed],
            "by_rule": self.by_rule,
            "by_plan": self.by_plan,
            "no_cause": self.no_cause,
            "no_cause_per_estate_month": round(self.no_cause_per_estate_month, 3),
            "plans_no_cause": self.plans_no_cause,
            "quality": self.quality.as_dict(),
        }


# --- reading the service ---------------------------------------------------------------------


def fetch(
    url: str, token: str, estate: str | None = None, timeout: float = 30.0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every alarm and every plan activation (with its timeline) the API shows."""
    with httpx.Client(
        base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=timeout
    ) as api:
        alarms: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 1000}
        if estate:
            params["estate"] = estate
        while True:
            r = api.get("/api/v1/alarms", params={**params, "offset": len(alarms)})
            r.raise_for_status()
            items = r.json()["items"]
            alarms.extend(items)
            if len(items) < 1000:
                break
        r = api.get("/api/v1/plans/activations", params=params)
        r.raise_for_status()
        activations = []
        for a in r.json()["items"]:
            full = api.get(f"/api/v1/plans/activations/{a['id']}")
            full.raise_for_status()
            activations.append(full.json())
    return alarms, activations


# --- scoring ---------------------------------------------------------------------------------


def _raised(a: Mapping[str, Any]) -> int | None:
    v = a.get("fired_ms")
    return int(v) if v is not None else None


def _steps(activation: Mapping[str, Any]) -> list[tuple[int, int, str]]:
    """(ts, level, action) of each level change, in time order."""
    out = []
    for e in activation.get("timeline") or []:
        action = e.get("action")
        if action in ("activated", "raised", "lowered", "resumed"):
            out.append((int(e["ts"]), _ROMAN.get(e.get("level", "-"), 0), str(action)))
        elif action == "stood_down":
            out.append((int(e["ts"]), 0, str(action)))
    if not out and activation.get("started_ms") is not None:  # no timeline: its level from start
        out.append(
            (int(activation["started_ms"]), _ROMAN.get(str(activation.get("max_level")), 0), "")
        )
    return sorted(out)


def _reached(steps: Sequence[tuple[int, int, str]], level: int, t0: int, t1: int) -> int | None:
    """First time in [t0, t1] at which the activation stands at ``level`` or higher."""
    current = 0
    for ts, lvl, _ in steps:
        if ts <= t0:
            current = lvl
            continue
        if current >= level:
            return t0
        if ts > t1:
            return None
        current = lvl
        if current >= level:
            return ts
    return t0 if current >= level else None


def score(
    causes: Sequence[Cause],
    alarms: Sequence[Mapping[str, Any]],
    activations: Sequence[Mapping[str, Any]],
    start_ms: int,
    end_ms: int,
    plans: Mapping[str, Plan] | None = None,
) -> Score:
    plans = load_plans() if plans is None else plans
    estates = {c.estate for c in causes} | {str(a["estate"]) for a in alarms}
    rows: dict[str, Row] = {}
    missed: list[Cause] = []
    by_subject: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for a in alarms:
        if _raised(a) is not None:
            by_subject[(str(a["estate"]), str(a["subject"]))].append(a)
    acts_by_plan: dict[tuple[str, str], list[list[tuple[int, int, str]]]] = defaultdict(list)
    for act in activations:
        acts_by_plan[(str(act["estate"]), str(act["plan"]))].append(_steps(act))

    for c in causes:
        row = rows.setdefault(c.key, Row(c.key))
        if c.cause == "weather" and not c.plans:
            continue  # an episode no plan answers: recorded, not scored
        row.causes += 1
        found: int | None = None
        if c.cause == "fault":
            for dev in c.devices:
                for a in by_subject.get((c.estate, dev), ()):
                    t = _raised(a)
                    if (
                        a["rule"] in c.rules
                        and t is not None
                        and c.start_ms - EARLY_MS <= t <= c.deadline_ms
                    ):
                        found = t if found is None else min(found, t)
        else:
            times = []
            for plan_id, roman in c.plans.items():
                best = None
                for steps in acts_by_plan.get((c.estate, plan_id), ()):
                    t = _reached(steps, _ROMAN[roman], c.start_ms - WEATHER_EARLY_MS, c.deadline_ms)
                    if t is not None:
                        best = t if best is None else min(best, t)
                times.append(best)
            found = None if any(t is None for t in times) else max(t for t in times if t)
        if found is None:
            missed.append(c)
        else:
            row.detected += 1
            row.delays_s.append(max(0, found - c.start_ms) / 1000)

    # Alarms: a cause, or none.
    by_rule: dict[str, dict[str, int]] = defaultdict(lambda: {"alarms": 0, "caused": 0})
    no_cause = []
    for a in alarms:
        t = _raised(a)
        if t is None or not start_ms <= t < end_ms:
            continue
        stats = by_rule[str(a["rule"])]
        stats["alarms"] += 1
        if _alarm_has_cause(a, t, causes):
            stats["caused"] += 1
        else:
            detail = a.get("detail") or {}
            no_cause.append(
                {
                    "id": a.get("id"),
                    "rule": a["rule"],
                    "estate": a["estate"],
                    "device": a["subject"],
                    "raised_ms": t,
                    "first_reading": {
                        k: detail[k] for k in ("metric", "value", "test", "ts") if k in detail
                    }
                    or detail,
                }
            )
    for stats in by_rule.values():
        stats["no_cause"] = stats["alarms"] - stats["caused"]

    # Plan activations: each raise needs a cause.
    by_plan: dict[str, dict[str, int]] = defaultdict(
        lambda: {"activations": 0, "caused": 0, "expected": 0, "reached": 0}
    )
    plans_no_cause = []
    for act in activations:
        steps = _steps(act)
        if not steps or not start_ms <= steps[0][0] < end_ms:
            continue
        pid, estate = str(act["plan"]), str(act["estate"])
        stats = by_plan[pid]
        stats["activations"] += 1
        bad = [
            (ts, lvl)
            for ts, lvl, action in steps
            if action in ("activated", "raised", "")
            and not _raise_has_cause(estate, pid, lvl, ts, causes, plans.get(pid))
        ]
        if bad:
            plans_no_cause.append(
                {
                    "id": act.get("id"),
                    "plan": pid,
                    "estate": estate,
                    "steps": [{"ts": ts, "level": _roman(lvl)} for ts, lvl in bad],
                    "sources": act.get("sources"),
                }
            )
        else:
            stats["caused"] += 1
    for c in causes:
        for pid in c.plans:
            by_plan[pid]["expected"] += 1
            if c not in missed:
                by_plan[pid]["reached"] += 1
    for stats in by_plan.values():
        stats["no_cause"] = stats["activations"] - stats["caused"]

    emergencies = []
    for act in activations:
        steps = _steps(act)
        if steps:
            end = act.get("ended_ms") or end_ms
            emergencies.append((steps[0][0], int(end)))
    quality = alarm_quality(raised_alarms(alarms), start_ms, end_ms, emergencies)
    return Score(
        start_ms,
        end_ms,
        max(len(estates), 1),
        rows,
        missed,
        dict(by_rule),
        dict(by_plan),
        sorted(no_cause, key=lambda x: x["raised_ms"]),
        plans_no_cause,
        quality,
    )


def _roman(level: int) -> str:
    return ResponseLevel(level).roman


def _alarm_has_cause(a: Mapping[str, Any], t: int, causes: Iterable[Cause]) -> bool:
    estate, subject, rule = str(a["estate"]), str(a["subject"]), str(a["rule"])
    for c in causes:
        if c.estate != estate:
            continue
        if c.cause == "fault":
            explains = subject in c.devices or (
                c.what == "gateway_offline" and "no_data" in (a.get("tags") or ())
            )
            if explains and c.start_ms - EARLY_MS <= t <= max(
                c.end_ms + AFTERMATH_MS, c.deadline_ms
            ):
                return True
        elif (
            rule.startswith("weather-")
            and subject in c.devices
            and c.start_ms - WEATHER_ALARM_SLACK_MS <= t <= c.end_ms + WEATHER_ALARM_SLACK_MS
        ):
            return True
    return False


def _raise_has_cause(
    estate: str, plan_id: str, level: int, ts: int, causes: Iterable[Cause], plan: Plan | None
) -> bool:
    rules = plan.rules if plan is not None else frozenset()
    for c in causes:
        if c.estate != estate:
            continue
        if c.cause == "weather":
            want = _ROMAN.get(c.plans.get(plan_id, "-"), 0)
            if want >= level and c.start_ms - WEATHER_EARLY_MS <= ts <= c.end_ms + WEATHER_EARLY_MS:
                return True
        elif set(c.rules) & rules and c.start_ms - EARLY_MS <= ts <= c.end_ms + AFTERMATH_MS:
            return True
    return False


# --- printing --------------------------------------------------------------------------------


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, SHANGHAI).strftime("%Y-%m-%d %H:%M")


def _s(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.0f} s" if v < 600 else f"{v / 60:.0f} min"


def format_score(s: Score, list_limit: int = 30) -> str:
    out = [
        f"period {_when(s.start_ms)} – {_when(s.end_ms)} (Asia/Shanghai), "
        f"{s.estates} estate(s), {s.months:.2f} months",
        "",
        "| cause | causes | detected | missed | recall | delay p50 | delay p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, r in sorted(s.causes.items()):
        if r.causes == 0:
            out.append(f"| {k} | 0 (no plan answers it) | | | | | |")
            continue
        out.append(
            f"| {k} | {r.causes} | {r.detected} | {r.missed} | {r.recall:.0%} | "
            f"{_s(percentile(r.delays_s, 50))} | {_s(percentile(r.delays_s, 99))} |"
        )
    out += ["", "| rule | alarms | with cause | no cause |", "|---|---|---|---|"]
    for rule, st in sorted(s.by_rule.items(), key=lambda kv: (-kv[1]["no_cause"], kv[0])):
        out.append(f"| {rule} | {st['alarms']} | {st['caused']} | {st['no_cause']} |")
    out += [
        "",
        "| plan | activations | with cause | no cause | episodes expecting it | reached |",
        "|---|---|---|---|---|---|",
    ]
    for pid, st in sorted(s.by_plan.items()):
        out.append(
            f"| {pid} | {st['activations']} | {st['caused']} | {st['no_cause']} | "
            f"{st['expected']} | {st['reached']} |"
        )
    q = s.quality
    out += [
        "",
        f"alarms {q.alarms} · {q.per_hour:.3f} per control-room hour · "
        f"{q.per_10min_outside_emergencies:.3f} per 10 min outside emergencies · "
        f"flood windows {q.flood_windows}/{q.windows} ({q.flood_share:.2%}, peak {q.peak_10min}) · "
        f"chattering {len(q.chattering)} · stale {len(q.stale)}",
        # the load figures count an alarm when it reached the control room (alerts.quality)
        f"clocks: rates and floods by arrival ({q.reached} arrived, {q.late} of them late), "
        "chattering, stale and the top ten by data time",
        "top ten: "
        + ", ".join(f"{t['rule']}@{t['subject']} {t['alarms']} ({t['share']:.0%})" for t in q.top),
    ]
    if s.missed:
        out += ["", f"missed causes ({len(s.missed)}):"]
        for c in s.missed[:list_limit]:
            want = ",".join(c.rules) if c.cause == "fault" else str(c.plans)
            out.append(f"  {_when(c.start_ms)} {c.key} on {c.device}: wanted {want}")
    if s.no_cause:
        out += [
            "",
            f"alarms without a cause ({len(s.no_cause)}, "
            f"{s.no_cause_per_estate_month:.2f} per estate-month):",
        ]
        for a in s.no_cause[:list_limit]:
            out.append(
                f"  {_when(a['raised_ms'])} {a['rule']} on {a['device']}: {a['first_reading']}"
            )
        if len(s.no_cause) > list_limit:
            counts = Counter(a["rule"] for a in s.no_cause)
            out.append(f"  … by rule: {dict(counts.most_common())}")
    if s.plans_no_cause:
        out += ["", f"plan activations without a cause ({len(s.plans_no_cause)}):"]
        for p in s.plans_no_cause[:list_limit]:
            steps = ", ".join(f"{_when(x['ts'])} {x['level']}" for x in p["steps"])
            out.append(f"  {p['plan']} ({p['estate']}): {steps}")
    return "\n".join(out)
