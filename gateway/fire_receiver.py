"""The GB/T 26875.3 receiver: the fire control room's user-information transmission device
(用户信息传输装置) connects to the gateway over TCP and reports what the fire alarm control
panel knows; the gateway turns it into catalog readings and events.

What is answered how (GB/T 26875.3 §6: every data frame gets a confirmation or a denial, and a
sender repeats a frame it got no confirmation for):

- a whole, well-formed frame with command 2 (send data) whose objects decode: processed, then
  **confirmed** (command 3, same serial number, empty application data);
- a whole frame with a wrong checksum, an unknown type flag, an object count that does not fit
  its length, or a command this receiver does not serve (1 control, 4 request, 0, ≥ 7):
  **denied** (command 6, same serial number); nothing of it is used;
- a frame whose declared length exceeds 1,024 bytes, or that stops before its end marker:
  its boundaries cannot be trusted, so there is nothing to answer: it is **dropped**, the
  receiver searches for the next ``@@``, and the device repeats it for want of a confirmation;
- confirms (3) of our clock synchronisation, replies (5) and denials (6) from the device are
  counted and not answered.

Every such frame is counted by reason in :meth:`FireReceiver.health`, which the gateway status
carries. Status words: a bit that turns on gives the catalog event of that bit (fire alarm →
``fire.alarm``, fault → ``fire.fault``, shield → ``fire.disabled``, supervise →
``fire.supervisory``, start → ``fire.start``, feedback → ``fire.feedback``, power faults →
``fire.power_fault``, a system's reset → ``fire.reset``), when the device's catalog kind has it;
``status_word`` is passed on as received (bit 0 = 1 normal operation). Restores: a system's
reset (bit 13, or the reset operation) also returns the mapped components of that system that
were in fire alarm to normal, each with its own ``fire.reset`` (``by = "panel_reset"``); a
mapped component whose fire-alarm bit clears reports ``fire.reset`` (``by = "restored"``): its
word has no reset bit. So a detector's fire alarm ends when the equipment says so.
A component that the mapping does not name reports through the mapping's ``default`` device
(the panel) with its system/component address as ``point``, so an unmapped detector's fire
alarm is never lost.

```toml
[[adapters]]
type = "gbt26875"
name = "fire-control-room"
listen = "0.0.0.0:9026"            # the transmission device connects here
mapping = "fire-mapping.toml"      # which system/component is which catalog device
# address = 0                      # this receiver's 6-byte address (monitoring centre)
# timezone = "Asia/Shanghai"       # the device's time labels are local time
# sync_clock = true                # set the device's clock (type 90) on connect and when off
# max_connections = 4
# idle_timeout_s = 600             # a connection silent this long is closed
```
"""

from __future__ import annotations

import logging
import selectors
import socket
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.adapter import Inbox, InboxThread, check_keys
from gateway.gbt26875 import (
    ANALOG_TYPES,
    MAX_ADDRESS,
    AnalogValue,
    Cmd,
    ComponentState,
    Frame,
    FrameError,
    FrameReader,
    InfoObject,
    Operation,
    SyncClock,
    SystemState,
    SystemTime,
    UitdOperation,
    UitdState,
    UitdTime,
    decode_app,
    encode_app,
    encode_frame,
    label_ms,
    time_label,
)
from protocol.catalog import Catalog, Kind, ValueType
from protocol.clock import now_ms
from protocol.messages import Command, Event, Reading
from protocol.topics import is_valid_id

log = logging.getLogger(__name__)

ADAPTER_KEYS = {
    "type",
    "name",
    "listen",
    "mapping",
    "address",
    "timezone",
    "sync_clock",
    "max_connections",
    "idle_timeout_s",
}
BAD_REASONS = ("checksum", "truncated", "oversize", "unknown_type", "bad_length", "bad_command")
# Bit of a system / component status word → catalog event type.
SYSTEM_EVENTS = {
    1: "fire.alarm",
    2: "fire.fault",
    3: "fire.disabled",
    4: "fire.supervisory",
    5: "fire.start",
    6: "fire.feedback",
    8: "fire.power_fault",
    9: "fire.power_fault",
    13: "fire.reset",
}
# A component's status word shares the system's bits 0-7; its bit 8 is its own power fault
# (the same event as the system's main power); 9 and up are reserved.
COMPONENT_EVENTS = {bit: event for bit, event in SYSTEM_EVENTS.items() if bit <= 8}
UNIT_OF = {
    "m": "m",
    "°C": "°C",
    "MPa": "MPa",
    "kPa": "kPa",
    "%LEL": "%LEL",
    "V": "V",
    "A": "A",
    "m/s": "m/s",
}
NORMAL = 0b1  # bit 0: normal operation, nothing else set
FIRE_ALARM_BIT = 1 << 1
RESET_BIT = 1 << 13  # a system's word only; reserved in a component's
MAX_QUEUED = 10_000
PARTIAL_FRAME_S = 2.0  # a started frame not finished this long after its last byte is cut short
# A device sends at least a heartbeat every minute or so; a connection silent this long is a
# dead one the network never reported (a powered-off device), and its slot is freed.
IDLE_TIMEOUT_S = 600.0
CLOCK_TOLERANCE_S = 60  # a device clock further off than this is set again
LABEL_PAST_MS = 7 * 86_400_000  # older time labels (or impossible ones) give way to arrival time
LABEL_FUTURE_MS = 300_000


class FireConfigError(ValueError):
    """A ``type = "gbt26875"`` adapter table or mapping file that cannot be used."""


@dataclass(frozen=True)
class Target:
    """A catalog device a fire system or component reports as."""

    dev: str
    kind: str
    zone: str | None = None
    point: str | None = None
    analog: dict[int, str] = field(default_factory=dict)  # analog type -> metric
    scale: dict[int, float] = field(default_factory=dict)  # analog type -> resolution


@dataclass(frozen=True)
class FireMapping:
    systems: dict[tuple[int, int], Target]
    components: dict[tuple[int, int, int | None, int], Target]  # (st, sa, ct or None, addr)
    default: Target | None = None
    source: str = "<code>"

    def system(self, st: int, sa: int) -> Target | None:
        return self.systems.get((st, sa))

    def component(self, st: int, sa: int, ct: int, addr: int) -> Target | None:
        return self.components.get((st, sa, ct, addr)) or self.components.get((st, sa, None, addr))

    def devices(self) -> set[str]:
        out = {t.dev for t in (*self.systems.values(), *self.components.values())}
        return out | ({self.default.dev} if self.default else set())


def parse_mapping(doc: dict[str, Any], source: str, catalog: Catalog) -> FireMapping:
    def fail(where: str, what: str) -> FireConfigError:
        return FireConfigError(f"fire mapping {source}: {where}: {what}")

    def target(t: dict[str, Any], where: str, keys: set[str]) -> Target:
        extra = sorted(set(t) - keys)
        if extra:
            raise fail(where, f"unknown key(s) {', '.join(extra)}")
        dev, kind = t.get("dev"), str(t.get("kind"))
        if not isinstance(dev, str) or not is_valid_id(dev):
            raise fail(where, f"dev must be a device id like fap-1, got {dev!r}")
        if kind not in catalog.kinds:
            raise fail(where, f"kind {kind!r} is not a catalog kind")
        analog: dict[int, str] = {}
        for k, metric in dict(t.get("analog", {})).items():
            if not str(k).isdigit() or int(k) not in ANALOG_TYPES:
                raise fail(where, f"analog type {k!r} is not one of {sorted(ANALOG_TYPES)}")
            if metric not in catalog.kinds[kind].metrics:
                raise fail(where, f"analog metric {metric!r} is not one of {kind}'s")
            analog[int(k)] = str(metric)
        scale = {int(k): float(v) for k, v in dict(t.get("scale", {})).items()}
        for key in ("zone", "point"):
            if key in t and (not isinstance(t[key], str) or not 0 < len(t[key]) <= 128):
                raise fail(where, f"{key} must be a short text")
        return Target(str(dev), str(kind), t.get("zone"), t.get("point"), analog, scale)

    def byte(t: dict[str, Any], key: str, where: str, hi: int = 255) -> int:
        value = t.get(key)
        if type(value) is not int or not 0 <= value <= hi:
            raise fail(where, f"{key} must be an integer from 0 to {hi}, got {value!r}")
        return value

    unknown = sorted(set(doc) - {"systems", "components", "default"})
    if unknown:
        raise fail("top level", f"unknown table(s) {', '.join(unknown)}")
    target_keys = {"dev", "kind", "zone", "point", "analog", "scale"}
    systems: dict[tuple[int, int], Target] = {}
    for i, s in enumerate(doc.get("systems", [])):
        where = f"[[systems]] #{i + 1}"
        key = (byte(s, "system_type", where), byte(s, "system_address", where))
        if key in systems:
            raise fail(where, f"system {key} is mapped twice")
        systems[key] = target(
            {k: v for k, v in s.items() if k not in ("system_type", "system_address")},
            where,
            target_keys,
        )
    components: dict[tuple[int, int, int | None, int], Target] = {}
    for i, c in enumerate(doc.get("components", [])):
        where = f"[[components]] #{i + 1}"
        ckey = (
            byte(c, "system_type", where),
            byte(c, "system_address", where),
            byte(c, "component_type", where) if "component_type" in c else None,
            byte(c, "component_address", where, 0xFFFFFFFF),
        )
        if ckey in components:
            raise fail(where, f"component {ckey} is mapped twice")
        own = ("system_type", "system_address", "component_type", "component_address")
        components[ckey] = target({k: v for k, v in c.items() if k not in own}, where, target_keys)
    default = None
    if "default" in doc:
        default = target(doc["default"], "[default]", target_keys)
    if not systems and not components and default is None:
        raise fail("top level", "maps nothing: add [[systems]], [[components]] or [default]")
    return FireMapping(systems, components, default, source)


def load_mapping(path: Path, catalog: Catalog) -> FireMapping:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise FireConfigError(f"fire mapping {path}: cannot read it: {exc}") from None
    return parse_mapping(doc, str(path), catalog)


@dataclass
class Counters:
    frames: int = 0  # well-formed frames received
    confirmed: int = 0
    denied: int = 0
    dropped: int = 0  # bad frames not answered (oversize, truncated)
    bad: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BAD_REASONS, 0))
    unmapped: int = 0
    operations: int = 0
    syncs_sent: int = 0
    syncs_confirmed: int = 0
    device_denials: int = 0
    connections: int = 0
    noise_bytes: int = 0


@dataclass
class _Conn:
    sock: socket.socket
    peer: str
    reader: FrameReader = field(default_factory=FrameReader)
    last_rx: float = field(default_factory=time.monotonic)
    device: int | None = None  # the transmission device's address, once it has sent a frame
    serial: int = 0  # our own serial numbers (clock sync)


class FireReceiver(InboxThread):
    """A GB/T 26875.3 listener as a :class:`gateway.adapter.DeviceAdapter`."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        mapping: FireMapping,
        catalog: Catalog,
        address: int = 0,
        tz: str = "Asia/Shanghai",
        sync_clock: bool = True,
        max_connections: int = 4,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.name = f"gbt26875:{name}"
        self.mapping = mapping
        self.catalog = catalog
        self.address = address
        self.tz = ZoneInfo(tz)
        self.sync_clock = sync_clock
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.clock = clock or now_ms
        self.counters = Counters()
        self.uitd: dict[str, Any] = {}
        self.clock_skew_s: float | None = None
        self.last_frame_ms: int | None = None
        self._words: dict[tuple[str, str], int] = {}  # (dev, point) -> last status word
        # (system type, system address) -> its mapped components now in fire alarm, which the
        # system's reset returns to normal: (dev, point) -> target
        self._alarmed: dict[tuple[int, int], dict[tuple[str, str], Target]] = {}
        self._last_ts: dict[str, int] = {}  # dev -> newest ts given
        self.inbox = Inbox(MAX_QUEUED, MAX_QUEUED)
        self._sel = selectors.DefaultSelector()
        self._listener = socket.create_server((host, port), reuse_port=False)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self.listen = f"{host}:{self.port}"
        self._sel.register(self._listener, selectors.EVENT_READ, None)
        self._conns: dict[int, _Conn] = {}
        self._start_thread(f"gbt26875-{name}")

    # -- DeviceAdapter ----------------------------------------------------------------------

    def owns(self, dev: str) -> bool:
        return dev in self.mapping.devices()

    def execute(self, command: Command) -> str | None:
        return f"the fire panel link takes no commands ({command.action!r})"

    def close(self) -> None:
        self._stop_thread(5)
        for conn in list(self._conns.values()):
            conn.sock.close()
        self._listener.close()
        self._sel.close()

    def health(self) -> dict[str, Any]:
        c = self.counters
        out: dict[str, Any] = {
            "type": "gbt26875",
            "listen": self.listen,
            "connections": len(self._conns),
            "frames": c.frames,
            "confirmed": c.confirmed,
            "denied": c.denied,
            "dropped": c.dropped,
            "bad_frames": dict(c.bad),
            "unmapped": c.unmapped,
        }
        if self.last_frame_ms is not None:
            out["last_frame"] = self.last_frame_ms
        if self.clock_skew_s is not None:
            out["clock_skew_s"] = round(self.clock_skew_s, 1)
        if self.uitd:
            out["uitd"] = dict(self.uitd)
        return out

    # -- the network thread ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._halt.is_set():
            try:
                for key, _ in self._sel.select(0.2):
                    if key.data is None:
                        self._accept()
                    else:
                        self._receive(key.data)
                self._cut_stalled()
            except Exception:  # one connection's trouble must not stop the receiver
                log.exception("%s: receiver loop failed; going on", self.name)
                time.sleep(0.2)

    def _accept(self) -> None:
        sock, addr = self._listener.accept()
        if len(self._conns) >= self.max_connections:
            log.warning(
                "%s: refusing %s: %d connections already", self.name, addr, self.max_connections
            )
            sock.close()
            return
        sock.setblocking(False)
        conn = _Conn(sock, f"{addr[0]}:{addr[1]}")
        self._conns[sock.fileno()] = conn
        self._sel.register(sock, selectors.EVENT_READ, conn)
        self.counters.connections += 1
        log.info("%s: transmission device connected from %s", self.name, conn.peer)
        if self.sync_clock:
            self._send_sync(conn)

    def _drop(self, conn: _Conn) -> None:
        if conn.reader.pending:
            self._bad(conn.reader.cut_short(), conn, answer=False)
        self._sel.unregister(conn.sock)
        self._conns.pop(conn.sock.fileno(), None)
        conn.sock.close()
        log.info("%s: transmission device %s disconnected", self.name, conn.peer)

    def _receive(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        conn.last_rx = time.monotonic()
        self._handle(conn, conn.reader.feed(data))

    def _cut_stalled(self) -> None:
        now = time.monotonic()
        for conn in list(self._conns.values()):
            if conn.reader.pending and now - conn.last_rx > PARTIAL_FRAME_S:
                items: list[Frame | FrameError] = [conn.reader.cut_short()]
                items += conn.reader.feed(b"")  # a whole frame may sit behind the cut one
                self._handle(conn, items)
            if now - conn.last_rx > self.idle_timeout_s:
                log.warning(
                    "%s: %s silent for %.0f s: closing it", self.name, conn.peer, now - conn.last_rx
                )
                self._drop(conn)

    def _handle(self, conn: _Conn, items: list[Frame | FrameError]) -> None:
        for item in items:
            if isinstance(item, FrameError):
                self._bad(item, conn, answer=item.reason not in ("oversize", "truncated"))
            else:
                self._frame(conn, item)
        self.counters.noise_bytes += conn.reader.noise_bytes
        conn.reader.noise_bytes = 0

    def _send(self, conn: _Conn, frame: Frame) -> None:
        try:
            conn.sock.sendall(encode_frame(frame))
        except OSError as exc:
            log.warning("%s: cannot answer %s: %s", self.name, conn.peer, exc)

    def _reply(self, conn: _Conn, to: Frame, command: Cmd) -> None:
        self._send(
            conn,
            Frame(to.serial, to.version, self._label(), self.address, to.source, command),
        )

    def _bad(self, err: FrameError, conn: _Conn, answer: bool) -> None:
        n = self.counters.bad[err.reason] = self.counters.bad.get(err.reason, 0) + 1
        if n <= 10 or n % 100 == 0:  # a line spewing garbage must not flood the log
            log.warning("%s: bad frame from %s (%d so far): %s", self.name, conn.peer, n, err)
        if answer and err.header is not None:
            self.counters.denied += 1  # counted first: whoever got the answer sees the count
            self._reply(conn, err.header, Cmd.DENY)
        else:
            self.counters.dropped += 1

    def _label(self) -> bytes:
        """Now, as a time label in the device's zone (the adapter's clock: a simulation's too)."""
        return time_label(datetime.fromtimestamp(self.clock() / 1000, self.tz))

    def _send_sync(self, conn: _Conn) -> None:
        conn.serial = (conn.serial + 1) & 0xFFFF
        label = self._label()
        frame = Frame(
            conn.serial,
            (1, 0),
            label,
            self.address,
            conn.device or 0,
            Cmd.CONTROL,
            encode_app([SyncClock(label)]),
        )
        self._send(conn, frame)
        self.counters.syncs_sent += 1

    # -- frames --------------------------------------------------------------------------------

    def _frame(self, conn: _Conn, frame: Frame) -> None:
        self.counters.frames += 1
        self.last_frame_ms = self.clock()
        conn.device = frame.source
        if frame.command == Cmd.CONFIRM:
            self.counters.syncs_confirmed += 1
            return
        if frame.command == Cmd.DENY:
            self.counters.device_denials += 1
            return
        if frame.command == Cmd.REPLY:
            return
        if frame.command != Cmd.SEND_DATA:
            self._bad(
                FrameError("bad_command", f"command {frame.command} is not served here", frame),
                conn,
                answer=True,
            )
            return
        try:
            _, objects = decode_app(frame.app)
        except FrameError as exc:
            self._bad(FrameError(exc.reason, exc.detail, frame), conn, answer=True)
            return
        readings: list[Reading] = []
        events: list[Event] = []
        for obj in objects:
            self._object(conn, obj, readings, events)
        self.inbox.put(readings, events)
        self.counters.confirmed += 1
        self._reply(conn, frame, Cmd.CONFIRM)

    def _ts(self, label: bytes, dev: str | None = None) -> int:
        """The object's time label when plausible, else the time it arrived.

        Labels count whole seconds: a device's reports within one second get a millisecond
        each, in arrival order, so the newest state is the device's latest value."""
        now = self.clock()
        ts = label_ms(label, self.tz)
        if ts is None or not now - LABEL_PAST_MS <= ts <= now + LABEL_FUTURE_MS:
            ts = now
        return ts if dev is None else self._after_last(ts, dev)

    def _after_last(self, ts: int, dev: str) -> int:
        last = self._last_ts.get(dev)
        if last is not None and last - 1000 < ts <= last:
            ts = last + 1
        self._last_ts[dev] = max(ts, last or ts)
        return ts

    def _object(
        self, conn: _Conn, obj: InfoObject, readings: list[Reading], events: list[Event]
    ) -> None:
        if isinstance(obj, SystemState):
            self._system_state(obj, readings, events)
        elif isinstance(obj, ComponentState):
            self._component_state(obj, readings, events)
        elif isinstance(obj, AnalogValue):
            self._analog(obj, readings)
        elif isinstance(obj, Operation):
            self.counters.operations += 1
            target = self.mapping.system(obj.system_type, obj.system_address)
            target = target or self.mapping.default
            if obj.flags & 1 and target is not None:  # bit 0: reset
                kind = self.catalog.kinds[target.kind]
                at = self._ts(obj.time_label, target.dev)
                if "fire.reset" in kind.events:
                    events.append(Event(target.dev, target.kind, at, "fire.reset", {}))
                events += self._reset_components((obj.system_type, obj.system_address), at)
        elif isinstance(obj, UitdState):
            self.uitd = {"status": obj.flags} | {
                name: bool(obj.flags >> bit & 1)
                for bit, name in (
                    (1, "fire_alarm"),
                    (2, "fault"),
                    (3, "main_power_fault"),
                    (4, "backup_power_fault"),
                )
            }
        elif isinstance(obj, UitdOperation):
            self.counters.operations += 1
        elif isinstance(obj, (SystemTime, UitdTime)):
            ts = label_ms(obj.time_label, self.tz)
            now = self.clock()
            self.clock_skew_s = None if ts is None else (ts - now) / 1000
            off = ts is None or abs(ts - now) > CLOCK_TOLERANCE_S * 1000
            if self.sync_clock and off:
                self._send_sync(conn)

    def _events_for(
        self,
        target: Target,
        point: str,
        word: int,
        bits: dict[int, str],
        ts: int,
        data: dict[str, Any],
    ) -> list[Event]:
        """Events for the bits that turned on since this (device, point) last reported."""
        kind = self.catalog.kinds[target.kind]
        before = self._words.get((target.dev, point), 1)  # normal, nothing set
        self._words[(target.dev, point)] = word
        risen = word & ~before
        out: list[Event] = []
        seen: set[str] = set()
        for bit, etype in bits.items():
            if not risen >> bit & 1 or etype not in kind.events or etype in seen:
                continue
            seen.add(etype)
            fields = set(self.catalog.event_types[etype].fields)
            body = {k: v for k, v in data.items() if k in fields}
            if etype == "fire.power_fault":
                body |= {"main": bool(word >> 8 & 1), "backup": bool(word >> 9 & 1)}
            out.append(Event(target.dev, target.kind, ts, etype, body))
        return out

    def _status_reading(self, target: Target, kind: Kind, word: int, ts: int) -> Reading | None:
        metric = kind.metrics.get("status_word")
        if metric is None or metric.type is not ValueType.INTEGER:
            return None
        return Reading(target.dev, target.kind, ts, {"status_word": word})

    def _system_state(self, obj: SystemState, readings: list[Reading], events: list[Event]) -> None:
        target = self.mapping.system(obj.system_type, obj.system_address)
        point = f"sys-{obj.system_type}-{obj.system_address}"
        if target is None:
            self.counters.unmapped += 1
            target = self.mapping.default
            if target is None:
                return
        ts = self._ts(obj.time_label, target.dev)
        kind = self.catalog.kinds[target.kind]
        if (reading := self._status_reading(target, kind, obj.status, ts)) is not None:
            readings.append(reading)
        data: dict[str, Any] = {"status_word": obj.status}
        if target.zone:
            data["zone"] = target.zone
        before = self._words.get((target.dev, point), 1)
        events += self._events_for(target, point, obj.status, SYSTEM_EVENTS, ts, data)
        if obj.status & ~before & RESET_BIT:
            events += self._reset_components((obj.system_type, obj.system_address), ts)

    def _reset_components(self, system: tuple[int, int], ts: int) -> list[Event]:
        """A system's reset returns its components in fire alarm to normal: each says so."""
        out: list[Event] = []
        for (dev, point), target in self._alarmed.pop(system, {}).items():
            self._words[(dev, point)] = NORMAL
            body = {"point": point, "status_word": NORMAL, "by": "panel_reset"}
            out.append(Event(dev, target.kind, self._after_last(ts, dev), "fire.reset", body))
        return out

    def _component_state(
        self, obj: ComponentState, readings: list[Reading], events: list[Event]
    ) -> None:
        target = self.mapping.component(
            obj.system_type, obj.system_address, obj.component_type, obj.component_address
        )
        address = f"{obj.system_type}-{obj.system_address}-{obj.component_address}"
        if target is None:
            self.counters.unmapped += 1
            if self.mapping.default is None:
                return
            target, point, own = self.mapping.default, f"comp-{address}", False
        else:
            point, own = target.point or target.dev, True
        ts = self._ts(obj.time_label, target.dev)
        kind = self.catalog.kinds[target.kind]
        if own and (reading := self._status_reading(target, kind, obj.status, ts)) is not None:
            readings.append(reading)
        data: dict[str, Any] = {"point": point, "status_word": obj.status}
        zone = target.zone if own else None
        if zone or obj.description:
            data["zone"] = (zone or obj.description)[:128]
        before = self._words.get((target.dev, point), NORMAL)
        events += self._events_for(target, point, obj.status, COMPONENT_EVENTS, ts, data)
        if not own:  # through the panel: its fire.reset would clear the panel's own alarm
            return
        system = (obj.system_type, obj.system_address)
        if obj.status & FIRE_ALARM_BIT:
            self._alarmed.setdefault(system, {})[(target.dev, point)] = target
            return
        self._alarmed.get(system, {}).pop((target.dev, point), None)
        if before & FIRE_ALARM_BIT and "fire.reset" in kind.events:
            body = {"point": point, "status_word": obj.status, "by": "restored"}
            events.append(Event(target.dev, target.kind, ts, "fire.reset", body))

    def _analog(self, obj: AnalogValue, readings: list[Reading]) -> None:
        target = self.mapping.component(
            obj.system_type, obj.system_address, obj.component_type, obj.component_address
        )
        if target is None or obj.analog_type not in ANALOG_TYPES:
            self.counters.unmapped += 1
            return
        kind = self.catalog.kinds[target.kind]
        metric = target.analog.get(obj.analog_type)
        unit, resolution = ANALOG_TYPES[obj.analog_type]
        if metric is None:  # the kind's one metric in this unit, if there is exactly one
            same = [m.name for m in kind.metrics.values() if m.unit == UNIT_OF.get(unit)]
            metric = same[0] if len(same) == 1 else None
        if metric is None:
            self.counters.unmapped += 1
            return
        value = obj.value * target.scale.get(obj.analog_type, resolution)
        readings.append(
            Reading(
                target.dev,
                target.kind,
                self._ts(obj.time_label, target.dev),
                {metric: round(value, 4)},
            )
        )


def fire_receiver(
    cfg: dict[str, Any], where: str, catalog: Catalog, base: Path | None = None
) -> FireReceiver:
    """Build the receiver a ``[[adapters]] type = "gbt26875"`` table describes."""
    check_keys(cfg, ADAPTER_KEYS, where, FireConfigError)
    listen = cfg.get("listen", "0.0.0.0:9026")
    host, _, port_text = str(listen).rpartition(":")
    if not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise FireConfigError(f'{where}: listen must be "host:port", got {listen!r}')
    if not isinstance(cfg.get("mapping"), str):
        raise FireConfigError(f'{where}: needs mapping = "fire-mapping.toml"')
    mapping = load_mapping((base or Path.cwd()) / cfg["mapping"], catalog)
    address = cfg.get("address", 0)
    if type(address) is not int or not 0 <= address <= MAX_ADDRESS:
        raise FireConfigError(f"{where}: address must be an integer from 0 to 2^48 − 1")
    tz = str(cfg.get("timezone", "Asia/Shanghai"))
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise FireConfigError(f"{where}: unknown timezone {tz!r}") from None
    max_conn = cfg.get("max_connections", 4)
    if type(max_conn) is not int or not 1 <= max_conn <= 64:
        raise FireConfigError(f"{where}: max_connections must be 1 … 64")
    idle = cfg.get("idle_timeout_s", IDLE_TIMEOUT_S)
    if type(idle) not in (int, float) or not 5 <= idle <= 86400:
        raise FireConfigError(f"{where}: idle_timeout_s must be 5 … 86400 seconds")
    try:
        return FireReceiver(
            str(cfg.get("name", "fire")),
            host,
            int(port_text),
            mapping,
            catalog,
            address=address,
            tz=tz,
            sync_clock=bool(cfg.get("sync_clock", True)),
            max_connections=max_conn,
            idle_timeout_s=float(idle),
        )
    except OSError as exc:
        raise FireConfigError(f"{where}: cannot listen on {listen}: {exc.strerror}") from None
