"""The demo's fire control room (simulators.transmission_device.FireRoom) through a real
GB/T 26875.3 receiver: a simulated detector's fire alarm and its end (issue 11) come out as the
catalog's fire.alarm and fire.reset of that detector, so its alarm closes in the demo too."""

from __future__ import annotations

from gateway.fire_receiver import FireReceiver
from protocol.catalog import default_catalog
from protocol.clock import now_ms
from protocol.messages import Event
from simulators.transmission_device import FireRoom, TransmissionDevice, fire_room_mapping
from tests.support import poll_until

CAT = default_catalog()


def test_a_detectors_alarm_and_its_reset_reach_the_gateway_as_the_detectors_events() -> None:
    mapping, where = fire_room_mapping([("fap-1", "fire_panel"), ("sd-1", "smoke_detector")])
    rx = FireReceiver("demo", "127.0.0.1", 0, mapping, CAT)
    room = FireRoom(TransmissionDevice("127.0.0.1", rx.port, confirm_timeout_s=1.0), where)
    room.start()
    try:
        t = now_ms()
        alarm = {"zone": "b1", "point": "sd-1", "status_word": 3}
        for ev in (
            Event("sd-1", "smoke_detector", t, "fire.alarm", alarm),
            Event("fap-1", "fire_panel", t + 500, "fire.alarm", alarm),
            Event("sd-1", "smoke_detector", t + 60_000, "fire.reset", {"point": "sd-1"}),
            Event("fap-1", "fire_panel", t + 60_000, "fire.reset", {"status_word": 1}),
        ):
            room.put_event(ev)
        got, _ = poll_until(rx, lambda g: len(g.events) >= 4, 10, 0.05)
        assert [(e.dev, e.type) for e in got.events] == [
            ("sd-1", "fire.alarm"),
            ("fap-1", "fire.alarm"),
            ("sd-1", "fire.reset"),  # its word's fire-alarm bit cleared (no reset bit there)
            ("fap-1", "fire.reset"),  # the panel's word: reset bit 13
        ]
        assert got.events[2].data["by"] == "restored"
        assert room.unconfirmed == 0
    finally:
        room.stop()
        rx.close()
