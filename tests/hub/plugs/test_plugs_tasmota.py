"""Tasmota plugs of one and of several channels, through a real Mosquitto into the hub.

Payloads as Tasmota publishes them (its docs' ``tele/<topic>/SENSOR`` and
``stat/<topic>/STATUS10`` examples for a Shelly 2.5 running Tasmota, ``stat/<topic>/POWER<n>``):
a plug with two channels sends arrays, one value per channel, its ``Total`` one sum
unless it is set to report one per channel.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from devices.simulators import TasmotaPlug
from hub.errors import ContractError, ShopFileError
from hub.plugs.tasmota import tasmota_sensor
from hub.service.service import Hub
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import DeadLetter, UsageSession
from tests.helpers import Device, Listener, event_payload, wait_for
from tests.hub.plugs.plug_contract import PlugCase, help_test_plug

SHOP = """
members:
  - {handle: ada, name: Ada L., badges: ["04A1B2C3D4E5F6"]}
  - {handle: bob, name: Bob B., badges: ["5E2A9C11"]}
tools:
  - id: saw
    devices: [saw-reader, {tasmota: bench-shelly25, channel: 1}]
    policy: tap
    power: {off_w: 5, busy_w: 50}
  - id: router
    devices: [router-reader, {tasmota: bench-shelly25, channel: 2}]
    policy: tap
    power: {off_w: 5, busy_w: 50}
  - id: drill
    devices: [{tasmota: wall-shelly25}]
    power: {off_w: 5, busy_w: 50}
  - id: fan
    devices: [{tasmota: fan-shelly25, channel: 3}]
    power: {off_w: 5, busy_w: 50}
  - id: vent
    devices: [{tasmota: fan-shelly25, channel: 1}]
    power: {off_w: 5, busy_w: 20}
  - id: compressor
    devices: [{tasmota: compressor_plug}]
    power: {off_w: 5, busy_w: 200}
"""
ADA, BOB = "04A1B2C3D4E5F6", "5E2A9C11"


def sensor(power: list[float], total: float | list[float], time: str) -> bytes:
    """``tele/<topic>/SENSOR`` of a Shelly 2.5 on Tasmota: arrays per channel."""
    body = {
        "Time": time,
        "Switch1": "OFF",
        "Switch2": "OFF",
        "ANALOG": {"Temperature": 40.5},
        "ENERGY": {
            "TotalStartTime": "2019-09-24T10:22:07",
            "Total": total,
            "Yesterday": 0.000,
            "Today": total,
            "Period": [0, 0],
            "Power": power,
            "ApparentPower": power,
            "ReactivePower": [0, 0],
            "Factor": [1.00, 1.00],
            "Voltage": 231,
            "Current": [round(w / 231, 3) for w in power],
        },
        "TempUnit": "C",
    }
    return json.dumps(body).encode()


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


def answered(cmds: Listener, device: str, seq: int) -> None:
    cmds.wait(
        lambda _: any(p.get("re") == seq for p in cmds.payloads(f"peershop/dev/{device}/cmd"))
    )


def states(cmds: Listener, tool: str) -> list[dict[str, Any]]:
    return cmds.payloads(f"peershop/tool/{tool}/state")


def test_each_channel_of_a_shelly_25_on_tasmota_feeds_and_switches_its_own_tool(hub, broker):
    cmds = Listener(broker.port, "peershop/dev/+/cmd", "cmnd/#", "peershop/tool/#")
    saw_reader, router_reader = (
        Device(broker.port, "saw-reader"),
        Device(broker.port, "router-reader"),
    )
    plug = Device(broker.port, "tasmota-sim")
    saw_reader.send(event_payload(1, 0, type="badge", uid=ADA))
    answered(cmds, "saw-reader", 0)
    router_reader.send(event_payload(1, 0, type="badge", uid=BOB))
    answered(cmds, "router-reader", 0)
    # each grant switches its own relay: POWER1 and POWER2, not the plug's first
    cmds.wait(
        lambda msgs: (
            {m.topic for m in msgs if m.payload == b"ON"}
            >= {"cmnd/bench-shelly25/POWER1", "cmnd/bench-shelly25/POWER2"}
        )
    )
    # per-channel totals (kWh), as a plug set to report one per channel sends them
    plug.send(
        sensor([23.63, 67.17], [0.100, 0.200], "2026-12-07T10:00:00"), "tele/bench-shelly25/SENSOR"
    )
    plug.send(
        sensor([23.63, 67.17], [0.105, 0.2125], "2026-12-07T10:00:10"), "tele/bench-shelly25/SENSOR"
    )
    # the answer to `Status 10` is the same reading under StatusSNS
    status10 = {
        "StatusSNS": json.loads(sensor([23.63, 67.17], [0.106, 0.2135], "2026-12-07T10:00:12"))
    }
    plug.send(json.dumps(status10).encode(), "stat/bench-shelly25/STATUS10")
    plug.flush()
    cmds.wait(
        lambda _: any(s["state"] == "busy" and s["w"] == 67.17 for s in states(cmds, "router"))
    )
    assert any(s["state"] == "idle" and s["w"] == 23.63 for s in states(cmds, "saw"))
    # relay 2 switched off at the device: the router draws nothing, the saw goes on
    plug.send(b"OFF", "stat/bench-shelly25/POWER2")
    plug.flush()
    cmds.wait(lambda _: states(cmds, "router")[-1]["w"] == 0.0)
    assert states(cmds, "router")[-1]["state"] == "in_use"
    saw_reader.send(event_payload(1, 1, type="badge", uid=ADA))
    router_reader.send(event_payload(1, 1, type="badge", uid=BOB))
    [saw] = wait_for(lambda: closed(hub, "saw"), what="the saw's session")
    [router] = wait_for(lambda: closed(hub, "router"), what="the router's session")
    # energy from each channel's own counter: 6 Wh and 13.5 Wh
    assert saw.wh == pytest.approx(6.0, abs=0.05)
    assert router.wh == pytest.approx(13.5, abs=0.05)
    assert stored(hub, DeadLetter) == []
    for link in (saw_reader, router_reader, plug, cmds):
        link.close()


def test_channels_a_binding_cannot_take_are_dead_letters_saying_why(hub, broker):
    cmds = Listener(broker.port, "peershop/tool/vent/state")
    plug = Device(broker.port, "tasmota-sim")
    two = sensor([23.63, 67.17], 0.105, "2026-12-07T10:00:00")
    plug.send(two, "tele/wall-shelly25/SENSOR")  # bound whole, but it has two channels
    # bound to channels 3 (of two: a dead letter) and 1 (its reading counts)
    plug.send(two, "tele/fan-shelly25/SENSOR")
    plug.flush()
    dead = wait_for(lambda: len(stored(hub, DeadLetter)) == 2 and stored(hub, DeadLetter))
    assert {(d.topic, d.device_id): d.reason for d in dead} == {
        ("tele/wall-shelly25/SENSOR", None): "ENERGY.Power has 2 channels: bind one "
        "({tasmota: TOPIC, channel: N})",
        ("tele/fan-shelly25/SENSOR", "tasmota/fan-shelly25#3"): "ENERGY.Power has 2 "
        "channels, so no channel 3",
    }
    cmds.wait(lambda _: any(s["w"] == 23.63 for s in states(cmds, "vent")))
    for link in (plug, cmds):
        link.close()


def test_a_plug_as_it_comes_reports_every_telepriod_and_when_switched(hub, broker):
    """The simulated Tasmota behaves as a real one from the factory: one SENSOR per
    TelePeriod (300 s), and ``stat/<topic>/POWER`` at once when its relay is switched."""
    cmds = Listener(broker.port, "tele/compressor_plug/#", "peershop/tool/compressor/state")
    sim = TasmotaPlug("compressor_plug", broker.port).start()
    try:
        wait_for(lambda: sim.link.wait_subscribed(0), 10, "the plug's subscription")
        sim.watts = 1100
        sim.tick()
        sim.tick()  # within its TelePeriod: nothing
        cmds.wait(
            lambda _: any(
                s["state"] == "busy" for s in cmds.payloads("peershop/tool/compressor/state")
            )
        )
        assert sum(m.topic == "tele/compressor_plug/SENSOR" for m in cmds.messages) == 1
        switch = Device(broker.port, "switcher")
        switch.send(b"OFF", "cmnd/compressor_plug/POWER")
        switch.close()
        # no SENSOR until the next TelePeriod, yet the hub hears the relay go off
        cmds.wait(lambda _: cmds.payloads("peershop/tool/compressor/state")[-1]["w"] == 0.0)
        assert sum(m.topic == "tele/compressor_plug/SENSOR" for m in cmds.messages) == 1
    finally:
        sim.close()
        cmds.close()


def test_readings_of_one_channel_from_tasmotas_documented_payloads():
    two = sensor([23.63, 67.17], 0.105, "2026-12-07T10:00:00")
    # one Total for both channels is neither channel's counter
    assert (tasmota_sensor(two, 2).w, tasmota_sensor(two, 2).wh_total) == (67.17, None)
    per_channel = sensor([23.63, 67.17], [0.1, 0.2], "2026-12-07T10:00:00")
    assert tasmota_sensor(per_channel, 1).wh_total == pytest.approx(100.0)
    # a plug of one channel may be bound as channel 1, not 2
    one = b'{"ENERGY":{"Total":3.705,"Today":0.026,"Power":5,"Voltage":233,"Current":0.021}}'
    assert tasmota_sensor(one, 1).w == 5.0
    with pytest.raises(ContractError, match="no channel 2"):
        tasmota_sensor(one, 2)


def test_the_shop_file_names_tasmota_channels_from_one():
    bad = """\
tools:
  - {id: saw, devices: [{tasmota: bench, channel: 0}]}
  - {id: drill, devices: [{tasmota: wall}]}
  - {id: lathe, devices: [{tasmota: wall, channel: 2}]}
  - {id: fan, devices: [{tasmota: roof, switch: 1}]}
"""
    with pytest.raises(ShopFileError) as exc:
        parse_shop(bad)
    assert str(exc.value).splitlines()[1:] == [
        "shop.yaml:2: tools[0] (saw): tasmota bench: channel must be a whole number from 1 to "
        "32 (as the plug numbers it), got 0",
        "shop.yaml:4: tools[2] (lathe): tasmota wall channel 2 is a channel of tasmota wall, "
        "which tools[1] (drill) has whole; bind every tool to its own channel",
        "shop.yaml:5: tools[3] (fan): tasmota roof: unknown key switch (a tasmota binding "
        "takes tasmota: and channel:)",
    ]


def test_a_tasmota_coming_online_is_asked_for_a_reading_once(hub, broker):
    """A plug's LWT ``Online`` (also the retained one a starting hub hears) gets one
    ``Status 10``, not one per bound channel, and its answer is a reading."""
    cmds = Listener(broker.port, "cmnd/#", "peershop/tool/router/state")
    plug = Device(broker.port, "tasmota-sim")
    plug.send(b"Online", "tele/bench-shelly25/LWT")
    plug.flush()
    cmds.wait(lambda ms: any(m.topic == "cmnd/bench-shelly25/STATUS" for m in ms))
    status10 = {"StatusSNS": json.loads(sensor([23.63, 67.17], [0.1, 0.2], "2026-12-07T10:00:00"))}
    plug.send(json.dumps(status10).encode(), "stat/bench-shelly25/STATUS10")
    plug.flush()
    cmds.wait(lambda _: any(s["state"] == "busy" for s in states(cmds, "router")))
    asked = [m.payload for m in cmds.messages if m.topic == "cmnd/bench-shelly25/STATUS"]
    assert asked == [b"10"]
    for link in (plug, cmds):
        link.close()


def test_tasmota_keeps_the_plug_contract(broker_shop):
    stored = help_test_plug(
        PlugCase(
            binding={"tasmota": "saw_plug"},
            reading=("tele/saw_plug/SENSOR", b'{"ENERGY":{"Total":1.234,"Power":812}}'),
            w=812.0,
            wh_total=1234.0,
            online=("tele/saw_plug/LWT", b"Online"),
            offline=("tele/saw_plug/LWT", b"Offline"),
            unbound=("tele/other_plug/SENSOR", "tele/saw_plug/STATE", "saw_plug/SENSOR"),
            other_ref="other_plug",
        ),
        broker_shop,
    )
    assert stored == {"w": 812.0, "wh_total": 1234.0}  # one reading, though sent twice
