"""The simulated devices speak what real ones speak, through the real driver code."""

from __future__ import annotations

import json

from devices.simulators import AgentStation, SerialNodeSim, ShellyPlug, SimClock, TasmotaPlug
from hub.contract.messages import cmd_topic, parse_event
from hub.plugs.shelly import shelly_switch
from hub.plugs.tasmota import tasmota_sensor
from tests.helpers import Device, Listener, wait_for


def test_agent_station_badge_and_power_go_through_the_agent(tmp_path, broker):
    listener = Listener(broker.port, "peershop/dev/sim-drill/event")
    hub = Device(broker.port, "sim-fake-hub")
    station = AgentStation("sim-drill", tmp_path, broker.port, interlock=True, current_sensor=True)
    try:
        station.start()
        wait_for(lambda: station.agent.can_send, 10, "the station to connect")
        station.tap("5E2A9C11")
        badges = listener.wait(
            lambda ms: [e for m in ms if (e := parse_event("sim-drill", m.payload)).type == "badge"]
        )
        event = badges[0]
        assert event.data == {"uid": "5E2A9C11"}
        grant = {"re": event.seq, "action": "grant", "max_s": 600}
        hub.send(json.dumps(grant).encode(), cmd_topic("sim-drill"))
        wait_for(lambda: station.granted, 10, "the grant")
        station.set_watts(800)  # the simulated mains wave through the real CurrentSensor
        # The sensor's window may straddle the switch-on (a reading between 0 and 800 W);
        # once it holds only the running tool, the reading is the tool's draw.
        listener.wait(
            lambda ms: [
                e
                for m in ms
                if (e := parse_event("sim-drill", m.payload)).type == "power"
                and 700 < e.data["w"] < 900
            ]
        )
    finally:
        station.close()
        hub.close()
        listener.close()


def test_serial_node_behind_the_bridge(broker):
    listener = Listener(broker.port, "peershop/dev/sim-lathe/#")
    node = SerialNodeSim("sim-lathe", broker.port).start()
    try:
        listener.wait(lambda ms: any(m.topic.endswith("/status") for m in ms), timeout=15)
        node.send("badge", uid="04E5F60718293A")
        got = listener.wait(lambda ms: [m for m in ms if m.topic.endswith("/event")], timeout=15)
        assert parse_event("sim-lathe", got[0].payload).data == {"uid": "04E5F60718293A"}
        wait_for(lambda: node.node.unacked == 0, 10, "the bridge's ack after PUBACK")
    finally:
        node.close()
        listener.close()


def test_plugs_publish_cumulative_energy_and_obey_switching(broker):
    listener = Listener(broker.port, "tele/#", "sim-shelly/#")
    switch = Device(broker.port, "sim-switcher")
    tasmota = TasmotaPlug("sim_plug", broker.port).start()
    shelly = ShellyPlug("sim-shelly", broker.port).start()
    try:
        wait_for(lambda: tasmota.link.wait_subscribed(0) and shelly.link.wait_subscribed(0), 10)
        tasmota.watts = shelly.watts = 100
        tasmota.report()
        shelly.report()
        sensor = listener.wait(lambda ms: [m for m in ms if m.topic == "tele/sim_plug/SENSOR"])
        reading = tasmota_sensor(sensor[0].payload)
        assert reading.w == 100 and reading.wh_total > 0
        status = listener.wait(
            lambda ms: [m for m in ms if m.topic == "sim-shelly/status/switch:0"]
        )
        assert shelly_switch(status[0].payload).w == 100
        switch.send(b"OFF", "cmnd/sim_plug/POWER")
        rpc = {"id": 1, "method": "Switch.Set", "params": {"id": 0, "on": False}}
        switch.send(json.dumps(rpc).encode(), "sim-shelly/rpc")
        wait_for(lambda: not tasmota.on and not shelly.on, 10, "both plugs off")
    finally:
        tasmota.close()
        shelly.close()
        switch.close()
        listener.close()


def test_sim_clock_runs_faster():
    clock = SimClock(1000)
    assert clock.sleep(1)  # a simulated second in a real millisecond
    clock.stop.set()
    assert not clock.sleep(3600)
