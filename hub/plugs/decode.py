"""Off-the-shelf plugs (Tasmota, Shelly Gen2+) as devices of the event log.

A plug bound to a tool in the shop file feeds power and energy exactly like an MQTT
device; each bound channel of a multi-channel plug is a device of its own
(:func:`~hub.rules.records.plug_device_id`).  Plugs have no ``(boot, seq)``, so a reading's
identity is a hash of its topic and payload: a redelivered message is the same reading
and is stored once, and since energy comes from the cumulative counter, no two distinct
readings can double energy.

A Shelly with factory MQTT settings reports changes only: a ``NotifyStatus`` on
``{prefix}/events/rpc`` carries what changed (``apower`` when the load moves, the
``aenergy`` counter once a minute, ``output`` when the relay flips), to be laid over
the status known before.  :class:`PlugMemory` keeps that status per plug channel, so a
counter update is a reading at the power last reported.  A counter is passed on only
when the message carries it: a counter repeated from memory would say no energy was
used since.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from hub.contract.messages import PLAUSIBLE, DeviceEvent, DeviceStatus, PowerRange
from hub.errors import ContractError
from hub.rules.power import (
    PlugReading,
    shelly_online,
    shelly_reply,
    shelly_switch,
    tasmota_online,
    tasmota_relay,
    tasmota_sensor,
)
from hub.rules.records import PlugBinding, ShopData

# Tasmota: periodic readings and the will; under stat/ the relays' states (POWER<n>)
# and the answer to `Status 10` (STATUS10)
TASMOTA_TOPICS = ("tele/+/SENSOR", "tele/+/LWT", "stat/+/+")
# A Shelly answers the hub's RPCs on {src}/rpc: src is kept under the plug's own prefix,
# the only place the broker's ACL lets a Shelly publish.
HUB_RPC_SRC = "peershop-hub"


@dataclass(frozen=True)
class PlugProblem:
    """One bound channel's reading the hub cannot take (a dead letter), in a message
    whose other channels' readings are good."""

    device_id: str
    reason: str


PlugMessage = DeviceEvent | DeviceStatus | PlugProblem


@dataclass
class PlugMemory:
    """What each plug channel last said about its power and relay, by device id.

    The hub keeps one for its life; a plug going offline forgets it (the tool may be
    switched off meanwhile).  Counters are not kept: see the module docstring."""

    known: dict[str, PlugReading] = field(default_factory=dict)

    def overlay(self, device_id: str, reading: PlugReading) -> PlugReading:
        """``reading`` laid over what the channel said before: its power (the power last
        reported when it has none) and its own counter, if any.

        A relay reported off draws nothing, whatever power was last reported."""
        old = self.known.get(device_id, PlugReading(None, None))
        w = old.w if reading.w is None else reading.w
        if reading.output is False:
            w = 0.0
        output = old.output if reading.output is None else reading.output
        self.known[device_id] = PlugReading(w, None, output)
        return PlugReading(w, reading.wh_total, output)

    def offline(self, device_id: str) -> None:
        self.known.pop(device_id, None)


def plug_subscriptions(data: ShopData) -> list[str]:
    """Topics the hub listens to for the plugs bound in the shop file."""
    topics: list[str] = []
    plugs = [plug for tool in data.tools.values() for plug in tool.plugs]
    if any(p.kind == "tasmota" for p in plugs):
        topics.extend(TASMOTA_TOPICS)
    for kind, prefix, channel in plugs:
        if kind == "shelly":
            topics.extend(
                (
                    f"{prefix}/status/switch:{channel}",
                    f"{prefix}/events/rpc",
                    f"{prefix}/online",
                    f"{prefix}/{HUB_RPC_SRC}/rpc",
                )
            )
    return list(dict.fromkeys(topics))


def status_request(data: ShopData, status: DeviceStatus) -> tuple[str, bytes] | None:
    """What to ask a bound plug that came online (or that the hub heard online at its
    start) for its whole status at once, as ``(topic, payload)``: a Tasmota ``Status
    10`` (answered on ``stat/<topic>/STATUS10``), a Shelly ``Switch.GetStatus`` (answered
    on ``<prefix>/peershop-hub/rpc``).  Without it the hub would know the plug's power
    only at the next TelePeriod, or, for a Shelly, at its next change."""
    if status.state != "online":
        return None
    for tool in data.tools.values():
        for plug in tool.plugs:
            if plug.device_id != status.device_id:
                continue
            if plug.kind == "tasmota":
                return f"cmnd/{plug.ref}/STATUS", b"10"
            body = {
                "id": plug.channel,
                "src": f"{plug.ref}/{HUB_RPC_SRC}",
                "method": "Switch.GetStatus",
                "params": {"id": plug.channel},
            }
            return f"{plug.ref}/rpc", json.dumps(body).encode()
    return None


def _identity(topic: str, payload: bytes) -> int:
    digest = hashlib.sha256(topic.encode() + b"\0" + payload).digest()
    return int.from_bytes(digest[:8], "big") >> 2  # fits a signed 64-bit column


def parse_plug(
    topic: str,
    payload: bytes,
    data: ShopData,
    power: PowerRange = PLAUSIBLE,
    memory: PlugMemory | None = None,
) -> list[PlugMessage]:
    """A plug message as events or statuses, one per bound channel it speaks for; an
    empty list when it is not a bound plug's topic or says nothing about power.

    A bound plug's malformed payload, a channel it does not have, or a reading outside
    ``power`` raises :class:`~hub.errors.ContractError` (a dead letter); when the
    message's other channels read well, that channel's is a :class:`PlugProblem`.  Negative power
    within the range (``ingest.min_power_w`` below 0) goes on to the rules, which count
    it as 0 W.  ``memory`` lays a Shelly's partial updates over what it said before."""
    memory = PlugMemory() if memory is None else memory
    parts = topic.split("/")
    if len(parts) == 3 and parts[0] in ("tele", "stat"):
        return _tasmota(parts[0], parts[1], parts[2], topic, payload, data, power, memory)
    return _shelly(topic, payload, data, power, memory)


def _tasmota(
    root: str,
    ref: str,
    leaf: str,
    topic: str,
    payload: bytes,
    data: ShopData,
    power: PowerRange,
    memory: PlugMemory,
) -> list[PlugMessage]:
    bindings = _bound(data, "tasmota", ref)
    if not bindings:
        return []
    if root == "tele" and leaf == "LWT":
        return _statuses(bindings, tasmota_online(payload), memory)
    if (root, leaf) in (("tele", "SENSOR"), ("stat", "STATUS10")):
        out: list[PlugMessage] = []
        for plug in bindings:
            try:
                reading = memory.overlay(plug.device_id, tasmota_sensor(payload, plug.channel))
                out.extend(_event(plug, reading, topic, payload, power, "ENERGY.Power"))
            except ContractError as exc:
                out.append(PlugProblem(plug.device_id, str(exc)))
        return _unless_all_bad(out)
    if root == "stat" and leaf.startswith("POWER"):
        # the relay of channel n (POWER<n>; a plain POWER is POWER1); off draws nothing
        number = leaf.removeprefix("POWER") or "1"
        if not number.isdigit():
            return []
        on = tasmota_relay(payload)
        out = []
        for plug in bindings:
            if max(plug.channel, 1) != int(number):
                continue
            reading = memory.overlay(plug.device_id, PlugReading(None, None, on))
            if not on:
                out.extend(_event(plug, reading, topic, payload, power, "ENERGY.Power"))
        return out
    return []


def _shelly(
    topic: str, payload: bytes, data: ShopData, power: PowerRange, memory: PlugMemory
) -> list[PlugMessage]:
    prefix, _, leaf = topic.rpartition("/")
    if leaf.startswith("switch:") and prefix.endswith("/status"):
        prefix, leaf = prefix.removesuffix("/status"), f"status/{leaf}"
    elif leaf == "rpc" and prefix.endswith("/events"):
        prefix, leaf = prefix.removesuffix("/events"), "events/rpc"
    elif leaf == "rpc" and prefix.endswith(f"/{HUB_RPC_SRC}"):
        prefix, leaf = prefix.removesuffix(f"/{HUB_RPC_SRC}"), "reply"
    bindings = _bound(data, "shelly", prefix)
    if not bindings:
        return []
    if leaf == "online":
        return _statuses(bindings, shelly_online(payload), memory)
    out: list[PlugMessage] = []
    for plug in bindings:
        switch = f"switch:{plug.channel}"
        if leaf == "events/rpc":
            reading = shelly_switch(payload, switch)  # all None: not about this switch
        elif leaf == f"status/{switch}":
            reading = shelly_switch(payload, switch)
        elif leaf == "reply":
            reading = shelly_reply(payload, plug.channel)
        else:
            continue
        if reading == PlugReading(None, None):
            continue
        whole = memory.overlay(plug.device_id, reading)
        try:
            out.extend(_event(plug, whole, topic, payload, power, "apower"))
        except ContractError as exc:
            out.append(PlugProblem(plug.device_id, str(exc)))
    return _unless_all_bad(out)


def _unless_all_bad(out: list[PlugMessage]) -> list[PlugMessage]:
    """One channel's bad reading is that channel's dead letter, and the others count;
    when no channel's is good, the message is one dead letter, as any bad message."""
    problems = [m for m in out if isinstance(m, PlugProblem)]
    if problems and len(problems) == len(out):
        raise ContractError(problems[0].reason)
    return out


def _event(
    plug: PlugBinding,
    reading: PlugReading,
    topic: str,
    payload: bytes,
    power: PowerRange,
    power_name: str,
) -> list[PlugMessage]:
    if reading.w is None:
        return []  # no power known yet: the next reading that has it counts
    energy_name = "ENERGY.Total (in Wh)" if plug.kind == "tasmota" else "aenergy.total"
    power.check(reading.w, reading.wh_total, power_name, energy_name)
    fields: dict[str, float] = {"w": reading.w}
    if reading.wh_total is not None:
        fields["wh_total"] = reading.wh_total
    return [DeviceEvent(plug.device_id, 0, _identity(topic, payload), "power", fields)]


def _statuses(bindings: list[PlugBinding], online: bool, memory: PlugMemory) -> list[PlugMessage]:
    out: list[PlugMessage] = []
    for plug in bindings:
        if not online:
            memory.offline(plug.device_id)
        out.append(DeviceStatus(plug.device_id, "online" if online else "offline", None))
    return out


def _bound(data: ShopData, kind: str, ref: str) -> list[PlugBinding]:
    return [
        plug
        for tool in data.tools.values()
        for plug in tool.plugs
        if plug.kind == kind and plug.ref == ref
    ]
