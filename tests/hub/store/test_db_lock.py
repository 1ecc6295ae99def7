"""Issue 13, item 9: `peershop restore` under a running hub, and allow-list versions that
rolled back with a restore.

A restore ran while a hub ran on the same database (memory and tables disagreed from
then on), and a restored hub counted its allow-list versions on from the backup's, below
what the devices held: they refused its lists, revocations included, until their own
expired (up to 7 days).  Both run here against real processes: `peershop run`,
`peershop restore`, a real agent, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from devices.agent import Agent
from hub.contract.allowlist import load_or_create_key, public_key_b64, uid_allowed
from hub.service.service import Hub
from hub.store.db import make_engine, session_factory
from hub.store.db_lock import DatabaseInUseError, hold_for_restore, hub_holds
from hub.store.models import Member
from tests.conftest import make_config
from tests.devices.test_agent import agent_config
from tests.helpers import hub_process, peershop_command, wait_for

BOB, CY = "5E2A9C11", "8A11F0C3"
SHOP = f"""
members:
  - {{handle: bob, name: Bob K., badges: ["{BOB}"]}}
tools:
  - {{id: drill, name: Drill press, devices: [drill-node], policy: tap}}
"""
# later, after the backup: a new member at the drill
SHOP_WITH_CY = SHOP.replace("tools:", f'  - {{handle: cy, name: Cy D., badges: ["{CY}"]}}\ntools:')


def members(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        with session_factory(engine)() as s:
            return sorted(s.scalars(select(Member.handle)))
    finally:
        engine.dispose()


def test_restore_is_refused_while_a_hub_runs_but_not_after_it_was_killed(
    tmp_path: Path, broker, db_url: str
):
    config, hub = hub_process(tmp_path, broker.port, db_url, SHOP)
    backup = tmp_path / "before-cy.backup"
    assert peershop_command(config, "backup", str(backup)).returncode == 0
    shop = tmp_path / "shop.yaml"
    shop.write_text(SHOP_WITH_CY)
    assert peershop_command(config, "load", str(shop)).returncode == 0
    hub.start(broker.port)
    try:
        refused = peershop_command(config, "restore", str(backup), "--yes")
        assert refused.returncode != 0
        assert "a hub is running on this database" in refused.stderr, refused.stderr
        assert "Nothing was changed" in refused.stderr
        if not db_url.startswith("sqlite"):  # PostgreSQL names the hub
            assert "peershop hub main" in refused.stderr, refused.stderr
        assert members(db_url) == ["bob", "cy"]  # the hub's database is as it was
    finally:
        hub.kill()  # SIGKILL: no clean stop releases anything
    # the operating system (SQLite's flock) or the server (PostgreSQL's session) drops
    # a killed hub's hold: no stale lock blocks the restore
    wait_for(lambda: not hub_holds(db_url), 30, "the killed hub's hold dropped")
    done = peershop_command(config, "restore", str(backup), "--yes")
    assert done.returncode == 0, done.stderr
    assert members(db_url) == ["bob"]


def site_hub(tmp_path: Path, broker, db_url: str, site: str) -> Hub:
    cfg = make_config(
        tmp_path / site, broker, db_url, site={"id": site}, mqtt={"client_id": f"hub-{site}"}
    )
    return Hub(cfg)


def test_no_hub_starts_while_a_restore_holds_the_database(tmp_path: Path, broker, db_url: str):
    with hold_for_restore(db_url), pytest.raises(DatabaseInUseError, match="restore"):
        site_hub(tmp_path, broker, db_url, "main")
    hubs = [site_hub(tmp_path, broker, db_url, site) for site in ("main", "south")]
    try:
        for hub in hubs:  # the hubs of several sites share the hold
            hub.start()
            assert hub.wait_ready(10)
        assert hub_holds(db_url)
        hubs.pop().stop()
        assert hub_holds(db_url)  # the other hub still runs
    finally:
        for hub in hubs:
            hub.stop()
    assert not hub_holds(db_url)


def test_a_restored_hub_s_allowlists_reach_an_agent_that_held_a_newer_one(
    tmp_path: Path, broker, db_url: str
):
    config, hub = hub_process(tmp_path, broker.port, db_url, SHOP)
    hub.start(broker.port)
    key = public_key_b64(load_or_create_key(tmp_path / "data" / "hub-signing.key"))
    agent = Agent(
        agent_config(tmp_path, broker.port, "drill-node", tool="drill", hub={"public_key": key})
    ).start()
    try:
        wait_for(lambda: agent.allowlist is not None, 15, "the hub's first list")
        first = agent.allowlist["version"]
        backup = tmp_path / "nightly.backup"
        assert peershop_command(config, "backup", str(backup)).returncode == 0
        shop = tmp_path / "shop.yaml"
        shop.write_text(SHOP_WITH_CY)
        assert peershop_command(config, "load", str(shop)).returncode == 0
        wait_for(lambda: uid_allowed(agent.allowlist, CY), 15, "the list with Cy")
        newer = agent.allowlist["version"]
        assert newer > first

        assert hub.terminate() == 0
        restored = peershop_command(config, "restore", str(backup), "--yes")
        assert restored.returncode == 0, restored.stderr
        hub.start(broker.port)
        # the restored hub's list (no Cy in the backup) is accepted over the newer one
        wait_for(lambda: not uid_allowed(agent.allowlist, CY), 15, "the restored list")
        assert agent.allowlist["version"] > newer
        # and a revocation after the restore reaches the drill at once
        assert peershop_command(config, "tool", "lock", "drill").returncode == 0
        wait_for(lambda: not uid_allowed(agent.allowlist, BOB), 15, "Bob's access revoked")
    finally:
        agent.close()
        hub.terminate()
