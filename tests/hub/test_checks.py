"""hub/checks.py: one vocabulary of checks, so every file says a bad value the same way."""

from datetime import timedelta

import pytest

from devices.agent_config import parse_agent_config
from hub import checks
from hub.config import load_config
from hub.errors import ConfigError, ScenarioError
from hub.peerconomy.scenario import parse_scenario


def test_a_bad_port_reads_the_same_in_the_hub_config_and_the_agent_config():
    with pytest.raises(ConfigError) as hub_error:
        load_config(None, env={"PEERSHOP_MQTT_PORT": "70000"}, search=())
    with pytest.raises(ConfigError) as agent_error:
        parse_agent_config({"id": "drill-node", "mqtt": {"port": 70000}})
    assert str(hub_error.value) == (
        "config key mqtt.port: must be a port between 1 and 65535, got '70000'"
    )
    assert str(agent_error.value) == (
        "config key agent.mqtt.port: must be a port between 1 and 65535, got 70000"
    )


def test_an_unknown_key_is_named_with_the_keys_there_are_in_every_file():
    with pytest.raises(ConfigError, match=r"mqtt\.prot: unknown key \(known: host, port, "):
        load_config(None, env={"PEERSHOP_MQTT_PROT": "1884"}, search=())
    with pytest.raises(ConfigError, match=r"agent\.mqtt\.prot: unknown key \(known: host, "):
        parse_agent_config({"id": "drill-node", "mqtt": {"prot": 1884}})
    with pytest.raises(ScenarioError, match=r"^modle: unknown key \(known: model, period, "):
        parse_scenario({"modle": "flat_rate"})


def test_a_host_with_a_space_is_refused_at_the_door():
    with pytest.raises(ConfigError, match=r"mqtt\.host: must be a host name or address"):
        load_config(None, env={"PEERSHOP_MQTT_HOST": "broker local"}, search=())
    with pytest.raises(ConfigError, match=r"agent\.mqtt\.host: must be a host name or address"):
        parse_agent_config({"id": "drill-node", "mqtt": {"host": ""}})


@pytest.mark.parametrize(
    ("check", "value", "reason"),
    [
        (checks.duration, "2 hours", "'2 hours' is not a duration such as 15m, 1h30m or 7d"),
        (checks.duration, "0s", "a duration must be positive"),
        (checks.integer(0), -1, "must not be negative, got -1"),
        (checks.integer(1), 0, "must be at least 1, got 0"),
        (checks.integer(5, 3600), 1.5, "must be a whole number, not 1.5"),
        (checks.integer(5, 3600), True, "must be a whole number, not true"),
        (checks.number(1, 10), float("nan"), "must be a number, not nan"),
        (checks.positive, 0, "must be positive, got 0"),
        (checks.flag, "maybe", "must be true or false, not 'maybe'"),
        (checks.choice(("tap", "card_present")), "hold", "must be one of tap, card_present"),
        (checks.text, "  ", "must be non-empty text, not '  '"),
    ],
)
def test_each_check_says_why(check, value, reason):
    with pytest.raises(ValueError) as err:
        check(value)
    assert str(err.value).startswith(reason)


def test_values_as_files_and_environment_variables_give_them():
    assert checks.duration("1h30m") == timedelta(minutes=90)
    assert checks.seconds(1.5) == 1.5
    assert checks.integer(5, 3600)("30") == 30
    assert checks.number(0, 10)("2.5") == 2.5
    assert (checks.flag("on"), checks.flag(False)) == (True, False)
    assert checks.port(1883) == 1883
