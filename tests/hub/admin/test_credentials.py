"""Device credentials and the broker files: what `peershop device` and
`peershop mosquitto-config` give an operator (docs/configuration.md, docs/device-protocol.md)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from hub.admin.credentials import (
    Credentials,
    mosquitto_hash,
    reload_broker,
    render_acl,
    verify_password,
)
from hub.cli import main
from hub.store.db import make_engine, session_factory
from hub.store.models import Device, MqttAccount
from tests.conftest import database_url

HUB_USER = "peershop-hub"
HUB_PASSWORD = "hub-secret-for-tests"


def write_ops_config(
    tmp_path: Path,
    *,
    port: int = 1883,
    db_url: str | None = None,
    password: str | None = HUB_PASSWORD,
) -> Path:
    """A peershop.toml for the operator commands: a data dir, a database, the hub login."""
    data = tmp_path / "data"
    lines = ["[site]", f'data_dir = "{data}"', "[db]", f'url = "{db_url or database_url(data)}"']
    lines += ["[mqtt]", 'host = "127.0.0.1"', f"port = {port}", f'username = "{HUB_USER}"']
    if password:
        lines.append(f'password = "{password}"')
    path = tmp_path / "peershop.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def peershop(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), *args], catch_exceptions=False)


def add_device(config: Path, device_id: str, *args: str) -> Credentials:
    result = peershop(config, "device", "add", device_id, "--json", *args)
    assert result.exit_code == 0, result.output
    return Credentials(**json.loads(result.stdout))


def accounts(db_url: str) -> dict[str, MqttAccount]:
    engine = make_engine(db_url)
    try:
        with session_factory(engine)() as session:
            return {a.username: a for a in session.scalars(select(MqttAccount))}
    finally:
        engine.dispose()


def password_users(broker_dir: Path) -> set[str]:
    text = (broker_dir / "passwords").read_text()
    return {line.split(":", 1)[0] for line in text.splitlines() if line}


@pytest.fixture
def ops(tmp_path: Path) -> Path:
    return write_ops_config(tmp_path)


def db_of(config: Path) -> str:
    return database_url(config.parent / "data")


# -- the password hash -------------------------------------------------------------------


def test_hash_is_what_mosquitto_passwd_writes(tmp_path: Path):
    tool = shutil.which("mosquitto_passwd")
    assert tool, "mosquitto_passwd is part of the mosquitto package the hub needs"
    file = tmp_path / "pw"
    subprocess.run([tool, "-c", "-b", str(file), "laser-node", "s3cret pass"], check=True)
    line = file.read_text().strip()
    user, encoded = line.split(":", 1)
    _, kind, iterations, salt, _digest = encoded.split("$")
    assert (user, kind, iterations) == ("laser-node", "7", "101")

    import base64

    ours = mosquitto_hash("s3cret pass", salt=base64.b64decode(salt))
    assert ours == encoded
    assert verify_password("s3cret pass", encoded)
    assert not verify_password("s3cret pasS", encoded)


def test_every_hash_has_its_own_salt():
    a, b = mosquitto_hash("same"), mosquitto_hash("same")
    assert a != b
    assert verify_password("same", a) and verify_password("same", b)


# -- device add / revoke -------------------------------------------------------------------


def test_device_add_prints_credentials_once_and_keeps_only_a_hash(ops: Path):
    creds = add_device(ops, "laser-node")
    assert creds.id == creds.username == "laser-node"
    assert len(creds.password) >= 24

    stored = accounts(db_of(ops))["laser-node"]
    assert stored.password_hash.startswith("$7$101$")
    assert verify_password(creds.password, stored.password_hash)

    if db_of(ops).startswith("sqlite"):
        # The plaintext is nowhere on disk: not in the database, not in its WAL.
        files = list((ops.parent / "data").glob("peershop.db*"))
        assert files
        assert all(creds.password.encode() not in f.read_bytes() for f in files)

    engine = make_engine(db_of(ops))
    try:
        with session_factory(engine)() as session:
            assert session.get(Device, "laser-node").approval == "approved"
    finally:
        engine.dispose()


def test_device_add_without_json_is_readable(ops: Path):
    result = peershop(ops, "device", "add", "door-reader")
    assert result.exit_code == 0
    assert "username: door-reader" in result.stdout
    assert "password: " in result.stdout


def test_adding_a_device_twice_needs_rotate_and_rotation_replaces_the_password(ops: Path):
    first = add_device(ops, "lathe-node")
    again = peershop(ops, "device", "add", "lathe-node", "--json")
    assert again.exit_code != 0
    assert "--rotate" in again.output
    assert again.stdout == ""  # no credentials printed for a refused add

    second = add_device(ops, "lathe-node", "--rotate")
    assert second.password != first.password
    stored = accounts(db_of(ops))["lathe-node"]
    assert verify_password(second.password, stored.password_hash)
    assert not verify_password(first.password, stored.password_hash)


@pytest.mark.parametrize(
    ("device_id", "message"),
    [
        ("Laser_Node", "invalid"),
        ("laser.node", "invalid"),
        ("a" * 64, "invalid"),
        ("peershop/dev", "invalid"),
        (HUB_USER, "mqtt.username"),
    ],
)
def test_device_add_refuses_ids_the_broker_or_contract_cannot_take(
    ops: Path, device_id: str, message: str
):
    result = peershop(ops, "device", "add", device_id, "--json")
    assert result.exit_code != 0
    assert message in result.output
    assert accounts(db_of(ops)) == {}


def test_revoke_marks_the_device_and_keeps_the_record(ops: Path):
    add_device(ops, "laser-node")
    result = peershop(ops, "device", "revoke", "laser-node")
    assert result.exit_code == 0
    assert "revoked" in result.stdout
    stored = accounts(db_of(ops))["laser-node"]
    assert stored.revoked_at is not None
    engine = make_engine(db_of(ops))
    try:
        with session_factory(engine)() as session:
            assert session.get(Device, "laser-node").approval == "revoked"
    finally:
        engine.dispose()

    again = peershop(ops, "device", "revoke", "laser-node")
    assert again.exit_code == 0
    assert "already" in again.stdout

    unknown = peershop(ops, "device", "revoke", "no-such-node")
    assert unknown.exit_code != 0
    assert "no-such-node" in unknown.output


def test_a_revoked_device_can_be_added_again_with_new_credentials(ops: Path):
    first = add_device(ops, "laser-node")
    assert peershop(ops, "device", "revoke", "laser-node").exit_code == 0
    second = add_device(ops, "laser-node")
    stored = accounts(db_of(ops))["laser-node"]
    assert stored.revoked_at is None
    assert verify_password(second.password, stored.password_hash)
    assert not verify_password(first.password, stored.password_hash)


def test_device_list_shows_who_may_log_in(ops: Path):
    add_device(ops, "laser-node")
    add_device(ops, "laser-plug", "--tasmota", "laser_plug")
    peershop(ops, "device", "revoke", "laser-node")
    rows = json.loads(peershop(ops, "device", "list", "--json").stdout)
    by_name = {r["username"]: r for r in rows}
    assert by_name["laser-node"]["revoked_at"] is not None
    assert by_name["laser-plug"] == {
        **by_name["laser-plug"],
        "kind": "tasmota",
        "topic": "laser_plug",
    }
    assert by_name["laser-plug"]["revoked_at"] is None


# -- the broker files ----------------------------------------------------------------------


def test_mosquitto_config_writes_conf_passwords_and_acl(ops: Path, tmp_path: Path):
    laser = add_device(ops, "laser-node")
    out = tmp_path / "broker"
    result = peershop(ops, "mosquitto-config", "--out", str(out), "--port", "1999")
    assert result.exit_code == 0, result.output

    conf = (out / "mosquitto.conf").read_text().splitlines()
    for line in (
        "allow_anonymous false",
        "use_username_as_clientid true",
        "persistence true",
        "max_packet_size 1048576",
        "max_queued_messages 500000",
        "max_queued_bytes 67108864",
        "set_tcp_nodelay true",
        "listener 1999",
        f"password_file {out.resolve() / 'passwords'}",
        f"acl_file {out.resolve() / 'acl'}",
    ):
        assert line in conf
    assert any(line.startswith("autosave_interval ") for line in conf)

    passwords = dict(
        line.split(":", 1) for line in (out / "passwords").read_text().splitlines() if line
    )
    assert set(passwords) == {HUB_USER, "laser-node"}
    assert verify_password(HUB_PASSWORD, passwords[HUB_USER])
    assert verify_password(laser.password, passwords["laser-node"])

    # Hashes and config are the broker's secrets: nobody else may read them.
    for name in ("passwords", "acl", "mosquitto.conf"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600


def test_mosquitto_config_needs_the_hubs_own_password(tmp_path: Path):
    config = write_ops_config(tmp_path, password=None)
    result = peershop(config, "mosquitto-config", "--out", str(tmp_path / "broker"))
    assert result.exit_code != 0
    assert "mqtt.password" in result.output
    assert not (tmp_path / "broker" / "passwords").exists()


def test_device_changes_rewrite_the_broker_files_and_keep_the_listener(ops: Path):
    broker_dir = ops.parent / "data" / "broker"
    # Before the operator has generated broker files there is nothing to update...
    before = peershop(ops, "device", "add", "early-node", "--json")
    assert "no broker files" in before.stderr
    assert not broker_dir.exists()

    assert (
        peershop(ops, "mosquitto-config", "--out", str(broker_dir), "--port", "1999").exit_code == 0
    )
    assert password_users(broker_dir) == {HUB_USER, "early-node"}

    # ...afterwards every add and revoke rewrites them, with the same listener.
    add_device(ops, "laser-node")
    assert password_users(broker_dir) == {HUB_USER, "early-node", "laser-node"}
    assert peershop(ops, "device", "revoke", "early-node").exit_code == 0
    assert password_users(broker_dir) == {HUB_USER, "laser-node"}
    assert "user early-node" not in (broker_dir / "acl").read_text()
    assert "listener 1999" in (broker_dir / "mosquitto.conf").read_text().splitlines()


def test_tls_listener_needs_cert_and_key(ops: Path, tmp_path: Path):
    out = tmp_path / "broker"
    partial = peershop(ops, "mosquitto-config", "--out", str(out), "--tls-port", "8883")
    assert partial.exit_code != 0
    assert "--tls-cert" in partial.output

    cert, key = tmp_path / "hub.crt", tmp_path / "hub.key"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    args = ["--tls-port", "8883", "--tls-cert", str(cert), "--tls-key", str(key)]
    full = peershop(ops, "mosquitto-config", "--out", str(out), *args)
    assert full.exit_code == 0, full.output
    conf = (out / "mosquitto.conf").read_text().splitlines()
    tls = conf[conf.index("listener 8883") :]
    assert f"certfile {cert.resolve()}" in tls
    # Mosquitto 2.0 binds client ids to logins per listener: on both, right after each
    plain = conf.index("listener 1883")
    assert conf[plain + 1] == tls[1] == "use_username_as_clientid true"
    assert f"keyfile {key.resolve()}" in tls
    assert "listener 1883" in conf  # the plain listener stays for devices without TLS


def test_acl_lets_a_device_write_only_its_own_topics_and_read_only_its_own_commands():
    device = MqttAccount(username="laser-node", kind="device", topic=None, password_hash="x")
    plug = MqttAccount(username="laser-plug", kind="tasmota", topic="laser_plug", password_hash="x")
    shelly = MqttAccount(username="saw-plug", kind="shelly", topic="shelly-saw", password_hash="x")
    acl = render_acl(HUB_USER, [device, plug, shelly], [("shelly", "bench/shelly-drill")])
    blocks = {b.splitlines()[0]: b.splitlines()[1:] for b in acl.split("\n\n") if "user " in b}
    blocks = {k.removeprefix("user "): v for k, v in blocks.items() if k.startswith("user ")}
    assert blocks["laser-node"] == [
        "topic write peershop/dev/laser-node/event",
        "topic write peershop/dev/laser-node/status",
        "topic read peershop/dev/laser-node/cmd",
        "topic read peershop/dev/laser-node/allowlist",
        "topic read peershop/hub/status",
    ]
    assert blocks["laser-plug"] == [
        "topic write tele/laser_plug/#",
        "topic write stat/laser_plug/#",
        "topic read cmnd/laser_plug/#",
    ]
    assert blocks["saw-plug"] == ["topic readwrite shelly-saw/#"]
    hub = blocks[HUB_USER]
    for topic in ("peershop/#", "tele/#", "cmnd/#", "homeassistant/#"):
        assert f"topic readwrite {topic}" in hub
    assert "topic readwrite shelly-saw/#" in hub
    assert "topic readwrite bench/shelly-drill/#" in hub


def test_plug_topics_cannot_smuggle_wildcards_into_the_acl(ops: Path):
    for bad in ("#", "tele/+", "a b", "$SYS", "x\ntopic readwrite #"):
        result = peershop(ops, "device", "add", "sneaky-plug", "--tasmota", bad)
        assert result.exit_code != 0, bad
    assert accounts(db_of(ops)) == {}


def test_the_broker_limits_come_from_the_broker_section(tmp_path: Path):
    config = write_ops_config(tmp_path)
    with config.open("a") as f:
        f.write("[broker]\nmax_packet_size = 400000\nmax_queued_messages = 2000\n")
        f.write('max_queued_bytes = 8000000\n[homeassistant]\nprefix = "ha"\n')
    out = tmp_path / "broker"
    assert peershop(config, "mosquitto-config", "--out", str(out)).exit_code == 0
    conf = (out / "mosquitto.conf").read_text().splitlines()
    for line in ("max_packet_size 400000", "max_queued_messages 2000", "max_queued_bytes 8000000"):
        assert line in conf
    # the hub may publish discovery under the configured prefix, and no longer elsewhere
    acl = (out / "acl").read_text().splitlines()
    assert "topic readwrite ha/#" in acl and "topic readwrite homeassistant/#" not in acl


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--shelly", "peershop"), "'peershop' overlaps peershop/"),
        (("--shelly", "peershop/dev/laser-node"), "overlaps peershop/"),
        (("--shelly", "homeassistant"), "overlaps homeassistant/"),
        (("--shelly", "ha/switch"), "overlaps ha/"),  # the configured discovery prefix
        (("--shelly", "tele"), "'tele' overlaps tele/"),
        (("--shelly", "cmnd/laser_plug"), "overlaps cmnd/"),
        (("--tasmota", "tele"), "'tele' overlaps tele/"),
        (("--tasmota", "cmnd"), "overlaps cmnd/"),
        (("--tasmota", "homeassistant"), "overlaps homeassistant/"),
        (("--shelly", "shelly-saw"), "overlaps Shelly prefix 'shelly-saw' of plug saw-plug"),
        (("--shelly", "shelly-saw/1"), "overlaps Shelly prefix 'shelly-saw' of plug saw-plug"),
        (("--shelly", "bench"), "overlaps Shelly prefix 'bench/drill' bound to tool drill"),
        (("--tasmota", "laser_plug"), "'laser_plug' of plug laser-plug"),
    ],
)
def test_a_plug_topic_may_not_reach_reserved_topics_or_another_plugs(
    ops: Path, args: tuple[str, str], named: str
):
    with ops.open("a") as f:
        f.write('[homeassistant]\nprefix = "ha"\n')
    add_device(ops, "saw-plug", "--shelly", "shelly-saw")
    add_device(ops, "laser-plug", "--tasmota", "laser_plug")
    shop = ops.parent / "shop.yaml"
    shop.write_text("tools:\n  - {id: drill, name: Drill, devices: [{shelly: bench/drill}]}\n")
    assert peershop(ops, "load", str(shop)).exit_code == 0
    before = accounts(db_of(ops))

    result = peershop(ops, "device", "add", "sneaky-plug", *args)
    assert result.exit_code != 0
    assert named in result.output and repr(args[1]) in result.output
    assert accounts(db_of(ops)).keys() == before.keys()  # nothing written


def test_the_same_plug_bound_in_the_shop_file_gets_its_login(ops: Path):
    shop = ops.parent / "shop.yaml"
    shop.write_text("tools:\n  - {id: saw, name: Saw, devices: [{shelly: shelly-saw}]}\n")
    assert peershop(ops, "load", str(shop)).exit_code == 0
    add_device(ops, "saw-plug", "--shelly", "shelly-saw")
    add_device(ops, "saw-plug", "--shelly", "shelly-saw", "--rotate")  # its own topic again


def test_a_stored_plug_with_a_reserved_topic_gets_no_acl_lines(
    ops: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """An account written before such topics were refused: the next rewrite fences it."""
    engine = make_engine(db_of(ops))
    try:
        with session_factory(engine).begin() as session:
            session.add(
                MqttAccount(username="old-plug", kind="shelly", topic="peershop", password_hash="x")
            )
    finally:
        engine.dispose()
    out = tmp_path / "broker"
    assert peershop(ops, "mosquitto-config", "--out", str(out)).exit_code == 0
    acl = (out / "acl").read_text()
    assert "old-plug" not in acl  # not listed: denied everything
    assert "old-plug:" in (out / "passwords").read_text()  # its login just reaches nothing
    assert "plug old-plug may use no topic" in caplog.text
    assert "'peershop' overlaps peershop/" in caplog.text


def test_reload_never_signals_a_process_that_is_not_mosquitto(tmp_path: Path):
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        (tmp_path / "mosquitto.pid").write_text(f"{bystander.pid}\n")
        assert reload_broker(tmp_path) is None
        assert bystander.poll() is None  # SIGHUP would have ended it
        (tmp_path / "mosquitto.pid").write_text("not a pid\n")
        assert reload_broker(tmp_path) is None
        os.unlink(tmp_path / "mosquitto.pid")
        assert reload_broker(tmp_path) is None
    finally:
        assert bystander.stdin is not None
        bystander.stdin.close()
        bystander.wait(10)
