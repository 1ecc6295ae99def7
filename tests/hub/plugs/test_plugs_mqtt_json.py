"""A generic MQTT JSON power meter: a Zigbee plug through Zigbee2MQTT (its documented
``zigbee2mqtt/<name>`` state with ``power`` in W and ``energy`` in kWh, and its
availability ``{"state": "online"}``), an ESPHome or OpenMQTTGateway meter with nested
fields.  A meter only: the hub cannot switch it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from hub.errors import ContractError, ShopFileError
from hub.plugs.decode import parse_plug, switch_commands
from hub.rules.records import ShopData, ToolConfig
from hub.rules.sessions import ToolRules
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop
from hub.store.db import make_engine, session_factory
from hub.store.models import ToolBinding
from tests.conftest import database_url
from tests.hub.plugs.plug_contract import PlugCase, help_test_plug

# Zigbee2MQTT's state of a metering plug (its docs' exposes: power W, energy kWh)
Z2M_STATE = (
    b'{"current":0.05,"energy":1.234,"linkquality":120,"power":12.3,"state":"ON","voltage":231}'
)


def test_mqtt_json_keeps_the_plug_contract(broker_shop):
    stored = help_test_plug(
        PlugCase(
            binding={
                "mqtt_json": "zigbee2mqtt/saw",
                "power": "power",
                "energy": "energy",
                "energy_unit": "kWh",
            },
            reading=("zigbee2mqtt/saw", Z2M_STATE),
            w=12.3,
            wh_total=1234.0,
            online=("zigbee2mqtt/saw/availability", b'{"state":"online"}'),
            offline=("zigbee2mqtt/saw/availability", b"offline"),
            unbound=("zigbee2mqtt/lathe", "zigbee2mqtt/saw/set", "zigbee2mqtt"),
            other_ref="zigbee2mqtt/lathe",
        ),
        broker_shop,
    )
    assert stored == {"w": 12.3, "wh_total": 1234.0}  # one reading, though sent twice


def meter(binding: str) -> ShopData:
    (spec,) = parse_shop(f"tools:\n  - {{id: saw, devices: [{binding}]}}\n").tools[0].bindings
    rules = ToolRules("tap", off_w=5, busy_w=50, idle_timeout=timedelta(minutes=15))
    return ShopData(tools={"saw": ToolConfig("saw", "saw", rules, plugs=(spec.plug,))})


def test_nested_fields_in_wh_and_a_meter_without_a_counter():
    esphome = meter("{mqtt_json: esphome/saw, power: ENERGY.Power, energy: ENERGY.Total}")
    payload = b'{"ENERGY":{"Power":40.5,"Total":1500.25}}'
    (event,) = parse_plug("esphome/saw", payload, esphome)
    assert event.data == {"w": 40.5, "wh_total": 1500.25}  # Wh unless told kWh
    bare = meter("{mqtt_json: omg/saw, power: w}")
    (event,) = parse_plug("omg/saw", b'{"w": 7}', bare)
    assert event.data == {"w": 7.0}  # no counter: energy is estimated from the power
    # a message without the power (a Zigbee2MQTT state change) says nothing
    assert parse_plug("omg/saw", b'{"linkquality": 80}', bare) == []
    # ESPHome's own availability level, named in the binding
    esp = meter("{mqtt_json: esphome/saw, power: p, availability: status}")
    (status,) = parse_plug("esphome/saw/status", b"offline", esp)
    assert status.state == "offline"
    assert parse_plug("esphome/saw/availability", b"offline", esp) == []


def test_a_meter_cannot_be_switched():
    (plug,) = meter("{mqtt_json: zigbee2mqtt/saw, power: power}").tools["saw"].plugs
    assert switch_commands(plug, on=False) == []


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b'{"power": "12 W"}', "power must be a number, got '12 W'"),
        (b"12.3", "plug payload is not a JSON object"),
        (b'{"power": 5, "energy": -1}', "energy must not be negative, got -1"),
        (b'{"power": 500000}', "power is 500000 W, outside the plausible"),
    ],
)
def test_a_bad_reading_is_a_dead_letter_naming_the_field(payload, why):
    data = meter("{mqtt_json: zigbee2mqtt/saw, power: power, energy: energy}")
    with pytest.raises(ContractError, match=why):
        parse_plug("zigbee2mqtt/saw", payload, data)


def test_the_shop_file_names_a_binding_key_that_is_wrong():
    bad = """
tools:
  - {id: saw, devices: [{mqtt_json: z/saw}]}
  - {id: lathe, devices: [{mqtt_json: z/lathe, power: power, energy_unit: MWh}]}
  - {id: drill, devices: [{mqtt_json: z/drill, power: power, channel: 2}]}
  - {id: fan, devices: [{mqtt_json: z/fan, power: "a..b"}]}
"""
    with pytest.raises(ShopFileError) as exc:
        parse_shop(bad)
    assert str(exc.value).splitlines()[1:] == [
        "shop.yaml:3: tools[0] (saw): mqtt_json z/saw: power: is required",
        "shop.yaml:4: tools[1] (lathe): mqtt_json z/lathe: energy_unit must be Wh or kWh, "
        "got 'MWh'",
        "shop.yaml:5: tools[2] (drill): mqtt_json z/drill: unknown key channel (a mqtt_json "
        "binding takes mqtt_json:, power:, energy:, energy_unit: and availability:)",
        "shop.yaml:6: tools[3] (fan): mqtt_json z/fan: power must be a dotted path such as "
        "ENERGY.Power, got 'a..b'",
    ]


def test_changed_keys_of_a_binding_are_stored_on_the_next_load(tmp_path):
    engine = make_engine(database_url(tmp_path))
    shop = "tools:\n  - {{id: saw, devices: [{{mqtt_json: z/saw, power: power{}}}]}}\n"
    try:
        with session_factory(engine).begin() as session:
            apply_shop(session, parse_shop(shop.format(", energy: energy")))
        with session_factory(engine).begin() as session:
            changes = apply_shop(session, parse_shop(shop.format(", energy: e, energy_unit: kWh")))
            assert (
                "~ binding mqtt_json z/saw: {'energy': 'e', 'energy_unit': 'kWh', "
                "'power': 'power'}" in changes
            )
        with session_factory(engine)() as session:
            (row,) = session.scalars(select(ToolBinding)).all()
            assert row.options == {"energy": "e", "energy_unit": "kWh", "power": "power"}
    finally:
        engine.dispose()
