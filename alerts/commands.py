"""Remote commands to devices behind a gateway (CONTRACT.md "Commands"): the command record and
its state machine, pure.

A command is *sent* on ``estates/{estate}/gw/{gw}/cmd`` and then ends in exactly one of
*acknowledged* (the gateway carried it out), *failed* (the gateway refused, with its reason)
or *timed_out* (no answer within the bound, on the wall clock). A final state never changes:
an answer that arrives after the time-out is noted in the log, not applied. Only the gateway
the command went to may answer it.

:class:`CommandBook` holds the commands waiting for their answer (bounded); the I/O (MQTT,
the database, the alarm timeline, the live feed) is ``alerts.remote``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "ACTIONS",
    "MAX_REASON",
    "MAX_WAITING",
    "CommandBook",
    "CommandChange",
    "CommandRefused",
    "CommandState",
    "CommandsBusy",
    "RemoteCommand",
    "check_action",
    "new_command_id",
]

# Action -> the device kind it is for. The simulator's gateway knows the same two
# (simulators/estate.py ACTIONS); a real gateway answers "unknown action" to any other.
ACTIONS: dict[str, str] = {"socket.power_off": "ebike_charger", "socket.power_on": "ebike_charger"}
MAX_REASON = 200  # characters of a command's reason (the contract's strings are <= 128 + room)
MAX_WAITING = 1_000  # commands waiting for their answer at once, across every gateway
MAX_ERROR = 500  # characters of a gateway's refusal kept


class CommandState(StrEnum):
    SENT = "sent"
    ACKNOWLEDGED = "acknowledged"
    FAILED = "failed"
    TIMED_OUT = "timed_out"

    @property
    def final(self) -> bool:
        return self is not CommandState.SENT


class CommandRefused(ValueError):
    """A command that cannot be sent (unknown action, a device of another kind, too many
    waiting); the message says why and what to do."""


class CommandsBusy(CommandRefused):
    """Too many commands wait for their answers: try again shortly (429)."""


def check_action(action: str, kind: str) -> None:
    """Raise CommandRefused unless ``action`` is a known action for a device of ``kind``."""
    wanted = ACTIONS.get(action)
    if wanted is None:
        raise CommandRefused(f"unknown action {action!r}; known: {', '.join(sorted(ACTIONS))}")
    if kind != wanted:
        raise CommandRefused(f"{action} is for {wanted} devices; this device is a {kind}")


def new_command_id() -> str:
    return "c-" + secrets.token_hex(8)


@dataclass(slots=True)
class RemoteCommand:
    """One command and what became of it. Times are wall-clock epoch ms: when it was sent,
    by when it must be answered, when the answer (or the time-out) came."""

    id: str
    estate: str
    gateway: str
    dev: str
    action: str
    reason: str
    by: str  # the user who sent it, or "system" for a rule's automatic action
    sent_ms: int
    deadline_ms: int
    state: CommandState = CommandState.SENT
    alarm_id: str | None = None
    rule: str | None = None  # the rule whose action it was (automatic commands)
    answered_ms: int | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "estate": self.estate,
            "gateway": self.gateway,
            "dev": self.dev,
            "action": self.action,
            "reason": self.reason,
            "by": self.by,
            "alarm_id": self.alarm_id,
            "rule": self.rule,
            "state": self.state.value,
            "error": self.error,
            "sent_ms": self.sent_ms,
            "deadline_ms": self.deadline_ms,
            "answered_ms": self.answered_ms,
        }


@dataclass(frozen=True, slots=True)
class CommandChange:
    """A command entered ``command.state`` (``sent`` for a new one)."""

    command: RemoteCommand

    @property
    def state(self) -> CommandState:
        return self.command.state


class CommandBook:
    """The commands waiting for an answer, by id; at most ``max_waiting`` of them."""

    def __init__(self, timeout_ms: int, max_waiting: int = MAX_WAITING) -> None:
        if timeout_ms < 1:
            raise ValueError(f"a command time-out must be at least 1 ms, got {timeout_ms}")
        self.timeout_ms = timeout_ms
        self.max_waiting = max_waiting
        self.waiting: dict[str, RemoteCommand] = {}

    def open(
        self,
        estate: str,
        gateway: str,
        dev: str,
        action: str,
        reason: str,
        by: str,
        now: int,
        alarm_id: str | None = None,
        rule: str | None = None,
        command_id: str | None = None,
    ) -> RemoteCommand:
        """A new command, not yet waiting: :meth:`sent` once it is stored and published."""
        if len(self.waiting) >= self.max_waiting:
            raise CommandsBusy(
                f"{len(self.waiting)} commands are waiting for their gateways' answers; "
                "try again once they are answered or time out"
            )
        return RemoteCommand(
            id=command_id or new_command_id(),
            estate=estate,
            gateway=gateway,
            dev=dev,
            action=action,
            reason=reason[:MAX_REASON],
            by=by,
            sent_ms=now,
            deadline_ms=now + self.timeout_ms,
            alarm_id=alarm_id,
            rule=rule,
        )

    def sent(self, cmd: RemoteCommand) -> CommandChange:
        self.waiting[cmd.id] = cmd
        return CommandChange(cmd)

    def restore(self, cmd: RemoteCommand) -> None:
        """A command still waiting when the service stopped: its deadline stands (a restart
        longer than the time-out times it out at the first tick)."""
        if cmd.state is CommandState.SENT:
            self.waiting[cmd.id] = cmd

    def answer(
        self,
        command_id: str,
        estate: str | None,
        gateway: str | None,
        ok: bool,
        error: str | None,
        now: int,
    ) -> CommandChange | None:
        """The gateway's ``cmd/ack``. None when no command of that id waits for an answer
        from that gateway (unknown, answered already, timed out, or another gateway's)."""
        cmd = self.waiting.get(command_id)
        if cmd is None or (cmd.estate, cmd.gateway) != (estate, gateway):
            return None
        del self.waiting[command_id]
        cmd.answered_ms = now
        if ok:
            cmd.state = CommandState.ACKNOWLEDGED
        else:
            cmd.state = CommandState.FAILED
            cmd.error = (error or "the gateway refused it without a reason")[:MAX_ERROR]
        return CommandChange(cmd)

    def expire(self, now: int) -> list[CommandChange]:
        """Commands whose deadline passed with no answer: timed out."""
        out = []
        for cmd in [c for c in self.waiting.values() if c.deadline_ms <= now]:
            del self.waiting[cmd.id]
            cmd.state = CommandState.TIMED_OUT
            cmd.answered_ms = now
            seconds = self.timeout_ms / 1000
            cmd.error = (
                f"no answer from gateway {cmd.gateway} within {seconds:g} s: it may be offline; "
                "check its status on the estate page and send the command again"
            )
            out.append(CommandChange(cmd))
        return out

    def forget(self, command_id: str) -> None:
        """Another process settled it (the database says so)."""
        self.waiting.pop(command_id, None)
