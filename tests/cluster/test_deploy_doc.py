"""docs/deploy.md stays true: its settings file loads as the service loads it (every key a real
setting, every value accepted), and the variables the region test starts its processes with
(tests/cluster/region.py) are settings too, so the guide and the test run the same thing."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from estatewatch.settings import ENV_PREFIX, Settings, env_name, load_settings
from tests.cluster.region import Region

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"


def test_the_guides_settings_file_loads(tmp_path: Path) -> None:
    blocks = re.findall(r"```toml\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1, "docs/deploy.md has one settings file"
    path = tmp_path / "estatewatch.toml"
    path.write_text(blocks[0], encoding="utf-8")
    settings = load_settings(path, {})
    assert settings.partitions == 256
    assert settings.timeseries_backend == "victoriametrics"
    assert 0 < 2 * settings.lease_renew_s < settings.lease_ttl_s


def test_the_region_tests_variables_are_settings(tmp_path: Path) -> None:
    """Region.env for a worker host (a stand-in for the network: only its address is read)."""
    hosts = SimpleNamespace(hosts={"w1": SimpleNamespace(address="10.0.0.13")})
    region = Region(hosts, "postgresql://postgres@10.0.0.11:5432/postgres", tmp_path, 16)  # type: ignore[arg-type]
    region.mqtt_url, region.tsdb_url = "mqtt://u:p@10.0.0.10:1883", "http://10.0.0.12:8428"
    try:
        env = region.env("w1")
    finally:
        region.client.close()
    known = {env_name(f) for f in Settings.__dataclass_fields__}
    ours = {k for k in env if k.startswith(ENV_PREFIX)}
    assert ours <= known, ours - known
    settings = load_settings(None, env)
    assert (settings.partitions, settings.worker_id) == (16, "w1")
    assert settings.timeseries_backend == "victoriametrics"
    assert settings.state_database_url.startswith("postgresql://")
