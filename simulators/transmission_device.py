"""A simulated user-information transmission device (用户信息传输装置), GB/T 26875.3.

:class:`TransmissionDevice` is the device's network side: it connects to a monitoring centre
(the gateway's receiver) over TCP, sends data frames with increasing serial numbers, waits for
each one's confirmation and repeats a frame that got none, answers the centre's clock
synchronisation with a confirmation, and can send any bytes at all (the tests' broken frames).

:class:`FireRoom` is the demo's fire control room: the simulated estate's fire panel and fire
detectors report through a transmission device, so their states and alarms reach the service
by the same path a real panel's do.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from gateway.fire_receiver import FireMapping, Target
from gateway.gbt26875 import (
    Cmd,
    ComponentState,
    DataType,
    Frame,
    FrameError,
    FrameReader,
    InfoObject,
    SystemState,
    decode_app,
    encode_app,
    encode_frame,
    parse_time_label,
    time_label,
)
from protocol.messages import Event, Reading

log = logging.getLogger(__name__)

NORMAL = 1  # status word bit 0: normal operation (0 would be test mode)


class TransmissionDevice:
    """The device end of a GB/T 26875.3 link, over one TCP connection."""

    def __init__(
        self,
        host: str,
        port: int,
        address: int = 0x0000_1234_5678,
        centre: int = 0,
        tz: str = "Asia/Shanghai",
        confirm_timeout_s: float = 2.0,
        resends: int = 2,
        version: tuple[int, int] = (1, 0),
    ) -> None:
        self.host, self.port = host, port
        self.address, self.centre = address, centre
        self.tz = ZoneInfo(tz)
        self.confirm_timeout_s = confirm_timeout_s
        self.resends = resends
        self.version = version
        self.clock_offset = timedelta(0)  # what the centre's synchronisation set
        self.syncs: list[datetime] = []
        self.replies: queue.Queue[Frame] = queue.Queue(1000)
        self.serial = 0
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._send_lock = threading.Lock()

    # -- connection ----------------------------------------------------------------------------

    def connect(self, timeout_s: float = 5.0) -> None:
        self._sock = socket.create_connection((self.host, self.port), timeout=timeout_s)
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read, name="uitd-reader", daemon=True)
        self._reader.start()

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        if self._reader is not None:
            self._reader.join(5)
        self._sock = None

    @property
    def connected(self) -> bool:
        return self._sock is not None and self._reader is not None and self._reader.is_alive()

    def now(self) -> datetime:
        return datetime.now(self.tz) + self.clock_offset

    def _read(self) -> None:
        reader = FrameReader()
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            for item in reader.feed(data):
                if isinstance(item, FrameError):
                    log.warning("transmission device: bad frame from the centre: %s", item)
                elif item.command == Cmd.CONTROL:
                    self._control(item)
                else:
                    with contextlib.suppress(queue.Full):
                        self.replies.put_nowait(item)

    def _control(self, frame: Frame) -> None:
        """The centre's control command: clock synchronisation (type 90) is obeyed."""
        try:
            type_flag, objects = decode_app(frame.app)
        except FrameError:
            self._answer(frame, Cmd.DENY)
            return
        if type_flag != DataType.SYNC_CLOCK or not objects:
            self._answer(frame, Cmd.DENY)
            return
        moment = parse_time_label(objects[0].time_label, self.tz)
        if moment is None:
            self._answer(frame, Cmd.DENY)
            return
        self.clock_offset = moment - datetime.now(self.tz)
        self.syncs.append(moment)
        self._answer(frame, Cmd.CONFIRM)

    def _answer(self, to: Frame, command: Cmd) -> None:
        self.send_raw(
            encode_frame(
                Frame(
                    to.serial, to.version, time_label(self.now()), self.address, to.source, command
                )
            )
        )

    # -- sending ---------------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        if self._sock is None:
            raise ConnectionError("not connected")
        with self._send_lock:
            self._sock.sendall(data)

    def frame(self, objects: list[InfoObject], command: Cmd = Cmd.SEND_DATA) -> Frame:
        """The next data frame (a new serial number) carrying ``objects``."""
        self.serial = (self.serial + 1) & 0xFFFF
        app = encode_app(objects) if objects else b""
        return Frame(
            self.serial,
            self.version,
            time_label(self.now()),
            self.address,
            self.centre,
            command,
            app,
        )

    def wait_reply(self, serial: int, timeout_s: float) -> Frame | None:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                reply = self.replies.get(timeout=left)
            except queue.Empty:
                return None
            if reply.serial == serial:
                return reply
        return None

    def send(self, objects: list[InfoObject]) -> Frame | None:
        """Send data and wait for its confirmation (or denial), repeating the frame when
        neither comes in time, as the standard asks; None when the centre never answered."""
        frame = self.frame(objects)
        for _ in range(1 + self.resends):
            self.send_raw(encode_frame(frame))
            reply = self.wait_reply(frame.serial, self.confirm_timeout_s)
            if reply is not None:
                return reply
        return None

    def system_state(
        self, system_type: int, system_address: int, status: int, at: datetime | None = None
    ) -> Frame | None:
        label = time_label(at or self.now())
        return self.send([SystemState(system_type, system_address, status, label)])

    def component_state(
        self,
        system_type: int,
        system_address: int,
        component_type: int,
        component_address: int,
        status: int,
        description: str = "",
        at: datetime | None = None,
    ) -> Frame | None:
        label = time_label(at or self.now())
        obj = ComponentState(
            system_type,
            system_address,
            component_type,
            component_address,
            status,
            description,
            label,
        )
        return self.send([obj])


# -- the demo's fire control room -----------------------------------------------------------------

# Catalog fire event -> the status word bit a panel sets for it.
EVENT_BITS = {
    "fire.alarm": 1,
    "fire.fault": 2,
    "fire.disabled": 3,
    "fire.supervisory": 4,
    "fire.start": 5,
    "fire.feedback": 6,
    "fire.reset": 13,
}
FIRE_KINDS = ("fire_panel", "smoke_detector")


@dataclass(frozen=True)
class Address:
    system_type: int
    system_address: int
    component_type: int | None = None
    component_address: int | None = None


def fire_room_mapping(devices: list[tuple[str, str]]) -> tuple[FireMapping, dict[str, Address]]:
    """A mapping for an estate's fire devices, as an installer would write it: each panel a
    fire alarm system (type 1) numbered from 1, each detector a component of the first panel
    numbered from 1. Returns the mapping and each device's address."""
    systems: dict[tuple[int, int], Target] = {}
    components: dict[tuple[int, int, int | None, int], Target] = {}
    where: dict[str, Address] = {}
    panels = [d for d, k in devices if k == "fire_panel"]
    for i, dev in enumerate(panels):
        systems[(1, i + 1)] = Target(dev, "fire_panel")
        where[dev] = Address(1, i + 1)
    for i, (dev, kind) in enumerate(d for d in devices if d[1] == "smoke_detector"):
        components[(1, 1, None, i + 1)] = Target(dev, kind, point=dev)
        where[dev] = Address(1, 1, 0, i + 1)
    default = Target(panels[0], "fire_panel") if panels else None
    return FireMapping(systems, components, default, "demo"), where


class FireRoom:
    """Sends the simulated fire devices' states through a transmission device, from a thread
    of its own (the gateway's poll thread never waits on it); at most ``max_queued`` waiting."""

    def __init__(
        self, device: TransmissionDevice, where: dict[str, Address], max_queued: int = 1000
    ) -> None:
        self.device = device
        self.where = where
        self.words: dict[str, int] = dict.fromkeys(where, NORMAL)
        self._queue: queue.Queue[tuple[Address, int, str, datetime]] = queue.Queue(max_queued)
        self.dropped = 0
        self.unconfirmed = 0
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fire-room", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        self._thread.join(10)
        self.device.close()

    def owns(self, dev: str) -> bool:
        return dev in self.where

    def put_reading(self, reading: Reading) -> None:
        """A periodic state report: the word as it stands, so a silent panel is noticed."""
        self._enqueue(reading.dev, self.words[reading.dev], "", reading.ts)

    def put_event(self, event: Event) -> None:
        bit = EVENT_BITS.get(event.type)
        if bit is None:
            return
        word = self.words[event.dev]
        if event.type == "fire.reset":  # a reset clears the conditions and says so once
            # (a system's word has a reset bit; a component's, reserved there, just clears)
            reset = 1 << 13 if self.where[event.dev].component_address is None else 0
            self._enqueue(event.dev, NORMAL | reset, "", event.ts)
            self.words[event.dev] = NORMAL
            return
        zone = str(event.data.get("zone", ""))
        if event.type == "fire.alarm":  # an alarm holds until the panel is reset
            self.words[event.dev] = word | 1 << bit
            self._enqueue(event.dev, self.words[event.dev], zone, event.ts)
            return
        # other conditions: reported, then gone
        self._enqueue(event.dev, word | 1 << bit, zone, event.ts)
        self._enqueue(event.dev, word, zone, event.ts)

    def _enqueue(self, dev: str, word: int, zone: str, ts: int) -> None:
        at = datetime.fromtimestamp(ts / 1000, self.device.tz)  # the label: when it happened
        try:
            self._queue.put_nowait((self.where[dev], word, zone, at))
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while not self._halt.is_set():
            try:
                where, word, zone, at = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                if not self.device.connected:
                    self.device.connect()
                if where.component_address is None:
                    reply = self.device.system_state(
                        where.system_type, where.system_address, word, at
                    )
                else:
                    reply = self.device.component_state(
                        where.system_type,
                        where.system_address,
                        where.component_type or 0,
                        where.component_address,
                        word,
                        zone,
                        at,
                    )
                if reply is None or reply.command != Cmd.CONFIRM:
                    self.unconfirmed += 1
            except OSError as exc:
                log.warning("fire room: transmission device cannot reach the centre: %s", exc)
                self.device.close()
                self._halt.wait(1.0)
