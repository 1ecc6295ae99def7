"""Tools on a smart plug with no reader: their runs are recorded with no member.

A 3D printer on a Tasmota plug, through a real Mosquitto into the hub: each run (busy
up to below ``off_w``) becomes a usage session with no member, with its busy time and
its energy from the plug's counter.  The floor and the period page show the runs, the
export lists them, the period close charges them to no one, and the event log rebuilds
them.
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from hub.cli import main
from hub.ledger.closing import _use
from hub.ledger.export import collect, to_csv
from hub.ledger.periods import open_period
from hub.rules.sessions import (
    ReleaseTool,
    SessionEnded,
    SessionStarted,
    ToolRules,
    ToolSessionState,
)
from hub.service.service import Hub
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import Member, Period, Tool, UsageSession
from tests.helpers import Device, Listener, event_payload, wait_for
from web import create_app
from web.auth import set_password

SHOP = """
projects:
  - {id: commons, name: Shop commons, model: production_effort}
members:
  - {handle: ada, name: Ada L., roles: [member, coordinator], badges: ["04A1B2C3D4E5F6"]}
tools:
  - id: printer-2
    name: Ender printer
    project: commons
    devices: [{tasmota: printer2_plug}]
    power: {off_w: 5, busy_w: 50}
  - id: laser-1
    name: Laser cutter
    project: commons
    devices: [laser-node, {tasmota: laser_plug}]
    policy: tap
    power: {off_w: 5, busy_w: 50}
"""
ADA = "04A1B2C3D4E5F6"


def reading(watts: float, kwh: float) -> bytes:
    return json.dumps(
        {"Time": "2026-12-07T10:00:00", "ENERGY": {"Total": kwh, "Power": watts}}
    ).encode()


@pytest.fixture
def hub(hub_config, broker):
    engine = make_engine(hub_config.db.url)
    migrate(engine)
    with session_factory(engine).begin() as session:
        apply_shop(session, parse_shop(SHOP))
        open_period(session, hub_config, datetime.now(UTC))
        set_password(
            session, session.scalar(select(Member).where(Member.handle == "ada")), "pw-ada-1234"
        )
    engine.dispose()
    running = Hub(hub_config)
    running.start()
    assert running.wait_ready(10)
    yield running
    running.stop()


def sessions_of(hub: Hub, tool: str) -> list[UsageSession]:
    with hub.sm() as session:
        return session.scalars(
            select(UsageSession).where(UsageSession.tool_id == tool).order_by(UsageSession.id)
        ).all()


def runs(hub: Hub) -> list[UsageSession]:
    return sessions_of(hub, "printer-2")


def test_a_printer_on_a_plug_records_its_runs_shown_and_charged_to_no_one(
    hub, hub_config, broker, tmp_path: Path
):
    cmds = Listener(broker.port, "cmnd/#", "peershop/tool/printer-2/state")
    plug = Device(broker.port, "printer2-plug")
    topic = "tele/printer2_plug/SENSOR"
    # switched on, idle; a print (busy, the counter rising); done, below off_w
    for watts, kwh in ((2, 1.000), (95, 1.000), (110, 1.020), (0, 1.030)):
        plug.send(reading(watts, kwh), topic)
    plug.flush()
    [run] = wait_for(lambda: [r for r in runs(hub) if r.end is not None], what="the first run")
    assert (run.member, run.close_reason) == (None, "power_off")
    assert run.wh == pytest.approx(30.0, abs=0.05)  # 1.000 -> 1.030 kWh, by the counter
    assert run.busy_s > 0 and run.busy_s <= (run.end - run.start).total_seconds()
    # the next print starts: a run open now
    plug.send(reading(100, 1.030), topic)
    plug.flush()
    wait_for(lambda: len(runs(hub)) == 2, what="the second run")
    cmds.wait(lambda _: cmds.payloads("peershop/tool/printer-2/state")[-1]["state"] == "busy")
    # nobody is named, and a run ending on its own never switches the plug off
    assert all(p["member"] is None for p in cmds.payloads("peershop/tool/printer-2/state"))
    assert not [m for m in cmds.messages if m.topic.startswith("cmnd/")]
    plug.close()
    cmds.close()

    # the floor lists the runs; the period page sums them; both say no one is charged
    app = create_app({"SECRET_KEY": "test", "TESTING": True}, sm=hub.sm)
    client = app.test_client()
    panels = client.get("/floor/panels").get_data(as_text=True)
    assert "Runs without a badge" in panels
    assert panels.count('class="run" data-tool="printer-2"') == 2 and "running" in panels
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="(?:\w+-)?csrf_token" type="hidden" value="([^"]+)"', page)[1]
    client.post("/login", data={"handle": "ada", "password": "pw-ada-1234", "csrf_token": token})
    period = client.get("/periods").get_data(as_text=True)
    line = re.search(r'<tr class="run-line" data-tool="printer-2">(.*?)</tr>', period)[1]
    cells = re.findall(r"<td>(.*?)</td>", line)
    assert cells[:2] == ["printer-2", "2"] and cells[4] == "0.030"
    assert "charged to no one" in period

    with hub.sm() as session:
        # the export lists them with no member
        period_row = session.scalars(select(Period)).one()
        data = collect(session, period_id=period_row.id)
        rows = [r for r in csv.DictReader(io.StringIO(to_csv(data))) if r["tool"] == "printer-2"]
        assert [(r["record"], r["member"]) for r in rows] == [("use", ""), ("use", "")]
        assert rows[0]["close_reason"] == "power_off" and float(rows[0]["wh"]) == pytest.approx(
            30, abs=0.05
        )
        # the close counts no one's use of the printer
        tools = {t.id: t for t in session.scalars(select(Tool))}
        units, _, members = _use(session, period_row, tools, "commons")
        assert None not in members
        assert not [k for k in units if k[2] == "printer-2"]

    # the same runs come out of the event log again (the open one included)
    hub.stop()
    env = {"PEERSHOP_DB_URL": hub_config.db.url, "PEERSHOP_SITE_DATA_DIR": str(tmp_path / "data")}
    result = CliRunner().invoke(main, ["rebuild", "--check"], env=env)
    assert result.exit_code == 0, result.output
    assert "DIFFERENT" not in result.output


def test_a_tool_with_a_reader_records_no_run_when_nobody_badged(hub, broker):
    """Power at a tool with a reader and no session is not a run: that tool's use is
    its members' sessions."""
    cmds = Listener(broker.port, "peershop/tool/laser-1/state")
    plug = Device(broker.port, "laser-plug")
    plug.send(reading(400, 2.0), "tele/laser_plug/SENSOR")
    plug.flush()
    cmds.wait(
        lambda _: any(p["state"] == "busy" for p in cmds.payloads("peershop/tool/laser-1/state"))
    )
    assert sessions_of(hub, "laser-1") == []
    # and a badge still opens a member's session, as before
    reader = Device(broker.port, "laser-node")
    reader.send(event_payload(1, 0, type="badge", uid=ADA))
    reader.flush()
    [s] = wait_for(lambda: sessions_of(hub, "laser-1"), what="ada's session")
    assert s.member == "ada"
    for link in (plug, reader, cmds):
        link.close()


def test_a_run_from_busy_to_off_counts_busy_idle_and_energy():
    rules = ToolRules("tap", off_w=5, busy_w=50, unattended=True)
    tool = ToolSessionState("printer-2", rules)
    t0 = datetime(2026, 12, 7, 10, tzinfo=UTC)

    def at(minutes: float) -> datetime:
        return t0 + timedelta(minutes=minutes)

    assert not [e for e in tool.power(2.0, at(0)) if isinstance(e, SessionStarted)]
    [started] = [e for e in tool.power(100.0, at(1)) if isinstance(e, SessionStarted)]
    assert (started.member, started.start) == (None, at(1))
    tool.power(30.0, at(10))  # heating done, printing slowly: idle, the run goes on
    assert tool.session is not None
    [ended] = [e for e in tool.power(0.0, at(20)) if isinstance(e, SessionEnded)]
    assert (ended.member, ended.close_reason, ended.start, ended.end) == (
        None,
        "power_off",
        at(1),
        at(20),
    )
    assert (ended.busy_s, ended.idle_s) == (540.0, 600.0)
    assert ended.wh == pytest.approx(100 * 9 / 60 + 30 * 10 / 60)
    # no ReleaseTool: a run ending on its own leaves the tool as it is
    assert not [e for e in tool.power(0.0, at(21)) if isinstance(e, ReleaseTool)]
    # a locked tool runs nothing into the records
    tool.lock(at(22))
    effects = tool.power(900.0, at(23))
    assert tool.session is None and not [e for e in effects if isinstance(e, SessionStarted)]
