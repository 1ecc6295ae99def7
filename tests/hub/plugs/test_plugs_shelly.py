"""Shelly Gen2+/Gen3 plugs with factory MQTT settings, through a real Mosquitto into the hub.

With factory settings a Shelly reports changes only, as ``NotifyStatus`` on
``<prefix>/events/rpc``: ``apower`` when the load moves, the ``aenergy`` counter once a
minute, ``output`` when the relay flips.  The payloads below follow Shelly's API docs
(Switch component status, the Notifications page) and what a Pro 4PM, a Plus Plug S and
a 1PM Gen3 send; only the prefixes and numbers differ.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

import pytest
from sqlalchemy import select

from devices.simulators import ShellyPlug
from hub.errors import ShopFileError
from hub.plugs.decode import PlugMemory, parse_plug
from hub.rules.records import PlugBinding, ShopData, ToolConfig
from hub.rules.sessions import ToolRules
from hub.service.service import Hub
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import DeadLetter, UsageSession
from hub.store.shop_store import load_shop
from tests.conftest import database_url
from tests.helpers import Device, Listener, event_payload, wait_for
from tests.hub.plugs.plug_contract import PlugCase, help_test_plug

PLUG_S = "shellyplusplugs-e86beae8f1a4"  # Plus Plug S (Gen2)
PRO4 = "shellypro4pm-30c6f784e78c"  # Pro 4PM: four switches, switch:0..3
G3 = "shelly1pmg3-54320464a1d0"  # 1PM Gen3

SHOP = f"""
members:
  - {{handle: ada, name: Ada L., badges: ["04A1B2C3D4E5F6"]}}
  - {{handle: bob, name: Bob B., badges: ["5E2A9C11"]}}
tools:
  - id: printer-1
    devices: [printer-reader, {{shelly: {PLUG_S}}}]
    policy: tap
    power: {{off_w: 5, busy_w: 50}}
  - id: saw
    devices: [saw-reader, {{shelly: {PRO4}, switch: 1}}]
    policy: tap
    power: {{off_w: 5, busy_w: 50}}
  - id: router
    devices: [router-reader, {{shelly: {PRO4}, switch: 3}}]
    policy: tap
    power: {{off_w: 5, busy_w: 50}}
  - id: kiln
    devices: [{{shelly: {G3}}}]
    policy: tap
    power: {{off_w: 5, busy_w: 50}}
"""
ADA, BOB = "04A1B2C3D4E5F6", "5E2A9C11"


def notify(src: str, ts: float, component: str, status: dict[str, Any]) -> bytes:
    """A NotifyStatus as a Shelly publishes it on ``<prefix>/events/rpc``."""
    frame = {
        "src": src,
        "dst": f"{src}/events",
        "method": "NotifyStatus",
        "params": {"ts": ts, component: status},
    }
    return json.dumps(frame).encode()


def energy(switch: int, total: float, minute_ts: int) -> dict[str, Any]:
    """The once-a-minute counter update: ``aenergy`` alone, no ``apower``."""
    return {
        "id": switch,
        "aenergy": {"by_minute": [0.0, 0.0, 0.0], "minute_ts": minute_ts, "total": total},
    }


@pytest.fixture
def hub(hub_config, broker):
    engine = make_engine(hub_config.db.url)
    migrate(engine)
    with session_factory(engine).begin() as session:
        apply_shop(session, parse_shop(SHOP))
    engine.dispose()
    running = Hub(hub_config)
    running.start()
    assert running.wait_ready(10)
    yield running
    running.stop()


def stored(hub: Hub, model, *where):
    with hub.sm() as session:
        return session.scalars(select(model).where(*where).order_by(model.id)).all()


def closed(hub: Hub, tool: str) -> list[UsageSession]:
    return stored(hub, UsageSession, UsageSession.tool_id == tool, UsageSession.end.is_not(None))


def granted(cmds: Listener, device: str, seq: int) -> None:
    cmds.wait(
        lambda _: any(
            p.get("re") == seq and p["action"] in ("grant", "release")
            for p in cmds.payloads(f"peershop/dev/{device}/cmd")
        )
    )


def states(cmds: Listener, tool: str) -> list[dict[str, Any]]:
    return cmds.payloads(f"peershop/tool/{tool}/state")


def test_a_plus_plug_s_session_counts_the_energy_counter_of_its_partial_updates(hub, broker):
    """The issue's case: the load's apower once, then only counter updates, and the
    "power dropped" message lost.  The session's energy is the counter's rise, not the
    last power held over the session."""
    cmds = Listener(broker.port, "peershop/dev/+/cmd", f"{PLUG_S}/rpc", "peershop/tool/#")
    reader, plug = Device(broker.port, "printer-reader"), Device(broker.port, "plug-sim")
    reader.send(event_payload(1, 0, type="badge", uid=ADA))
    granted(cmds, "printer-reader", 0)
    # the hub switched the plug on with Switch.Set on switch 0
    cmds.wait(lambda _: cmds.payloads(f"{PLUG_S}/rpc"))
    [rpc] = cmds.payloads(f"{PLUG_S}/rpc")
    assert (rpc["method"], rpc["params"]) == ("Switch.Set", {"id": 0, "on": True})

    events = f"{PLUG_S}/events/rpc"
    plug.send(
        notify(PLUG_S, 1700000000.1, "switch:0", {"id": 0, "output": True, "source": "SHC"}), events
    )
    plug.send(
        notify(PLUG_S, 1700000001.2, "switch:0", {"id": 0, "apower": 212.4, "current": 0.93}),
        events,
    )
    plug.send(notify(PLUG_S, 1700000040.0, "switch:0", energy(0, 1000.0, 1700000039)), events)
    plug.send(notify(PLUG_S, 1700000100.0, "switch:0", energy(0, 1003.5, 1700000099)), events)
    plug.send(notify(PLUG_S, 1700000160.0, "switch:0", energy(0, 1003.6, 1700000159)), events)
    plug.flush()
    # the counter updates are readings at the power last reported: the printer stays busy
    cmds.wait(lambda _: any(s["state"] == "busy" for s in states(cmds, "printer-1")))
    reader.send(event_payload(1, 1, type="badge", uid=ADA))
    granted(cmds, "printer-reader", 1)
    [session] = wait_for(lambda: closed(hub, "printer-1"), what="the closed session")
    assert session.close_reason == "badge_out"
    # 3.6 Wh by the counter (the seconds between the readings add a trace of estimate)
    assert session.wh == pytest.approx(3.6, abs=0.05)
    assert stored(hub, DeadLetter) == []
    for link in (reader, plug, cmds):
        link.close()


def test_a_pro_4pm_feeds_each_bound_switch_to_its_own_tool(hub, broker):
    """Two tools on two switches of one Pro 4PM: each is switched by its own id and gets
    its own switch's partial updates; a switch no tool is bound to is nobody's."""
    cmds = Listener(broker.port, "peershop/dev/+/cmd", f"{PRO4}/rpc", "peershop/tool/#")
    saw_reader, router_reader = (
        Device(broker.port, "saw-reader"),
        Device(broker.port, "router-reader"),
    )
    pro = Device(broker.port, "pro-sim")
    saw_reader.send(event_payload(1, 0, type="badge", uid=ADA))
    granted(cmds, "saw-reader", 0)
    router_reader.send(event_payload(1, 0, type="badge", uid=BOB))
    granted(cmds, "router-reader", 0)
    cmds.wait(lambda _: len(cmds.payloads(f"{PRO4}/rpc")) == 2)
    switched = sorted(p["params"]["id"] for p in cmds.payloads(f"{PRO4}/rpc"))
    assert switched == [1, 3]

    events = f"{PRO4}/events/rpc"
    for payload in (
        notify(
            PRO4,
            1675072985.86,
            "switch:1",
            {"id": 1, "apower": 640.0, "current": 2.8, "output": True, "pf": 0.91, "source": "UI"},
        ),
        notify(PRO4, 1675072990.01, "switch:2", {"id": 2, "apower": 900.0, "current": 3.9}),
        notify(PRO4, 1675935540.54, "switch:3", energy(3, 0.0, 1675935539)),
        notify(PRO4, 1675935541.54, "switch:1", energy(1, 5000.0, 1675935539)),
        notify(PRO4, 1675935600.54, "switch:3", energy(3, 0.0, 1675935599)),
        notify(PRO4, 1675935601.54, "switch:1", energy(1, 5010.5, 1675935599)),
    ):
        pro.send(payload, events)
    pro.flush()
    cmds.wait(lambda _: any(s["state"] == "busy" for s in states(cmds, "saw")))
    saw_reader.send(event_payload(1, 1, type="badge", uid=ADA))
    router_reader.send(event_payload(1, 1, type="badge", uid=BOB))
    [saw] = wait_for(lambda: closed(hub, "saw"), what="the saw's session")
    [router] = wait_for(lambda: closed(hub, "router"), what="the router's session")
    assert saw.wh == pytest.approx(10.5, abs=0.05)
    # the router's switch never reported power: no reading, so no energy and no busy time
    assert (router.wh, router.busy_s) == (0.0, 0.0)
    assert all(s["state"] != "busy" for s in states(cmds, "router"))
    assert stored(hub, DeadLetter) == []
    for link in (saw_reader, router_reader, pro, cmds):
        link.close()


def test_a_gen3_status_then_the_relay_switched_off_at_the_button(hub, broker):
    """A full ``status/switch:0`` (as ``Switch.GetStatus`` answers), then the relay
    switched off at the device's button: only ``output`` changes, and the tool draws
    nothing any more, with no apower message."""
    cmds = Listener(broker.port, "peershop/tool/#")
    # the state the hub announced at its start comes first, so it cannot land after the
    # live ones below (it goes out through the outbox, which is slower on PostgreSQL)
    cmds.wait(lambda _: states(cmds, "kiln"))
    g3 = Device(broker.port, "g3-sim")
    status = {
        "id": 0,
        "source": "init",
        "output": True,
        "apower": 1480.2,
        "voltage": 231.9,
        "freq": 50.0,
        "current": 6.41,
        "pf": 0.99,
        "aenergy": {
            "total": 10532.108,
            "by_minute": [24668.9, 24658.1, 24668.8],
            "minute_ts": 1736603760,
        },
        "ret_aenergy": {"total": 0.0, "by_minute": [0.0, 0.0, 0.0], "minute_ts": 1736603760},
        "temperature": {"tC": 41.2, "tF": 106.2},
    }
    g3.send(json.dumps(status).encode(), f"{G3}/status/switch:0")
    g3.flush()
    cmds.wait(
        lambda _: any(s["state"] == "busy" and s["w"] == 1480.2 for s in states(cmds, "kiln"))
    )
    g3.send(
        notify(G3, 1736603810.49, "switch:0", {"id": 0, "output": False, "source": "button"}),
        f"{G3}/events/rpc",
    )
    g3.flush()
    cmds.wait(lambda _: states(cmds, "kiln")[-1]["state"] == "free")
    assert states(cmds, "kiln")[-1]["w"] == 0.0
    for link in (g3, cmds):
        link.close()


def test_a_bad_counter_is_a_dead_letter_naming_it(hub, broker):
    plug = Device(broker.port, "plug-sim")
    plug.send(
        notify(PLUG_S, 1700000000.0, "switch:0", {"id": 0, "aenergy": {"total": -3.0}}),
        f"{PLUG_S}/events/rpc",
    )
    plug.flush()
    [dead] = wait_for(lambda: stored(hub, DeadLetter), what="the dead letter")
    assert dead.topic == f"{PLUG_S}/events/rpc"
    assert "aenergy.total must not be negative" in dead.reason
    plug.close()


def test_a_counter_before_any_power_waits_for_the_power():
    """After a hub start the plug's power is unknown until it reports one: a counter
    update alone is no reading (no made-up 0 W), the next power report is."""
    data = ShopData(
        tools={
            "printer-1": ToolConfig(
                "printer-1", "Printer", ToolRules("tap"), plugs=(("shelly", PLUG_S),)
            )
        }
    )
    memory = PlugMemory()
    events = f"{PLUG_S}/events/rpc"
    first = notify(PLUG_S, 1.0, "switch:0", energy(0, 1000.0, 0))
    assert parse_plug(events, first, data, memory=memory) == []
    power = notify(PLUG_S, 2.0, "switch:0", {"id": 0, "apower": 40.5})
    [ev] = parse_plug(events, power, data, memory=memory)
    assert ev.data == {"w": 40.5}
    later = notify(PLUG_S, 60.0, "switch:0", energy(0, 1000.7, 60))
    [ev] = parse_plug(events, later, data, memory=memory)
    assert ev.data == {"w": 40.5, "wh_total": 1000.7}
    # other components' notifications and other methods say nothing about power
    cloud = json.dumps(
        {
            "src": PLUG_S,
            "method": "NotifyStatus",
            "params": {"ts": 3.0, "cloud": {"connected": False}},
        }
    )
    assert parse_plug(events, cloud.encode(), data, memory=memory) == []


def test_the_shop_file_binds_switches_of_one_shelly_to_several_tools(tmp_path):
    engine = make_engine(database_url(tmp_path))
    migrate(engine)
    with session_factory(engine).begin() as session:
        apply_shop(session, parse_shop(SHOP))
    with session_factory(engine)() as session:
        data = load_shop(session, UTC)
    engine.dispose()
    assert data.tools["saw"].plugs == (PlugBinding("shelly", PRO4, 1),)
    assert data.device_tool()[f"shelly/{PRO4}#3"] == "router"
    assert data.device_tool()[f"shelly/{PLUG_S}"] == "printer-1"  # switch:0, as before
    bad = f"""\
tools:
  - {{id: saw, devices: [{{shelly: {PRO4}, switch: 1}}]}}
  - {{id: lathe, devices: [{{shelly: {PRO4}, switch: 1}}]}}
  - {{id: drill, devices: [{{shelly: {PRO4}, switch: -1}}]}}
  - {{id: fan, devices: [{{shelly: {PRO4}, channel: 2}}]}}
"""
    with pytest.raises(ShopFileError) as exc:
        parse_shop(bad)
    assert str(exc.value).splitlines()[1:] == [
        "shop.yaml:3: tools[1] (lathe): shelly shellypro4pm-30c6f784e78c switch 1 is already "
        "bound to tools[0] (saw)",
        "shop.yaml:4: tools[2] (drill): shelly shellypro4pm-30c6f784e78c: switch must be a "
        "whole number from 0 to 32 (as the plug numbers it), got -1",
        "shop.yaml:5: tools[3] (fan): shelly shellypro4pm-30c6f784e78c: unknown key channel "
        "(a shelly binding takes shelly: and switch:)",
    ]


def test_a_simulated_shelly_as_it_comes_drives_its_tool(hub, broker):
    """The demo's Shelly reports as one with factory settings: NotifyStatus changes
    only, never ``status/switch:0``, and the hub follows it."""
    cmds = Listener(broker.port, f"{G3}/#", "peershop/tool/kiln/state")
    sim = ShellyPlug(G3, broker.port).start()
    try:
        wait_for(lambda: sim.link.wait_subscribed(0), 10, "the plug's subscription")
        sim.watts = 1480.0
        sim.tick()
        sim.tick()  # nothing moved: nothing to say
        cmds.wait(
            lambda _: any(s["state"] == "busy" for s in cmds.payloads("peershop/tool/kiln/state"))
        )
        # one apower and one aenergy notification, never the whole status
        cmds.wait(lambda ms: sum(m.topic == f"{G3}/events/rpc" for m in ms) == 2)
        assert all(m.topic != f"{G3}/status/switch:0" for m in cmds.messages)
    finally:
        sim.close()
        cmds.close()


def test_a_shelly_coming_online_is_asked_for_its_whole_status(hub, broker):
    """With factory settings a Shelly says nothing until something changes: when it
    comes online (or the hub starts and hears it online) the hub asks each bound switch
    for ``Switch.GetStatus`` and takes the answer as a whole reading."""
    cmds = Listener(broker.port, f"{PRO4}/rpc", "peershop/tool/saw/state")
    pro = Device(broker.port, "pro-sim")
    pro.send(b"true", f"{PRO4}/online")
    pro.flush()
    cmds.wait(lambda _: len(cmds.payloads(f"{PRO4}/rpc")) == 2)
    asked = {p["params"]["id"]: p for p in cmds.payloads(f"{PRO4}/rpc")}
    assert set(asked) == {1, 3} and asked[1]["method"] == "Switch.GetStatus"
    reply_to = f"{asked[1]['src']}/rpc"
    assert reply_to == f"{PRO4}/peershop-hub/rpc"  # under the plug's own prefix
    result = {
        "id": 1,
        "source": "init",
        "output": True,
        "apower": 640.0,
        "voltage": 230.1,
        "current": 2.8,
        "aenergy": {"total": 5000.0, "by_minute": [0.0, 0.0, 0.0], "minute_ts": 1675935539},
        "temperature": {"tC": 38.2, "tF": 100.8},
    }
    reply = {"id": asked[1]["id"], "src": PRO4, "dst": asked[1]["src"], "result": result}
    pro.send(json.dumps(reply).encode(), reply_to)
    # Switch.Set's answer says nothing about power: no reading, no dead letter
    was_on = {"id": 1, "src": PRO4, "dst": asked[1]["src"], "result": {"was_on": False}}
    pro.send(json.dumps(was_on).encode(), reply_to)
    pro.flush()
    cmds.wait(lambda _: any(s["state"] == "busy" and s["w"] == 640.0 for s in states(cmds, "saw")))
    assert stored(hub, DeadLetter) == []
    pro.send(b"", f"{PRO4}/online", retain=True)  # the next test's hub hears no old birth
    for link in (pro, cmds):
        link.close()


def test_shelly_keeps_the_plug_contract(broker_shop):
    status = b'{"id":0,"output":true,"apower":40.5,"aenergy":{"total":1500.25}}'
    stored = help_test_plug(
        PlugCase(
            binding={"shelly": "shelly-saw"},
            reading=("shelly-saw/status/switch:0", status),
            w=40.5,
            wh_total=1500.25,
            online=("shelly-saw/online", b"true"),
            offline=("shelly-saw/online", b"false"),
            unbound=("shelly-other/status/switch:0", "shelly-saw/status/switch:1"),
            other_ref="shelly-other",
        ),
        broker_shop,
    )
    assert stored == {"w": 40.5, "wh_total": 1500.25}  # one reading, though sent twice
