"""Config: TOML plus environment overrides, checked at the door."""

from datetime import timedelta
from pathlib import Path

import pytest

from hub.config import load_config, parse_duration
from hub.errors import ConfigError


def test_defaults_follow_the_contract(tmp_path):
    cfg = load_config(None, env={}, search=())
    assert cfg.mqtt.host == "127.0.0.1" and cfg.mqtt.port == 1883
    assert cfg.http.listen == ("127.0.0.1", 8080)
    assert cfg.period.length == timedelta(days=7)
    assert cfg.period.anchor[0] == 0  # Monday
    assert cfg.db.url == f"sqlite:///{Path('data').resolve() / 'peershop.db'}"


def test_file_then_environment_override(tmp_path):
    path = tmp_path / "peershop.toml"
    path.write_text(
        '[mqtt]\nport = 1884\nhost = "broker.local"\n[site]\ntimezone = "Europe/Berlin"\n'
    )
    cfg = load_config(path, env={"PEERSHOP_MQTT_PORT": "1999", "PEERSHOP_SITE_DATA_DIR": "/srv/x"})
    assert cfg.mqtt.port == 1999
    assert cfg.mqtt.host == "broker.local"
    assert str(cfg.site.timezone) == "Europe/Berlin"
    assert cfg.db.url == "sqlite:////srv/x/peershop.db"
    assert cfg.source == path


def test_search_order_finds_the_first_existing_file(tmp_path):
    second = tmp_path / "etc.toml"
    second.write_text('[http]\nlisten = "0.0.0.0:9000"\n')
    cfg = load_config(None, env={}, search=(tmp_path / "missing.toml", second))
    assert cfg.http.listen == ("0.0.0.0", 9000)


@pytest.mark.parametrize(
    ("toml", "env", "key"),
    [
        ("[mqtt]\nport = 70000\n", {}, "mqtt.port"),
        ('[mqtt]\nport = "abc"\n', {}, "mqtt.port"),
        ("", {"PEERSHOP_MQTT_PORT": "0"}, "mqtt.port"),
        ('[site]\ntimezone = "Mars/Olympus"\n', {}, "site.timezone"),
        ('[period]\nlength = "a week"\n', {}, "period.length"),
        ('[period]\nanchor = "someday 10:00"\n', {}, "period.anchor"),
        ('[http]\nlisten = "8080"\n', {}, "http.listen"),
        ('[db]\nurl = "mysql://x/y"\n', {}, "db.url"),
        # a typo in the folder made a new, empty database (issue 13, item 14)
        ('[db]\nurl = "sqlite:////nonexistent/peershp/peershop.db"\n', {}, "db.url"),
        ('[period]\nmin_length = "soon"\n', {}, "period.min_length"),
        ("[mqtt]\nprot = 1\n", {}, "mqtt.prot"),
        ('[mqtt]\npassword = "s"\n', {}, "mqtt.username"),
        ('[mqtt]\ntls_ca = "/nonexistent/ca.pem"\n', {}, "mqtt.tls_ca"),
        ("", {"PEERSHOP_MQTT_HOSTNAME": "x"}, "mqtt.hostname"),
        ("[webserver]\nport = 1\n", {}, "webserver"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_key(tmp_path, toml, env, key):
    path = tmp_path / "peershop.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env)
    assert info.value.key == key
    assert key in str(info.value)


def test_invalid_toml_names_the_file(tmp_path):
    path = tmp_path / "peershop.toml"
    path.write_text("[mqtt\nport = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path, env={})


def test_missing_explicit_config_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})


def test_other_tools_peershop_variables_are_not_ours_to_judge():
    cfg = load_config(None, env={"PEERSHOP_CONFIG": "/x.toml", "PEERSHOP_TEST_PG": "y"}, search=())
    assert cfg.mqtt.port == 1883


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", 604800), ("15m", 900), ("1h30m", 5400), ("500ms", 0.5), (90, 90), ("2w", 1209600)],
)
def test_durations(text, seconds):
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "soon", "5 parsecs", "-5m", "0s", "1h junk"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_kiosk_networks_from_toml_or_environment(tmp_path):
    path = tmp_path / "peershop.toml"
    path.write_text('[http]\nkiosk_networks = ["10.0.5.20", "192.168.7.0/24"]\n')
    assert load_config(path, env={}).http.kiosk_networks == ("10.0.5.20", "192.168.7.0/24")
    env = {"PEERSHOP_HTTP_KIOSK_NETWORKS": "10.0.5.20, 10.0.6.0/24"}
    assert load_config(None, env=env, search=()).http.kiosk_networks == ("10.0.5.20", "10.0.6.0/24")
    with pytest.raises(ConfigError, match=r"http\.kiosk_networks"):
        load_config(None, env={"PEERSHOP_HTTP_KIOSK_NETWORKS": "the wall"}, search=())
