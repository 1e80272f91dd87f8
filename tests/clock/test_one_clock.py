"""One clock: data time never runs ahead of the wall clock (issue 13)."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from api.routes.estates import device_views, gateway_states
from estatewatch.broker import ManagedMosquitto
from estatewatch.demo import DEMO_SPEED, catch_up_clock
from estatewatch.settings import SettingsError, load_settings
from ingest.consumer import Ingest
from ingest.pipeline import judge
from ingest.state import StateStore
from ingest.telemetry import TelemetryWriter
from protocol.catalog import default_catalog
from protocol.messages import encode_status

CAT = default_catalog()
NOW = 1_764_316_800_000
HOUR = 3_600_000


class _Registry:
    def has_estate(self, estate: str) -> bool:
        return estate == "e1"

    def has_gateway(self, estate: str, gw: str) -> bool:
        return (estate, gw) == ("e1", "gw-01")


def test_the_demo_clock_ends_the_storm_at_now_and_is_never_ahead() -> None:
    """Before: the demo started the storm now and ran it at ×40, so after 10 minutes its data
    was 6.5 h ahead of the wall clock."""
    duration = 12 * HOUR
    t = [0.0]
    wall0 = NOW
    clock = catch_up_clock(duration, DEMO_SPEED, wall0)
    clock._monotonic = lambda: t[0]
    clock._t0 = 0.0
    fast_phase_s = duration / DEMO_SPEED / 1000
    for s in [0, 1, 60, 600, fast_phase_s / 2, fast_phase_s - 1, fast_phase_s, fast_phase_s + 3600]:
        t[0] = s
        wall = wall0 + int(s * 1000)
        assert clock.now_ms() <= wall + 1, s
    t[0] = 0.0
    assert wall0 - clock.now_ms() == duration - int(duration / DEMO_SPEED)  # the storm's start
    t[0] = fast_phase_s
    assert abs(clock.now_ms() - (wall0 + int(fast_phase_s * 1000))) <= 1  # caught up
    t[0] = fast_phase_s + 600
    assert abs(clock.now_ms() - (wall0 + int((fast_phase_s + 600) * 1000))) <= 1  # real time


def _reading(ts: int) -> bytes:
    return orjson.dumps(
        {
            "v": 1,
            "gw": "gw-01",
            "seq": 1,
            "sent": NOW,
            "readings": [
                {"dev": "h-1", "kind": "fire_hydrant", "ts": ts, "m": {"pressure_mpa": 0.3}}
            ],
        }
    )


def test_a_reading_beyond_the_allowed_skew_is_dead_lettered_not_stored() -> None:
    """Before: a reading up to a day ahead was stored, and the charts, last-seen times and
    durations ran on it. The service allows a small skew (5 min by default)."""
    topic = "estates/e1/gw/gw-01/telemetry"
    skew = 5 * 60_000
    ok = judge(topic, _reading(NOW + skew - 1000), NOW, _Registry(), CAT, max_future_ms=skew)
    assert ok.batch is not None and len(ok.batch.readings) == 1 and not ok.dead_letters
    ahead = judge(topic, _reading(NOW + HOUR), NOW, _Registry(), CAT, max_future_ms=skew)
    assert ahead.reading_count == 0
    [letter] = ahead.dead_letters
    assert letter.reason == "future_timestamp"
    assert "limit 300000 ms" in letter.detail
    # The contract's day stays the hard limit whatever is configured.
    far = judge(topic, _reading(NOW + 25 * HOUR), NOW, _Registry(), CAT, max_future_ms=10**12)
    assert far.dead_letters and far.dead_letters[0].reason == "future_timestamp"
    event = orjson.dumps(
        {
            "v": 1,
            "gw": "gw-01",
            "seq": 2,
            "sent": NOW,
            "events": [
                {"dev": "l-1", "kind": "elevator", "ts": NOW + HOUR, "type": "elevator.trapped"}
            ],
        }
    )
    ev = judge("estates/e1/gw/gw-01/events", event, NOW, _Registry(), CAT, max_future_ms=skew)
    assert [d.reason for d in ev.dead_letters] == ["future_timestamp"]


def test_the_skew_setting_is_bounded_by_the_contract(tmp_path: Path) -> None:
    assert load_settings(environ={}).max_clock_skew_s == 300
    assert load_settings(environ={"ESTATEWATCH_MAX_CLOCK_SKEW_S": "60"}).max_clock_skew_s == 60
    with pytest.raises(SettingsError, match="one day"):
        load_settings(environ={"ESTATEWATCH_MAX_CLOCK_SKEW_S": "90000"})
    with pytest.raises(SettingsError, match="late_after_s"):
        load_settings(environ={"ESTATEWATCH_LATE_AFTER_S": "0"})


def test_devices_of_a_gateway_replaying_its_backlog_are_online() -> None:
    """A live gateway whose data is hours old (a backlog, a replay) still has its devices
    online; one device it stopped hearing falls behind its gateway and is offline."""
    interval = CAT.kinds["fire_hydrant"].interval_s * 1000
    devs = [
        {"id": "h-1", "kind": "fire_hydrant", "gateway": "g"},
        {"id": "h-2", "kind": "fire_hydrant", "gateway": "g"},
    ]
    old = NOW - 6 * HOUR
    latest = {
        "h-1": {"pressure_mpa": (old, 0.3)},
        "h-2": {"pressure_mpa": (old - 10 * interval, 0.3)},
    }
    gws = [{"id": "g", "state": "online", "state_ms": NOW - 30_000}]
    offline, live = gateway_states(gws, NOW)
    views = {v["id"]: v["online"] for v in device_views(CAT, devs, latest, offline, NOW, live)}
    assert views == {"h-1": True, "h-2": False}
    # A gateway not heard from for long: the wall clock decides, as before.
    stale = [{"id": "g", "state": "online", "state_ms": NOW - HOUR}]
    offline, live = gateway_states(stale, NOW)
    views = {v["id"]: v["online"] for v in device_views(CAT, devs, latest, offline, NOW, live)}
    assert views == {"h-1": False, "h-2": False}


def started_ingest(
    mosquitto: ManagedMosquitto, tmp_path: Path
) -> tuple[StateStore, TelemetryWriter, Ingest]:
    """Ingest on the broker, its state knowing gateway gw-01 of estate e1."""
    state = StateStore.open(f"sqlite:///{tmp_path / 's.db'}")
    state.add_estate("e1", "E1", "")
    state.add_gateway("e1", "gw-01", "")
    writer = TelemetryWriter(tmp_path / "t.db")
    ingest = Ingest(mosquitto.endpoint, state, writer, CAT)
    ingest.start()
    return state, writer, ingest


@pytest.mark.integration
def test_a_gateways_offline_time_is_when_it_dropped_not_its_last_connect(
    mosquitto: ManagedMosquitto, tmp_path: Path
) -> None:
    """The Last Will is set at connect time and carries that time; the service records the
    drop when the broker announces it."""
    state, writer, ingest = started_ingest(mosquitto, tmp_path)
    try:
        ep = mosquitto.endpoint
        gw = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw-01", clean_session=True)
        if ep.username:
            gw.username_pw_set(ep.username, ep.password)
        connected_ms = time.time_ns() // 1_000_000
        gw.will_set(
            "estates/e1/gw/gw-01/status", encode_status("gw-01", "offline", connected_ms), 1, True
        )
        gw.connect(ep.host, ep.port, keepalive=60)
        gw.loop_start()
        time.sleep(2.0)
        gw.loop_stop()
        dropped_ms = time.time_ns() // 1_000_000
        gw.socket().close()  # vanishes without DISCONNECT: the broker sends the will
        deadline = time.monotonic() + 15
        g = state.list_gateways("e1")[0]
        while g["state"] != "offline" and time.monotonic() < deadline:
            time.sleep(0.1)
            g = state.list_gateways("e1")[0]
        assert g["state"] == "offline"
        assert g["state_ms"] >= dropped_ms - 100, (g["state_ms"], connected_ms, dropped_ms)
    finally:
        ingest.stop()
        writer.close()
        state.close()


@pytest.mark.integration
def test_a_device_is_registered_when_first_heard_not_at_its_datas_time(
    mosquitto: ManagedMosquitto, tmp_path: Path
) -> None:
    """Its uptime in the yearly report counts from then: a replay of last January must not
    make a device registered today count as down since January."""
    state, writer, ingest = started_ingest(mosquitto, tmp_path)
    try:
        creds = mosquitto.issue_gateway_credentials("e1", "gw-01", "estates")
        assert creds is not None
        gw = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw-01")
        gw.username_pw_set(creds.username, creds.password)
        gw.connect(creds.host, creds.port)
        gw.loop_start()
        before = time.time_ns() // 1_000_000
        old = before - 300 * 24 * HOUR
        payload = orjson.dumps(
            {
                "v": 1,
                "gw": "gw-01",
                "seq": 1,
                "sent": before,
                "readings": [
                    {"dev": "h-1", "kind": "fire_hydrant", "ts": old, "m": {"pressure_mpa": 0.3}}
                ],
            }
        )
        gw.publish("estates/e1/gw/gw-01/telemetry", payload, qos=1).wait_for_publish(10)
        deadline = time.monotonic() + 15
        while not state.list_devices("e1") and time.monotonic() < deadline:
            time.sleep(0.05)
        gw.loop_stop()
        gw.disconnect()
        (dev,) = state.list_devices("e1")
        assert dev["first_seen_ms"] >= before
    finally:
        ingest.stop()
        writer.close()
        state.close()


def test_simulate_fast_forward_from_the_past_stops_at_now() -> None:
    from datetime import UTC, datetime

    from estatewatch.estate_cli import simulator_adapter
    from gateway.config import ConfigError

    wall = time.time_ns() // 1_000_000
    start = wall - HOUR

    text = datetime.fromtimestamp(start / 1000, UTC).isoformat()
    adapter = simulator_adapter({"type": "simulator", "start": text, "speed": 100}, "test")
    clock = adapter.clock
    assert clock.fast_until_ms is not None
    # where simulated time meets the wall clock: an hour's gap closed at ×100 in ~36 s
    assert abs(clock.fast_until_ms - (start + HOUR * 100 / 99)) < 2000
    future = datetime.fromtimestamp((wall + HOUR) / 1000, UTC).isoformat()
    with pytest.raises(ConfigError, match="future"):
        simulator_adapter({"type": "simulator", "start": future}, "test")
