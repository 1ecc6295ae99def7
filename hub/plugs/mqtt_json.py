"""Any MQTT power meter that publishes a JSON object on a topic of its own: a Zigbee
plug through Zigbee2MQTT (``zigbee2mqtt/<name>``: ``{"power": 12.3, "energy": 1.234}``,
energy in kWh), an ESPHome or OpenMQTTGateway meter.  The binding names where in the
object the watts and the energy counter are::

    devices: [{mqtt_json: zigbee2mqtt/saw, power: power, energy: energy, energy_unit: kWh}]

``power`` and ``energy`` are dotted paths (``ENERGY.Power``); ``energy`` is optional
(without a counter, energy is estimated from the power), ``energy_unit`` is ``Wh``
(the default) or ``kWh``.  ``availability`` is the level under the topic where the
meter says ``online`` or ``offline`` (plain, or Zigbee2MQTT's ``{"state": "online"}``),
``availability`` by default.  A meter only: the hub cannot switch it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from hub.contract.messages import PowerRange
from hub.errors import ContractError
from hub.plugs.base import (
    PlugBinding,
    PlugKind,
    PlugMemory,
    PlugMessage,
    PlugReading,
    decode_json,
    finite,
    power_event,
    statuses,
)

UNITS = {"Wh": 1.0, "kWh": 1000.0}


class MqttJson(PlugKind):
    name: ClassVar[str] = "mqtt_json"
    ref_name: ClassVar[str] = "MQTT JSON topic"
    options: ClassVar[tuple[str, ...]] = ("power", "energy", "energy_unit", "availability")
    required_options: ClassVar[tuple[str, ...]] = ("power",)
    switches: ClassVar[bool] = False

    def subscriptions(self, plugs: list[PlugBinding]) -> list[str]:
        topics: list[str] = []
        for plug in plugs:
            topics += [plug.ref, f"{plug.ref}/{_availability(plug)}"]
        return topics

    def locate(self, topic: str) -> list[tuple[str, str]]:
        parent, _, leaf = topic.rpartition("/")
        return [(topic, ""), (parent, leaf)] if parent else [(topic, "")]

    def decode(
        self,
        leaf: str,
        topic: str,
        payload: bytes,
        plugs: list[PlugBinding],
        power: PowerRange,
        memory: PlugMemory,
    ) -> list[PlugMessage]:
        if leaf:
            watching = [p for p in plugs if _availability(p) == leaf]
            return statuses(watching, _online(payload), memory) if watching else []
        obj = decode_json(payload)
        out: list[PlugMessage] = []
        for plug in plugs:
            w_path = plug.option("power") or ""
            wh_path = plug.option("energy")
            w = finite(_at(obj, w_path), w_path)
            wh = None if wh_path is None else finite(_at(obj, wh_path), wh_path)
            if wh is not None:
                if wh < 0:
                    raise ContractError(f"{wh_path} must not be negative, got {wh:g}")
                wh *= UNITS[plug.option("energy_unit") or "Wh"]
            reading = memory.overlay(plug.device_id, PlugReading(w, wh))
            names = (w_path, f"{wh_path} (in Wh)")
            out.extend(power_event(plug, reading, topic, payload, power, names))
        return out

    def check_options(self, options: Mapping[str, Any]) -> str | None:
        for key in ("power", "energy", "availability"):
            value = options.get(key)
            if value is not None and (not value or any(not part for part in value.split("."))):
                return f"{key} must be a dotted path such as ENERGY.Power, got {value!r}"
        avail = options.get("availability")
        if avail is not None and "/" in avail:
            return f"availability is one topic level, got {avail!r}"
        unit = options.get("energy_unit")
        if unit is not None and unit not in UNITS:
            return f"energy_unit must be Wh or kWh, got {unit!r}"
        return None


def _availability(plug: PlugBinding) -> str:
    return plug.option("availability") or "availability"


def _at(obj: dict[str, Any], path: str) -> Any:
    """The value at a dotted path of ``obj``; None where the path leads nowhere."""
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _online(payload: bytes) -> bool:
    """``online`` or ``offline``, plain or as Zigbee2MQTT's ``{"state": "online"}``."""
    text = payload.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            state = json.loads(text).get("state")
        except (json.JSONDecodeError, AttributeError):
            state = None
        text = state if isinstance(state, str) else text
    if text not in ("online", "offline"):
        raise ContractError(f"availability must be online or offline, got {text[:40]!r}")
    return text == "online"
