"""Smart plugs and meters of other makers (Tasmota, Shelly, any MQTT JSON meter): one
module per kind, each a :class:`~hub.plugs.base.PlugKind`, named in :data:`KINDS`.

Adding a kind is one module and one entry here; nothing else in the hub asks which kind
a plug is.  Pure (the rules use the kinds to switch plugs): no storage, network or clock.

May import: hub.contract, the base modules.
"""

from __future__ import annotations

from hub.contract.messages import DISCOVERY_PREFIX
from hub.plugs.base import PlugKind, reserved_problem, trees_overlap
from hub.plugs.mqtt_json import MqttJson
from hub.plugs.shelly import Shelly
from hub.plugs.tasmota import Tasmota

KINDS: dict[str, PlugKind] = {kind.name: kind for kind in (Tasmota(), Shelly(), MqttJson())}


def plug_name(kind: str) -> str:
    """What a plug's topic is called: a Tasmota topic, a Shelly prefix."""
    return KINDS[kind].ref_name


def plug_topics(kind: str, ref: str) -> tuple[str, ...]:
    """The topic trees (each ``tree/#``) a plug writes or reads, by its kind and topic."""
    return KINDS[kind].trees(ref)


def plug_ref_problem(kind: str, ref: str, discovery_prefix: str = DISCOVERY_PREFIX) -> str | None:
    """Why ``ref`` cannot be a plug's topic (it reaches into a reserved tree), or None.

    >>> plug_ref_problem("shelly", "peershop")
    "Shelly prefix 'peershop' overlaps peershop/, which is reserved \
(peershop/, tele/, stat/, cmnd/, homeassistant/ and $ topics are not a plug's)"
    >>> plug_ref_problem("shelly", "shelly-saw") is None
    True
    """
    return reserved_problem(plug_name(kind), ref, discovery_prefix)


def plugs_overlap(a: tuple[str, str], b: tuple[str, str]) -> bool:
    """Whether two plugs ``(kind, topic)`` share topics, so one could speak as the other."""
    return trees_overlap(plug_topics(*a), plug_topics(*b))
