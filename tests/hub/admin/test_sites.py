"""Sites (hub/admin/sites.py): site.id, tools and stations at a site, what each hub loads and
sends, and the bridge to the central broker against a real Mosquitto.  The whole
two-hub topology runs in tests/scenarios/test_two_sites.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from hub.admin.sites import bridge_conf, other_site_devices
from hub.config import load_config
from hub.errors import ConfigError, ShopFileError
from hub.service.broker import PrivateBroker, free_port
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import Outbox, PresenceChange, Station, Tool
from hub.store.outbox import OutboxPublisher, enqueue
from hub.store.shop_store import current_presence, load_shop
from tests.conftest import database_url
from tests.helpers import Listener
from tests.hub.admin.test_credentials import (
    HUB_PASSWORD,
    HUB_USER,
    add_device,
    peershop,
    write_ops_config,
)
from tests.hub.service.test_mosquitto_security import Client, GeneratedBroker

SHOP = """
tools:
  - {id: laser-north, site: north, devices: [laser-n-node]}
  - {id: saw-south, site: south, devices: [saw-s-node, {tasmota: saw_plug}]}
  - {id: drill, devices: [drill-node]}
stations:
  - {device: door-north, kind: sign_in, site: north}
  - {device: door-main, kind: sign_in}
"""


def test_site_id_defaults_to_main_and_is_checked():
    assert load_config(None, env={}, search=()).site.id == "main"
    cfg = load_config(None, env={"PEERSHOP_SITE_ID": "north-2"}, search=())
    assert cfg.site.id == "north-2"
    for bad in ("North", "a_b", "-x", "x" * 64, ""):
        with pytest.raises(ConfigError, match=r"site\.id"):
            load_config(None, env={"PEERSHOP_SITE_ID": bad}, search=())


def test_a_shop_file_site_must_be_a_site_id():
    with pytest.raises(ShopFileError, match=r"stations\[0\] \(door\): site 'North' is not"):
        parse_shop("stations:\n  - {device: door, kind: sign_in, site: North}\n")
    with pytest.raises(ShopFileError, match=r"tools\[0\] \(saw\): site 'a b' is not"):
        parse_shop("tools:\n  - {id: saw, site: a b}\n")


@pytest.fixture
def sm(tmp_path: Path):
    engine = make_engine(database_url(tmp_path))
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


def test_tools_and_stations_are_stored_at_their_site_and_moving_one_is_a_change(sm):
    with sm.begin() as session:
        changes = apply_shop(session, parse_shop(SHOP))
    assert "+ tool laser-north (laser-north, tap at site north)" in changes
    assert "+ tool drill (drill, tap)" in changes  # the default site is not mentioned
    assert "+ station door-north (sign_in at site north)" in changes
    with sm() as session:
        sites = dict(session.execute(select(Tool.id, Tool.site)).all())
        assert sites == {"laser-north": "north", "saw-south": "south", "drill": "main"}
        assert session.get(Station, "door-main").site == "main"
    moved = SHOP.replace("{id: drill,", "{id: drill, site: north,")
    with sm.begin() as session:
        assert apply_shop(session, parse_shop(moved)) == ["~ tool drill: site main -> north"]
    with sm.begin() as session:
        assert apply_shop(session, parse_shop(moved)) == []  # idempotent


def test_each_hub_loads_its_own_sites_tools_and_leaves_other_sites_devices_alone(sm):
    with sm.begin() as session:
        apply_shop(session, parse_shop(SHOP))
    tz = load_config(None, env={}, search=()).site.timezone
    with sm() as session:
        north = load_shop(session, tz, site="north")
        main = load_shop(session, tz, site="main")
        everything = load_shop(session, tz)
        assert set(north.tools) == {"laser-north"}
        assert set(north.stations) == {"door-north"}
        assert set(main.tools) == {"drill"} and set(main.stations) == {"door-main"}
        assert set(everything.tools) == {"laser-north", "saw-south", "drill"}
        assert other_site_devices(session, "north") == {
            "saw-s-node",
            "drill-node",
            "door-main",
        }
        assert other_site_devices(session, "south") == {
            "laser-n-node",
            "drill-node",
            "door-north",
            "door-main",
        }


class _Unused:
    """The link an outbox publisher that is never started needs."""

    is_connected = False


def test_who_is_in_counts_every_sites_doors(sm):
    # Each site's hub signs its own door's members in and out: signing out at south
    # leaves Ada in at north, where she signed in first.
    t = datetime(2026, 11, 28, 9, tzinfo=UTC)
    changes = [
        ("cleo", 0, "in", "south"),
        ("ada", 1, "in", "north"),
        ("ada", 2, "in", "south"),
        ("bob", 2, "in", "main"),
        ("ada", 3, "out", "south"),
        ("bob", 3, "out", "main"),
    ]
    with sm.begin() as session:
        for member, hour, state, site in changes:
            at = t + timedelta(hours=hour)
            change = PresenceChange(member=member, at=at, state=state, reason="badge", site=site)
            session.add(change)
    with sm() as session:
        assert current_presence(session) == {"cleo": t, "ada": t + timedelta(hours=1)}
        # the north hub has its own door in memory
        assert current_presence(session, except_site="north") == {"cleo": t}


def test_each_hub_sends_only_its_own_sites_outbox_rows(sm):
    with sm.begin() as session:
        enqueue(session, "peershop/dev/a/cmd", b"{}", site="north")
        enqueue(session, "peershop/dev/b/cmd", b"{}", site="south")
        enqueue(session, "peershop/dev/c/cmd", b"{}", site="south")
        enqueue(session, "peershop/dev/d/cmd", b"{}")
    assert OutboxPublisher(_Unused(), sm, site="north").pending() == 1
    assert OutboxPublisher(_Unused(), sm, site="south").pending() == 2
    assert OutboxPublisher(_Unused(), sm).pending() == 1
    with sm() as session:
        assert session.scalar(select(Outbox.site).where(Outbox.topic.contains("/d/"))) == "main"


def test_bridge_conf_refuses_an_unknown_direction():
    with pytest.raises(ValueError, match="direction"):
        bridge_conf("north", "central", 1883, direction="in")


def test_the_generated_bridge_carries_a_sites_devices_and_hub_status_to_central(tmp_path: Path):
    """`peershop bridge-config` + `peershop mosquitto-config`, run by a real Mosquitto."""
    port = free_port()
    config = write_ops_config(tmp_path, port=port)
    config.write_text(config.read_text().replace("[site]\n", '[site]\nid = "north"\n'))
    broker_dir = tmp_path / "data" / "broker"
    with PrivateBroker(tmp_path / "central") as central:
        made = peershop(
            config,
            "bridge-config",
            "--central",
            f"127.0.0.1:{central.port}",
            "--out",
            str(broker_dir),
        )
        assert made.exit_code == 0, made.output
        listen = ["--port", str(port), "--bind", "127.0.0.1"]
        made = peershop(config, "mosquitto-config", "--out", str(broker_dir), *listen)
        assert made.exit_code == 0, made.output
        assert (
            f"include_dir {broker_dir.resolve() / 'conf.d'}"
            in (broker_dir / "mosquitto.conf").read_text()
        )
        assert (broker_dir / "conf.d" / "bridge-central.conf").stat().st_mode & 0o077 == 0
        laser = add_device(config, "laser-n-node")
        watcher = Listener(central.port, "peershop/#")
        site = GeneratedBroker(broker_dir)
        site.start()
        try:
            watcher.wait(
                lambda msgs: any(
                    m.topic == "peershop/site/north/bridge" and m.payload == b"1" for m in msgs
                )
            )
            device = Client(port, laser.username, laser.password)
            hub = Client(port, HUB_USER, HUB_PASSWORD)
            assert device.link.wait_connected(10) and hub.link.wait_connected(10)
            device.publish("peershop/dev/laser-n-node/event", b'{"boot":1,"seq":0,"type":"x"}')
            hub.publish("peershop/hub/status", b'{"state":"online"}', retain=True)
            watcher.wait(
                lambda msgs: (
                    {"peershop/dev/laser-n-node/event", "peershop/site/north/hub/status"}
                    <= {m.topic for m in msgs}
                )
            )
            # the hub's own status topic stays the site's: central has one per site
            assert "peershop/hub/status" not in {m.topic for m in watcher.messages}
            device.close()
            hub.close()
        finally:
            watcher.close()
            site.stop()
