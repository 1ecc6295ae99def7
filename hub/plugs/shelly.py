"""Shelly Gen2+ plugs and relays: ``<prefix>/status/switch:<n>``, partial
``NotifyStatus`` updates on ``<prefix>/events/rpc``, ``<prefix>/online``, and the
answers to the hub's RPCs; switched by a ``Switch.Set`` RPC on ``<prefix>/rpc``.

A Shelly with factory MQTT settings reports changes only: a ``NotifyStatus`` carries
what changed (``apower`` when the load moves, the ``aenergy`` counter once a minute,
``output`` when the relay flips), laid over the status known before
(:class:`~hub.plugs.base.PlugMemory`).  Channels are ``switch:<n>``, from 0."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from hub.contract.messages import PowerRange
from hub.errors import ContractError
from hub.plugs.base import (
    Command,
    PlugBinding,
    PlugKind,
    PlugMemory,
    PlugMessage,
    PlugProblem,
    PlugReading,
    decode_json,
    finite,
    power_event,
    statuses,
    text_choice,
    unless_all_bad,
)

# A Shelly answers the hub's RPCs on {src}/rpc: src is kept under the plug's own prefix,
# the only place the broker's ACL lets a Shelly publish.
HUB_RPC_SRC = "peershop-hub"
NAMES = ("apower", "aenergy.total")


class Shelly(PlugKind):
    name: ClassVar[str] = "shelly"
    ref_name: ClassVar[str] = "Shelly prefix"
    channel_key: ClassVar[str | None] = "switch"
    channel_first: ClassVar[int] = 0

    def subscriptions(self, plugs: list[PlugBinding]) -> list[str]:
        topics: list[str] = []
        for plug in plugs:
            topics += [
                f"{plug.ref}/status/switch:{plug.channel}",
                f"{plug.ref}/events/rpc",
                f"{plug.ref}/online",
                f"{plug.ref}/{HUB_RPC_SRC}/rpc",
            ]
        return topics

    def locate(self, topic: str) -> list[tuple[str, str]]:
        prefix, _, leaf = topic.rpartition("/")
        if leaf.startswith("switch:") and prefix.endswith("/status"):
            return [(prefix.removesuffix("/status"), f"status/{leaf}")]
        if leaf == "rpc" and prefix.endswith("/events"):
            return [(prefix.removesuffix("/events"), "events/rpc")]
        if leaf == "rpc" and prefix.endswith(f"/{HUB_RPC_SRC}"):
            return [(prefix.removesuffix(f"/{HUB_RPC_SRC}"), "reply")]
        return [(prefix, leaf)] if prefix else []

    def decode(
        self,
        leaf: str,
        topic: str,
        payload: bytes,
        plugs: list[PlugBinding],
        power: PowerRange,
        memory: PlugMemory,
    ) -> list[PlugMessage]:
        if leaf == "online":
            return statuses(plugs, shelly_online(payload), memory)
        out: list[PlugMessage] = []
        for plug in plugs:
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
                out.extend(power_event(plug, whole, topic, payload, power, NAMES))
            except ContractError as exc:
                out.append(PlugProblem(plug.device_id, str(exc)))
        return unless_all_bad(out)

    def switch(self, plug: PlugBinding, on: bool) -> list[Command]:
        body = {
            "id": 1,
            "src": f"{plug.ref}/{HUB_RPC_SRC}",
            "method": "Switch.Set",
            "params": {"id": plug.channel, "on": on},
        }
        return [Command(f"{plug.ref}/rpc", json.dumps(body).encode())]

    def status_request(self, plug: PlugBinding) -> Command | None:
        # answered on <prefix>/peershop-hub/rpc
        body = {
            "id": plug.channel,
            "src": f"{plug.ref}/{HUB_RPC_SRC}",
            "method": "Switch.GetStatus",
            "params": {"id": plug.channel},
        }
        return Command(f"{plug.ref}/rpc", json.dumps(body).encode())

    def acl(self, ref: str) -> list[str]:
        # its prefix is its own; RPC replies go to {prefix}/<src>/rpc
        return [f"topic readwrite {ref}/#"]

    def hub_acl(self, ref: str) -> list[str]:
        return [f"topic readwrite {ref}/#"]


def shelly_switch(payload: bytes | str | dict[str, Any], switch: str = "switch:0") -> PlugReading:
    """Shelly Gen2+ ``{prefix}/status/switch:0`` or a ``NotifyStatus`` on ``events/rpc``.

    ``apower`` is W and ``aenergy.total`` is already **Wh**.  A NotifyStatus that does not
    mention the switch, or mentions neither field, gives a reading of all None.

    >>> shelly_switch(b'{"id":0,"output":true,"apower":40.5,"aenergy":{"total":1500.25}}')
    PlugReading(w=40.5, wh_total=1500.25, output=True)
    """
    obj = decode_json(payload)
    if "method" in obj:
        if obj.get("method") != "NotifyStatus":
            return PlugReading(None, None)
        params = obj.get("params")
        if not isinstance(params, dict):
            raise ContractError("Shelly NotifyStatus has no params object")
        status = params.get(switch)
        if status is None:
            return PlugReading(None, None)
        if not isinstance(status, dict):
            raise ContractError(f"Shelly NotifyStatus {switch} is not an object")
    else:
        status = obj
    w = finite(status.get("apower"), "apower")
    aenergy = status.get("aenergy")
    total = None
    if aenergy is not None:
        if not isinstance(aenergy, dict):
            raise ContractError("aenergy must be an object")
        total = finite(aenergy.get("total"), "aenergy.total")
        if total is not None and total < 0:
            raise ContractError(f"aenergy.total must not be negative, got {total}")
    output = status.get("output")
    if output is not None and not isinstance(output, bool):
        raise ContractError(f"output must be true or false, got {output!r}")
    return PlugReading(w, total, output)


def shelly_reply(payload: bytes | str | dict[str, Any], switch: int) -> PlugReading:
    """A Shelly's answer to the hub's RPC: a ``Switch.GetStatus`` result of switch
    ``switch`` is its whole status; any other answer (``Switch.Set``'s ``was_on``, an
    error, another switch) gives a reading of all None.

    >>> reply = b'{"id":3,"result":{"id":0,"output":true,"apower":8.9,"aenergy":{"total":6.5}}}'
    >>> shelly_reply(reply, 0)
    PlugReading(w=8.9, wh_total=6.5, output=True)
    """
    result = decode_json(payload).get("result")
    if not isinstance(result, dict) or result.get("id") != switch or "output" not in result:
        return PlugReading(None, None)
    return shelly_switch(result)


def shelly_online(payload: bytes | str) -> bool:
    """Shelly ``{prefix}/online``: ``true`` or ``false``."""
    return text_choice(payload, "true", "false", "Shelly online")
