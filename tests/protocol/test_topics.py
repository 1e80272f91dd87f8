import pytest

from protocol.topics import (
    DEFAULT_ROOT,
    Channel,
    GatewayTopic,
    TopicError,
    alerts_topic,
    gateway_prefix,
    gateway_topic,
    is_valid_id,
    parse_gateway_topic,
    plans_topic,
    service_subscriptions,
)


@pytest.mark.parametrize("value", ["a", "0", "gw-01", "estate-7", "a" * 63, "9-", "b3-f12"])
def test_valid_ids(value: str) -> None:
    assert is_valid_id(value)


@pytest.mark.parametrize(
    "value",
    ["", "-a", "A", "gw_01", "Gw-01", "a" * 64, "a/b", "a+", "#", "a b", "a\n", "é", "a.b"],
)
def test_invalid_ids(value: str) -> None:
    assert not is_valid_id(value)


def test_default_root() -> None:
    assert DEFAULT_ROOT == "estates"


@pytest.mark.parametrize(
    ("channel", "expected"),
    [
        (Channel.TELEMETRY, "estates/e1/gw/gw-01/telemetry"),
        (Channel.EVENTS, "estates/e1/gw/gw-01/events"),
        (Channel.STATUS, "estates/e1/gw/gw-01/status"),
        (Channel.CMD, "estates/e1/gw/gw-01/cmd"),
        (Channel.CMD_ACK, "estates/e1/gw/gw-01/cmd/ack"),
    ],
)
def test_gateway_topic(channel: Channel, expected: str) -> None:
    assert gateway_topic("e1", "gw-01", channel) == expected


def test_gateway_topic_custom_root() -> None:
    assert gateway_topic("e1", "g", Channel.STATUS, root="prod/estates") == (
        "prod/estates/e1/gw/g/status"
    )


@pytest.mark.parametrize(("estate", "gw"), [("E1", "gw"), ("e1", "gw/x"), ("", "gw"), ("e", "+")])
def test_gateway_topic_rejects_bad_ids(estate: str, gw: str) -> None:
    with pytest.raises(TopicError, match="invalid"):
        gateway_topic(estate, gw, Channel.TELEMETRY)


def test_gateway_topic_rejects_unknown_channel() -> None:
    with pytest.raises(TopicError, match="unknown channel"):
        gateway_topic("e1", "g1", "alerts")  # type: ignore[arg-type]


@pytest.mark.parametrize("root", ["", "a/+", "#", "/estates", "estates/", "a//b"])
def test_bad_roots_rejected(root: str) -> None:
    with pytest.raises(TopicError, match="root"):
        gateway_topic("e1", "g1", Channel.TELEMETRY, root=root)
    with pytest.raises(TopicError, match="root"):
        service_subscriptions(root)


def test_gateway_prefix() -> None:
    assert gateway_prefix("e1", "gw-01") == "estates/e1/gw/gw-01/"
    assert gateway_topic("e1", "gw-01", Channel.CMD_ACK).startswith(gateway_prefix("e1", "gw-01"))
    with pytest.raises(TopicError):
        gateway_prefix("e1", "GW")


def test_alerts_and_plans_topics() -> None:
    assert alerts_topic("e1") == "estates/e1/alerts"
    assert plans_topic("e1") == "estates/e1/plans"
    assert alerts_topic("e1", root="x") == "x/e1/alerts"
    with pytest.raises(TopicError):
        alerts_topic("E1")
    with pytest.raises(TopicError):
        plans_topic("e/1")


@pytest.mark.parametrize("channel", list(Channel))
def test_parse_round_trip(channel: Channel) -> None:
    topic = gateway_topic("estate-9", "gw-02", channel)
    assert parse_gateway_topic(topic) == GatewayTopic("estate-9", "gw-02", channel)


def test_parse_custom_root() -> None:
    parsed = parse_gateway_topic("prod/estates/e1/gw/g1/cmd/ack", root="prod/estates")
    assert parsed == GatewayTopic("e1", "g1", Channel.CMD_ACK)
    assert parsed.channel is Channel.CMD_ACK


def test_parse_wrong_root_names_the_root() -> None:
    with pytest.raises(TopicError, match="not under root 'estates'"):
        parse_gateway_topic("other/e1/gw/g1/telemetry")
    # the root must match as whole levels
    with pytest.raises(TopicError, match="not under root"):
        parse_gateway_topic("estatesX/e1/gw/g1/telemetry")
    with pytest.raises(TopicError, match="not under root"):
        parse_gateway_topic("estates/e1/gw/g1/telemetry", root="prod")


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        ("estates/e1/gw/g1", "does not have the form"),
        ("estates/e1/gateway/g1/telemetry", "does not have the form"),
        ("estates/e1/alerts", "does not have the form"),
        ("estates/E1/gw/g1/telemetry", "invalid estate id 'E1'"),
        ("estates/e1/gw/g_1/telemetry", "invalid gateway id 'g_1'"),
        ("estates/e1/gw//telemetry", "invalid gateway id ''"),
        ("estates/e1/gw/g1/metrics", "unknown channel 'metrics'"),
        ("estates/e1/gw/g1/cmd/ack/x", "unknown channel 'cmd/ack/x'"),
        ("estates/e1/gw/g1/telemetry/", "unknown channel 'telemetry/'"),
        ("estates/e1/gw/g1/", "unknown channel ''"),
    ],
)
def test_parse_rejects_bad_topics(topic: str, message: str) -> None:
    with pytest.raises(TopicError, match=message.replace("(", r"\(")):
        parse_gateway_topic(topic)


def test_topic_error_is_value_error() -> None:
    with pytest.raises(ValueError):
        parse_gateway_topic("nope")


def test_service_subscriptions() -> None:
    assert service_subscriptions() == [
        "estates/+/gw/+/telemetry",
        "estates/+/gw/+/events",
        "estates/+/gw/+/status",
        "estates/+/gw/+/cmd/ack",
    ]
    assert service_subscriptions("prod/estates")[0] == "prod/estates/+/gw/+/telemetry"


def test_subscriptions_never_include_cmd() -> None:
    # The service publishes cmd; subscribing would make it receive its own commands.
    assert not any(f.endswith("/cmd") for f in service_subscriptions())
