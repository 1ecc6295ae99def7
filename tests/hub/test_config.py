"""Config: TOML plus environment overrides, checked at the door."""

from dataclasses import fields
from datetime import timedelta
from pathlib import Path
from types import UnionType
from typing import get_args, get_origin, get_type_hints

import pytest

from hub.checks import duration as parse_duration
from hub.config import SCHEMA, load_config
from hub.contract.mqtt import MqttSettings
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


def test_broker_limits_and_the_power_range_have_pi_sized_defaults():
    cfg = load_config(None, env={}, search=())
    broker = cfg.broker
    assert (broker.max_packet_size, broker.max_queued_messages) == (1 << 20, 500_000)
    assert broker.max_queued_bytes == 64 << 20
    assert (cfg.ingest.min_power_w, cfg.ingest.max_power_w) == (0.0, 100_000.0)
    assert cfg.ingest.max_wh_total == 1e10
    wide = load_config(None, env={"PEERSHOP_INGEST_MIN_POWER_W": "-5"}, search=())
    assert wide.ingest.min_power_w == -5.0  # a plug that reads a little below zero


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
        ("[broker]\nmax_packet_size = 4096\n", {}, "broker.max_packet_size"),
        ("[broker]\nmax_queued_messages = 0\n", {}, "broker.max_queued_messages"),
        ("", {"PEERSHOP_BROKER_MAX_QUEUED_BYTES": "0"}, "broker.max_queued_bytes"),
        (
            "[broker]\nmax_packet_size = 4000000\nmax_queued_bytes = 2000000\n",
            {},
            "broker.max_queued_bytes",
        ),
        ("[ingest]\nmax_power_w = 0\n", {}, "ingest.max_power_w"),
        ("[ingest]\nmin_power_w = 200000\n", {}, "ingest.min_power_w"),
        ('[ingest]\nmax_wh_total = "lots"\n', {}, "ingest.max_wh_total"),
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


def test_the_web_views_limits_and_its_proxy_are_checked_at_the_door(tmp_path):
    http = load_config(None, env={}, search=()).http
    assert (http.max_body_bytes, http.streams_per_client, http.trusted_proxies) == (65536, 4, ())
    assert http.kiosk_idle == timedelta(minutes=2)
    path = tmp_path / "peershop.toml"
    path.write_text('[http]\ntrusted_proxies = ["127.0.0.1"]\nkiosk_idle = "90s"\n')
    http = load_config(path, env={}).http
    assert http.trusted_proxies == ("127.0.0.1",) and http.kiosk_idle == timedelta(seconds=90)
    env = {"PEERSHOP_HTTP_TRUSTED_PROXIES": "127.0.0.1, 10.0.9.0/24"}
    assert load_config(None, env=env, search=()).http.trusted_proxies == (
        "127.0.0.1",
        "10.0.9.0/24",
    )
    for key, value, reason in (
        ("TRUSTED_PROXIES", "the proxy", "is not an address or network"),
        ("MAX_BODY_BYTES", "100", "must be between 1024 and 16777216"),
        ("STREAMS_PER_CLIENT", "0", "must be between 1 and 1024"),
        ("KIOSK_IDLE", "5s", "must be between 10s and 1h"),
        ("KIOSK_IDLE", "soon", "is not a duration"),
    ):
        with pytest.raises(ConfigError, match=rf"http\.{key.lower()}: .*{reason}"):
            load_config(None, env={f"PEERSHOP_HTTP_{key}": value}, search=())


def test_every_section_holds_values_of_the_types_it_declares(tmp_path):
    """The sections are typed dataclasses: what the parsers return is what callers get."""
    path = tmp_path / "peershop.toml"
    path.write_text(
        '[mqtt]\nusername = "hub"\npassword = "secret"\n'
        '[http]\nkiosk_networks = ["10.0.5.20/32"]\nstreams = 8\n'
    )
    cfg = load_config(path, env={}, search=())
    for section in fields(cfg):
        if section.name == "source":
            continue
        value = getattr(cfg, section.name)
        hints = get_type_hints(type(value))
        assert set(hints) == set(SCHEMA[section.name])
        for key, hint in hints.items():
            allowed = get_args(hint) if get_origin(hint) is UnionType else (hint,)
            classes = tuple(get_origin(t) or t for t in allowed)
            assert isinstance(getattr(value, key), classes), f"{section.name}.{key}"


def test_the_mqtt_section_gives_the_links_settings():
    cfg = load_config(None, env={"PEERSHOP_MQTT_KEEPALIVE": "60"}, search=())
    assert cfg.mqtt.settings() == MqttSettings(host="127.0.0.1", port=1883, keepalive=60)
