"""Off-the-shelf plugs (Tasmota, Shelly Gen2+) as devices of the event log.

A plug bound to a tool in the shop file feeds power and energy exactly like a §2
device.  Plugs have no ``(boot, seq)``, so a reading's identity is a hash of its topic
and payload: a redelivered message is the same reading and is stored once, and since
energy comes from the cumulative counter, no two distinct readings can double energy.
"""

from __future__ import annotations

import hashlib

from hub.contract.messages import PLAUSIBLE, DeviceEvent, DeviceStatus, PowerRange
from hub.rules.power import shelly_online, shelly_switch, tasmota_online, tasmota_sensor
from hub.rules.records import ShopData, plug_device_id

TASMOTA_TOPICS = ("tele/+/SENSOR", "tele/+/LWT")


def plug_subscriptions(data: ShopData) -> list[str]:
    """Topics the hub listens to for the plugs bound in the shop file."""
    topics: list[str] = []
    kinds = {kind for tool in data.tools.values() for kind, _ in tool.plugs}
    if "tasmota" in kinds:
        topics.extend(TASMOTA_TOPICS)
    for tool in data.tools.values():
        for kind, prefix in tool.plugs:
            if kind == "shelly":
                topics.extend(
                    (f"{prefix}/status/switch:0", f"{prefix}/events/rpc", f"{prefix}/online")
                )
    return topics


def _identity(topic: str, payload: bytes) -> int:
    digest = hashlib.sha256(topic.encode() + b"\0" + payload).digest()
    return int.from_bytes(digest[:8], "big") >> 2  # fits a signed 64-bit column


def parse_plug(
    topic: str, payload: bytes, data: ShopData, power: PowerRange = PLAUSIBLE
) -> DeviceEvent | DeviceStatus | None:
    """A plug message as an event or status; None when it is not a bound plug's topic.

    A bound plug's malformed payload, or a reading outside ``power``, raises
    :class:`~hub.errors.ContractError` (a dead letter).  Negative power within the range
    (``ingest.min_power_w`` below 0) goes on to the rules, which count it as 0 W."""
    parts = topic.split("/")
    names = ("apower", "aenergy.total")
    if len(parts) == 3 and parts[0] == "tele" and parts[2] in ("SENSOR", "LWT"):
        ref = parts[1]
        if not _bound(data, "tasmota", ref):
            return None
        device_id = plug_device_id("tasmota", ref)
        if parts[2] == "LWT":
            return DeviceStatus(device_id, "online" if tasmota_online(payload) else "offline", None)
        reading = tasmota_sensor(payload)
        names = ("ENERGY.Power", "ENERGY.Total (in Wh)")
    else:
        prefix, _, leaf = topic.rpartition("/")
        if leaf == "switch:0" and prefix.endswith("/status"):
            prefix, leaf = prefix[: -len("/status")], "status/switch:0"
        elif leaf == "rpc" and prefix.endswith("/events"):
            prefix, leaf = prefix[: -len("/events")], "events/rpc"
        if not _bound(data, "shelly", prefix):
            return None
        device_id = plug_device_id("shelly", prefix)
        if leaf == "online":
            return DeviceStatus(device_id, "online" if shelly_online(payload) else "offline", None)
        if leaf not in ("status/switch:0", "events/rpc"):
            return None
        reading = shelly_switch(payload)
    if reading.w is None:
        return None  # a partial update that says nothing about power
    power.check(reading.w, reading.wh_total, *names)
    fields: dict[str, float] = {"w": reading.w}
    if reading.wh_total is not None:
        fields["wh_total"] = reading.wh_total
    return DeviceEvent(device_id, 0, _identity(topic, payload), "power", fields)


def _bound(data: ShopData, kind: str, ref: str) -> bool:
    return any((kind, ref) in tool.plugs for tool in data.tools.values())
