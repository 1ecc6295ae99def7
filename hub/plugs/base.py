"""What every plug kind is: :class:`PlugKind`, and the pieces the kinds share.

A kind is a class of its own module (``hub/plugs/tasmota.py``, ``shelly.py``, …) named in
:data:`hub.plugs.KINDS`.  It knows everything about its plugs that the rest of the hub
needs: the topics to subscribe to, how a payload becomes readings, how to switch a
plug and ask it for its status, the broker ACL lines of its login, which topic trees it
writes (so no plug reaches a reserved tree or another plug's), and how the shop file
names one of its channels.  Nothing outside ``hub/plugs/`` asks which kind a plug is.

Pure: no storage, network or clock, so the rules (``ShopEngine``) use the kinds too.
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, Protocol

from hub.contract.messages import (
    DISCOVERY_PREFIX,
    RESERVED_ROOTS,
    DeviceEvent,
    DeviceStatus,
    PowerRange,
)
from hub.errors import ContractError


def plug_device_id(kind: str, ref: str, channel: int = 0) -> str:
    """The event log's device id for an off-the-shelf plug (a ``/`` no device id can have);
    a channel other than 0 follows a ``#``, which no plug topic can hold.

    >>> plug_device_id("tasmota", "shelly25-saws", 2)
    'tasmota/shelly25-saws#2'
    """
    return f"{kind}/{ref}#{channel}" if channel else f"{kind}/{ref}"


class PlugBinding(NamedTuple):
    """An off-the-shelf plug feeding a tool: its kind, its topic (a Tasmota topic, a
    Shelly prefix, a meter's topic), the channel as the plug numbers it (a Tasmota's
    ``POWER<n>`` from 1, 0 being the whole plug; a Shelly's ``switch:<n>`` from 0), and
    the kind's own options from the shop file, as sorted ``(key, value)`` pairs."""

    kind: str
    ref: str
    channel: int = 0
    options: tuple[tuple[str, str], ...] = ()

    @property
    def device_id(self) -> str:
        return plug_device_id(self.kind, self.ref, self.channel)

    def option(self, key: str, default: str | None = None) -> str | None:
        return dict(self.options).get(key, default)


class Command(NamedTuple):
    """Something to publish to a plug (the engine makes a ``Message`` of it)."""

    topic: str
    payload: bytes
    qos: int = 1


@dataclass(frozen=True, slots=True)
class PlugReading:
    """A plug's report mapped to the contract's units: watts and a Wh counter.

    Any field may be None when the payload does not carry it (Shelly's NotifyStatus sends
    partial updates).  ``output`` is the relay state where the plug reports it.
    """

    w: float | None
    wh_total: float | None
    output: bool | None = None


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
    switched off meanwhile).  Counters are not kept: a counter repeated from memory would
    say no energy was used since."""

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


class PlugKind(ABC):
    """One kind of plug.  Subclasses set the class attributes and override the methods
    their plugs need; the defaults describe a meter that publishes on one topic tree of
    its own and cannot be switched."""

    name: ClassVar[str]
    """The kind as the shop file, the database and the device ids spell it."""
    ref_name: ClassVar[str]
    """What a plug's topic is called, in messages: ``Tasmota topic``."""
    channel_key: ClassVar[str | None] = None
    """The shop file's key naming one channel of a plug (None: plugs of one channel)."""
    channel_first: ClassVar[int] = 0
    """The first channel's number as the plug numbers it."""
    options: ClassVar[tuple[str, ...]] = ()
    """Further keys a binding of this kind takes in the shop file (strings)."""
    required_options: ClassVar[tuple[str, ...]] = ()
    switches: ClassVar[bool] = True
    """Whether the hub can switch the plug off and on."""

    # --- topics ---------------------------------------------------------------------

    def trees(self, ref: str) -> tuple[str, ...]:
        """The topic trees (each ``tree/#``) a plug with topic ``ref`` writes or reads."""
        return (ref,)

    def subscriptions(self, plugs: list[PlugBinding]) -> list[str]:
        """Topics the hub subscribes to for the bound ``plugs`` of this kind."""
        return [f"{p.ref}/#" for p in plugs]

    def locate(self, topic: str) -> list[tuple[str, str]]:
        """The ``(ref, leaf)`` pairs ``topic`` could be of this kind: which plug's topic,
        and what part of it; none when the topic has none of this kind's forms."""
        return []

    @abstractmethod
    def decode(
        self,
        leaf: str,
        topic: str,
        payload: bytes,
        plugs: list[PlugBinding],
        power: PowerRange,
        memory: PlugMemory,
    ) -> list[PlugMessage]:
        """A message on one of ``plugs``' topics as events or statuses (see
        :func:`hub.plugs.decode.parse_plug`)."""

    # --- commands -------------------------------------------------------------------

    def switch(self, plug: PlugBinding, on: bool) -> list[Command]:
        """What switches ``plug`` (its channel) on or off; nothing for a meter."""
        return []

    def status_request(self, plug: PlugBinding) -> Command | None:
        """What asks a plug that came online for its whole status, or None."""
        return None

    # --- the broker -----------------------------------------------------------------

    def acl(self, ref: str) -> list[str]:
        """The ACL lines of a login of this kind with topic ``ref``: its own topics only."""
        return [f"topic write {ref}/#"]

    def hub_acl(self, ref: str) -> list[str]:
        """The ACL lines the hub's login needs for a bound plug with topic ``ref``."""
        return [f"topic read {ref}/#"]

    # --- the shop file --------------------------------------------------------------

    def binding_label(self, plug: PlugBinding) -> str:
        if not plug.channel or self.channel_key is None:
            return f"{self.name} {plug.ref}"
        return f"{self.name} {plug.ref} {self.channel_key} {plug.channel}"

    def check_options(self, options: Mapping[str, Any]) -> str | None:
        """Why a binding's options are wrong, or None (a kind checks its values here)."""
        return None


class HasPlugs(Protocol):
    """What the decoding needs of the engine's ``ShopData``: its tools and their plugs."""

    @property
    def tools(self) -> Mapping[str, Any]: ...


def bound_plugs(data: HasPlugs) -> list[PlugBinding]:
    return [plug for tool in data.tools.values() for plug in tool.plugs]


# --- the shared decoding pieces ------------------------------------------------------


def decode_json(payload: bytes | str | dict[str, Any]) -> dict[str, Any]:
    """A plug's JSON object payload; anything else is a :class:`ContractError`."""
    if isinstance(payload, dict):
        return payload
    if isinstance(payload, bytes):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise ContractError("plug payload is not UTF-8") from None
    try:
        obj = json.loads(payload, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ContractError(f"plug payload is not JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise ContractError("plug payload is not a JSON object")
    return obj


def _reject_constant(name: str) -> Any:
    raise ContractError(f"plug payload contains {name}, which is not JSON")


def finite(value: Any, what: str) -> float | None:
    """``value`` as a finite float (None stays None), or a :class:`ContractError`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ContractError(f"{what} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ContractError(f"{what} must be finite, got {value}")
    return value


def text_choice(payload: bytes | str, yes: str, no: str, what: str) -> bool:
    """A plain-text payload that is ``yes`` or ``no`` (surrounding space ignored)."""
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    text = text.strip()
    if text not in (yes, no):
        raise ContractError(f"{what} must be {yes} or {no}, got {text[:40]!r}")
    return text == yes


def identity(topic: str, payload: bytes) -> int:
    """A plug reading's identity: plugs have no ``(boot, seq)``, so a redelivered
    message (the same topic and payload) is the same reading and is stored once."""
    digest = hashlib.sha256(topic.encode() + b"\0" + payload).digest()
    return int.from_bytes(digest[:8], "big") >> 2  # fits a signed 64-bit column


def power_event(
    plug: PlugBinding,
    reading: PlugReading,
    topic: str,
    payload: bytes,
    power: PowerRange,
    names: tuple[str, str],
) -> list[PlugMessage]:
    """A channel's reading as a ``power`` event, checked against ``power``; nothing while
    its power is not known yet (the next reading that has it counts).  ``names`` are the
    payload's power and energy fields, for the dead letter's reason."""
    if reading.w is None:
        return []
    power.check(reading.w, reading.wh_total, *names)
    fields: dict[str, float] = {"w": reading.w}
    if reading.wh_total is not None:
        fields["wh_total"] = reading.wh_total
    return [DeviceEvent(plug.device_id, 0, identity(topic, payload), "power", fields)]


def statuses(plugs: list[PlugBinding], online: bool, memory: PlugMemory) -> list[PlugMessage]:
    """Every bound channel of a plug online or offline (offline forgets its memory)."""
    out: list[PlugMessage] = []
    for plug in plugs:
        if not online:
            memory.offline(plug.device_id)
        out.append(DeviceStatus(plug.device_id, "online" if online else "offline", None))
    return out


def unless_all_bad(out: list[PlugMessage]) -> list[PlugMessage]:
    """One channel's bad reading is that channel's dead letter, and the others count;
    when no channel's is good, the message is one dead letter, as any bad message."""
    problems = [m for m in out if isinstance(m, PlugProblem)]
    if problems and len(problems) == len(out):
        raise ContractError(problems[0].reason)
    return out


# --- topics no plug may have ---------------------------------------------------------


def holds(tree: str, topic: str) -> bool:
    """Whether ``tree/#`` covers ``topic``: by levels, so ``tele`` holds ``tele/x``, not
    ``telex``."""
    return topic == tree or topic.startswith(tree + "/")


def reserved_problem(
    ref_name: str, ref: str, discovery_prefix: str = DISCOVERY_PREFIX
) -> str | None:
    """Why ``ref`` cannot be a plug's topic (it reaches into a reserved tree), or None.

    The same rule for every kind, so it is one rule to remember: no plug's topic is, or
    starts with, ``peershop``, ``tele``, ``stat``, ``cmnd``, ``homeassistant``, the
    configured discovery prefix, or ``$``."""
    roots = (*RESERVED_ROOTS, *dict.fromkeys((DISCOVERY_PREFIX, discovery_prefix)))
    listing = ", ".join(f"{root}/" for root in roots)
    why = f"which is reserved ({listing} and $ topics are not a plug's)"
    if ref.startswith("$"):
        return f"{ref_name} {ref!r} is a broker topic ($), {why}"
    for root in roots:
        if holds(root, ref) or holds(ref, root):
            return f"{ref_name} {ref!r} overlaps {root}/, {why}"
    return None


def trees_overlap(a: Iterable[str], b: Iterable[str]) -> bool:
    b = list(b)
    return any(holds(x, y) or holds(y, x) for x in a for y in b)
