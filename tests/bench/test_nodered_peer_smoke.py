"""Bench 8 still runs: the service and the Node-RED flow drain the same tiny load from a real
Mosquitto, each is killed with SIGKILL and restarted, and the service loses nothing.

Node-RED is never downloaded here: the test runs only when it is already in the bench's cache
(``python -m bench.nodered_peer --install`` or one ``make bench`` puts it there), else it skips
and says so. No performance target is asserted (that is ``make bench``'s job).
"""

from __future__ import annotations

import shutil

import pytest

from bench import nodered_peer

pytestmark = pytest.mark.integration


def test_nodered_peer_runs_at_a_tiny_size() -> None:
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("bench 8 needs Node.js and npm (apt-get install nodejs npm)")
    if not nodered_peer.nodered_installed():
        pytest.skip(
            f"Node-RED {nodered_peer.NODE_RED} is not in {nodered_peer.nodered_dir()}; "
            "`.venv/bin/python -m bench.nodered_peer --install` puts it there (about 7 min, "
            "once); make test does not download it"
        )
    f = nodered_peer.run(total=3_000, one_reading_messages=300, pairs=1)
    for size, readings in ((500, 3_000), (1, 300)):
        s = f[f"r{size}"]
        assert s["messages"] == (readings + size - 1) // size
        # The service stores every reading of a drain; the flow is only reported.
        assert s["service_readings_stored"] == [readings]
        assert s["service_readings_per_s"] > 0 and s["flow_readings_per_s"] > 0
        assert s["service_peak_rss_mb"] > 0 and s["flow_peak_rss_mb"] > 0
        assert s["service_kill"]["readings_lost"] == 0, s["service_kill"]
        assert 0 <= s["flow_kill"]["readings_lost"] <= readings
    assert len(nodered_peer.targets(f)) == 6
