"""What a notification says to people: a title and lines, zh-CN first, times in Asia/Shanghai."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

from alerts.labels import Labels
from alerts.notify import Notification
from protocol.catalog import default_catalog
from protocol.clock import SHANGHAI

__all__ = ["describe", "local_time"]


@functools.cache
def _labels() -> Labels:
    return Labels(default_catalog())


def local_time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


def describe(n: Notification) -> tuple[str, list[str]]:
    """Chinese throughout (labels from messages.json and the catalog, the estate's name), the
    English summary last for the odd reader who needs it."""
    lb = _labels()
    p: dict[str, Any] = n.payload
    event_zh = lb.notice_event(n.event)
    estate = p.get("estate_name") or n.estate

    def line(key: str, value: str) -> str:
        return f"{lb.text('notice.' + key)}：{value}"

    if "alarm" in p:
        a = p["alarm"]
        sev = lb.severity(a.get("severity", ""))
        title = f"【{event_zh}·{sev}】{a['summary']['zh']}"
        lines = [
            line("estate", estate),
            line("subject", f"{a['subject']}（{lb.kind(a['kind'])}）"),
            line("state", lb.alarm_state(a["state"])),
            line("started", local_time(a.get("fired_ms") or a.get("started_ms"))),
        ]
        detail = a.get("detail") or {}
        if "test" in detail:
            cond = lb.condition(a["kind"], str(detail["test"]))
            lines.append(
                line("condition", f"{cond}，{lb.text('notice.value')} {detail.get('value', '')}")
            )
        if "event" in detail:
            lines.append(line("event", lb.event_type(str(detail["event"]))))
        door_zone = (detail.get("data") or {}).get("door_zone")
        if detail.get("event") == "elevator.trapped" and isinstance(door_zone, bool):
            where = "landing" if door_zone else "between_floors"
            lines.append(line("where", lb.text(f"notice.trapped.{where}")))
        if p.get("role"):
            lines.append(line("to", lb.role(p["role"])))
        if a.get("deadline_ms"):
            rescue = str(a.get("rule", "")).startswith("elevator-trapped")  # either case
            deadline = "arrival_deadline" if rescue else "deadline"
            lines.append(line(deadline, local_time(a["deadline_ms"])))
        lines.append(a["summary"]["en"])
        return title, lines
    if "activation" in p:
        act = p["activation"]
        title = f"【{event_zh}】{act['plan_name']['zh']} {act['level_name']}"
        lines = [line("estate", estate), line("time", local_time(n.created_ms))]
        if p.get("task"):
            t = p["task"]
            due = lb.text("notice.task_due", time=local_time(t["due_ms"]))
            lines.append(line("task", f"{t['text']}（{lb.role(t['role'])}），{due}"))
        if p.get("reason"):
            lines.append(line("reason", str(p["reason"])))
        return title, lines
    if "drill" in p:
        d = p["drill"]
        title = f"【{event_zh}】{d.get('plan_name', d['plan'])}"
        return title, [line("estate", estate), line("scheduled", local_time(d.get("scheduled_ms")))]
    return f"【{event_zh}】", [str(p)]
