"""Bound plugs as devices of the event log, whatever their kind (:data:`hub.plugs.KINDS`).

A plug bound to a tool in the shop file feeds power and energy exactly like an MQTT
device; each bound channel of a multi-channel plug is a device of its own
(:func:`~hub.plugs.base.plug_device_id`).  Plugs have no ``(boot, seq)``, so a reading's
identity is a hash of its topic and payload: a redelivered message is the same reading
and is stored once, and since energy comes from the cumulative counter, no two distinct
readings can double energy.

A plug that reports changes only (a Shelly's ``NotifyStatus``) is laid over the status
known before: :class:`PlugMemory` keeps that status per plug channel, so a counter
update is a reading at the power last reported.  A counter is passed on only when the
message carries it: a counter repeated from memory would say no energy was used since.
"""

from __future__ import annotations

from hub.contract.messages import PLAUSIBLE, DeviceStatus, PowerRange
from hub.plugs import KINDS
from hub.plugs.base import (
    Command,
    HasPlugs,
    PlugBinding,
    PlugMemory,
    PlugMessage,
    PlugProblem,
    bound_plugs,
)
from hub.plugs.shelly import HUB_RPC_SRC

__all__ = [
    "HUB_RPC_SRC",
    "PlugMemory",
    "PlugMessage",
    "PlugProblem",
    "parse_plug",
    "plug_subscriptions",
    "status_request",
    "switch_commands",
]


def plug_subscriptions(data: HasPlugs) -> list[str]:
    """Topics the hub listens to for the plugs bound in the shop file."""
    plugs = bound_plugs(data)
    topics: list[str] = []
    for name, kind in KINDS.items():
        topics += kind.subscriptions([p for p in plugs if p.kind == name])
    return list(dict.fromkeys(topics))


def status_request(data: HasPlugs, status: DeviceStatus) -> tuple[str, bytes] | None:
    """What to ask a bound plug that came online (or that the hub heard online at its
    start) for its whole status at once, as ``(topic, payload)``: a Tasmota ``Status
    10``, a Shelly ``Switch.GetStatus``; None for a kind that cannot be asked.  Without
    it the hub would know the plug's power only at its next report."""
    if status.state != "online":
        return None
    for plug in bound_plugs(data):
        if plug.device_id == status.device_id:
            command = KINDS[plug.kind].status_request(plug)
            return None if command is None else (command.topic, command.payload)
    return None


def switch_commands(plug: PlugBinding, *, on: bool) -> list[Command]:
    """What switches a bound plug's channel on or off (nothing for a meter)."""
    return KINDS[plug.kind].switch(plug, on)


def parse_plug(
    topic: str,
    payload: bytes,
    data: HasPlugs,
    power: PowerRange = PLAUSIBLE,
    memory: PlugMemory | None = None,
) -> list[PlugMessage]:
    """A plug message as events or statuses, one per bound channel it speaks for; an
    empty list when it is not a bound plug's topic or says nothing about power.

    A bound plug's malformed payload, a channel it does not have, or a reading outside
    ``power`` raises :class:`~hub.errors.ContractError` (a dead letter); when the
    message's other channels read well, that channel's is a :class:`PlugProblem`.  Negative power
    within the range (``ingest.min_power_w`` below 0) goes on to the rules, which count
    it as 0 W.  ``memory`` lays partial updates over what the plug said before."""
    memory = PlugMemory() if memory is None else memory
    plugs = bound_plugs(data)
    for name, kind in KINDS.items():
        for ref, leaf in kind.locate(topic):
            bindings = [p for p in plugs if p.kind == name and p.ref == ref]
            if bindings:
                return kind.decode(leaf, topic, payload, bindings, power, memory)
    return []
