"""The kill storm's rebuild differences, each pinned down with a hub restarted in-process.

`test_kill_storm.py` found that after restarts ``peershop rebuild --check`` does not
rebuild what the live hub stored.  Each test here restarts a `Hub` once (a clean stop is
enough: the state lost is lost on any restart) and shows one cause.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from hub.cli import main
from hub.db import make_engine, migrate, session_factory
from hub.models import BadgeDecision, Event, PresenceChange, UsageSession
from hub.service import Hub
from hub.shopfile import apply_shop, parse_shop
from tests.faults.test_kill_storm import SHOP
from tests.helpers import Device, Listener, event_payload, wait_for

ADA = "04A1B2C3D4E5F6"


@pytest.fixture
def shop_config(hub_config):
    engine = make_engine(hub_config.db.url)
    migrate(engine)
    with session_factory(engine).begin() as session:
        apply_shop(session, parse_shop(SHOP))
    engine.dispose()
    return hub_config


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


@pytest.mark.xfail(
    # Not strict: restore() now replays the tool's power state before the session,
    # which closes the gap on most runs but not all (hysteresis history further back).
    strict=False,
    reason="hub bug: shop_store.restore replays an open session from its start only, "
    "without the tool's power state before it, so busy time closes at 0 on restart",
)
def test_a_session_on_a_running_tool_closed_by_a_restart_rebuilds_the_same(
    shop_config, broker, tmp_path: Path
):
    drill = Device(broker.port, "drill-node")
    cmds = Listener(broker.port, "peershop/dev/drill-node/cmd")
    try:
        hub = started(shop_config)
        drill.send(event_payload(1, 0, type="power", w=150.0))  # running before the badge
        drill.send(event_payload(1, 1, type="badge", uid=ADA))
        drill.flush()
        cmds.wait(lambda msgs: any(json.loads(m.payload).get("re") == 1 for m in msgs))
        wait_for(lambda: count(hub, UsageSession) == 1, what="Ada's session on the drill")
        drill.send(event_payload(1, 2, type="power", w=160.0))  # still running
        drill.flush()
        wait_for(lambda: count(hub, Event) == 3, what="the second power sample")
        hub.stop()
        hub = started(shop_config)  # closes the session with hub_restart
        hub.stop()
    finally:
        cmds.close()
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
