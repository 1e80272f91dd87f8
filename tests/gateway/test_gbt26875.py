"""GB/T 26875.3: the frame codec on a corpus of valid frames of every decoded type and of broken
ones, and the gateway's receiver against a simulated transmission device over real TCP: what
each frame is answered with, what it becomes in catalog terms, and that nothing crashes it."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from gateway.adapter import Collected
from gateway.fire_receiver import FireConfigError, FireReceiver, parse_mapping
from gateway.gbt26875 import (
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
    parse_time_label,
    time_label,
)
from protocol.catalog import default_catalog
from protocol.clock import SHANGHAI
from simulators.transmission_device import TransmissionDevice
from tests.support import poll_until

CAT = default_catalog()
LABEL = bytes([30, 15, 8, 20, 1, 26])  # 2026-01-20 08:15:30 (the device's local time)

MAPPING = parse_mapping(
    {
        "default": {"dev": "fap-1", "kind": "fire_panel"},
        "systems": [
            {
                "system_type": 1,
                "system_address": 1,
                "dev": "fap-1",
                "kind": "fire_panel",
                "zone": "消防控制室",
            }
        ],
        "components": [
            {
                "system_type": 1,
                "system_address": 1,
                "component_address": 1203,
                "dev": "smoke-b3-1203",
                "kind": "smoke_detector",
                "zone": "b3-f12",
                "point": "smoke-1203",
            },
            {
                "system_type": 11,
                "system_address": 1,
                "component_type": 0,
                "component_address": 7,
                "dev": "pump-1",
                "kind": "fire_pump",
            },
            {
                "system_type": 11,
                "system_address": 1,
                "component_address": 1,
                "dev": "hydrant-1",
                "kind": "fire_hydrant",
                "analog": {"4": "pressure_mpa"},
                "scale": {"4": 0.01},
            },
            {
                "system_type": 13,
                "system_address": 1,
                "component_address": 2,
                "dev": "tank-1",
                "kind": "fire_water_tank",
            },
        ],
    },
    "test mapping",
    CAT,
)

# One valid object of every type the gateway decodes (type 90 is the centre's own, downlink).
CORPUS: list[InfoObject] = [
    SystemState(1, 1, 0b11, LABEL),
    ComponentState(1, 1, 42, 1203, 0b11, "3号楼12层东", LABEL),
    AnalogValue(11, 1, 0, 1, 4, 35, LABEL),
    Operation(1, 1, 0b1, 3, LABEL),
    SystemTime(1, 1, LABEL),
    UitdState(0b101, LABEL),
    UitdOperation(0b10, 1, LABEL),
    UitdTime(LABEL),
    SyncClock(LABEL),
]


# -- the codec ---------------------------------------------------------------------------------


def test_a_frame_laid_out_by_hand_decodes_field_by_field() -> None:
    # serial 0x0102, version 1.0, the label, source 0x0000_1234_5678, destination 0,
    # type 1 / one object: system type 1, address 2, status 0x0003, the label.
    app = bytes([1, 1, 1, 2, 0x03, 0x00]) + LABEL
    control = (
        bytes([0x02, 0x01, 1, 0])
        + LABEL
        + bytes([0x78, 0x56, 0x34, 0x12, 0, 0])
        + bytes(6)
        + bytes([len(app), 0, 2])
    )
    raw = b"@@" + control + app + bytes([sum(control + app) % 256]) + b"##"
    (frame,) = FrameReader().feed(raw)
    assert isinstance(frame, Frame)
    assert (frame.serial, frame.version, frame.source, frame.destination, frame.command) == (
        0x0102,
        (1, 0),
        0x12345678,
        0,
        Cmd.SEND_DATA,
    )
    assert decode_app(frame.app) == (1, [SystemState(1, 2, 3, LABEL)])
    assert encode_frame(frame) == raw
    assert parse_time_label(LABEL, SHANGHAI) == datetime(2026, 1, 20, 8, 15, 30, tzinfo=SHANGHAI)


@pytest.mark.parametrize("obj", CORPUS, ids=lambda o: type(o).__name__)
def test_every_decoded_type_round_trips(obj: InfoObject) -> None:
    frame = Frame(7, (1, 0), LABEL, 0x1234, 0, Cmd.SEND_DATA, encode_app([obj, obj]))
    (got,) = FrameReader().feed(encode_frame(frame))
    assert got == frame
    type_flag, objects = decode_app(frame.app)
    assert objects == [obj, obj]
    assert type_flag == frame.app[0]


def test_a_stream_cut_anywhere_and_noise_between_frames() -> None:
    frames = [
        Frame(i, (1, 0), LABEL, 9, 0, Cmd.SEND_DATA, encode_app([o])) for i, o in enumerate(CORPUS)
    ]
    stream = b"garbage" + b"".join(encode_frame(f) + b"\r\n" for f in frames)
    reader = FrameReader()
    got: list[Frame | FrameError] = []
    for i in range(0, len(stream), 3):  # three bytes at a time
        got += reader.feed(stream[i : i + 3])
    assert got == frames
    assert reader.noise_bytes == len(b"garbage") + 2 * len(frames)
    # a stray "@" before a start marker makes a false start; the frame behind it survives
    got = FrameReader().feed(b"x@" + encode_frame(frames[1]))
    assert [g for g in got if isinstance(g, Frame)] == [frames[1]]


def broken_corpus() -> dict[str, bytes]:
    good = encode_frame(Frame(5, (1, 0), LABEL, 9, 0, Cmd.SEND_DATA, encode_app([CORPUS[0]])))
    bad_sum = bytearray(good)
    bad_sum[-3] ^= 0x5A
    unknown = encode_frame(Frame(6, (1, 0), LABEL, 9, 0, Cmd.SEND_DATA, bytes([77, 1, 0, 0])))
    # two objects announced, one sent: the length field is honest, the content is not
    short_app = encode_app([CORPUS[0]])
    bad_length = encode_frame(
        Frame(7, (1, 0), LABEL, 9, 0, Cmd.SEND_DATA, bytes([1, 2]) + short_app[2:])
    )
    oversize = bytearray(good[:27])
    oversize[24:26] = (1025).to_bytes(2, "little")
    return {
        "checksum": bytes(bad_sum),
        "unknown_type": unknown,
        "bad_length": bad_length,
        "truncated": good[:-9],
        "oversize": bytes(oversize),
    }


def test_broken_frames_are_named_by_reason() -> None:
    corpus = broken_corpus()
    for reason in ("checksum", "oversize"):
        (err,) = FrameReader().feed(corpus[reason])
        assert isinstance(err, FrameError) and err.reason == reason
    for reason in ("unknown_type", "bad_length"):
        (frame,) = FrameReader().feed(corpus[reason])
        assert isinstance(frame, Frame)
        with pytest.raises(FrameError) as exc:
            decode_app(frame.app)
        assert exc.value.reason == reason
    # a truncated frame followed by a good one: the reader gives up on the first, keeps the second
    good = encode_frame(Frame(8, (1, 0), LABEL, 9, 0, Cmd.SEND_DATA, encode_app([CORPUS[3]])))
    reader = FrameReader()
    got = reader.feed(corpus["truncated"] + good)
    if not got:  # the cut frame's length still covers the bytes that came: the line goes quiet
        got = [reader.cut_short(), *reader.feed(b"")]
    assert [type(g).__name__ for g in got] == ["FrameError", "Frame"]
    assert isinstance(got[0], FrameError) and got[0].reason == "truncated"
    assert got[1] == FrameReader().feed(good)[0]


# -- the receiver over TCP ----------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[FireReceiver]:
    rx = FireReceiver("test", "127.0.0.1", 0, MAPPING, CAT, address=0xCE)
    yield rx
    rx.close()


@pytest.fixture
def device(receiver: FireReceiver) -> Iterator[TransmissionDevice]:
    dev = TransmissionDevice(
        "127.0.0.1", receiver.port, centre=0xCE, confirm_timeout_s=1.0, resends=0
    )
    dev.connect()
    yield dev
    dev.close()


def collect(rx: FireReceiver, readings: int = 0, events: int = 0, timeout: float = 5) -> Collected:
    got, _ = poll_until(
        rx, lambda g: len(g.readings) >= readings and len(g.events) >= events, timeout, 0.02
    )
    time.sleep(0.1)  # nothing more than asked for may follow
    more = rx.poll()
    return Collected(got.readings + more.readings, got.events + more.events)


def wait_for_first_sync(device: TransmissionDevice) -> float:
    """Until the receiver has set the device's clock once; the deadline (5 s from now) is
    returned for what the test waits for next."""
    deadline = time.monotonic() + 5
    while not device.syncs:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return deadline


def test_the_receiver_sets_the_device_clock_on_connect(
    receiver: FireReceiver, device: TransmissionDevice
) -> None:
    deadline = wait_for_first_sync(device)
    assert abs(device.syncs[0] - datetime.now(SHANGHAI)) < timedelta(seconds=3)
    while receiver.counters.syncs_confirmed < 1:  # the device confirmed the control command
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_every_valid_uplink_frame_is_confirmed_with_its_serial(
    receiver: FireReceiver, device: TransmissionDevice
) -> None:
    for obj in CORPUS[:-1]:  # type 90 is the centre's command, not the device's data
        reply = device.send([obj])
        assert reply is not None and reply.command == Cmd.CONFIRM, type(obj).__name__
        assert reply.serial == device.serial
        assert (reply.source, reply.destination) == (0xCE, device.address)
        assert reply.app == b""
    assert device.send([]) is not None  # a heartbeat: no application data, still confirmed
    health = receiver.health()
    assert health["confirmed"] == len(CORPUS)
    assert sum(health["bad_frames"].values()) == 0


def test_broken_frames_are_denied_or_dropped_as_the_standard_says_and_counted(
    receiver: FireReceiver, device: TransmissionDevice
) -> None:
    corpus = broken_corpus()
    expected = {
        "checksum": Cmd.DENY,
        "unknown_type": Cmd.DENY,
        "bad_length": Cmd.DENY,
        "truncated": None,
        "oversize": None,
    }
    for reason, raw in corpus.items():
        serial = int.from_bytes(raw[2:4], "little")
        device.send_raw(raw)
        reply = device.wait_reply(serial, 0.6 if expected[reason] is None else 3)
        got = None if reply is None else reply.command
        assert got == expected[reason], reason
    # a request (command 4) is not served by a receiver: denied
    request = Frame(99, (1, 0), LABEL, device.address, 0xCE, Cmd.REQUEST, b"")
    device.send_raw(encode_frame(request))
    reply = device.wait_reply(99, 3)
    assert reply is not None and reply.command == Cmd.DENY
    # after all of that the link still works
    reply = device.system_state(1, 1, 1)
    assert reply is not None and reply.command == Cmd.CONFIRM
    deadline = time.monotonic() + 5
    while receiver.health()["bad_frames"]["truncated"] < 1:  # cut short after a quiet spell
        assert time.monotonic() < deadline
        time.sleep(0.05)
    health = receiver.health()
    assert health["bad_frames"] == {
        "checksum": 1,
        "truncated": 1,
        "oversize": 1,
        "unknown_type": 1,
        "bad_length": 1,
        "bad_command": 1,
    }
    assert health["denied"] == 4 and health["dropped"] == 2
    assert collect(receiver).events == []  # nothing of a bad frame was used


def test_status_words_become_catalog_events_when_a_bit_turns_on(
    receiver: FireReceiver, device: TransmissionDevice
) -> None:
    device.system_state(1, 1, 0b1)  # normal
    device.system_state(1, 1, 0b11)  # fire alarm
    device.system_state(1, 1, 0b11)  # still: no second event
    device.component_state(1, 1, 42, 1203, 0b11, "3号楼12层东")
    device.component_state(11, 1, 0, 7, 0b1 | 1 << 8 | 1 << 5)  # pump: power fault and started
    device.system_state(1, 1, 0b1 | 1 << 13)  # reset
    got = collect(receiver, readings=5, events=6)
    events = [(e.dev, e.kind, e.type, e.data) for e in got.events]
    assert events == [
        ("fap-1", "fire_panel", "fire.alarm", {"status_word": 3, "zone": "消防控制室"}),
        (
            "smoke-b3-1203",
            "smoke_detector",
            "fire.alarm",
            {"point": "smoke-1203", "status_word": 3, "zone": "b3-f12"},
        ),
        ("pump-1", "fire_pump", "fire.start", {"point": "pump-1", "status_word": 289}),
        (
            "pump-1",
            "fire_pump",
            "fire.power_fault",
            {"point": "pump-1", "status_word": 289, "main": True, "backup": False},
        ),
        ("fap-1", "fire_panel", "fire.reset", {"status_word": 8193}),
        # the panel's reset returns its detector in alarm to normal: the detector's alarm ends
        (
            "smoke-b3-1203",
            "smoke_detector",
            "fire.reset",
            {"point": "smoke-1203", "status_word": 1, "by": "panel_reset"},
        ),
    ]
    # status words pass as received, to the kinds that have the metric
    words = [(r.dev, r.metrics) for r in got.readings]
    assert words == [
        ("fap-1", {"status_word": 1}),
        ("fap-1", {"status_word": 3}),
        ("fap-1", {"status_word": 3}),
        ("smoke-b3-1203", {"status_word": 3}),
        ("fap-1", {"status_word": 8193}),
    ]
    # a time label near now is the event's time (the device's clock was just set)
    assert abs(got.events[0].ts - time.time() * 1000) < 5000


def test_a_detector_restores_on_its_own_word_or_the_panels_reset_operation(
    receiver: FireReceiver, device: TransmissionDevice
) -> None:
    """Issue 11: a detector's fire alarm ends when the equipment says so. Its own word clearing
    the fire-alarm bit is a restore; a reset operation (§8.2.1.4 bit 0) at the panel returns
    the detectors still in alarm; an unmapped component's restore never resets the panel."""
    now = time_label(device.now())
    device.component_state(1, 1, 42, 1203, 0b11, "3号楼12层东")
    device.component_state(1, 1, 42, 1203, 0b1, "3号楼12层东")  # restored
    device.component_state(1, 1, 42, 1203, 0b11, "3号楼12层东")
    device.send([Operation(1, 1, 0b1, 5, now)])  # the on-duty operator resets the panel
    device.component_state(1, 1, 42, 1203, 0b1, "3号楼12层东")  # already normal: nothing new
    device.component_state(1, 1, 42, 2047, 0b11, "地下车库B区")  # unmapped: via the panel
    device.component_state(1, 1, 42, 2047, 0b1, "地下车库B区")
    got = collect(receiver, events=6)
    assert [(e.dev, e.type, e.data.get("by")) for e in got.events] == [
        ("smoke-b3-1203", "fire.alarm", None),
        ("smoke-b3-1203", "fire.reset", "restored"),
        ("smoke-b3-1203", "fire.alarm", None),
        ("fap-1", "fire.reset", None),
        ("smoke-b3-1203", "fire.reset", "panel_reset"),
        ("fap-1", "fire.alarm", None),
    ]
    resets = [e for e in got.events if e.type == "fire.reset" and e.dev == "smoke-b3-1203"]
    assert resets[1].ts > resets[0].ts  # each a time of its own, in order


def test_an_unmapped_component_reports_through_the_panel_so_no_fire_alarm_is_lost(
    receiver: FireReceiver, device: TransmissionDevice
) -> None:
    device.component_state(1, 1, 42, 2047, 0b11, "地下车库B区")
    got = collect(receiver, events=1)
    assert [(e.dev, e.type, e.data) for e in got.events] == [
        ("fap-1", "fire.alarm", {"point": "comp-1-1-2047", "status_word": 3, "zone": "地下车库B区"})
    ]
    assert got.readings == []  # the panel's own status word is not the component's
    assert receiver.health()["unmapped"] == 1


def test_analog_values_operations_and_device_state(
    receiver: FireReceiver, device: TransmissionDevice
) -> None:
    now = time_label(device.now())
    device.send([AnalogValue(11, 1, 0, 1, 4, 35, now)])  # mapped scale: 0.35 MPa
    device.send([AnalogValue(13, 1, 0, 2, 2, 412, now)])  # height, 0.01 m: the tank's level_m
    device.send([Operation(1, 1, 0b1, 5, now)])  # reset by operator 5
    device.send([UitdState(0b101, now)])  # normal, fault
    got = collect(receiver, readings=2, events=1)
    assert [(r.dev, r.metrics) for r in got.readings] == [
        ("hydrant-1", {"pressure_mpa": 0.35}),
        ("tank-1", {"level_m": 4.12}),
    ]
    assert [(e.dev, e.type) for e in got.events] == [("fap-1", "fire.reset")]
    uitd = receiver.health()["uitd"]
    assert uitd["status"] == 5 and uitd["fault"] is True and uitd["fire_alarm"] is False


def test_a_device_clock_far_off_is_set_again(
    receiver: FireReceiver, device: TransmissionDevice
) -> None:
    deadline = wait_for_first_sync(device)
    wrong = time_label(datetime.now(SHANGHAI) - timedelta(hours=3))
    device.send([UitdTime(wrong)])
    while len(device.syncs) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert receiver.health()["clock_skew_s"] == pytest.approx(-3 * 3600, abs=5)


def test_garbage_never_stops_the_receiver(receiver: FireReceiver) -> None:
    rng = random.Random(26875)
    good = encode_frame(Frame(1, (1, 0), LABEL, 9, 0, Cmd.SEND_DATA, encode_app([CORPUS[0]])))
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", receiver.port)) as sock:
            for _ in range(100):
                blob = bytearray(rng.randbytes(rng.randint(1, 200)))
                if rng.random() < 0.5:  # a plausible start, to reach the deeper paths
                    cut = bytearray(good)
                    cut[rng.randrange(2, len(cut))] = rng.randrange(256)
                    blob = cut[: rng.randint(3, len(cut))] + blob
                sock.sendall(bytes(blob))
    device = TransmissionDevice("127.0.0.1", receiver.port, confirm_timeout_s=2, resends=0)
    device.connect()
    try:
        reply = device.system_state(1, 1, 1)
        assert reply is not None and reply.command == Cmd.CONFIRM
    finally:
        device.close()
    assert sum(receiver.health()["bad_frames"].values()) > 0


def test_a_mapping_with_a_mistake_is_named() -> None:
    with pytest.raises(FireConfigError, match="kind 'toaster'"):
        parse_mapping(
            {"systems": [{"system_type": 1, "system_address": 1, "dev": "x-1", "kind": "toaster"}]},
            "m.toml",
            CAT,
        )
    with pytest.raises(FireConfigError, match="mapped twice"):
        row = {"system_type": 1, "system_address": 1, "dev": "fap-1", "kind": "fire_panel"}
        parse_mapping({"systems": [row, row]}, "m.toml", CAT)
    with pytest.raises(FireConfigError, match="analog metric 'level_pct'"):
        parse_mapping(
            {
                "components": [
                    {
                        "system_type": 1,
                        "system_address": 1,
                        "component_address": 1,
                        "dev": "h-1",
                        "kind": "fire_hydrant",
                        "analog": {"4": "level_pct"},
                    }
                ]
            },
            "m.toml",
            CAT,
        )


def test_a_silent_connection_is_closed_and_connections_are_bounded() -> None:
    rx = FireReceiver("t", "127.0.0.1", 0, MAPPING, CAT, max_connections=1, idle_timeout_s=0.5)
    try:
        first = socket.create_connection(("127.0.0.1", rx.port))
        first.settimeout(5)
        assert first.recv(100).startswith(b"@@")  # the clock sync: it was accepted
        second = socket.create_connection(("127.0.0.1", rx.port))
        second.settimeout(5)
        assert second.recv(100) == b""  # one connection at most: the second is closed
        second.close()
        deadline = time.monotonic() + 5
        while rx.health()["connections"] != 0:  # nothing said for 0.5 s: a dead link
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert first.recv(100) == b""
        first.close()
    finally:
        rx.close()
