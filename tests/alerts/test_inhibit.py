"""What hides what: a gateway offline its devices' no-data alarms; maintenance the faults."""

from __future__ import annotations

from alerts.inhibit import Inhibitor, InhibitRule

RULES = (
    InhibitRule("gw", "no_data", gateway_offline=True),
    InhibitRule("mnt", "fault", kind="elevator", metric="mode", values=frozenset({"maintenance"})),
)


def test_gateway_offline_hides_no_data_of_its_devices_only() -> None:
    inh = Inhibitor(RULES)
    inh.observe_status("e1", "gw-01", online=False)
    assert inh.reason(frozenset({"no_data"}), "e1", "d1", "gw-01") is not None
    assert inh.reason(frozenset({"no_data"}), "e1", "d2", "gw-02") is None
    assert inh.reason(frozenset({"fault"}), "e1", "d1", "gw-01") is None
    inh.observe_status("e1", "gw-01", online=True)
    assert inh.reason(frozenset({"no_data"}), "e1", "d1", "gw-01") is None


def test_maintenance_mode_hides_the_same_devices_faults() -> None:
    inh = Inhibitor(RULES)
    inh.observe_reading("e1", "lift-1", "elevator", {"mode": "maintenance", "floor": 3})
    inh.observe_reading("e1", "lift-2", "elevator", {"mode": "normal"})
    assert inh.reason(frozenset({"fault"}), "e1", "lift-1", "gw") == "mnt: mode is maintenance"
    assert inh.reason(frozenset({"fault"}), "e1", "lift-2", "gw") is None
    assert inh.reason(frozenset(), "e1", "lift-1", "gw") is None  # trapped people still count
    inh.observe_reading("e1", "lift-1", "elevator", {"floor": 4})  # no mode: unchanged
    assert inh.reason(frozenset({"fault"}), "e1", "lift-1", "gw") is not None
