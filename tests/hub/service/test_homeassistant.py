"""Home Assistant discovery: every tool's sensors announced, again when HA restarts."""

from __future__ import annotations

import json

from hub.service.service import Hub
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop
from hub.store.db import make_engine, migrate, session_factory
from tests.conftest import make_config
from tests.helpers import Device, Listener

SHOP = """
tools:
  - {id: laser-1, name: Laser cutter, devices: [laser-node], policy: tap}
  - {id: saw-1, name: Table saw, devices: [saw-node], policy: card_present}
"""


def test_tools_appear_in_home_assistant_and_are_announced_again_after_its_birth(tmp_path, broker):
    cfg = make_config(tmp_path, broker, homeassistant={"discovery": True})
    engine = make_engine(cfg.db.url)
    migrate(engine)
    with session_factory(engine).begin() as session:
        apply_shop(session, parse_shop(SHOP))
    engine.dispose()
    listener = Listener(broker.port, "homeassistant/sensor/#")
    hub = Hub(cfg)
    hub.start()
    try:
        listener.wait(lambda msgs: len(msgs) == 6)  # state, power, user for two tools
        configs = {m.topic: json.loads(m.payload) for m in listener.messages}
        power = configs["homeassistant/sensor/peershop_laser-1/power/config"]
        assert power["state_topic"] == "peershop/tool/laser-1/state"
        assert power["unit_of_measurement"] == "W" and power["device_class"] == "power"
        assert power["device"]["name"] == "Laser cutter"
        assert power["availability"][0]["topic"] == "peershop/hub/status"
        assert all(m.retain is False for m in listener.messages)  # live delivery
        ha = Device(broker.port, "home-assistant")
        ha.send(b"online", topic="homeassistant/status")
        ha.close()
        listener.wait(lambda msgs: len(msgs) == 12)
    finally:
        hub.stop()
        listener.close()
    # retained: a Home Assistant that connects later finds them
    late = Listener(broker.port, "homeassistant/sensor/#")
    late.wait(lambda msgs: len(msgs) == 6 and all(m.retain for m in msgs))
    late.close()


def test_discovery_is_off_unless_configured(tmp_path, broker):
    cfg = make_config(tmp_path, broker, mqtt={"client_id": "hub-no-ha"})
    assert cfg.homeassistant.discovery is False
    listener = Listener(broker.port, "peershop/hub/status", "homeassistant/sensor/+/+/config")
    hub = Hub(cfg)
    hub.start()
    hub.wait_ready(10)
    hub.stop()
    # the broker keeps one publisher's messages in order: all of them before "offline"
    listener.wait(lambda msgs: any(b'"offline"' in m.payload and not m.retain for m in msgs))
    published = [m for m in listener.messages if m.topic.startswith("homeassistant/")]
    assert not [m for m in published if not m.retain]  # retained ones: the test before
    listener.close()
