"""What a notification says to people: a title and lines, zh-CN first, times in Asia/Shanghai."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from alerts.notify import Notification

__all__ = ["describe", "local_time"]

_TZ = ZoneInfo("Asia/Shanghai")

_SEVERITY_ZH = {"critical": "紧急", "major": "重要", "minor": "次要", "warning": "提示"}
_EVENT_ZH = {
    "firing": "告警",
    "resolved": "恢复",
    "acknowledged": "已确认",
    "escalated": "升级",
    "flapping": "频繁波动（已抑制）",
    "deadline_breached": "超时未处置",
    "plan_raised": "应急预案启动/升级",
    "plan_lowered": "应急预案降级",
    "plan_stood_down": "应急预案解除",
    "task_overdue": "预案任务逾期",
    "drill_due": "应急演练提醒",
}


# Trapped at a landing (in the door zone: the doors can be opened there) or between floors
# (the car must be moved to a landing first: no forcing the doors), GB/T 24476-2023.
_TRAPPED_WHERE = {True: "平层关人（门区内）", False: "非平层关人（两层之间，须先移动轿厢至平层）"}


def local_time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(_TZ).strftime("%Y-%m-%d %H:%M:%S")


def describe(n: Notification) -> tuple[str, list[str]]:
    p: dict[str, Any] = n.payload
    event_zh = _EVENT_ZH.get(n.event, n.event)
    if "alarm" in p:
        a = p["alarm"]
        sev = _SEVERITY_ZH.get(a.get("severity", ""), a.get("severity", ""))
        title = f"【{event_zh}·{sev}】{a['summary']['zh']}"
        lines = [
            f"小区：{a['estate']}",
            f"对象：{a['subject']}（{a['kind']}）",
            f"状态：{a['state']}",
            f"开始：{local_time(a.get('fired_ms') or a.get('started_ms'))}",
        ]
        detail = a.get("detail") or {}
        if "test" in detail:
            lines.append(f"条件：{detail['test']}，值 {detail.get('value', '')}")
        if "event" in detail:
            lines.append(f"事件：{detail['event']}")
        door_zone = (detail.get("data") or {}).get("door_zone")
        where = _TRAPPED_WHERE.get(door_zone) if isinstance(door_zone, bool) else None
        if detail.get("event") == "elevator.trapped" and where:
            lines.append(f"位置：{where}")
        if p.get("role"):
            lines.append(f"通知对象：{p['role']}")
        if a.get("deadline_ms"):
            what = "到场时限" if a.get("rule") == "elevator-trapped" else "处置时限"
            lines.append(f"{what}：{local_time(a['deadline_ms'])}")
        lines.append(a["summary"]["en"])
        return title, lines
    if "activation" in p:
        act = p["activation"]
        title = f"【{event_zh}】{act['plan_name']['zh']} {act['level_name']}"
        lines = [f"小区：{act['estate']}", f"时间：{local_time(n.created_ms)}"]
        if p.get("task"):
            t = p["task"]
            lines.append(f"任务：{t['text']}（{t['role']}），应于 {local_time(t['due_ms'])} 前完成")
        if p.get("reason"):
            lines.append(f"原因：{p['reason']}")
        return title, lines
    if "drill" in p:
        d = p["drill"]
        title = f"【{event_zh}】{d.get('plan_name', d['plan'])}"
        return title, [f"小区：{d['estate']}", f"计划时间：{local_time(d.get('scheduled_ms'))}"]
    return f"【{event_zh}】", [str(p)]
