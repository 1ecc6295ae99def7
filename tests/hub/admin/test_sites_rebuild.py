"""Two sites' hubs on one database: each resumes and closes only its own, and a rebuild
replays each site's hub with its own starts (``hub_starts.site``, migration 0010).

Real parts: two in-process hubs (sites ``north`` and ``south``) on this module's
Mosquitto, which both hear every device as a bridge in both directions would make them,
and one database of the test pass.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from click.testing import CliRunner
from sqlalchemy import select, text

from hub.cli import main
from hub.service.service import Hub
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop
from hub.store.db import alembic_config, make_engine, migrate, session_factory
from hub.store.models import BadgeDecision, HubStart, PresenceChange, UsageSession
from tests.conftest import database_url, make_config
from tests.helpers import Device, event_payload, wait_for

ADA = "04A1B2C3D4E5F6"

SHOP = f"""
members:
  - {{handle: ada, name: Ada L., badges: ["{ADA}"]}}
tools:
  - {{id: laser-north, name: North laser, site: north, devices: [laser-n-node]}}
  - {{id: saw-south, name: South saw, site: south, devices: [saw-s-node]}}
stations:
  - {{device: door-north, kind: sign_in, site: north}}
  - {{device: door-south, kind: sign_in, site: south}}
"""


class Sites:
    """The two hubs' configs on one database, and a way to start and stop each."""

    def __init__(self, tmp_path: Path, broker):
        self.db_url = database_url(tmp_path / "shared")
        engine = make_engine(self.db_url)
        migrate(engine)
        with session_factory(engine).begin() as session:
            apply_shop(session, parse_shop(SHOP))
        engine.dispose()
        self.engine = make_engine(self.db_url)
        self.sm = session_factory(self.engine)
        self.tmp_path = tmp_path
        self.configs = {
            site: make_config(
                tmp_path / site,
                broker,
                self.db_url,
                site={"id": site},
                mqtt={"client_id": f"peershop-hub-{site}-{uuid.uuid4().hex[:6]}"},
            )
            for site in ("north", "south")
        }
        self.hubs: dict[str, Hub] = {}

    def start(self, site: str) -> Hub:
        hub = self.hubs[site] = Hub(self.configs[site])
        hub.start()
        assert hub.wait_ready(10)
        return hub

    def stop(self, site: str) -> None:
        self.hubs.pop(site).stop()

    def close(self) -> None:
        for site in list(self.hubs):
            self.stop(site)
        self.engine.dispose()

    def count(self, model, *where) -> int:
        with self.sm() as session:
            return len(session.scalars(select(model).where(*where)).all())

    def rebuild_check(self):
        env = {
            "PEERSHOP_DB_URL": self.db_url,
            "PEERSHOP_SITE_DATA_DIR": str(self.tmp_path / "rebuild"),
        }
        return CliRunner().invoke(main, ["rebuild", "--check"], env=env, catch_exceptions=False)


def test_a_forgotten_sign_out_is_written_once_by_the_hub_of_its_door(tmp_path, broker):
    sites = Sites(tmp_path, broker)
    try:
        # Ada signed in at the north door last night, and north's hub went down before
        # the cutoff; south's hub starts first after it.
        yesterday = datetime.now(UTC) - timedelta(days=1)
        with sites.sm.begin() as session:
            session.add(
                PresenceChange(member="ada", at=yesterday, state="in", reason="badge", site="north")
            )
        south = sites.start("south")
        assert "ada" not in south.present()  # not signed in at south's door
        sites.start("north")
        wait_for(lambda: sites.count(PresenceChange, PresenceChange.state == "out") == 1)
        sites.stop("north")
        sites.stop("south")
        with sites.sm() as session:
            outs = session.execute(
                select(PresenceChange.reason, PresenceChange.site).where(
                    PresenceChange.state == "out"
                )
            ).all()
        assert outs == [("auto", "north")]
    finally:
        sites.close()


def test_a_rebuild_restarts_only_the_site_whose_hub_started(tmp_path, broker):
    sites = Sites(tmp_path, broker)
    laser = Device(broker.port, "laser-n-node")
    saw = Device(broker.port, "saw-s-node")
    doors = {site: Device(broker.port, f"door-{site}") for site in ("north", "south")}
    try:
        sites.start("north")
        sites.start("south")
        now = datetime.now(UTC)

        def at(seconds: int) -> str:
            return (now + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")

        doors["north"].send(event_payload(1, 0, type="badge", uid=ADA, ts=at(0)))
        laser.send(event_payload(1, 0, type="power", w=400.0, ts=at(1)))
        laser.send(event_payload(1, 1, type="badge", uid=ADA, ts=at(2)))  # north session
        saw.send(event_payload(1, 0, type="badge", uid=ADA, ts=at(3)))  # south session
        saw.send(event_payload(1, 1, type="power", w=300.0, ts=at(4)))
        for device in (laser, saw, doors["north"]):
            device.flush()
        wait_for(lambda: sites.count(UsageSession) == 2, what="a session at each site")
        wait_for(lambda: sites.count(BadgeDecision) == 3, what="three badges decided")

        sites.stop("south")  # south's session closes with hub_restart, north's stays open
        sites.start("south")
        laser.send(event_payload(1, 2, type="power", w=450.0, ts=at(6)))
        laser.send(event_payload(1, 3, type="badge", uid=ADA, ts=at(8)))  # tap out at north
        doors["south"].send(event_payload(1, 0, type="badge", uid=ADA, ts=at(9)))
        for device in (laser, doors["south"]):
            device.flush()
        wait_for(lambda: sites.count(BadgeDecision) == 5, what="five badges decided")
        wait_for(lambda: sites.count(UsageSession, UsageSession.end.is_(None)) == 0)
        sites.stop("north")
        sites.stop("south")

        with sites.sm() as session:
            closed = dict(
                session.execute(select(UsageSession.tool_id, UsageSession.close_reason)).all()
            )
            starts = session.scalars(select(HubStart.site).order_by(HubStart.id)).all()
            presence = session.execute(select(PresenceChange.site, PresenceChange.state)).all()
        assert closed == {"laser-north": "badge_out", "saw-south": "hub_restart"}
        assert starts == ["north", "south", "south"]
        # each door signs Ada in to its own site
        assert sorted(presence) == [("north", "in"), ("south", "in")]
        result = sites.rebuild_check()
        assert result.exit_code == 0, result.output
        assert "DIFFERENT" not in result.output
    finally:
        for device in (laser, saw, *doors.values()):
            device.close()
        sites.close()


@pytest.mark.parametrize(
    ("shop", "site"),
    [
        ("members: []\n", "main"),
        # one hub with a site.id of its own: its tools and door are all there
        (
            "tools:\n  - {id: saw, name: Saw, site: north, devices: [saw-node]}\n"
            "stations:\n  - {device: door, kind: sign_in, site: north}\n",
            "north",
        ),
        # two sites had hubs: which one wrote a row is not known
        (SHOP, "main"),
    ],
    ids=["no-site", "one-site", "two-sites"],
)
def test_migration_0010_puts_the_stored_starts_and_presence_at_the_one_site_there_was(
    tmp_path: Path, shop: str, site: str
):
    engine = make_engine(database_url(tmp_path))
    try:
        migrate(engine)
        # the shop loaded at the head (the loader reads today's columns), then back to 0009
        with session_factory(engine).begin() as session:
            apply_shop(session, parse_shop(shop))
        command.downgrade(alembic_config(engine), "0009")  # whatever the database began at
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO hub_starts (at, after_event_id, version) "
                    "VALUES ('2026-11-26 10:00:00', 41, '0.1.0')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO presence_changes (member, at, state, reason) "
                    "VALUES ('ada', '2026-11-26 09:00:00', 'in', 'badge')"
                )
            )
        migrate(engine)
        with session_factory(engine)() as session:
            start = session.scalars(select(HubStart)).one()
            change = session.scalars(select(PresenceChange)).one()
        assert (start.after_event_id, start.site) == (41, site)
        assert (change.member, change.site) == ("ada", site)
    finally:
        engine.dispose()
