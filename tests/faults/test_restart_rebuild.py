"""The kill storm's rebuild differences, each pinned down with a hub restarted in-process.

`test_kill_storm.py` found that after restarts ``peershop rebuild --check`` did not
rebuild what the live hub stored.  Each test here restarts a `Hub` once (a clean stop is
enough: the state lost is lost on any restart) around one cause: what a restart must
resume, and what it forgets, the rebuild resumes and forgets at the same point.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from hub.cli import main
from hub.service.service import Hub
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import BadgeDecision, Event, PresenceChange, UsageSession
from tests.faults.test_kill_storm import SHOP
from tests.helpers import Device, Listener, event_payload, wait_for

ADA = "04A1B2C3D4E5F6"


def with_shop(cfg, text: str):
    """``cfg``, its database migrated and holding the shop file ``text``."""
    engine = make_engine(cfg.db.url)
    migrate(engine)
    with session_factory(engine).begin() as session:
        apply_shop(session, parse_shop(text))
    engine.dispose()
    return cfg


@pytest.fixture
def shop_config(hub_config):
    return with_shop(hub_config, SHOP)


def started(cfg) -> Hub:
    hub = Hub(cfg)
    hub.start()
    assert hub.wait_ready(10)
    return hub


def rebuild_check(cfg, tmp_path: Path):
    env = {"PEERSHOP_DB_URL": cfg.db.url, "PEERSHOP_SITE_DATA_DIR": str(tmp_path / "data")}
    return CliRunner().invoke(main, ["rebuild", "--check"], env=env, catch_exceptions=False)


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def count(hub: Hub, model, *where) -> int:
    with hub.sm() as session:
        return len(session.scalars(select(model).where(*where)).all())


def test_rebuild_check_with_an_effort_without_a_task(shop_config, broker, tmp_path: Path):
    hub = started(shop_config)
    desk = Device(broker.port, "desk")
    try:
        desk.send(event_payload(1, 0, type="badge", uid=ADA))  # effort, no task chosen
        desk.send(event_payload(1, 1, type="badge", uid=ADA))
        desk.send(event_payload(1, 2, type="button", name="sweep"))
        desk.send(event_payload(1, 3, type="badge", uid=ADA))  # effort on "sweep"
        desk.send(event_payload(1, 4, type="badge", uid=ADA))
        desk.flush()
        wait_for(lambda: count(hub, BadgeDecision) == 4, what="four decisions at the desk")
    finally:
        desk.close()
        hub.stop()
    result = rebuild_check(shop_config, tmp_path)
    assert result.exit_code == 0, result.output


def test_a_repeat_badge_at_the_door_across_a_restart_rebuilds_the_same(
    shop_config, broker, tmp_path: Path
):
    at = datetime.now(UTC)
    door = Device(broker.port, "door")
    try:
        hub = started(shop_config)
        door.send(event_payload(1, 0, type="badge", uid=ADA, ts=iso(at)))
        door.flush()
        wait_for(lambda: count(hub, PresenceChange) == 1, what="Ada signed in")
        hub.stop()
        hub = started(shop_config)
        # one second later: a reader repeat, within presence's 5 s window
        door.send(event_payload(1, 1, type="badge", uid=ADA, ts=iso(at + timedelta(seconds=1))))
        door.flush()
        wait_for(lambda: count(hub, BadgeDecision) == 2, what="the second decision")
        hub.stop()
    finally:
        door.close()
    result = rebuild_check(shop_config, tmp_path)
    assert result.exit_code == 0, result.output


def test_a_session_on_a_running_tool_closed_by_a_restart_rebuilds_the_same(
    shop_config, broker, tmp_path: Path
):
    at = datetime.now(UTC)
    drill = Device(broker.port, "drill-node")
    cmds = Listener(broker.port, "peershop/dev/drill-node/cmd")
    try:
        hub = started(shop_config)
        # running since a minute before the badge, which came half a minute ago
        drill.send(event_payload(1, 0, type="power", w=150.0, ts=iso(at - timedelta(seconds=60))))
        drill.send(event_payload(1, 1, type="badge", uid=ADA, ts=iso(at - timedelta(seconds=30))))
        drill.flush()
        cmds.wait(lambda msgs: any(json.loads(m.payload).get("re") == 1 for m in msgs))
        wait_for(lambda: count(hub, UsageSession) == 1, what="Ada's session on the drill")
        drill.send(event_payload(1, 2, type="power", w=160.0, ts=iso(at)))  # still running
        drill.flush()
        wait_for(lambda: count(hub, Event) == 3, what="the second power sample")
        hub.stop()
        hub = started(shop_config)  # closes the session with hub_restart
        with hub.sm() as session:
            closed = session.scalars(select(UsageSession)).one()
        hub.stop()
    finally:
        cmds.close()
        drill.close()
    # busy from the badge on, not from the reading before it
    assert (closed.close_reason, closed.busy_s, closed.idle_s) == ("hub_restart", 30.0, 0.0)
    result = rebuild_check(shop_config, tmp_path)
    assert result.exit_code == 0, result.output


def test_a_session_started_after_a_restart_on_a_running_tool_rebuilds_the_same(
    shop_config, broker, tmp_path: Path
):
    at = datetime.now(UTC)
    drill = Device(broker.port, "drill-node")
    try:
        hub = started(shop_config)
        drill.send(event_payload(1, 0, type="power", w=150.0, ts=iso(at - timedelta(seconds=60))))
        drill.flush()
        wait_for(lambda: count(hub, Event) == 1, what="the power sample")
        hub.stop()
        hub = started(shop_config)  # the tool's power state is the restart's to resume
        drill.send(event_payload(1, 1, type="badge", uid=ADA, ts=iso(at - timedelta(seconds=30))))
        drill.send(event_payload(1, 2, type="power", w=160.0, ts=iso(at)))
        drill.send(event_payload(1, 3, type="badge", uid=ADA, ts=iso(at + timedelta(seconds=1))))
        drill.flush()
        wait_for(
            lambda: count(hub, UsageSession, UsageSession.end.is_not(None)) == 1,
            what="Ada's session on the drill, tapped out",
        )
        hub.stop()
    finally:
        drill.close()
    result = rebuild_check(shop_config, tmp_path)
    assert result.exit_code == 0, result.output


def test_a_task_button_before_a_restart_rebuilds_the_same(shop_config, broker, tmp_path: Path):
    desk = Device(broker.port, "desk")
    try:
        hub = started(shop_config)
        desk.send(event_payload(1, 0, type="button", name="sweep"))
        desk.flush()
        wait_for(lambda: count(hub, Event) == 1, what="the button stored")
        hub.stop()
        hub = started(shop_config)
        desk.send(event_payload(1, 1, type="badge", uid=ADA))  # within the button's window
        desk.send(event_payload(1, 2, type="badge", uid=ADA))
        desk.flush()
        wait_for(lambda: count(hub, BadgeDecision) == 2, what="the effort at the desk")
        hub.stop()
    finally:
        desk.close()
    result = rebuild_check(shop_config, tmp_path)
    assert result.exit_code == 0, result.output


PRESS_SHOP = f"""
members:
  - {{handle: ada, name: Ada L., badges: ["{ADA}"]}}
tools:
  - id: press-1
    name: Heat press
    devices: [press-node]
    policy: tap
    power: {{off_w: 5, busy_w: 100, idle_timeout: 2s}}
"""


def test_a_session_that_timed_out_before_a_stop_rebuilds_the_same(
    hub_config, broker, tmp_path: Path
):
    """The hub's clock closed it, with no event after: the log alone does not say when."""
    with_shop(hub_config, PRESS_SHOP)
    press = Device(broker.port, "press-node")
    try:
        hub = started(hub_config)
        press.send(event_payload(1, 0, type="power", w=300.0))
        press.send(event_payload(1, 1, type="badge", uid=ADA))
        press.send(event_payload(1, 2, type="power", w=0.0))  # done: idle from here
        press.flush()
        wait_for(
            lambda: count(hub, UsageSession, UsageSession.close_reason == "timeout") == 1,
            what="the session closed by its idle timeout",
        )
        hub.stop()
        hub = started(hub_config)
        hub.stop()
    finally:
        press.close()
    result = rebuild_check(hub_config, tmp_path)
    assert result.exit_code == 0, result.output
