"""The ``peershop`` command (click).  Only commands that work exist here."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click
from sqlalchemy import func, select

from devices.agent import agent_command
from firmware_bridge.bridge import bridge_command
from hub import __version__, systemd
from hub.admin.enrol import EnrolError, enrol_last_unknown, unknown_badges
from hub.admin.rebuild import compare, replace, replay
from hub.cli import ledger_cli, ops_cli
from hub.cli.context import Context, database, pass_ctx, setup_logging
from hub.cli.demo import demo_command
from hub.cli.web_cli import token_group, user_group
from hub.errors import PeershopError, ToolEditError
from hub.service.broker import PrivateBroker
from hub.service.service import Hub
from hub.shopfile.apply import apply_shop, is_change
from hub.shopfile.parse import parse_shop_file
from hub.shopfile.tool_admin import set_lock
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import Event
from hub.store.queries import counts
from web import serve_hub


class _Peershop(click.Group):
    """The top command: an error peershop raises on purpose (:class:`PeershopError`, from
    any layer) becomes click's ``Error: ...`` and exit status 1, not a traceback.  The
    layers raise their own errors and know nothing of click."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PeershopError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Peershop, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="PEERSHOP_CONFIG",
    help="TOML config (default ./peershop.toml, then /etc/peershop/peershop.toml).",
)
@click.option("--verbose", "-v", is_flag=True, help="Log debug detail.")
@click.version_option(__version__, prog_name="peershop")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """peershop: run a makerspace as a peer project."""
    ctx.obj = Context(config_path, verbose)


@main.command()
@click.option(
    "--private-broker",
    is_flag=True,
    help="Start a private Mosquitto in the data dir and use it (for trying peershop out).",
)
@pass_ctx
def run(ctx: Context, private_broker: bool) -> None:
    """The hub: MQTT ingest into the database, until Ctrl-C or SIGTERM."""
    setup_logging(ctx.verbose)
    cfg = ctx.config()
    broker = None
    try:
        if private_broker:
            broker = PrivateBroker(cfg.site.data_dir / "mosquitto").start()
            cfg = ctx.config(mqtt={"host": "127.0.0.1", "port": broker.port})
            click.echo(f"private Mosquitto on 127.0.0.1:{broker.port}", err=True)
        hub = Hub(cfg)
    except PeershopError as exc:
        if broker:
            broker.stop()
        raise click.ClickException(str(exc)) from None

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    hub.start()

    stop_web = serve_hub(hub, cfg.http.listen)
    click.echo(
        f"peershop {__version__} ingesting from {cfg.mqtt.host}:{cfg.mqtt.port} "
        f"into {hub.engine.url.render_as_string(hide_password=True)}",
        err=True,
    )
    try:
        # systemd (deploy/): READY once the broker has us, then the watchdog is fed for
        # as long as the write path lives.  A broker outage is not a reason to restart.
        if hub.wait_ready(30):
            systemd.ready()
        systemd.serve_until(stop, lambda: hub.ingest_alive)
    finally:
        systemd.stopping()
        click.echo("stopping: committing the batch in hand, publishing offline", err=True)
        stop_web()
        hub.stop()
        if broker:
            broker.stop()


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def stats(ctx: Context, as_json: bool) -> None:
    """Counts from the database; safe while the hub runs."""
    engine = make_engine(ctx.config().db.url)
    try:
        migrate(engine)
        with session_factory(engine)() as session:
            result = counts(session)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(result))
    else:
        for key, value in result.items():
            click.echo(f"{key:>14}  {value}")


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print what would change; change nothing.")
@pass_ctx
def load(ctx: Context, file: Path, dry_run: bool) -> None:
    """Load a shop file (members, tools, trainings, tasks, stations); idempotent."""
    try:
        shop = parse_shop_file(file)
    except PeershopError as exc:
        raise click.ClickException(str(exc)) from None
    cfg = ctx.config()
    engine = make_engine(cfg.db.url)
    try:
        migrate(engine)
        sm = session_factory(engine)
        with sm() as session, session.begin():
            try:
                changes = apply_shop(session, shop, discovery_prefix=cfg.homeassistant.prefix)
            except PeershopError as exc:  # references checked against the database
                raise click.ClickException(str(exc)) from None
            if dry_run:
                session.rollback()
    finally:
        engine.dispose()
    for line in changes:
        click.echo(line)
    verb = "would change" if dry_run else "changed"
    count = sum(map(is_change, changes))
    kept = len(changes) - count
    kept_note = f"; {kept} kept as set in Admin" if kept else ""
    click.echo(f"{count} {'change' if count == 1 else 'changes'} ({verb}{kept_note})", err=True)


@main.command()
@click.option("--reader", "reader", required=True, help="Device id of the reader tapped.")
@click.option("--member", "handle", help="Give the last unknown badge to this member.")
@pass_ctx
def enrol(ctx: Context, reader: str, handle: str | None) -> None:
    """Give a member the last unknown badge tapped at READER (without --member: list them)."""
    engine, sm = database(ctx)
    try:
        if handle is None:
            with sm() as session:
                found = unknown_badges(session, reader)
            if not found:
                raise click.ClickException(f"no unknown badge has been seen at {reader}")
            for badge in found:
                click.echo(f"{badge.uid}  seen {badge.at:%Y-%m-%d %H:%M:%S} UTC")
            return
        with sm.begin() as session:
            badge = enrol_last_unknown(session, reader, handle)
        click.echo(f"badge {badge.uid} (seen at {reader} {badge.at:%H:%M:%S} UTC) -> {handle}")
    except EnrolError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()


@main.group()
def tool() -> None:
    """Lock a tool for maintenance, or unlock it."""


def _set_lock(ctx: Context, tool_id: str, locked: bool) -> None:
    engine, sm = database(ctx)
    try:
        with sm.begin() as session:
            set_lock(session, tool_id, locked)
    except ToolEditError as exc:
        raise click.ClickException(exc.problems["tool"]) from None
    finally:
        engine.dispose()
    state = "locked: sessions end, badges are denied (locked_out)" if locked else "unlocked"
    click.echo(f"{tool_id} {state}; a running hub tells the tool within seconds")


@tool.command("lock")
@click.argument("tool_id")
@pass_ctx
def tool_lock(ctx: Context, tool_id: str) -> None:
    """Lock TOOL_ID: its session ends, its devices get `lock`, its allow-list empties."""
    _set_lock(ctx, tool_id, True)


@tool.command("unlock")
@click.argument("tool_id")
@pass_ctx
def tool_unlock(ctx: Context, tool_id: str) -> None:
    """Unlock TOOL_ID after maintenance."""
    _set_lock(ctx, tool_id, False)


@main.command()
@click.option(
    "--check", is_flag=True, help="Only compare with what is stored; exit 1 on a difference."
)
@pass_ctx
def rebuild(ctx: Context, check: bool) -> None:
    """Run the rules over the whole event log again (stop the hub first unless --check)."""

    engine, sm = database(ctx)
    try:
        with sm() as session:
            total = session.scalar(select(func.count(Event.id))) or 0
            with click.progressbar(length=total, label="replaying events", file=sys.stderr) as bar:
                rebuilt = replay(session, ctx.config(), progress=bar.update)
            report = compare(session, rebuilt.records)
        differs = False
        for kind, (stored, again, diff) in report.items():
            mark = "same" if not diff else "DIFFERENT"
            differs = differs or bool(diff)
            click.echo(f"{kind:>14}: stored {stored}, rebuilt {again}: {mark}")
            for example in diff:
                click.echo(f"{'':>16}{example}")
        if check:
            if differs:
                raise SystemExit(1)
            return
        if differs:
            with sm.begin() as session:
                replace(session, rebuilt.records)
            click.echo("stored records replaced by the rebuilt ones")
    finally:
        engine.dispose()


# Commands that live beside the code they drive.  Each module owns its command; this
# block only registers them, so adding one is a one-line change here.
def _register() -> None:
    main.add_command(ledger_cli.simulate_command)
    main.add_command(ops_cli.device_group)
    main.add_command(ops_cli.mosquitto_config_command)
    main.add_command(ops_cli.backup_command)
    main.add_command(ops_cli.restore_command)
    main.add_command(ops_cli.migrate_command)
    main.add_command(bridge_command)
    main.add_command(ledger_cli.period_group)
    main.add_command(ledger_cli.export_command)
    main.add_command(token_group)
    main.add_command(user_group)
    main.add_command(agent_command)
    main.add_command(demo_command)
    main.add_command(ops_cli.bridge_config_command)


_register()


if __name__ == "__main__":  # pragma: no cover
    main()
