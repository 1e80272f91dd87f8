"""Which node a client of a clustered broker goes to, and when (pure: protocol/failover.py,
protocol/endpoint.py)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from estatewatch.cli import _parser
from estatewatch.estate_cli import _simulate_config
from estatewatch.settings import SettingsError, load_settings
from gateway.config import ConfigError, parse_gateway_config
from protocol.endpoint import EndpointError, parse_mqtt_url
from protocol.failover import Failover, hop

CLUSTER = "mqtt://svc:pw@a:1883,mqtt://b:1884,c:1885"


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def failover(url: str = CLUSTER, **kw: float) -> tuple[Failover, Clock]:
    clock = Clock()
    return Failover(parse_mqtt_url(url), rng=random.Random(7), clock=clock, **kw), clock


def test_a_cluster_address_names_its_nodes_in_order_with_one_login() -> None:
    ep = parse_mqtt_url(CLUSTER)
    assert ep.nodes == (("a", 1883), ("b", 1884), ("c", 1885))
    assert (ep.username, ep.password) == ("svc", "pw")
    assert ep.url == "mqtt://svc@a:1883,mqtt://svc@b:1884,mqtt://svc@c:1885"  # no password
    assert parse_mqtt_url(["mqtt://a:1", "mqtt://b:2"]).nodes == (("a", 1), ("b", 2))
    assert parse_mqtt_url("mqtts://a,b").nodes == (("a", 8883), ("b", 8883))
    assert parse_mqtt_url("mqtt://a:1883").nodes == (("a", 1883),)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mqtt://a:1,mqtts://b:2", "one scheme"),
        ("mqtt://u:p@a:1,mqtt://v:q@b:2", "one login"),
        ("mqtt://a:1,mqtt://a:1", "twice"),
        ("mqtt://a:1,http://b:2", "scheme"),
        (" , ", "empty"),
    ],
)
def test_a_cluster_address_that_cannot_work_is_refused(url: str, says: str) -> None:
    with pytest.raises(EndpointError, match=says):
        parse_mqtt_url(url)


def test_a_lost_node_is_followed_by_the_next_at_once_and_backoff_only_after_a_round() -> None:
    f, clock = failover(min_s=1.0, max_s=8.0)
    assert f.node == ("a", 1883)
    f.connected()
    clock.t += 60  # a connection that held
    visited, pauses = [], []
    for _ in range(9):  # three whole rounds of failures
        pauses.append(f.lost())
        visited.append(f.node[0])
    assert visited == ["b", "c", "a"] * 3
    hops = [p for i, p in enumerate(pauses) if i % 3 != 2]
    assert all(0 <= p <= 0.5 for p in hops)  # the next node, within half the minimum
    rounds = [pauses[2], pauses[5], pauses[8]]  # equal jitter: within [cap/2, cap]
    for pause, cap in zip(rounds, (1.0, 2.0, 4.0), strict=True):
        assert cap / 2 <= pause <= cap
    assert f.failovers == 9


def test_a_connection_that_held_starts_a_new_round_and_a_short_one_does_not() -> None:
    f, clock = failover(min_s=1.0, max_s=8.0, stable_s=10.0)
    for _ in range(3):
        f.lost()  # a round failed: the backoff grew once
    f.connected()
    clock.t += 2  # dropped soon after: still the same run of failures
    f.lost()
    f.lost()
    assert 1.0 <= f.lost() <= 2.0  # the second round's backoff step
    f.connected()
    clock.t += 10
    assert f.lost() <= 0.5  # held: the next node at once again
    assert f.lost() <= 0.5
    assert 0.5 <= f.lost() <= 1.0  # and the backoff starts over


def test_one_node_backs_off_on_every_loss_up_to_the_maximum() -> None:
    f, _ = failover("mqtt://only:1883", min_s=0.5, max_s=4.0)
    pauses = [f.lost() for _ in range(8)]
    assert f.node == ("only", 1883) and f.failovers == 0
    caps = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert all(c / 2 <= p <= c for p, c in zip(pauses, caps, strict=True))


def test_hop_points_a_paho_client_at_the_next_node_after_the_pause() -> None:
    addresses: list[tuple[str, int, int]] = []
    waits: list[tuple[int, int]] = []

    class Client:  # paho's reconnect loop: connect_async's address, reconnect_delay_set's wait
        def connect_async(self, host: str, port: int = 1883, keepalive: int = 60) -> None:
            addresses.append((host, port, keepalive))

        def reconnect_delay_set(self, min_delay: int = 1, max_delay: int = 120) -> None:
            waits.append((min_delay, max_delay))

    f, _ = failover()
    hop(Client(), f, 30)
    assert addresses == [("b", 1884, 30)]
    [(lo, hi)] = waits
    assert lo == hi and 0 <= lo <= 0.25
    assert f.node_url == "mqtt://svc@b:1884"


def test_the_settings_file_takes_the_nodes_as_a_list_and_the_environment_as_text(
    tmp_path: Path,
) -> None:
    f = tmp_path / "estatewatch.toml"
    f.write_text('mqtt_url = ["mqtt://svc:pw@a:1883", "mqtt://b:1883", "c:1885"]\n')
    s = load_settings(f, environ={})
    assert parse_mqtt_url(s.mqtt_url).nodes == (("a", 1883), ("b", 1883), ("c", 1885))
    env = {"ESTATEWATCH_MQTT_URL": "mqtt://a:1,mqtt://b:2"}
    assert parse_mqtt_url(load_settings(f, environ=env).mqtt_url).nodes == (("a", 1), ("b", 2))
    with pytest.raises(SettingsError, match=r"mqtt_url: .*one scheme"):
        load_settings(None, environ={"ESTATEWATCH_MQTT_URL": "mqtt://a:1,mqtts://b:2"})


def test_a_gateway_config_and_simulate_take_a_clusters_nodes(tmp_path: Path) -> None:
    doc = {
        "gateway": {"estate": "e1", "id": "gw-01"},
        "broker": {"url": ["mqtt://a:1883", "mqtt://b:1883"], "username": "e1.gw-01"},
    }
    cfg = parse_gateway_config(doc, "gw.toml", tmp_path)
    assert cfg.endpoint.nodes == (("a", 1883), ("b", 1883))
    assert cfg.endpoint.username == "e1.gw-01"
    with pytest.raises(ConfigError, match=r"broker\.url"):
        parse_gateway_config({**doc, "broker": {"url": [1, 2]}}, "gw.toml", tmp_path)
    args = _parser().parse_args(
        ["simulate", "--broker", "mqtt://a:1883,mqtt://b:1884", "--state-dir", str(tmp_path)]
    )
    assert _simulate_config(args).endpoint.nodes == (("a", 1883), ("b", 1884))


def test_up_from_a_connection_until_it_is_lost() -> None:
    f, _ = failover()
    assert not f.up
    f.connected()
    assert f.up
    f.lost()
    assert not f.up
