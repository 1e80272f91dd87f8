from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from estatewatch.settings import Settings, SettingsError, describe, load_settings
from protocol.endpoint import EndpointError, parse_mqtt_url


def test_file_then_environment(tmp_path: Path) -> None:
    f = tmp_path / "estatewatch.toml"
    f.write_text('api_port = 9001\nmqtt_url = "mqtt://a:b@10.0.0.5:1884"\n')
    s = load_settings(f, environ={"ESTATEWATCH_API_PORT": "9002"})
    assert s.api_port == 9002
    assert s.mqtt_url == "mqtt://a:b@10.0.0.5:1884"
    assert load_settings(None, environ={}) == Settings()


def test_bad_settings_name_the_problem(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("api_prot = 1\n")
    with pytest.raises(SettingsError, match="unknown setting 'api_prot'"):
        load_settings(f, environ={})
    with pytest.raises(SettingsError, match=r"ESTATEWATCH_API_PORT.*whole number"):
        load_settings(None, environ={"ESTATEWATCH_API_PORT": "eighty"})
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "missing.toml", environ={})


def test_default_database_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    s = Settings(data_dir=str(tmp_path))
    assert s.state_database_url == f"sqlite:///{tmp_path / 'estatewatch.db'}"
    assert Settings(database_url="postgresql://x@h/db").state_database_url == "postgresql://x@h/db"


def test_mqtt_url() -> None:
    ep = parse_mqtt_url("mqtt://user:p%40ss@127.0.0.1:1884")
    assert (ep.host, ep.port, ep.username, ep.password, ep.tls) == (
        "127.0.0.1",
        1884,
        "user",
        "p@ss",
        False,
    )
    assert parse_mqtt_url("mqtts://broker.example").port == 8883
    assert "p@ss" not in ep.url
    with pytest.raises(EndpointError, match="mqtt://"):
        parse_mqtt_url("http://127.0.0.1")


def test_help_lists_every_setting() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "estatewatch.cli", "run", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for env, _default, _help in describe():
        assert env in out
    for required in (
        "ESTATEWATCH_MQTT_URL",
        "ESTATEWATCH_DATA_DIR",
        "ESTATEWATCH_DATABASE_URL",
        "ESTATEWATCH_API_HOST",
        "ESTATEWATCH_API_PORT",
        "ESTATEWATCH_ADMIN_TOKEN",
    ):
        assert required in out


def test_auto_cutoff_is_off_by_default_and_named_per_estate(tmp_path: Path) -> None:
    """(issue 13) A rule's action (the socket cut-off) is sent automatically only in the
    estates ``auto_cutoff`` names; the command time-out is bounded."""
    assert Settings().auto_cutoff_for("hohhot-xinhua") is False
    assert Settings().command_timeout_s == 30
    f = tmp_path / "estatewatch.toml"
    f.write_text('auto_cutoff = ["hohhot-xinhua", "hailar-beiyuan"]\ncommand_timeout_s = 10\n')
    s = load_settings(f, environ={})
    assert s.auto_cutoff_for("hailar-beiyuan") and not s.auto_cutoff_for("baotou-a")
    assert s.command_timeout_s == 10
    s = load_settings(None, environ={"ESTATEWATCH_AUTO_CUTOFF": "all"})
    assert s.auto_cutoff_for("baotou-a")
    with pytest.raises(SettingsError, match="command_timeout_s must be 1"):
        load_settings(None, environ={"ESTATEWATCH_COMMAND_TIMEOUT_S": "0"})


def test_timeseries_backend_is_named_with_its_url(tmp_path: Path) -> None:
    assert Settings().timeseries_backend == "sqlite" and Settings().raw_store_url == ""
    influx = Settings(influxdb_url="http://influx:8086")  # as before the setting existed
    assert (influx.timeseries_backend, influx.raw_store_url) == ("influxdb", "http://influx:8086")
    f = tmp_path / "estatewatch.toml"
    f.write_text('timeseries = "victoriametrics"\nvictoriametrics_url = "http://vm:8428"\n')
    vm = load_settings(f, environ={})
    assert (vm.timeseries_backend, vm.raw_store_url) == ("victoriametrics", "http://vm:8428")
    env = {"ESTATEWATCH_TIMESERIES": "victoriametrics"}
    with pytest.raises(SettingsError, match=r"needs victoriametrics_url.*VICTORIAMETRICS_URL"):
        load_settings(None, environ=env)
    with pytest.raises(SettingsError, match="timeseries must be one of"):
        load_settings(None, environ={"ESTATEWATCH_TIMESERIES": "prometheus"})
    sqlite = load_settings(
        None, environ={"ESTATEWATCH_TIMESERIES": "sqlite", "ESTATEWATCH_INFLUXDB_URL": "http://x"}
    )
    assert sqlite.raw_store_url == ""  # named explicitly: the local file, whatever else is set
