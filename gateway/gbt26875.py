"""GB/T 26875.3-2011 (城市消防远程监控系统 第3部分：报警传输网络通信协议): frames and the
application data this gateway decodes. Pure: bytes in, values out.

A frame::

    @@ | serial 2 | version 2 | time label 6 | source 6 | destination 6 | length 2 | command 1
       | application data unit (length bytes) | checksum 1 | ##

Multi-byte integers are little-endian (low byte first). The 25 bytes from the serial number to
the command are the control unit; the checksum is the sum of the control unit and the
application data unit, modulo 256. The application data unit is a type flag, an object count
and that many information objects of the type's fixed size; at most 1,024 bytes.

Commands: 1 control, 2 send data, 3 confirm, 4 request, 5 reply, 6 deny. Type flags decoded here
(uplink, from the user-information transmission device 用户信息传输装置): 1 system state,
2 component state, 3 component analog value, 4 operation information, 8 system time of a fire
system, 21 transmission device running state, 24 transmission device operation information,
28 transmission device system time. Downlink, 90 synchronises the device's clock (a control
command carrying a time label). Types 5–7 and 25–26 (versions, configuration) have variable or
vendor-defined content and are denied as unsupported, like any other type.

The type-flag numbers follow the standard's table 3 (uplink 1–8 for the building's fire
systems, 21–28 for the transmission device itself; downlink 61–91): 8 is a fire system's clock,
21 the transmission device's running state, 28 its clock and 90 the centre's "synchronise the
clock" command. Some transcriptions number these differently (8 as the device's state, 24 as
its time); we checked the numbering against a published implementation of the standard's
table and chose it; a device that differs is answered with a denial (unknown type), counted,
and never misread.

Time labels are second, minute, hour, day, month, year − 2000, in the device's local time.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from enum import IntEnum

START = b"@@"
END = b"##"
CONTROL_LEN = 25
HEADER_LEN = 2 + CONTROL_LEN  # start marker + control unit
MAX_APP_LEN = 1024
MAX_ADDRESS = (1 << 48) - 1


class Cmd(IntEnum):
    CONTROL = 1
    SEND_DATA = 2
    CONFIRM = 3
    REQUEST = 4
    REPLY = 5
    DENY = 6


class DataType(IntEnum):
    SYSTEM_STATE = 1
    COMPONENT_STATE = 2
    COMPONENT_ANALOG = 3
    OPERATION = 4
    SYSTEM_TIME = 8
    UITD_STATE = 21
    UITD_OPERATION = 24
    UITD_TIME = 28
    SYNC_CLOCK = 90


# Status word of a fire system (§8.2.1.1) and of a component (§8.2.1.2): bit -> name.
# Bit 0 set = normal operation, clear = test; the others set = the condition holds.
SYSTEM_STATUS_BITS = {
    0: "normal",
    1: "fire_alarm",
    2: "fault",
    3: "shield",
    4: "supervise",
    5: "start",
    6: "feedback",
    7: "delay",
    8: "main_power_fault",
    9: "backup_power_fault",
    10: "bus_fault",
    11: "manual",
    12: "config_change",
    13: "reset",
}
# A component shares the system's bits 0-7; its bit 8 is its own power fault, 9-15 reserved.
COMPONENT_STATUS_BITS = {
    **{bit: name for bit, name in SYSTEM_STATUS_BITS.items() if bit < 8},
    8: "power_fault",
}
# Operation flags (§8.2.1.4) and the transmission device's running state (§8.2.1.9).
OPERATION_BITS = {
    0: "reset",
    1: "silence",
    2: "manual_alarm",
    3: "alarm_cleared",
    4: "self_test",
    5: "confirm",
    6: "test",
}
UITD_STATUS_BITS = {
    0: "normal",
    1: "fire_alarm",
    2: "fault",
    3: "main_power_fault",
    4: "backup_power_fault",
    5: "centre_link_fault",
    6: "line_fault",
}
# Analog value types (§8.2.1.3): type -> (unit, resolution). Values are signed 16-bit.
ANALOG_TYPES: dict[int, tuple[str, float]] = {
    1: ("count", 1.0),
    2: ("m", 0.01),
    3: ("°C", 0.1),
    4: ("MPa", 0.1),
    5: ("kPa", 0.1),
    6: ("%LEL", 0.1),
    7: ("s", 1.0),
    8: ("V", 0.1),
    9: ("A", 0.1),
    10: ("L/s", 0.1),
    11: ("m³/min", 0.1),
    12: ("m/s", 1.0),
}


class FrameError(Exception):
    """A frame that cannot be accepted. ``reason`` is one of checksum, truncated, oversize,
    unknown_type, bad_length, bad_command; ``header`` is the frame's control unit when it could
    be read whole (a deny can then answer its serial number)."""

    def __init__(self, reason: str, detail: str, header: Frame | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.header = header


@dataclass(frozen=True)
class Frame:
    serial: int
    version: tuple[int, int]
    time_label: bytes  # 6 bytes, as sent
    source: int
    destination: int
    command: int
    app: bytes = b""


def encode_frame(frame: Frame) -> bytes:
    if len(frame.app) > MAX_APP_LEN:
        raise ValueError(f"application data of {len(frame.app)} bytes > {MAX_APP_LEN}")
    control = (
        struct.pack("<HBB", frame.serial & 0xFFFF, *frame.version)
        + frame.time_label
        + frame.source.to_bytes(6, "little")
        + frame.destination.to_bytes(6, "little")
        + struct.pack("<HB", len(frame.app), frame.command)
    )
    body = control + frame.app
    return START + body + bytes([sum(body) & 0xFF]) + END


def _header(buf: bytes | bytearray) -> Frame:
    serial, major, minor = struct.unpack_from("<HBB", buf, 2)
    return Frame(
        serial=serial,
        version=(major, minor),
        time_label=bytes(buf[6:12]),
        source=int.from_bytes(buf[12:18], "little"),
        destination=int.from_bytes(buf[18:24], "little"),
        command=buf[26],
    )


class FrameReader:
    """Cuts a TCP byte stream into frames, resynchronising on ``@@`` after a bad one.

    There is no escaping in this protocol, so the start marker can occur inside data (or a
    stray ``@`` precede one); a false start fails its length, end marker or checksum and the
    search goes on from the next byte."""

    def __init__(self, max_app_len: int = MAX_APP_LEN, max_buffer: int = 64 * 1024) -> None:
        self.max_app_len = max_app_len
        self.max_buffer = max_buffer
        self.buf = bytearray()
        self.noise_bytes = 0  # bytes outside any frame, skipped

    @property
    def pending(self) -> bool:
        """A frame has started and not yet ended."""
        return self.buf.startswith(START)

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        self.buf += data
        out: list[Frame | FrameError] = []
        while True:
            start = self.buf.find(START)
            if start < 0:
                keep = 1 if self.buf.endswith(b"@") else 0
                self.noise_bytes += len(self.buf) - keep
                del self.buf[: len(self.buf) - keep]
                return out
            if start:
                self.noise_bytes += start
                del self.buf[:start]
            if len(self.buf) < HEADER_LEN:
                return out
            header = _header(self.buf)
            app_len = int.from_bytes(self.buf[24:26], "little")
            if app_len > self.max_app_len:
                out.append(
                    FrameError(
                        "oversize",
                        f"application data length {app_len} > {self.max_app_len}",
                        header,
                    )
                )
                del self.buf[:1]
                continue
            total = HEADER_LEN + app_len + 1 + len(END)
            if len(self.buf) < total:
                if len(self.buf) > self.max_buffer:  # cannot happen with a sane length; bound it
                    out.append(self.cut_short())
                    continue
                return out
            if self.buf[total - 2 : total] != END:
                out.append(
                    FrameError(
                        "truncated",
                        f"no end marker after {app_len} bytes of "
                        "application data (the frame was cut short)",
                        header,
                    )
                )
                del self.buf[:1]
                continue
            body = bytes(self.buf[2 : HEADER_LEN + app_len])
            checksum = self.buf[HEADER_LEN + app_len]
            if sum(body) & 0xFF != checksum:
                out.append(
                    FrameError(
                        "checksum",
                        f"checksum {checksum:#04x}, computed {sum(body) & 0xFF:#04x}",
                        header,
                    )
                )
                del self.buf[:total]
                continue
            out.append(
                Frame(
                    header.serial,
                    header.version,
                    header.time_label,
                    header.source,
                    header.destination,
                    header.command,
                    body[CONTROL_LEN:],
                )
            )
            del self.buf[:total]

    def cut_short(self) -> FrameError:
        """The started frame will not be completed (the line went quiet or closed): drop its
        first byte so the search resumes after it."""
        header = _header(self.buf) if len(self.buf) >= HEADER_LEN else None
        have = len(self.buf)
        del self.buf[:1]
        return FrameError("truncated", f"the frame stopped after {have} bytes", header)


# -- time labels -------------------------------------------------------------------------------


def time_label(moment: datetime) -> bytes:
    """A datetime (aware) → the 6-byte label, in the moment's own zone."""
    return bytes(
        [moment.second, moment.minute, moment.hour, moment.day, moment.month, moment.year - 2000]
    )


def parse_time_label(label: bytes, tz: tzinfo) -> datetime | None:
    """The 6-byte label in zone ``tz``; None for an impossible date (an unset device clock)."""
    if len(label) != 6:
        return None
    s, mi, h, d, mo, y = label
    try:
        return datetime(2000 + y, mo, d, h, mi, s, tzinfo=tz)
    except ValueError:
        return None


def label_ms(label: bytes, tz: tzinfo) -> int | None:
    moment = parse_time_label(label, tz)
    return None if moment is None else int(moment.timestamp() * 1000)


def now_label(tz: tzinfo, offset: timedelta = timedelta(0)) -> bytes:
    return time_label(datetime.now(tz) + offset)


# -- application data ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SystemState:
    system_type: int
    system_address: int
    status: int
    time_label: bytes


@dataclass(frozen=True)
class ComponentState:
    system_type: int
    system_address: int
    component_type: int
    component_address: int
    status: int
    description: str
    time_label: bytes


@dataclass(frozen=True)
class AnalogValue:
    system_type: int
    system_address: int
    component_type: int
    component_address: int
    analog_type: int
    value: int  # raw, signed; × the type's resolution (ANALOG_TYPES) gives the unit
    time_label: bytes


@dataclass(frozen=True)
class Operation:
    system_type: int
    system_address: int
    flags: int
    operator: int
    time_label: bytes


@dataclass(frozen=True)
class SystemTime:
    system_type: int
    system_address: int
    time_label: bytes


@dataclass(frozen=True)
class UitdState:
    flags: int
    time_label: bytes


@dataclass(frozen=True)
class UitdOperation:
    flags: int
    operator: int
    time_label: bytes


@dataclass(frozen=True)
class UitdTime:
    time_label: bytes


@dataclass(frozen=True)
class SyncClock:
    time_label: bytes


InfoObject = (
    SystemState
    | ComponentState
    | AnalogValue
    | Operation
    | SystemTime
    | UitdState
    | UitdOperation
    | UitdTime
    | SyncClock
)

DESCRIPTION_LEN = 31
_FORMATS: dict[int, tuple[str, type]] = {
    DataType.SYSTEM_STATE: ("<BBH6s", SystemState),
    DataType.COMPONENT_STATE: ("<BBBIH31s6s", ComponentState),
    DataType.COMPONENT_ANALOG: ("<BBBIBh6s", AnalogValue),
    DataType.OPERATION: ("<BBBB6s", Operation),
    DataType.SYSTEM_TIME: ("<BB6s", SystemTime),
    DataType.UITD_STATE: ("<B6s", UitdState),
    DataType.UITD_OPERATION: ("<BB6s", UitdOperation),
    DataType.UITD_TIME: ("<6s", UitdTime),
    DataType.SYNC_CLOCK: ("<6s", SyncClock),
}
_TYPE_OF = {cls: flag for flag, (_, cls) in _FORMATS.items()}


def object_size(type_flag: int) -> int:
    return struct.calcsize(_FORMATS[type_flag][0])


def decode_description(raw: bytes) -> str:
    """Component descriptions are GB 18030 text padded with NULs (or spaces)."""
    text = raw.split(b"\0", 1)[0].decode("gb18030", errors="replace").strip()
    return "".join(ch for ch in text if ch.isprintable())


def decode_app(app: bytes) -> tuple[int | None, list[InfoObject]]:
    """Application data → (type flag, objects); (None, []) for none (a heartbeat).

    Raises FrameError unknown_type or bad_length."""
    if not app:
        return None, []
    if len(app) < 2:
        raise FrameError("bad_length", f"application data of {len(app)} byte(s)")
    type_flag, count = app[0], app[1]
    if type_flag not in _FORMATS:
        raise FrameError("unknown_type", f"type flag {type_flag} is not one this gateway decodes")
    fmt, cls = _FORMATS[type_flag]
    size = struct.calcsize(fmt)
    if len(app) != 2 + count * size:
        raise FrameError(
            "bad_length",
            f"type {type_flag}: {count} object(s) of {size} bytes need {2 + count * size} "
            f"bytes, the frame has {len(app)}",
        )
    objects: list[InfoObject] = []
    for i in range(count):
        fields = list(struct.unpack_from(fmt, app, 2 + i * size))
        if cls is ComponentState:
            fields[5] = decode_description(fields[5])
        objects.append(cls(*fields))
    return type_flag, objects


def encode_app(objects: list[InfoObject]) -> bytes:
    """Objects of one type → application data (what a transmission device sends)."""
    if not objects or len(objects) > 255:
        raise ValueError("1 … 255 objects of one type")
    type_flag = _TYPE_OF[type(objects[0])]
    fmt = _FORMATS[type_flag][0]
    out = bytearray([type_flag, len(objects)])
    for obj in objects:
        if _TYPE_OF[type(obj)] != type_flag:
            raise ValueError("objects of one type per frame")
        fields = list(obj.__dict__.values())
        if isinstance(obj, ComponentState):
            fields[5] = obj.description.encode("gb18030")[:DESCRIPTION_LEN]
        out += struct.pack(fmt, *fields)
    return bytes(out)
