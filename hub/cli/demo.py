"""``peershop demo``: a whole simulated shop on one machine.

A private Mosquitto on a free port (unless ``mqtt.host`` is configured), a fresh SQLite
database in a temporary folder (or ``--data DIR``), the demo shop of
``examples/shop.yaml``, the hub in-process, the web view on ``http.listen`` (or
``--port``), and the simulated devices of :mod:`devices.simulators`.  Ctrl-C or SIGTERM
stops everything cleanly.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import tomllib
from pathlib import Path
from typing import Any

import click
from sqlalchemy import select

from devices.simulators import ShopSimulation
from hub.cli.context import setup_logging
from hub.contract.allowlist import public_key_b64
from hub.errors import PeershopError
from hub.service.broker import PrivateBroker
from hub.service.service import Hub
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop_file
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import Member
from hub.store.queries import counts
from web import create_app
from web.auth import set_password
from web.serve import serve_in_thread

log = logging.getLogger(__name__)

SHOP_FILE = Path(__file__).resolve().parents[2] / "examples" / "shop.yaml"

# Web logins for trying the demo's pages, one of each role (README, Quick start).  The
# demo's database is a throwaway on the demo's own machine; a real shop sets its
# passwords with `peershop user password`.
DEMO_LOGINS = (("dana", "member"), ("ada", "trainer"), ("farah", "coordinator"))
DEMO_PASSWORD = "peershop-demo"


def _set_demo_passwords(sm: Any) -> None:
    with sm.begin() as session:
        for handle, _role in DEMO_LOGINS:
            member = session.scalars(select(Member).where(Member.handle == handle)).one()
            set_password(session, member, DEMO_PASSWORD)


def _broker_configured(source: Path | None) -> bool:
    """Whether the user named a broker (file or environment); otherwise the demo brings one."""
    if os.environ.get("PEERSHOP_MQTT_HOST"):
        return True
    if source is None:
        return False
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return "host" in raw.get("mqtt", {})


def port_taken(host: str, port: int) -> bool:
    """Whether another program listens on ``host:port``, so a server cannot bind it
    (with SO_REUSEADDR, as waitress and Mosquitto bind: a closed connection's TIME_WAIT
    does not count)."""
    if port == 0:
        return False  # any free port
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def _counts(engine: Any) -> dict[str, int]:
    with session_factory(engine)() as session:
        return counts(session)


@click.command("demo")
@click.option("--speed", default=60.0, show_default=True, help="Simulated time runs this fast.")
@click.option("--port", type=int, help="Web port (default: from http.listen).")
@click.option("--mqtt-port", type=int, help="Port of the private Mosquitto (default: free).")
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the demo's database here (default: a temporary folder, removed at exit).",
)
@click.option("--seed", type=int, help="Make the members' behaviour repeatable.")
@click.pass_obj
def demo_command(
    ctx: Any,
    speed: float,
    port: int | None,
    mqtt_port: int | None,
    data_dir: Path | None,
    seed: int | None,
) -> None:
    """A simulated shop: broker, hub, web view and devices producing live traffic."""
    if speed <= 0:
        raise click.BadParameter("must be positive", param_hint="--speed")
    setup_logging(ctx.verbose)
    if not ctx.verbose:
        for noisy in ("hub", "devices", "firmware_bridge", "web", "waitress"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    temp = data_dir is None
    data = Path(tempfile.mkdtemp(prefix="peershop-demo-")) if temp else data_dir
    data.mkdir(parents=True, exist_ok=True)
    base = ctx.config()
    overrides: dict[str, dict[str, Any]] = {
        "site": {"data_dir": str(data)},
        "db": {"url": f"sqlite:///{data.resolve() / 'peershop.db'}"},
    }
    if port is not None:
        overrides["http"] = {"listen": f"{base.http.listen[0]}:{port}"}
    # before anything starts: one line that says what to do, not a traceback
    web_host, web_port = base.http.listen[0], base.http.listen[1] if port is None else port
    if port_taken(web_host, web_port):
        raise click.ClickException(
            f"port {web_port} is taken by another program: give the demo another with "
            f"--port (./dev start --port {web_port + 1})"
        )
    if mqtt_port is not None and port_taken("127.0.0.1", mqtt_port):
        raise click.ClickException(
            f"port {mqtt_port} is taken by another program: give the demo's Mosquitto "
            "another with --mqtt-port, or leave it out for a free one"
        )
    broker = None
    hub = sim = stop_web = None
    stop = threading.Event()
    try:
        if not _broker_configured(base.source):
            broker = PrivateBroker(data / "mosquitto", port=mqtt_port).start()
            overrides["mqtt"] = {"host": "127.0.0.1", "port": broker.port}
        cfg = ctx.config(**overrides)
        engine = make_engine(cfg.db.url)
        migrate(engine)
        with session_factory(engine).begin() as session:
            apply_shop(session, parse_shop_file(SHOP_FILE))
        engine.dispose()
        hub = Hub(cfg)
        hub.start()
        if not hub.wait_ready(30):
            raise PeershopError(f"the hub could not reach {cfg.mqtt.host}:{cfg.mqtt.port}")
        _set_demo_passwords(hub.sm)
        stop_web = serve_in_thread(
            create_app(hub=hub),  # its [http] settings come from the hub's config
            cfg.http.listen,
            threads=cfg.http.threads,
            streams=cfg.http.streams,
        )
        host, web_port = stop_web.address  # type: ignore[attr-defined]
        url = f"http://{host}:{web_port}/"
        sim = ShopSimulation(
            cfg.mqtt.port,
            data / "devices",
            speed=speed,
            mqtt_host=cfg.mqtt.host,
            seed=seed,
            public_key=public_key_b64(hub.signing_key),
            on_note=(lambda text: click.echo(f"  · {text}")) if ctx.verbose else None,
        ).start()
    except (PeershopError, OSError) as exc:
        for part in (sim, hub):
            if part is not None:
                part.close() if part is sim else part.stop()
        if stop_web:
            stop_web()
        if broker:
            broker.stop()
        if temp:
            shutil.rmtree(data, ignore_errors=True)
        raise click.ClickException(str(exc)) from None

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    where = "private Mosquitto" if broker else "Mosquitto"
    click.echo(f"peershop demo: {where} on {cfg.mqtt.host}:{cfg.mqtt.port}")
    click.echo(f"  database   {data / 'peershop.db'}{' (temporary)' if temp else ''}")
    click.echo(f"  shop       {SHOP_FILE} (14 members, 7 tools, 10 tasks, 2 projects)")
    click.echo(
        "  devices    door-reader, desk-reader, drill-node, laser-node, saw-node (agents), "
        "lathe-node (serial node via bridge), Tasmota laser_extractor and printer2_plug, "
        "Shelly shellyplugs-printer1 and shellyplus1pm-compressor"
    )
    click.echo(f"  speed      simulated time x{speed:g}")
    if url:
        click.echo(f"  web        {url}")
        logins = ", ".join(f"{handle} ({role})" for handle, role in DEMO_LOGINS)
        click.echo(f"  log in as  {logins}; password {DEMO_PASSWORD}")
    else:
        click.echo("  web        not available in this build: live counts follow")
    click.echo("Ctrl-C stops the demo.")
    try:
        while not stop.wait(5.0):
            c = _counts(hub.engine)
            click.echo(
                f"events {c['events']}  devices {c['devices']}  sessions open "
                f"{c['sessions_open']}  signed in {len(sim.signed_in)}  "
                f"dead letters {c['dead_letters']}"
            )
    finally:
        click.echo("stopping the demo", err=True)
        sim.close()
        if stop_web:
            stop_web()
        hub.stop()
        if broker:
            broker.stop()
        if temp:
            shutil.rmtree(data, ignore_errors=True)
