"""What a checked shop file holds: one frozen record per entry, and the constants of the
file's vocabulary.  hub/shopfile/parse.py makes them, hub/shopfile/apply.py writes them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from hub.config import DEFAULT_SITE
from hub.contract.messages import DEVICE_ID
from hub.peerconomy import economy as pc
from hub.plugs import KINDS as PLUG_KINDS
from hub.plugs.base import PlugBinding
from hub.rules.access import Role
from hub.rules.records import StationKind
from hub.rules.sessions import ToolRules, tool_rules

MAX_ERRORS = 20
"""At most this many problems are listed; the rest are counted."""

SLUG = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
"""Ids of projects, members (handles), trainings and tasks."""
# Tools and devices appear in MQTT topics (``peershop/tool/{tool}/state``), so they use
# the device id pattern of docs/device-protocol.md: no dots, no underscores, at most 63
# characters.
TOOL_ID = DEVICE_ID
PLUG_REF = re.compile(r"[^\s+#/][^\s+#]{0,199}")
"""A Tasmota topic or Shelly prefix: no spaces, no MQTT wildcards, no leading slash."""

ROLES = tuple(Role)
STATION_KINDS = tuple(StationKind)
BINDING_KINDS = ("device", *PLUG_KINDS)
# A binding names one channel of a plug in the plug's own numbering (its kind's
# channel_key and channel_first: a Tasmota's POWER<n> from 1, a Shelly's switch:<n> from 0).
CHANNEL_LAST = 32
TOP_KEYS = ("projects", "members", "trainings", "tools", "tasks", "stations")
DEFAULT_MODEL = pc.Model.PRODUCTION_EFFORT
UNITS = ("hours", "busy_hours")  # what a tool's use counts in at period close
DEFAULT_PER_SLOT = timedelta(hours=1)

_RULES = ToolRules()  # the session defaults a tool gets for what the file leaves out
_UTC = ZoneInfo("UTC")  # opening hours are checked here; the hub reads them in site.timezone


# ---------------------------------------------------------------------------------------
# what a checked file holds


@dataclass(frozen=True)
class _Located:
    """Where an entry is in the file: its line, each key's line and its label
    (``tools[0] (laser-1)``), for messages about it after parsing."""

    line: int = field(default=0, kw_only=True)
    key_lines: dict[str, int] = field(default_factory=dict, kw_only=True, compare=False, repr=False)
    label: str = field(default="", kw_only=True, compare=False, repr=False)

    def at(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


@dataclass(frozen=True)
class ProjectSpec(_Located):
    """A project; ``gain``, ``weight_min``, ``weight_max`` and ``weight_mode`` are rule
    (a)'s settings (docs/sharing-models.md defaults when the file leaves them out)."""

    id: str
    name: str
    model: pc.Model
    gain: Decimal = pc.K
    weight_min: Decimal = pc.LO
    weight_max: Decimal = pc.HI
    weight_mode: pc.WeightMode = pc.WeightMode.CLOSE

    def has_default_rules(self) -> bool:
        return (self.gain, self.weight_min, self.weight_max, self.weight_mode) == (
            pc.K,
            pc.LO,
            pc.HI,
            pc.WeightMode.CLOSE,
        )


@dataclass(frozen=True)
class MemberSpec(_Located):
    handle: str
    name: str
    roles: tuple[str, ...]
    badges: tuple[str, ...]
    factor: Decimal = Decimal(1)


@dataclass(frozen=True)
class GrantSpec(_Located):
    """``member`` holds the training, granted ``by`` a trainer or coordinator."""

    member: str
    by: str
    expires: datetime | None


@dataclass(frozen=True)
class TrainingSpec(_Located):
    id: str
    name: str
    granted: tuple[GrantSpec, ...]


@dataclass(frozen=True)
class BindingSpec:
    """A device feeding a tool: ``kind`` is device or a plug kind (ToolBinding).

    ``options`` (the kind's own keys, a meter's JSON paths) are not part of a binding's
    identity: the same plug channel with other options is the same binding."""

    kind: str
    ref: str
    channel: int = 0  # a plug's channel (ToolBinding.channel); 0: the whole plug, switch:0
    options: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def __str__(self) -> str:
        if self.kind in PLUG_KINDS:
            return PLUG_KINDS[self.kind].binding_label(self.plug)
        return f"{self.kind} {self.ref}"

    @property
    def plug(self) -> PlugBinding:
        return PlugBinding(self.kind, self.ref, self.channel, self.options)


@dataclass(frozen=True)
class ToolSpec(_Located):
    """A tool with its columns as stored: ``power``, ``options`` and ``scarce`` are the
    JSON the ``tools`` table gets (thresholds in W, durations in seconds)."""

    id: str
    name: str
    project: str | None
    training: str | None
    policy: str
    bindings: tuple[BindingSpec, ...]
    power: dict[str, Any]
    options: dict[str, Any]
    scarce: dict[str, Any] | None
    site: str = DEFAULT_SITE

    def rules(self) -> ToolRules:
        """The session rules these settings give (what the hub builds from the row)."""
        return tool_rules(self.policy, self.power, self.options)


@dataclass(frozen=True)
class TaskSpec(_Located):
    """``weight`` None: the file leaves it out (new task 1.0, an existing one keeps its)."""

    id: str
    title: str
    project: str | None
    slots: int
    hours: Decimal
    weight: Decimal | None
    resource: str | None


@dataclass(frozen=True)
class StationSpec(_Located):
    device: str
    kind: str
    site: str = DEFAULT_SITE


@dataclass(frozen=True)
class Shop:
    """A checked shop file; ``source`` is the file name errors and diffs refer to."""

    source: str
    projects: tuple[ProjectSpec, ...] = ()
    members: tuple[MemberSpec, ...] = ()
    trainings: tuple[TrainingSpec, ...] = ()
    tools: tuple[ToolSpec, ...] = ()
    tasks: tuple[TaskSpec, ...] = ()
    stations: tuple[StationSpec, ...] = ()

    def devices(self) -> list[str]:
        """Every MQTT device the file names (tool bindings and stations), in file order."""
        ids = [b.ref for t in self.tools for b in t.bindings if b.kind == "device"]
        ids += [s.device for s in self.stations]
        return list(dict.fromkeys(ids))


# ---------------------------------------------------------------------------------------
# values as the file writes them


def _fmt(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value == int(value):
        return str(int(value))
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, str) and (not value or " " in value or "'" in value):
        return repr(value)
    return str(value)


def _fmt_duration(value: Any) -> str:
    if value is None:
        return "none"
    seconds = float(value)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and not (seconds % size and unit == "d"):
            whole = int(seconds // size)
            parts.append(f"{whole}{unit}")
            seconds -= whole * size
    if seconds or not parts:
        parts.append(f"{_fmt(seconds)}s")
    return "".join(parts)


def _describe(pattern: re.Pattern[str]) -> str:
    if pattern is SLUG:
        return "lowercase letters, digits, '.', '_' and '-', at most 64"
    if pattern is DEVICE_ID:
        return "lowercase letters, digits and '-', at most 63"
    return "no spaces, '+', '#' or leading '/'"


def _seconds(td: timedelta) -> int | float:
    """A duration as stored in JSON: whole seconds as an int."""
    s = td.total_seconds()
    return int(s) if s == int(s) else s
