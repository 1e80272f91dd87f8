"""Remote commands, with their I/O: the service's side of CONTRACT.md "Commands".

:class:`CommandDesk` sends a command to the gateway a device is behind (the ``devices``
table says which) on ``{root}/{estate}/gw/{gw}/cmd``, QoS 1, through a publish function of
an MQTT session of its own (never ingest's telemetry lane, which blocks under backpressure);
the gateway's answer on ``cmd/ack`` reaches it through ingest (:meth:`on_committed`), and
:meth:`tick` times out commands nobody answered. Every state is stored (``alert_commands``,
alerts schema v4) before anyone is told of it, so a restart keeps them; a command tied to an
alarm writes each state into that alarm's timeline; every change goes to the listeners (the
live feed) as ``{"type": "command", ...}``.

Automatic cut-off: :meth:`on_alarm_change` is an alert-engine listener. When an alarm fires
(not a late one: replayed history never switches anything) for a rule with an ``action``,
in an estate where automatic actions are switched on, the desk sends that action once for
that alarm, by ``rules``.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from typing import Any

import sqlalchemy as sa

from alerts.alarms import SYSTEM, TimelineEntry
from alerts.commands import (
    CommandBook,
    CommandChange,
    CommandRefused,
    CommandState,
    RemoteCommand,
    check_action,
)
from alerts.rows import RowMap
from alerts.store import AlertStore, StoreBatch
from alerts.tables import commands as commands_table
from ingest.pipeline import Delivery
from ingest.state import NotFound, StateStore
from protocol.clock import now_ms
from protocol.messages import Command, encode_command
from protocol.topics import Channel, gateway_topic

__all__ = [
    "COMMANDS_PER_DEVICE",
    "GATEWAY",
    "TIMEOUT",
    "CommandConflict",
    "CommandDesk",
    "CommandStore",
]

log = logging.getLogger(__name__)

COMMANDS_PER_DEVICE = 100  # newest commands kept per device (older ones are pruned)
AUTO_REMEMBERED = 10_000  # alarms whose automatic action was taken, remembered in memory
GATEWAY = "gateway"  # who answered (timeline actor)
TIMEOUT = "system"  # who timed it out (or failed it before it left)
NOT_SENT = "not sent"  # the start of the error of a command that never left the service
# Timeline actions of a command tied to an alarm, by state.
TIMELINE_ACTION = {
    CommandState.SENT: "command_sent",
    CommandState.ACKNOWLEDGED: "command_acknowledged",
    CommandState.FAILED: "command_failed",
    CommandState.TIMED_OUT: "command_timed_out",
}

Publish = Callable[[str, bytes, bool], None]  # (topic, payload, retain), QoS 1
ChangeListener = Callable[[dict[str, Any]], None]


class CommandConflict(CommandRefused):
    """The command cannot go now (its gateway is disabled, the same command for the alarm
    is still waiting): a 409, not a mistake in the request."""


class CommandStore:
    """``alert_commands`` on the state database (SQLite or PostgreSQL). Thread-safe."""

    def __init__(self, engine: sa.Engine, per_device: int = COMMANDS_PER_DEVICE) -> None:
        self.engine = engine
        self.per_device = per_device

    def add(self, cmd: RemoteCommand) -> None:
        """Store a new command and prune the device's oldest settled ones beyond the bound."""
        t = commands_table
        with self.engine.begin() as conn:
            conn.execute(t.insert().values(**_COMMAND.row(cmd)))
            cutoff = conn.execute(
                sa.select(t.c.sent_ms)
                .where(t.c.estate == cmd.estate, t.c.dev == cmd.dev)
                .order_by(t.c.sent_ms.desc())
                .offset(self.per_device - 1)
                .limit(1)
            ).scalar()
            if cutoff is not None:
                conn.execute(
                    t.delete().where(
                        t.c.estate == cmd.estate,
                        t.c.dev == cmd.dev,
                        t.c.sent_ms < cutoff,
                        t.c.state != CommandState.SENT.value,
                    )
                )

    def settle(self, cmd: RemoteCommand) -> bool:
        """Write a final state, only over ``sent``: False when it was settled already (by
        another process, or an answer racing the time-out), and then nothing changes."""
        t = commands_table
        with self.engine.begin() as conn:
            done = conn.execute(
                t.update()
                .where(t.c.id == cmd.id, t.c.state == CommandState.SENT.value)
                .values(state=cmd.state.value, error=cmd.error, answered_ms=cmd.answered_ms)
            )
        return bool(done.rowcount)

    def get(self, command_id: str) -> RemoteCommand | None:
        t = commands_table
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.id == command_id)).first()
        return None if row is None else _COMMAND.load(row._mapping)

    def for_device(self, estate: str, dev: str, limit: int = 20) -> list[RemoteCommand]:
        t = commands_table
        q = (
            sa.select(t)
            .where(t.c.estate == estate, t.c.dev == dev)
            .order_by(t.c.sent_ms.desc(), t.c.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [_COMMAND.load(r._mapping) for r in conn.execute(q)]

    def for_alarm(self, alarm_id: str) -> list[RemoteCommand]:
        t = commands_table
        q = sa.select(t).where(t.c.alarm_id == alarm_id).order_by(t.c.sent_ms, t.c.id)
        with self.engine.connect() as conn:
            return [_COMMAND.load(r._mapping) for r in conn.execute(q)]

    def waiting(self) -> list[RemoteCommand]:
        t = commands_table
        q = sa.select(t).where(t.c.state == CommandState.SENT.value)
        with self.engine.connect() as conn:
            return [_COMMAND.load(r._mapping) for r in conn.execute(q)]


# Its row: the fields by name, the person who sent it in the column "actor" (as timelines do).
_COMMAND = RowMap(RemoteCommand, commands_table.c.keys(), renames={"actor": "by"})


class CommandDesk:
    """Wiring (see ``estatewatch/service.py``)::

        desk = CommandDesk(state, publish=command_client.publish, timeout_ms=30_000,
                           auto_action=lambda estate, rule: ...)
        ingest.add_listener(desk.on_committed)       # cmd/ack
        alerts.add_listener(desk.on_alarm_change)    # automatic actions
        desk.add_listener(live_feed)
        scheduler.add_job(desk.tick, "interval", seconds=1)

    ``auto_action(estate, rule_id)``: the action to take when that rule's alarm fires in that
    estate, or None (the rule has none, or automatic actions are off for the estate).
    ``clock``: the wall clock (time-outs are about people waiting, never simulated time).
    """

    def __init__(
        self,
        state: StateStore,
        publish: Publish,
        root: str = "estates",
        timeout_ms: int = 30_000,
        auto_action: Callable[[str, str], str | None] | None = None,
        owns: Callable[[str], bool] | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.state = state
        self.store = CommandStore(state.engine)
        self.alerts = AlertStore(state.engine)  # the alarms' timelines (append only)
        self._publish = publish
        self.root = root
        self.clock = clock
        self.auto_action = auto_action or (lambda _estate, _rule: None)
        self.owns: Callable[[str], bool] = owns or (lambda _estate: True)
        self.book = CommandBook(timeout_ms)
        self._lock = threading.RLock()
        self._listeners: list[ChangeListener] = []
        self._auto_done: OrderedDict[str, None] = OrderedDict()

    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        """Take up the commands still waiting when the service stopped."""
        with self._lock:
            for cmd in self.store.waiting():
                if self.owns(cmd.estate):
                    self.book.restore(cmd)
        if self.book.waiting:
            log.info("commands: %d still wait for their gateways' answers", len(self.book.waiting))

    # --- estates taken on and given up (issue 16: a scaled-out worker's partitions) -------------
    def adopt(self, estates: Collection[str]) -> None:
        """Take up these estates' commands still waiting for their gateways' answers (their
        time-outs stand). Idempotent."""
        wanted = set(estates)
        if not wanted:
            return
        with self._lock:
            for cmd in self.store.waiting():
                if cmd.estate in wanted and cmd.id not in self.book.waiting:
                    self.book.restore(cmd)

    def release(self, estates: Collection[str]) -> None:
        """Forget these estates' waiting commands (their next owner answers or times them
        out; a command is settled once, whoever settles it). Writes nothing."""
        gone = set(estates)
        with self._lock:
            for cid in [c.id for c in self.book.waiting.values() if c.estate in gone]:
                del self.book.waiting[cid]

    # --- sending -------------------------------------------------------------------------------
    def send(
        self,
        estate: str,
        dev: str,
        action: str,
        reason: str,
        by: str,
        alarm_id: str | None = None,
        rule: str | None = None,
    ) -> dict[str, Any]:
        """Send one command to the device's gateway; returns the command record (state
        ``sent``, or ``failed`` when the broker is away and it could not even be queued).
        Raises NotFound (no such device or alarm), CommandRefused (not an action for this
        device, an alarm about another device), CommandConflict (its gateway is disabled, the
        same action for this alarm is still waiting)."""
        device = self.state.get_device(estate, dev)
        check_action(action, str(device["kind"]))
        gateway = str(device["gateway"])
        gw = self.state.get_gateway(estate, gateway)
        if gw.get("access", "enabled") != "enabled":
            raise CommandConflict(
                f"gateway {gateway} of device {dev} is {gw['access']}: enable it on the admin "
                "page before sending it commands"
            )
        if alarm_id is not None:
            alarm = self.alerts.get_alarm(alarm_id)
            if alarm is None or alarm.estate != estate:
                raise NotFound(f"alarm {alarm_id!r} not found in estate {estate!r}")
            if alarm.subject != dev:
                raise CommandRefused(f"alarm {alarm_id} is about {alarm.subject}, not about {dev}")
        emitted: list[dict[str, Any]] = []
        with self._lock:
            if alarm_id is not None:
                for other in self.book.waiting.values():
                    if other.alarm_id == alarm_id and other.action == action:
                        raise CommandConflict(
                            f"{action} for alarm {alarm_id} was sent at {other.sent_ms} and "
                            "waits for the gateway's answer; wait for it or for its time-out"
                        )
            now = self.clock()
            cmd = self.book.open(estate, gateway, dev, action, reason, by, now, alarm_id, rule)
            self.store.add(cmd)  # stored before it leaves: an answer always finds it
            self._changed(self.book.sent(cmd), emitted)
            # ``expires`` (optional, additive to CONTRACT.md): the gateway must not carry it
            # out later, e.g. when the broker hands it over after the gateway was away.
            params = {"reason": cmd.reason or "operator", "expires": cmd.deadline_ms}
            payload = encode_command(Command(cmd.id, now, dev, action, params))
            try:
                self._publish(
                    gateway_topic(estate, gateway, Channel.CMD, self.root), payload, False
                )
            except Exception as exc:  # the broker is away and the client's queue is full
                log.warning(
                    "commands: could not send %s to %s/%s: %s", cmd.id, estate, gateway, exc
                )
                self.book.forget(cmd.id)
                cmd.state, cmd.answered_ms = CommandState.FAILED, self.clock()
                cmd.error = f"{NOT_SENT}: the service's broker connection is down ({exc})"[:500]
                self._settled(cmd, emitted)
            result = cmd.as_dict()
        self._emit(emitted)
        return result

    # --- answers and time-outs -----------------------------------------------------------------
    def on_committed(self, deliveries: Sequence[Delivery]) -> None:
        """Ingest's commit listener: the gateways' ``cmd/ack`` answers."""
        acks = [d for d in deliveries if d.command_ack is not None]
        if not acks:
            return
        emitted: list[dict[str, Any]] = []
        with self._lock:
            for d in acks:
                ack = d.command_ack
                assert ack is not None
                change = self.book.answer(
                    ack.id, d.estate, d.gateway, ack.ok, ack.error, self.clock()
                )
                if change is None:
                    change = self._answer_from_store(d)
                if change is None:
                    log.info(
                        "commands: answer from %s/%s to %s, which waits for none (late, "
                        "settled, or not ours): ignored",
                        d.estate,
                        d.gateway,
                        ack.id,
                    )
                    continue
                self._settled(change.command, emitted)
        self._emit(emitted)

    def _answer_from_store(self, d: Delivery) -> CommandChange | None:
        """An answer to a command this process did not send (another process of a split
        deployment did), or sent before a restart that the book has not restored."""
        ack = d.command_ack
        assert ack is not None
        cmd = self.store.get(ack.id)
        if cmd is None or cmd.state is not CommandState.SENT:
            return None
        self.book.restore(cmd)
        return self.book.answer(ack.id, d.estate, d.gateway, ack.ok, ack.error, self.clock())

    def tick(self) -> None:
        """Time out the commands past their deadline (the scheduler runs it every second)."""
        emitted: list[dict[str, Any]] = []
        with self._lock:
            for change in self.book.expire(self.clock()):
                self._settled(change.command, emitted)
        self._emit(emitted)

    # --- automatic actions ---------------------------------------------------------------------
    def on_alarm_change(self, change: dict[str, Any]) -> None:
        """Alert-engine listener: a rule's action when its alarm fires (once per alarm)."""
        if change.get("type") != "alarm" or change.get("action") != "firing":
            return
        alarm = change.get("alarm") or {}
        if alarm.get("late") or alarm.get("state") != "firing":
            return  # history replayed from a backlog switches nothing
        estate, rule, alarm_id = alarm.get("estate"), alarm.get("rule"), alarm.get("id")
        if not (estate and rule and alarm_id) or not self.owns(estate):
            return
        action = self.auto_action(estate, rule)
        if action is None:
            return
        with self._lock:
            if alarm_id in self._auto_done or any(
                c.by == SYSTEM for c in self.store.for_alarm(alarm_id)
            ):
                return
            self._auto_done[alarm_id] = None
            while len(self._auto_done) > AUTO_REMEMBERED:
                self._auto_done.popitem(last=False)
        try:
            self.send(estate, str(alarm["subject"]), action, rule, SYSTEM, alarm_id, rule)
        except (CommandRefused, LookupError) as exc:
            # Said where the control room looks: it must cut the socket some other way.
            log.warning("commands: automatic %s for alarm %s not sent: %s", action, alarm_id, exc)
            detail = {"command_action": action, "dev": alarm["subject"], "error": str(exc)[:500]}
            entry = TimelineEntry(alarm_id, self.clock(), "command_failed", TIMEOUT, detail)
            try:
                self.alerts.write(StoreBatch(alarm_entries=[entry]))
            except sa.exc.SQLAlchemyError:
                log.exception("commands: could not note the failed cut-off in alarm %s", alarm_id)

    # --- reading -------------------------------------------------------------------------------
    def get(self, command_id: str) -> dict[str, Any]:
        cmd = self.store.get(command_id)
        if cmd is None:
            raise NotFound(f"command {command_id!r} not found")
        return cmd.as_dict()

    def for_device(self, estate: str, dev: str, limit: int = 20) -> list[dict[str, Any]]:
        return [c.as_dict() for c in self.store.for_device(estate, dev, limit)]

    # --- telling -------------------------------------------------------------------------------
    def _settled(self, cmd: RemoteCommand, emitted: list[dict[str, Any]]) -> None:
        if not self.store.settle(cmd):
            return  # settled already elsewhere: told there
        self._changed(CommandChange(cmd), emitted)

    def _changed(self, change: CommandChange, emitted: list[dict[str, Any]]) -> None:
        cmd = change.command
        entry: TimelineEntry | None = None
        if cmd.alarm_id is not None:
            who = {
                CommandState.SENT: cmd.by,
                CommandState.ACKNOWLEDGED: GATEWAY,
                CommandState.FAILED: GATEWAY,
                CommandState.TIMED_OUT: TIMEOUT,
            }[cmd.state]
            if cmd.state is CommandState.FAILED and (cmd.error or "").startswith(NOT_SENT):
                who = TIMEOUT  # it never reached the gateway
            detail = {
                "command": cmd.id,
                "command_action": cmd.action,
                "dev": cmd.dev,
                "gateway": cmd.gateway,
                "reason": cmd.reason,
            }
            if cmd.error:
                detail["error"] = cmd.error
            when = cmd.sent_ms if cmd.answered_ms is None else cmd.answered_ms
            entry = TimelineEntry(cmd.alarm_id, when, TIMELINE_ACTION[cmd.state], who, detail)
            try:
                self.alerts.write(StoreBatch(alarm_entries=[entry]))
            except sa.exc.SQLAlchemyError:
                log.exception("commands: could not write %s of %s to its alarm", cmd.state, cmd.id)
        emitted.append(
            {
                "type": "command",
                "estate": cmd.estate,
                "action": cmd.state.value,
                "command": cmd.as_dict(),
                "entry": entry.as_dict() if entry is not None else None,
            }
        )
        log.info(
            "commands: %s %s %s/%s/%s by %s%s",
            cmd.id,
            cmd.state.value,
            cmd.estate,
            cmd.gateway,
            cmd.dev,
            cmd.by,
            f": {cmd.error}" if cmd.error else "",
        )

    def _emit(self, emitted: list[dict[str, Any]]) -> None:
        for item in emitted:
            for listener in self._listeners:
                try:
                    listener(item)
                except Exception:
                    log.exception("commands: listener %r failed", listener)
