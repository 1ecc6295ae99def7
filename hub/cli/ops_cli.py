"""Operator commands: devices and their broker credentials, the broker's files, backups.

Registered on ``peershop`` by :func:`hub.cli._register`.  The broker's files live in
``<site.data_dir>/broker`` unless ``--out`` says otherwise; once that folder holds them,
``device add`` and ``device revoke`` rewrite them and make Mosquitto reload.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from sqlalchemy import select
from sqlalchemy.engine import make_url

from hub.admin.backup import backup, restore
from hub.admin.credentials import (
    BrokerSettings,
    add_account,
    is_broker_dir,
    load_settings,
    reload_broker,
    revoke_account,
    write_atomically,
    write_broker_files,
)
from hub.admin.sites import BRIDGE_FILE, INCLUDE_DIR, bridge_conf
from hub.errors import PeershopError
from hub.plugs import KINDS as PLUG_KINDS
from hub.store.db import current_revision, make_engine, migrate, session_factory
from hub.store.models import MqttAccount

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.orm import Session

    from hub.config import Config

BROKER_DIR_NAME = "broker"


def _config(obj: Any) -> Config:
    return obj.config()


def default_broker_dir(cfg: Config) -> Path:
    return Path(cfg.site.data_dir) / BROKER_DIR_NAME


@contextmanager
def _session(cfg: Config) -> Iterator[Session]:
    """One transaction on a migrated database; the engine is always disposed."""
    engine = make_engine(cfg.db.url)
    try:
        migrate(engine)
        with session_factory(engine).begin() as session:
            yield session
    finally:
        engine.dispose()


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


def _refresh_broker(session: Session, cfg: Config, out: Path | None, reload: bool) -> None:
    """Rewrite the broker files (if their folder is known) and signal Mosquitto."""
    outdir = out or default_broker_dir(cfg)
    if out is None and not is_broker_dir(outdir):
        click.echo(
            "no broker files to update (run `peershop mosquitto-config --out DIR` once, "
            "or pass --out DIR)",
            err=True,
        )
        return
    write_broker_files(session, cfg, outdir)
    click.echo(f"broker files updated in {outdir}", err=True)
    if not reload:
        return
    pid = reload_broker(outdir)
    if pid:
        click.echo(f"Mosquitto (pid {pid}) reloads them now", err=True)
    else:
        click.echo(
            "Mosquitto was not signalled (no running mosquitto in the pid file): "
            "run `sudo systemctl reload peershop-mosquitto`",
            err=True,
        )


_OUT = click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Broker folder to rewrite (default <site.data_dir>/broker, if it holds broker files).",
)
_RELOAD = click.option(
    "--reload/--no-reload", default=True, show_default=True, help="SIGHUP Mosquitto afterwards."
)


@click.group("device")
def device_group() -> None:
    """Devices and their MQTT credentials."""


def _plug_options(command: Any) -> Any:
    """One option per plug kind (``--tasmota TOPIC``, ``--shelly PREFIX``, …)."""
    for name, kind in reversed(PLUG_KINDS.items()):
        flag = "--" + name.replace("_", "-")
        what = f"A plug of kind {name}, with this {kind.ref_name} (docs/plugs.md)."
        metavar = kind.ref_name.split()[-1].upper()  # TOPIC, PREFIX
        command = click.option(flag, name, metavar=metavar, help=what)(command)
    return command


@device_group.command("add")
@click.argument("device_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help='Print {"id","username","password"}.')
@_plug_options
@click.option("--rotate", is_flag=True, help="Issue a new password for an existing device.")
@_OUT
@_RELOAD
@click.pass_obj
def device_add(
    obj: Any,
    device_id: str,
    as_json: bool,
    rotate: bool,
    out: Path | None,
    reload: bool,
    **plugs: str | None,
) -> None:
    """Register device ID and print its MQTT credentials (shown this once only)."""
    given = [(kind, topic) for kind, topic in plugs.items() if topic]
    if len(given) > 1:
        flags = " and ".join("--" + kind.replace("_", "-") for kind, _ in given)
        raise click.UsageError(f"{flags} exclude each other")
    kind, topic = given[0] if given else ("device", None)
    cfg = _config(obj)
    try:
        with _session(cfg) as session:
            creds = add_account(
                session,
                device_id,
                hub_username=cfg.mqtt.username,
                kind=kind,
                topic=topic,
                rotate=rotate,
                discovery_prefix=cfg.homeassistant.prefix,
            )
        # Committed first: the broker files then never name an account the database lacks.
        with _session(cfg) as session:
            _refresh_broker(session, cfg, out, reload)
    except PeershopError as exc:
        raise _fail(exc) from None
    if as_json:
        click.echo(creds.as_json())
        return
    click.echo(f"device {creds.id} registered; its MQTT credentials (shown only now):")
    click.echo(f"  username: {creds.username}")
    click.echo(f"  password: {creds.password}")


@device_group.command("revoke")
@click.argument("device_id", metavar="ID")
@_OUT
@_RELOAD
@click.pass_obj
def device_revoke(obj: Any, device_id: str, out: Path | None, reload: bool) -> None:
    """Take away device ID's access: its login is refused from the next broker reload."""
    cfg = _config(obj)
    try:
        with _session(cfg) as session:
            changed = revoke_account(session, device_id)
        with _session(cfg) as session:
            _refresh_broker(session, cfg, out, reload)
    except PeershopError as exc:
        raise _fail(exc) from None
    click.echo(f"device {device_id} {'revoked' if changed else 'was revoked already'}")


@device_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def device_list(obj: Any, as_json: bool) -> None:
    """MQTT accounts: who may log in to the broker, and who was revoked when."""

    with _session(_config(obj)) as session:
        rows = [
            {
                "username": a.username,
                "kind": a.kind,
                "topic": a.topic,
                "created_at": a.created_at.isoformat(),
                "revoked_at": a.revoked_at.isoformat() if a.revoked_at else None,
            }
            for a in session.scalars(select(MqttAccount).order_by(MqttAccount.username))
        ]
    if as_json:
        click.echo(json.dumps(rows))
        return
    for r in rows:
        state = f"revoked {r['revoked_at']}" if r["revoked_at"] else "active"
        topic = f" {r['topic']}" if r["topic"] else ""
        click.echo(f"{r['username']:<24} {r['kind']}{topic}  {state}")


@click.command("mosquitto-config")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for mosquitto.conf, the password file and the ACL.",
)
@click.option("--port", type=click.IntRange(1, 65535), help="Plain MQTT port (default 1883).")
@click.option("--bind", help="Address to listen on (default: every interface).")
@click.option("--tls-port", type=click.IntRange(1, 65535), help="Also listen with TLS here.")
@click.option("--tls-cert", type=click.Path(dir_okay=False), help="PEM certificate (chain).")
@click.option("--tls-key", type=click.Path(dir_okay=False), help="PEM private key.")
@click.option("--reload/--no-reload", default=False, help="SIGHUP the Mosquitto in OUT's pid file.")
@click.pass_obj
def mosquitto_config_command(
    obj: Any,
    out: Path,
    port: int | None,
    bind: str | None,
    tls_port: int | None,
    tls_cert: str | None,
    tls_key: str | None,
    reload: bool,
) -> None:
    """Write Mosquitto's config, passwords and ACL (docs/device-protocol.md) into OUT.

    Options not given keep the values of the previous run in OUT.
    """

    given = {
        "port": port,
        "bind": bind,
        "tls_port": tls_port,
        "tls_cert": tls_cert and str(Path(tls_cert).resolve()),
        "tls_key": tls_key and str(Path(tls_key).resolve()),
    }
    settings = replace(
        load_settings(out) or BrokerSettings(), **{k: v for k, v in given.items() if v}
    )
    cfg = _config(obj)
    try:
        with _session(cfg) as session:
            written = write_broker_files(session, cfg, out, settings)
    except PeershopError as exc:
        raise _fail(exc) from None
    for path in written:
        click.echo(str(path))
    if reload:
        pid = reload_broker(out)
        click.echo(
            f"Mosquitto (pid {pid}) reloads" if pid else "no running Mosquitto found", err=True
        )


@click.command("backup")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def backup_command(obj: Any, file: Path) -> None:
    """Back up the database to FILE (safe while the hub runs)."""
    cfg = _config(obj)
    try:
        kind = backup(cfg.db.url, file)
    except PeershopError as exc:
        raise _fail(exc) from None
    click.echo(f"{kind} backup written to {file} ({file.stat().st_size} bytes)", err=True)


@click.command("restore")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def restore_command(obj: Any, file: Path, yes: bool) -> None:
    """Replace the whole database with the backup FILE, then migrate it.

    Refused while a hub runs on the database: stop it first (`sudo systemctl stop
    peershop`, and every other site's hub on a shared PostgreSQL).
    """
    cfg = _config(obj)
    where = cfg.db.url
    if not yes:
        where = make_url(where).render_as_string(hide_password=True)
        click.confirm(f"Replace every table in {where} with {file}?", abort=True)
    try:
        restore(cfg.db.url, file)
    except PeershopError as exc:
        raise _fail(exc) from None
    click.echo(f"restored {file}; the schema is up to date", err=True)


@click.command("migrate")
@click.pass_obj
def migrate_command(obj: Any) -> None:
    """Bring the database schema to this version of peershop (keeps the data)."""
    engine = make_engine(_config(obj).db.url)
    try:
        before = current_revision(engine)
        migrate(engine)
        after = current_revision(engine)
    finally:
        engine.dispose()
    click.echo(f"schema {before or 'empty'} -> {after}" if before != after else f"schema {after}")


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


@click.command("bridge-config")
@click.option(
    "--central", required=True, help="The central broker as HOST:PORT (e.g. central.lan:8883)."
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The site broker's folder (that of `peershop mosquitto-config --out`).",
)
@click.option("--username", help="The bridge's login at the central broker.")
@click.option(
    "--password-file",
    type=click.File("r"),
    help="A file holding the bridge's password at the central broker (- for stdin).",
)
@click.option(
    "--cafile",
    type=click.Path(dir_okay=False, exists=True),
    help="CA of the central broker's TLS certificate: the bridge then uses TLS.",
)
@click.option(
    "--both/--out-only",
    default=False,
    help="Also bring the other sites' device traffic to this site (default: out only).",
)
@click.pass_obj
def bridge_config_command(
    obj: Any,
    central: str,
    out: Path,
    username: str | None,
    password_file: Any,
    cafile: str | None,
    both: bool,
) -> None:
    """Write the bridge of this site's broker (site.id) to the central broker.

    The file goes to OUT/conf.d/bridge-central.conf, which the mosquitto.conf written by
    `peershop mosquitto-config --out OUT` includes; run that (again) after this, then
    reload or restart Mosquitto.  See deploy/two-sites.md.
    """
    host, port = _host_port(central)
    password = password_file.read().strip() if password_file is not None else None
    if password and not username:
        raise click.UsageError("--password-file needs --username")
    site = obj.config().site.id
    text = bridge_conf(
        site,
        host,
        port,
        username=username,
        password=password,
        cafile=cafile,
        direction="both" if both else "out",
    )
    folder = Path(out) / INCLUDE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(folder / BRIDGE_FILE, text)  # 0600: it may hold a password
    click.echo(f"wrote {folder / BRIDGE_FILE} (site {site} to {host}:{port})")
