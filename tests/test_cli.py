"""The peershop command: counts, and config errors that name the key."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from click.testing import CliRunner

from hub.cli import main
from hub.db import make_engine, migrate, session_factory
from hub.ingest import Inbound, store_batch
from hub.models import UsageSession
from tests.conftest import database_url
from tests.helpers import event_payload


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


def test_a_bad_config_stops_start_up_naming_the_key(tmp_path):
    config = tmp_path / "peershop.toml"
    config.write_text("[mqtt]\nport = 99999\n")
    result = CliRunner().invoke(main, ["--config", str(config), "stats"])
    assert result.exit_code != 0
    assert "mqtt.port" in result.output and "between 1 and 65535" in result.output
    result = CliRunner().invoke(main, ["stats"], env={"PEERSHOP_SITE_TIMEZONE": "Nowhere/City"})
    assert result.exit_code != 0 and "site.timezone" in result.output
