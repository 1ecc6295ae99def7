"""Tasmota plugs: ``tele/<topic>/SENSOR`` readings, the ``LWT`` will, relay states and
the answer to ``Status 10`` under ``stat/``; switched by ``cmnd/<topic>/POWER<n>``.

A plug with several channels (a Shelly 2.5 on Tasmota) is bound one channel at a time
(``{tasmota: TOPIC, channel: N}``, numbered from 1 as ``POWER<n>``)."""

from __future__ import annotations

from typing import Any, ClassVar

from hub.contract.messages import TASMOTA_ROOTS, PowerRange
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

NAMES = ("ENERGY.Power", "ENERGY.Total (in Wh)")


class Tasmota(PlugKind):
    name: ClassVar[str] = "tasmota"
    ref_name: ClassVar[str] = "Tasmota topic"
    channel_key: ClassVar[str | None] = "channel"
    channel_first: ClassVar[int] = 1

    def trees(self, ref: str) -> tuple[str, ...]:
        return tuple(f"{root}/{ref}" for root in TASMOTA_ROOTS)

    def subscriptions(self, plugs: list[PlugBinding]) -> list[str]:
        # periodic readings and the will; under stat/ the relays' states (POWER<n>)
        # and the answer to `Status 10` (STATUS10)
        return ["tele/+/SENSOR", "tele/+/LWT", "stat/+/+"] if plugs else []

    def locate(self, topic: str) -> list[tuple[str, str]]:
        parts = topic.split("/")
        if len(parts) == 3 and parts[0] in ("tele", "stat"):
            return [(parts[1], f"{parts[0]}/{parts[2]}")]
        return []

    def decode(
        self,
        leaf: str,
        topic: str,
        payload: bytes,
        plugs: list[PlugBinding],
        power: PowerRange,
        memory: PlugMemory,
    ) -> list[PlugMessage]:
        if leaf == "tele/LWT":
            return statuses(plugs, tasmota_online(payload), memory)
        if leaf in ("tele/SENSOR", "stat/STATUS10"):
            out: list[PlugMessage] = []
            for plug in plugs:
                try:
                    reading = memory.overlay(plug.device_id, tasmota_sensor(payload, plug.channel))
                    out.extend(power_event(plug, reading, topic, payload, power, NAMES))
                except ContractError as exc:
                    out.append(PlugProblem(plug.device_id, str(exc)))
            return unless_all_bad(out)
        if leaf.startswith("stat/POWER"):
            # the relay of channel n (POWER<n>; a plain POWER is POWER1); off draws nothing
            number = leaf.removeprefix("stat/POWER") or "1"
            if not number.isdigit():
                return []
            on = tasmota_relay(payload)
            out = []
            for plug in plugs:
                if max(plug.channel, 1) != int(number):
                    continue
                reading = memory.overlay(plug.device_id, PlugReading(None, None, on))
                if not on:
                    out.extend(power_event(plug, reading, topic, payload, power, NAMES))
            return out
        return []

    def switch(self, plug: PlugBinding, on: bool) -> list[Command]:
        # POWER<n> switches relay n; a plain POWER is the whole (single) plug
        return [Command(f"cmnd/{plug.ref}/POWER{plug.channel or ''}", b"ON" if on else b"OFF")]

    def status_request(self, plug: PlugBinding) -> Command | None:
        # answered on stat/<topic>/STATUS10
        return Command(f"cmnd/{plug.ref}/STATUS", b"10")

    def acl(self, ref: str) -> list[str]:
        return [
            f"topic write tele/{ref}/#",
            f"topic write stat/{ref}/#",
            f"topic read cmnd/{ref}/#",
        ]

    def hub_acl(self, ref: str) -> list[str]:
        return []  # the hub reads and writes all of tele/, stat/ and cmnd/ already


def tasmota_sensor(payload: bytes | str | dict[str, Any], channel: int = 0) -> PlugReading:
    """``tele/{topic}/SENSOR`` (or ``stat/{topic}/STATUS10``, the same under
    ``StatusSNS``): ``ENERGY.Power`` in W, ``ENERGY.Total`` in **kWh** → Wh.

    A plug with several channels (a Shelly 2.5 on Tasmota) sends arrays, one value per
    channel: ``channel`` (from 1, as ``POWER<n>``) picks one; 0 is a plug of one channel.
    Its ``Total`` is one sum over every channel unless the plug sends one per channel
    (``SetOption129 1``): a sum is no channel's counter, so that channel has none.

    >>> tasmota_sensor(b'{"ENERGY":{"Total":1.234,"Power":812}}')
    PlugReading(w=812.0, wh_total=1234.0, output=None)
    >>> tasmota_sensor(b'{"ENERGY":{"Total":0.105,"Power":[23.63,67.17]}}', channel=2)
    PlugReading(w=67.17, wh_total=None, output=None)
    """
    obj = decode_json(payload)
    status = obj.get("StatusSNS")
    energy = (status if isinstance(status, dict) else obj).get("ENERGY")
    if not isinstance(energy, dict):
        raise ContractError("Tasmota SENSOR payload has no ENERGY object")
    power = energy.get("Power")
    channels = len(power) if isinstance(power, list) else None
    if channels is None and channel > 1 and power is not None:
        raise ContractError(
            f"ENERGY.Power is one value: the plug has no channel {channel} (bind it whole)"
        )
    w = finite(_channel_value(power, channel, "ENERGY.Power"), "ENERGY.Power")
    total = energy.get("Total")
    if isinstance(total, list) or channels is None:
        total = finite(_channel_value(total, channel, "ENERGY.Total"), "ENERGY.Total")
    else:
        total = None  # one sum over the channels: no channel's own counter
    if w is None and total is None:
        raise ContractError("Tasmota SENSOR payload has neither ENERGY.Power nor ENERGY.Total")
    if total is not None and total < 0:
        raise ContractError(f"ENERGY.Total must not be negative, got {total}")
    return PlugReading(w, None if total is None else total * 1000.0)


def _channel_value(value: Any, channel: int, what: str) -> Any:
    """``value`` itself, or its element for ``channel`` (from 1) when it is an array."""
    if not isinstance(value, list):
        return value
    if channel == 0:
        raise ContractError(
            f"{what} has {len(value)} channels: bind one ({{tasmota: TOPIC, channel: N}})"
        )
    if channel > len(value):
        raise ContractError(f"{what} has {len(value)} channels, so no channel {channel}")
    return value[channel - 1]


def tasmota_relay(payload: bytes | str) -> bool:
    """``stat/{topic}/POWER`` or ``POWER<n>``: ``ON`` or ``OFF``, the relay's state."""
    return text_choice(payload, "ON", "OFF", "Tasmota POWER")


def tasmota_online(payload: bytes | str) -> bool:
    """``tele/{topic}/LWT``: ``Online`` or ``Offline``."""
    return text_choice(payload, "Online", "Offline", "Tasmota LWT")
