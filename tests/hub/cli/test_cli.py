"""The peershop command: counts, config errors that name the key, and a hub that says
so when its database holds no shop."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from hub.cli import main
from hub.store.db import make_engine, migrate, session_factory
from hub.store.ingest import Inbound, store_batch
from hub.store.models import UsageSession
from tests.conftest import database_url
from tests.helpers import event_payload, hub_process, peershop_command, wait_for, web_base


def test_stats_counts_what_is_stored(tmp_path):
    url = database_url(tmp_path, "p.db")
    engine = make_engine(url)
    migrate(engine)
    now = datetime.now(UTC)
    with session_factory(engine).begin() as session:
        store_batch(
            session,
            [Inbound("peershop/dev/a/event", event_payload(1, s), now) for s in range(3)]
            + [Inbound("peershop/dev/a/event", b"junk", now)]
            + [Inbound("peershop/dev/b/status", b'{"state":"online","boot":1}', now)],
        )
        session.add(UsageSession(key="k", tool_id="saw", member="ada", start=now))
    engine.dispose()
    result = CliRunner().invoke(main, ["stats", "--json"], env={"PEERSHOP_DB_URL": url})
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "events": 3,
        "dead_letters": 1,
        "devices": 2,
        "devices_online": 1,
        "devices_pending": 2,
        "sessions_open": 1,
    }


def test_locking_a_tool_that_does_not_exist_names_it(tmp_path):
    """``peershop tool lock`` and Admin's Lock button share one function; a typo in the
    id is an error that names it, and changes nothing."""
    url = database_url(tmp_path, "p.db")
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    result = CliRunner().invoke(main, ["tool", "lock", "lazer-1"], env={"PEERSHOP_DB_URL": url})
    assert result.exit_code == 1
    assert "no tool with id 'lazer-1'" in result.output


def test_a_bad_config_stops_start_up_naming_the_key(tmp_path):
    config = tmp_path / "peershop.toml"
    config.write_text("[mqtt]\nport = 99999\n")
    result = CliRunner().invoke(main, ["--config", str(config), "stats"])
    assert result.exit_code != 0
    assert "mqtt.port" in result.output and "between 1 and 65535" in result.output
    result = CliRunner().invoke(main, ["stats"], env={"PEERSHOP_SITE_TIMEZONE": "Nowhere/City"})
    assert result.exit_code != 0 and "site.timezone" in result.output


def test_a_typo_in_db_url_stops_run_instead_of_making_an_empty_database(tmp_path: Path):
    """Issue 13, item 14: a SQLite URL naming a folder that does not exist made that folder
    and an empty database in it, and the hub then denied every badge."""
    typo = tmp_path / "var" / "lib" / "peershp"  # the operator meant .../peershop
    config = tmp_path / "peershop.toml"
    config.write_text(f'[db]\nurl = "sqlite:///{typo / "peershop.db"}"\n')
    result = peershop_command(config, "run", timeout=60)  # before: it ran on, on an empty shop
    assert result.returncode != 0
    assert "config key db.url" in result.stderr and str(typo) in result.stderr
    assert not (tmp_path / "var").exists()


def health(config: Path) -> tuple[int, dict[str, Any]]:
    """``GET /healthz`` of the hub running with ``config``: status and body."""
    try:
        with urllib.request.urlopen(web_base(config) + "/healthz", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


SHOP = """
members:
  - {handle: ada, name: Ada L., badges: ["04A1B2C3D4E5F6"]}
tools:
  - {id: laser-1, name: Laser cutter, devices: [laser-node]}
"""


def test_run_on_an_empty_database_says_so_in_the_log_and_healthz(tmp_path: Path, broker):
    """Issue 13, item 14: a hub on a database that holds no members denies every badge;
    it says so at start and on /healthz (503) until a shop file is loaded."""
    config, hub = hub_process(tmp_path, broker.port, database_url(tmp_path / "data"))
    hub.start(broker.port)
    try:
        status, body = health(config)
        assert status == 503, body
        assert "no members" in body["reason"] and "db.url" in body["reason"]
        log = (tmp_path / "hub.log").read_text()
        assert "ERROR" in log and "no members" in log
        shop = tmp_path / "shop.yaml"
        shop.write_text(SHOP)
        loaded = peershop_command(config, "load", str(shop))
        assert loaded.returncode == 0, loaded.stderr
        wait_for(lambda: health(config)[0] == 200, 30, "healthz ok once the shop is loaded")
    finally:
        assert hub.terminate() == 0
