"""Home Assistant discovery checked against Home Assistant's own rules, on a real broker.

What Home Assistant accepts is in its MQTT integration: ``homeassistant/components/mqtt/
schemas.py`` (``MQTT_ENTITY_COMMON_SCHEMA``, the availability schemas: ``availability``
and ``availability_topic`` exclusive, a device needs ``identifiers`` or ``connections``),
``mqtt/sensor.py`` (the sensor's discovery schema, which *drops* unknown keys silently,
and ``validate_sensor_state_and_device_class_config``) and ``sensor/const.py``
(``DEVICE_CLASS_STATE_CLASSES``, ``DEVICE_CLASS_UNITS``: energy is ``total`` or
``total_increasing`` in Wh, kWh, ...; power is ``measurement`` in W, kW, ...).  Since
2026.4 it ignores ``object_id``: the entity id comes from ``default_entity_id``, a valid
entity id of the sensor domain.  Templates are rendered here with Jinja2 as Home
Assistant renders them on a JSON payload (``value_json``; ``None`` becomes the text
``None``, which a sensor shows as unknown).
"""

from __future__ import annotations

import json
import re
from typing import Any

from jinja2 import Environment
from sqlalchemy import select

from hub.service.service import Hub
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import Tool
from tests.conftest import make_config
from tests.helpers import Device, Listener, clear_retained

# the sensor's discovery keys (full names) Home Assistant reads; any other is dropped
SENSOR_KEYS = {
    # MQTT_RO_SCHEMA and the sensor's own
    *("state_topic", "value_template", "qos", "encoding", "platform"),
    *("device_class", "expire_after", "force_update", "last_reset_value_template", "name"),
    *("options", "suggested_display_precision", "state_class", "unit_of_measurement"),
    # MQTT_ENTITY_COMMON_SCHEMA, with 2025.10's default_entity_id
    *("device", "origin", "enabled_by_default", "entity_category", "icon", "entity_picture"),
    *("json_attributes_topic", "json_attributes_template", "unique_id", "default_entity_id"),
    # the availability schemas
    *("availability", "availability_mode", "availability_topic", "availability_template"),
    *("payload_available", "payload_not_available"),
}
STATE_CLASSES = {"measurement", "total", "total_increasing"}
DEVICE_CLASS_STATE_CLASSES = {"energy": {"total", "total_increasing"}, "power": {"measurement"}}
DEVICE_CLASS_UNITS = {"energy": {"Wh", "kWh", "MWh", "GWh"}, "power": {"W", "kW", "MW"}}
ENTITY_ID = re.compile(r"^(?!.+__)(?!_)[\da-z_]+(?<!_)\.(?!_)[\da-z_]+(?<!_)$")  # HA's rule
JINJA = Environment()

SHOP = """
tools:
  - {id: ha-laser, name: Laser cutter, devices: [{tasmota: ha_laser_plug}], policy: tap}
  - {id: ha-saw, name: Table saw, devices: [ha-saw-node], policy: card_present}
"""
STALE = "homeassistant/sensor/peershop_ha-old/power/config"  # a tool gone while the hub was down


def sensor_problems(config: dict[str, Any]) -> list[str]:
    """Why Home Assistant would refuse (or silently change) a sensor's config."""
    problems = [f"unknown key {key!r}" for key in config if key not in SENSOR_KEYS]
    if "object_id" in config:
        problems.append("object_id is ignored since Home Assistant 2026.4")
    entity_id = config.get("default_entity_id", "")
    if not ENTITY_ID.match(entity_id) or not entity_id.startswith("sensor."):
        problems.append(f"default_entity_id {entity_id!r} is no sensor entity id")
    if "availability" in config and "availability_topic" in config:
        problems.append("availability and availability_topic are exclusive")
    for entry in config.get("availability", []):
        if "topic" not in entry:
            problems.append("an availability entry without a topic")
    device = config.get("device", {})
    if not (device.get("identifiers") or device.get("connections")):
        problems.append("a device needs identifiers or connections")
    device_class, state_class = config.get("device_class"), config.get("state_class")
    if state_class is not None and state_class not in STATE_CLASSES:
        problems.append(f"state_class {state_class!r}")
    if device_class in DEVICE_CLASS_STATE_CLASSES:
        if state_class not in DEVICE_CLASS_STATE_CLASSES[device_class]:
            problems.append(f"{device_class} cannot have state_class {state_class!r}")
        if config.get("unit_of_measurement") not in DEVICE_CLASS_UNITS[device_class]:
            problems.append(f"{device_class} cannot be in {config.get('unit_of_measurement')!r}")
    if "last_reset_value_template" in config and state_class != "total":
        problems.append("last_reset_value_template needs state_class total")
    if "options" in config and device_class != "enum":
        problems.append("options are for enum sensors only")
    for key in ("value_template", "json_attributes_template"):
        if key in config:
            JINJA.parse(config[key])  # a syntax error raises
    return problems


def render(template: str, payload: dict[str, Any]) -> str:
    return JINJA.from_string(template).render(value_json=payload)


def as_home_assistant_shows(
    config: dict[str, Any], retained: dict[str, dict[str, Any]]
) -> str | None:
    """The sensor's state as Home Assistant would show it from the retained messages:
    None when unavailable ("all" mode: every availability entry must say available)."""
    for entry in config["availability"]:
        payload = retained.get(entry["topic"])
        if payload is None:
            return None
        said = render(entry["value_template"], payload) if "value_template" in entry else payload
        if said != entry.get("payload_available", "online"):
            return None
    value = render(config["value_template"], retained[config["state_topic"]])
    return "unknown" if value == "None" else value


def _seed(url: str) -> None:
    engine = make_engine(url)
    migrate(engine)
    with session_factory(engine).begin() as session:
        apply_shop(session, parse_shop(SHOP))
    engine.dispose()


def _configs(listener: Listener) -> dict[str, dict[str, Any]]:
    """The latest config per topic (an empty message: taken back, left out)."""
    latest: dict[str, bytes] = {}
    for m in listener.messages:
        if m.topic.endswith("/config"):
            latest[m.topic] = m.payload
    return {t: json.loads(p) for t, p in latest.items() if p}


def _retained_states(listener: Listener) -> dict[str, dict[str, Any]]:
    states = {}
    for m in listener.messages:
        if m.payload and not m.topic.endswith("/config"):
            states[m.topic] = json.loads(m.payload)
    return states


def test_discovery_follows_home_assistants_rules_and_unknown_power_is_unavailable(tmp_path, broker):
    cfg = make_config(tmp_path, broker, homeassistant={"discovery": True})
    _seed(cfg.db.url)
    clear_retained(broker.port, "peershop/tool/ha-laser/state", "peershop/tool/ha-saw/state")
    old = Device(broker.port, "old-hub")
    old.send(b'{"name":"power","state_topic":"peershop/tool/ha-old/state"}', STALE, retain=True)
    old.flush()
    old.close()
    listener = Listener(
        broker.port, "homeassistant/sensor/#", "peershop/hub/status", "peershop/tool/+/state"
    )
    hub = Hub(cfg)
    hub.start()
    try:
        prefix = "homeassistant/sensor/peershop_ha-"
        listener.wait(lambda msgs: len([m for m in msgs if m.topic.startswith(prefix)]) >= 7)
        # the config of a tool the hub no longer has is taken back
        listener.wait(lambda msgs: any(m.topic == STALE and not m.payload for m in msgs))
        configs = _configs(listener)
        ours = {t: c for t, c in configs.items() if t.startswith(prefix)}
        laser = {t.split("/")[3]: c for t, c in ours.items() if "ha-laser" in t}
        saw = {t.split("/")[3]: c for t, c in ours.items() if "ha-saw" in t}
        assert set(laser) == {"state", "power", "energy", "user"}  # a plug: metered
        assert set(saw) == {"state", "power", "user"}  # a reader only: no energy sensor
        for topic, config in ours.items():
            assert sensor_problems(config) == [], topic
        assert laser["energy"]["default_entity_id"] == "sensor.peershop_ha_laser_energy"
        assert len({c["unique_id"] for c in ours.values()}) == len(ours)

        # no reading yet: power and energy are unavailable, never 0 W
        listener.wait(lambda msgs: "peershop/tool/ha-laser/state" in _retained_states(listener))
        retained = _retained_states(listener)
        assert as_home_assistant_shows(laser["power"], retained) is None
        assert as_home_assistant_shows(laser["energy"], retained) is None
        assert as_home_assistant_shows(laser["state"], retained) == "free"

        plug = Device(broker.port, "ha-laser-plug")
        for power, total in ((120.0, 1.0), (130.0, 1.002)):
            body = {"Time": "2026-11-26T10:00:00", "ENERGY": {"Total": total, "Power": power}}
            plug.send(json.dumps(body).encode(), "tele/ha_laser_plug/SENSOR")
        plug.flush()
        plug.close()

        def metered(msgs: list[Any]) -> bool:
            state = _retained_states(listener).get("peershop/tool/ha-laser/state", {})
            return state.get("w") == 130.0 and state.get("wh_total") is not None

        listener.wait(metered)
        retained = _retained_states(listener)
        assert float(as_home_assistant_shows(laser["power"], retained)) == 130.0
        energy = float(as_home_assistant_shows(laser["energy"], retained))
        assert energy >= 0  # Wh the meter counted since the hub started
        # the saw has no meter: its power is unavailable, not 0 W
        assert as_home_assistant_shows(saw["power"], retained) is None
    finally:
        hub.stop()
        listener.close()
    # while the hub is offline, nothing it reports is available
    late = Listener(broker.port, "peershop/hub/status", "peershop/tool/+/state")
    late.wait(lambda msgs: any(m.topic == "peershop/hub/status" for m in msgs))
    assert as_home_assistant_shows(laser["power"], _retained_states(late)) is None
    late.close()


def test_a_removed_tools_configs_are_taken_back_after_a_restart(tmp_path, broker):
    cfg = make_config(
        tmp_path, broker, homeassistant={"discovery": True}, mqtt={"client_id": "hub-removal"}
    )
    _seed(cfg.db.url)
    listener = Listener(broker.port, "homeassistant/sensor/#")
    hub = Hub(cfg)
    hub.start()
    saw = "homeassistant/sensor/peershop_ha-saw/"
    try:
        listener.wait(lambda msgs: len({m.topic for m in msgs if m.topic.startswith(saw)}) == 3)
    finally:
        hub.stop()
    engine = make_engine(cfg.db.url)
    with session_factory(engine).begin() as session:
        session.delete(session.scalar(select(Tool).where(Tool.id == "ha-saw")))
    engine.dispose()
    hub = Hub(cfg)
    hub.start()
    try:
        gone = f"{saw}state/config", f"{saw}power/config", f"{saw}user/config"
        listener.wait(
            lambda msgs: all(any(m.topic == t and not m.payload for m in msgs) for t in gone)
        )
    finally:
        hub.stop()
        listener.close()
    # a Home Assistant that connects now finds the laser's sensors and none of the saw's
    late = Listener(broker.port, "homeassistant/sensor/#")
    late.wait(lambda msgs: any("peershop_ha-laser" in m.topic for m in msgs))
    assert not [m for m in late.messages if m.topic.startswith(saw) and m.payload]
    late.close()


def test_a_configured_prefix_is_followed_for_configs_births_and_take_backs(tmp_path, broker):
    cfg = make_config(
        tmp_path,
        broker,
        homeassistant={"discovery": True, "prefix": "shopha"},
        mqtt={"client_id": "hub-prefix"},
    )
    _seed(cfg.db.url)
    stale = "shopha/sensor/peershop_ha-old/state/config"
    old = Device(broker.port, "old-hub-prefix")
    old.send(b'{"name":"state"}', stale, retain=True)
    old.flush()
    old.close()
    listener = Listener(broker.port, "shopha/#", "homeassistant/sensor/peershop_ha-saw/#")
    hub = Hub(cfg)
    hub.start()
    try:
        listener.wait(lambda msgs: any(m.topic == stale and not m.payload for m in msgs))

        def announced(msgs: list[Any]) -> list[Any]:
            head = "shopha/sensor/peershop_ha-"
            return [m for m in msgs if m.topic.startswith(head) and m.payload and m.topic != stale]

        listener.wait(lambda msgs: len(announced(msgs)) >= 7)  # laser 4, saw 3
        before = len(announced(listener.messages))
        ha = Device(broker.port, "home-assistant-prefix")
        ha.send(b"online", topic="shopha/status")
        ha.flush()
        ha.close()
        # Home Assistant's birth under the configured prefix: everything announced again
        listener.wait(lambda msgs: len(announced(msgs)) >= before + 7)
    finally:
        hub.stop()
        listener.close()
    for m in announced(listener.messages):
        assert sensor_problems(json.loads(m.payload)) == [], m.topic
    # nothing was published under the default prefix (what is retained there is older)
    assert not [
        m for m in listener.messages if m.topic.startswith("homeassistant/") and not m.retain
    ]
