"""The shop file (docs/shop-file.md): ``peershop load shop.yaml``.

A coordinator keeps the shop's inventory in one YAML file: projects, members and their
badges, trainings and who holds them, tools with their devices and session settings,
tasks and stations.  :func:`parse_shop_file` reads and checks the whole file before
anything is written; :func:`apply_shop` upserts it into the database and returns the
changes as diff lines.  docs/shop-file.md is the reference for every key.

Checking.  Every problem is a :class:`~hub.errors.ShopFileError`; all problems of a file
are reported together (up to :data:`MAX_ERRORS`), one per line, each as
``FILE:LINE: entry (id): reason``, so a coordinator fixes the file in one go.  A typo in
a key is an error, not a silently ignored setting.  References (a tool's project and
training, a grant's members, a task's resource) resolve in the file or, when the file
does not name them, in the database; :func:`apply_shop` checks those before it writes.

Applying.  An upsert, never a delete: rows the file does not mention stay as they are,
so loading twice changes nothing the second time.  A tool listed in the file gets
exactly the settings and devices the file gives it (keys left out take their defaults);
a badge, training grant or device is added or moved, never removed.  A task's ``weight``
is the exception that moves by itself (at period close): when the file leaves it out, an
existing task keeps its current weight.

>>> shop = parse_shop('''
... members:
...   - {handle: ada, name: Ada L., badges: ["04a1b2c3"]}
...   - {handle: bob, name: Bob K., roles: [member, lead]}
... ''', "shop.yaml")
Traceback (most recent call last):
...
hub.errors.ShopFileError: shop.yaml: 1 problem, nothing was loaded:
shop.yaml:4: members[1] (bob): unknown role 'lead' (roles are member, trainer, coordinator)
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from hub import peerconomy as pc
from hub.access import WeeklyHours
from hub.config import DEFAULT_SITE, SITE_ID, parse_duration
from hub.contract import DEVICE_ID, DISCOVERY_PREFIX, normalize_uid
from hub.credentials import plug_conflict, plug_logins
from hub.errors import ContractError, ShopFileError
from hub.models import (
    Badge,
    Device,
    Member,
    ParticipationFactor,
    Project,
    ProjectRules,
    Station,
    Task,
    Tool,
    ToolBinding,
    Training,
    TrainingGrant,
)
from hub.overrides import grant_overrides, set_tool_overrides, stamp, tool_overrides, unmark_grants
from hub.sessions import POLICIES, ToolRules
from hub.shop_store import bump_shop_version

MAX_ERRORS = 20
"""At most this many problems are listed; the rest are counted."""

SLUG = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
"""Ids of projects, members (handles), trainings and tasks."""
# Tools and devices appear in MQTT topics (``peershop/tool/{tool}/state``), so they use
# the device id pattern of docs/device-protocol.md: no dots, no underscores, at most 63 characters.
TOOL_ID = DEVICE_ID
PLUG_REF = re.compile(r"[^\s+#/][^\s+#]{0,199}")
"""A Tasmota topic or Shelly prefix: no spaces, no MQTT wildcards, no leading slash."""

ROLES = ("member", "trainer", "coordinator")
TRAINERS = frozenset({"trainer", "coordinator"})
STATION_KINDS = ("sign_in", "task_station")
BINDING_KINDS = ("device", "tasmota", "shelly")
# How a binding names one channel of a plug, in the plug's own numbering and bounds:
# a Tasmota's POWER<n> (from 1), a Shelly's switch:<n> (from 0).
CHANNEL_KEYS = {"tasmota": "channel", "shelly": "switch"}
CHANNEL_FIRST = {"tasmota": 1, "shelly": 0}
CHANNEL_LAST = 32
TOP_KEYS = ("projects", "members", "trainings", "tools", "tasks", "stations")
DEFAULT_MODEL = "production_effort"
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
    model: str
    gain: Decimal = pc.K
    weight_min: Decimal = pc.LO
    weight_max: Decimal = pc.HI
    weight_mode: str = "close"

    def has_default_rules(self) -> bool:
        return (self.gain, self.weight_min, self.weight_max, self.weight_mode) == (
            pc.K,
            pc.LO,
            pc.HI,
            "close",
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
    """A device feeding a tool: ``kind`` is device, tasmota or shelly (ToolBinding)."""

    kind: str
    ref: str
    channel: int = 0  # a plug's channel (ToolBinding.channel); 0: the whole plug, switch:0

    def __str__(self) -> str:
        if not self.channel:
            return f"{self.kind} {self.ref}"
        return f"{self.kind} {self.ref} {CHANNEL_KEYS[self.kind]} {self.channel}"


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


def tool_rules(policy: str, power: dict[str, Any], options: dict[str, Any]) -> ToolRules:
    """:class:`ToolRules` from a tool row's ``policy``, ``power`` and ``options`` columns."""

    def seconds(value: Any) -> timedelta | None:
        return None if value is None else timedelta(seconds=value)

    return ToolRules(
        policy=policy,
        off_w=power.get("off_w", _RULES.off_w),
        idle_w=power.get("idle_w"),
        busy_w=power.get("busy_w", _RULES.busy_w),
        hysteresis=power.get("hysteresis_w", _RULES.hysteresis),
        idle_timeout=seconds(power.get("idle_timeout")),
        max_duration=seconds(options.get("max_duration")) or _RULES.max_duration,
        end_on_stop=bool(options.get("end_on_stop", False)),
    )


# ---------------------------------------------------------------------------------------
# YAML that knows its line numbers


class _Mapping(dict):
    """A mapping from the file, with the line it starts on and the line of each key."""

    line: int = 0
    key_lines: dict[Any, int]


class _Sequence(list):
    """A list from the file, with the line of each item."""

    line: int = 0
    item_lines: list[int]


class ShopLoader(yaml.SafeLoader):
    """PyYAML's safe loader that records where each mapping, key and list item starts,
    and every key given twice in one mapping (YAML would silently keep the last)."""

    def __init__(self, stream: Any):
        super().__init__(stream)
        self.duplicates: list[tuple[int, str]] = []


def _construct_mapping(loader: ShopLoader, node: yaml.MappingNode) -> Iterator[_Mapping]:
    data = _Mapping()
    data.line = node.start_mark.line + 1
    data.key_lines = {}
    yield data
    seen: set[str] = set()
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
            if key_node.value in seen:
                loader.duplicates.append((key_node.start_mark.line + 1, key_node.value))
            seen.add(key_node.value)
    data.update(loader.construct_mapping(node))
    for key_node, _ in node.value:  # merged keys first, so the key that wins is last
        key = loader.construct_object(key_node)
        try:
            data.key_lines[key] = key_node.start_mark.line + 1
        except TypeError:  # an unhashable key; construct_mapping has already refused it
            pass


def _construct_sequence(loader: ShopLoader, node: yaml.SequenceNode) -> Iterator[_Sequence]:
    data = _Sequence()
    data.line = node.start_mark.line + 1
    data.item_lines = [item.start_mark.line + 1 for item in node.value]
    yield data
    data.extend(loader.construct_sequence(node))


ShopLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
ShopLoader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)


# ---------------------------------------------------------------------------------------
# checking


class _Problems:
    """Problems found so far, each at a line; raised together as one ShopFileError."""

    def __init__(self, source: str):
        self.source = source
        self.items: list[tuple[int, str]] = []

    def add(self, line: int, entry: str, reason: str) -> None:
        self.items.append((line, f"{entry}: {reason}" if entry else reason))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        items = sorted(self.items, key=lambda item: item[0])
        count = len(items)
        lines = [f"{self.source}: {count} problem{'s' if count > 1 else ''}, nothing was loaded:"]
        lines += [f"{self.source}:{line}: {text}" for line, text in items[:MAX_ERRORS]]
        if count > MAX_ERRORS:
            lines.append(f"{self.source}: {count - MAX_ERRORS} more not shown")
        raise ShopFileError("\n".join(lines))


class _Entry:
    """One mapping of a section (``tools[0]``), read key by key; problems go to the list.

    A nested mapping (``power:``) is read as a sub-entry under the same label, whose
    keys are named with a ``power.`` prefix; its problems make the parent not ``ok``.
    """

    def __init__(
        self,
        problems: _Problems,
        data: _Mapping,
        label: str,
        required: tuple[str, ...],
        optional: tuple[str, ...],
        *,
        id_key: str | None = None,
        prefix: str = "",
        parent: _Entry | None = None,
    ):
        self.problems = problems
        self.data = data
        ident = data.get(id_key) if id_key else None
        # the id, valid or not, names the entry in every message: ``tools[0] (laser-1)``
        self.label = f"{label} ({ident})" if isinstance(ident, str) and ident else label
        self.prefix = prefix
        self.parent = parent
        self.ok = True
        known = ", ".join((*required, *optional))
        for key in data:
            if key not in required and key not in optional:
                self.error(f"unknown key {prefix}{key} (known: {known})", key)
        for key in required:
            if key not in data:
                self.error(f"{prefix}{key} is missing")

    @property
    def line(self) -> int:
        return self.data.line

    def at(self, key: str) -> int:
        return self.data.key_lines.get(key, self.data.line)

    def where(self) -> dict[str, Any]:
        """The location fields of the entry's spec (:class:`_Located`)."""
        key_lines = {k: v for k, v in self.data.key_lines.items() if isinstance(k, str)}
        return {"line": self.line, "key_lines": key_lines, "label": self.label}

    def error(self, reason: str, key: str | None = None, *, line: int | None = None) -> None:
        entry: _Entry | None = self
        while entry is not None:
            entry.ok = False
            entry = entry.parent
        self.problems.add(line or (self.at(key) if key else self.line), self.label, reason)

    def sub(self, key: str, required: tuple[str, ...], optional: tuple[str, ...]) -> _Entry | None:
        """The nested mapping at ``key``, or None when it is missing or not a mapping."""
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, _Mapping):
            self.error(f"{key} must be a mapping such as {{key: value}}, not {_show(value)}", key)
            return None
        return _Entry(
            self.problems,
            value,
            self.label,
            required,
            optional,
            prefix=f"{self.prefix}{key}.",
            parent=self,
        )

    # --- typed fields; each returns None (and records a problem) when the value is bad

    def text(self, key: str, default: str | None = None, max_len: int = 200) -> str | None:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, str) or not value.strip():
            self.error(f"{self.prefix}{key} must be non-empty text, not {_show(value)}", key)
            return None
        if len(value) > max_len:
            self.error(f"{self.prefix}{key} is longer than {max_len} characters", key)
            return None
        return value.strip()

    def ident(self, key: str, pattern: re.Pattern[str], what: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not pattern.fullmatch(value):
            reason = f"{self.prefix}{key} {_show(value)} is not a valid {what}"
            self.error(f"{reason} ({_describe(pattern)})", key)
            return None
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str | None) -> str | None:
        value = self.data.get(key)
        if value is None:
            return default
        if value not in choices:
            listed = ", ".join(choices)
            self.error(f"{self.prefix}{key} must be one of {listed}, not {_show(value)}", key)
            return None
        return value

    def flag(self, key: str, default: bool) -> bool | None:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.error(f"{self.prefix}{key} must be true or false, not {_show(value)}", key)
            return None
        return value

    def items(self, key: str) -> list[tuple[int, Any]]:
        """A list's items with their lines; a missing key is an empty list."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, _Sequence):
            self.error(f"{self.prefix}{key} must be a list, not {_show(value)}", key)
            return []
        return list(zip(value.item_lines, value, strict=True))

    def number(self, key: str, default: float | None = None) -> float | None:
        value = self.data.get(key)
        if value is None:
            return default
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            self.error(f"{self.prefix}{key} must be a number, not {_show(value)}", key)
            return None
        if value < 0:
            self.error(f"{self.prefix}{key} must not be negative, got {value}", key)
            return None
        return value

    def duration(self, key: str, default: timedelta | None = None) -> timedelta | None:
        value = self.data.get(key)
        if value is None:
            return default
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.error(f"{self.prefix}{key}: {exc}", key)
            return None

    def hours(self, key: str) -> str | None:
        """Opening hours such as ``Mon-Fri 17:00-22:00; Sat 10:00-18:00`` (WeeklyHours)."""
        text = self.text(key)
        if text is None:
            return None
        try:
            WeeklyHours.parse(text, _UTC)
        except ValueError as exc:
            self.error(f"{self.prefix}{key}: {exc}", key)
            return None
        return text

    def decimal(self, key: str, default: Decimal | None) -> Decimal | None:
        value = self.data.get(key)
        if value is None:
            return default
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            self.error(f"{self.prefix}{key} must be a number, not {_show(value)}", key)
            return None
        return Decimal(str(value))  # YAML's 1.1 is a float; its shortest repr is what was written


def _describe(pattern: re.Pattern[str]) -> str:
    if pattern is SLUG:
        return "lowercase letters, digits, '.', '_' and '-', at most 64"
    if pattern is DEVICE_ID:
        return "lowercase letters, digits and '-', at most 63"
    return "no spaces, '+', '#' or leading '/'"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value) if not isinstance(value, date) else value.isoformat()


def _seconds(td: timedelta) -> int | float:
    """A duration as stored in JSON: whole seconds as an int."""
    s = td.total_seconds()
    return int(s) if s == int(s) else s


def _expiry(entry: _Entry, key: str) -> datetime | None:
    """A grant's expiry: a date means valid through that day (UTC), a time is exact."""
    value = entry.data.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
        except ValueError:
            value = None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC) + timedelta(days=1)
    entry.error(f"{key} must be a date (2027-06-30) or a time (2027-06-30T18:00Z)", key)
    return None


class _Parser:
    def __init__(self, source: str):
        self.source = source
        self.problems = _Problems(source)

    def section(self, data: _Mapping, name: str) -> Iterator[tuple[int, _Mapping]]:
        value = data.get(name)
        if value is None:
            return
        if not isinstance(value, list):
            self.problems.add(data.key_lines.get(name, 1), name, "must be a list of entries")
            return
        for i, item in enumerate(value):
            if not isinstance(item, _Mapping):
                line = value.item_lines[i]
                self.problems.add(line, f"{name}[{i}]", f"must be a mapping, not {_show(item)}")
                continue
            yield i, item

    def entry(
        self, data: _Mapping, label: str, required: tuple[str, ...], optional: tuple[str, ...]
    ) -> _Entry:
        """An entry whose first required key is its id (``id``, ``handle``, ``device``)."""
        return _Entry(self.problems, data, label, required, optional, id_key=required[0])

    # --- sections

    def projects(self, data: _Mapping) -> list[ProjectSpec]:
        out = []
        for i, item in self.section(data, "projects"):
            e = self.entry(
                item,
                f"projects[{i}]",
                ("id",),
                ("name", "model", "gain", "weight_min", "weight_max", "weight_mode"),
            )
            ident = e.ident("id", SLUG, "project id")
            name = e.text("name", default=ident)
            model = e.choice("model", pc.MODELS, DEFAULT_MODEL)
            gain = e.decimal("gain", pc.K)
            if gain is not None and not 0 < gain < 1:
                e.error(f"gain must be more than 0 and less than 1, not {_fmt(gain)}", "gain")
            lo = e.decimal("weight_min", pc.LO)
            if lo is not None and lo <= 0:
                e.error(f"weight_min must be more than 0, not {_fmt(lo)}", "weight_min")
            hi = e.decimal("weight_max", pc.HI)
            if lo is not None and hi is not None and hi < lo:
                e.error(
                    f"weight_max {_fmt(hi)} is below weight_min {_fmt(lo)}",
                    "weight_max",
                )
            mode = e.choice("weight_mode", pc.WEIGHT_MODES, "close")
            out.append(
                ProjectSpec(
                    ident,
                    name,
                    model,
                    gain if gain is not None else pc.K,
                    lo if lo is not None else pc.LO,
                    hi if hi is not None else pc.HI,
                    mode or "close",
                    **e.where(),
                )
            )
        return out

    def members(self, data: _Mapping) -> list[MemberSpec]:
        out = []
        for i, item in self.section(data, "members"):
            e = self.entry(item, f"members[{i}]", ("handle", "name"), ("roles", "badges", "factor"))
            handle = e.ident("handle", SLUG, "handle")
            name = e.text("name")
            roles: list[str] = []
            items = e.items("roles") if "roles" in item else [(e.line, "member")]
            for line, role in items:
                if role not in ROLES:
                    e.error(f"unknown role {_show(role)} (roles are {', '.join(ROLES)})", line=line)
                elif role in roles:
                    e.error(f"role {role!r} is listed twice", line=line)
                else:
                    roles.append(role)
            if "roles" in item and not items:
                e.error("roles must not be empty (every member has at least 'member')", "roles")
            badges: list[str] = []
            for line, uid in e.items("badges"):
                if not isinstance(uid, str):
                    e.error(
                        f"badge {_show(uid)} must be written in quotes, as hex text "
                        f'such as "04A1B2C3D4E5F6"',
                        line=line,
                    )
                    continue
                try:
                    badges.append(normalize_uid(uid))
                except ContractError:
                    e.error(f"badge {uid!r} is not 4 to 10 bytes of hex", line=line)
            factor = e.decimal("factor", Decimal(1))
            if factor is not None and factor <= 0:
                e.error(f"factor must be more than 0, not {_fmt(factor)}", "factor")
            factor = Decimal(1) if factor is None else factor
            out.append(MemberSpec(handle, name, tuple(roles), tuple(badges), factor, **e.where()))
        return out

    def trainings(self, data: _Mapping) -> list[TrainingSpec]:
        out = []
        for i, item in self.section(data, "trainings"):
            e = self.entry(item, f"trainings[{i}]", ("id",), ("name", "granted"))
            ident = e.ident("id", SLUG, "training id")
            name = e.text("name", default=ident)
            grants = []
            for j, (line, g) in enumerate(e.items("granted")):
                label = f"{e.label} granted[{j}]"
                if not isinstance(g, _Mapping):
                    self.problems.add(line, label, "must be {member: HANDLE, by: HANDLE}")
                    continue
                ge = self.entry(g, label, ("member", "by"), ("expires",))
                member = ge.ident("member", SLUG, "handle")
                by = ge.ident("by", SLUG, "handle")
                expires = _expiry(ge, "expires")
                grants.append(GrantSpec(member, by, expires, **ge.where()))
            seen: set[str] = set()
            for g in grants:
                if g.member in seen:
                    self.problems.add(g.line, g.label, f"{g.member} is granted {ident} twice")
                seen.add(g.member)
            out.append(TrainingSpec(ident, name, tuple(grants), **e.where()))
        return out

    def tools(self, data: _Mapping) -> list[ToolSpec]:
        out = []
        optional = (
            "name",
            "project",
            "devices",
            "policy",
            "training",
            "power",
            "scarce",
            "hours",
            "no_cut_while_busy",
            "end_on_stop",
            "units",
            "site",
        )
        for i, item in self.section(data, "tools"):
            e = self.entry(item, f"tools[{i}]", ("id",), optional)
            ident = e.ident("id", TOOL_ID, "tool id")
            name = e.text("name", default=ident)
            project = e.ident("project", SLUG, "project id")
            training = e.ident("training", SLUG, "training id")
            policy = e.choice("policy", POLICIES, "tap")
            bindings = self.bindings(e)
            power, options = self.power(e, policy)
            scarce = self.scarce(e, options)
            options["hours"] = e.hours("hours")
            options["no_cut_while_busy"] = e.flag("no_cut_while_busy", False)
            options["end_on_stop"] = e.flag("end_on_stop", False)
            options["units"] = e.choice("units", UNITS, "hours")
            if options["units"] == "busy_hours" and not bindings:
                e.error(
                    "units busy_hours needs a device that measures the tool's power "
                    "(devices:); without one no hour is ever busy",
                    "units",
                )
            spec = ToolSpec(
                ident,
                name,
                project,
                training,
                policy,
                tuple(bindings),
                power,
                options,
                scarce,
                e.ident("site", SITE_ID, "site id") or DEFAULT_SITE,
                **e.where(),
            )
            if e.ok:  # the engine's own check, so what is stored is what the hub can run
                try:
                    spec.rules()
                except ValueError as exc:
                    e.error(str(exc), "power" if "power" in item else "policy")
            out.append(spec)
        return out

    def bindings(self, e: _Entry) -> list[BindingSpec]:
        out: list[BindingSpec] = []
        for line, item in e.items("devices"):
            if isinstance(item, str):
                if not DEVICE_ID.fullmatch(item):
                    e.error(
                        f"device {item!r} is not a device id ({_describe(DEVICE_ID)})", line=line
                    )
                    continue
                binding = BindingSpec("device", item)
            elif isinstance(item, dict) and len(kinds := set(item) & set(BINDING_KINDS[1:])) == 1:
                kind = kinds.pop()
                ref = item[kind]
                if not isinstance(ref, str) or not PLUG_REF.fullmatch(ref):
                    e.error(
                        f"{kind} {_show(ref)} is not a topic ({_describe(PLUG_REF)})", line=line
                    )
                    continue
                channel = self.channel(e, kind, ref, item, line)
                if channel is None:
                    continue
                binding = BindingSpec(kind, ref, channel)
            else:
                e.error(
                    f"devices: {_show(item)} is neither a device id nor "
                    "{tasmota: TOPIC[, channel: N]} or {shelly: PREFIX[, switch: N]}",
                    line=line,
                )
                continue
            if binding in out:
                e.error(f"{binding} is listed twice", line=line)
                continue
            out.append(binding)
        return out

    def channel(
        self, e: _Entry, kind: str, ref: str, item: dict[str, Any], line: int
    ) -> int | None:
        """The channel a plug binding names (0 when it names none); None after an error."""
        key = CHANNEL_KEYS[kind]
        extra = sorted(str(k) for k in item if k not in (kind, key))
        if extra:
            e.error(
                f"{kind} {ref}: unknown key {', '.join(extra)} (a {kind} binding takes "
                f"{kind}: and {key}:)",
                line=line,
            )
            return None
        value = item.get(key, 0)
        first = CHANNEL_FIRST[kind]
        if key in item and (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not first <= value <= CHANNEL_LAST
        ):
            e.error(
                f"{kind} {ref}: {key} must be a whole number from {first} to {CHANNEL_LAST} "
                f"(as the plug numbers it), got {_show(value)}",
                line=line,
            )
            return None
        return value

    def power(self, e: _Entry, policy: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
        keys = ("off_w", "idle_w", "busy_w", "hysteresis_w", "idle_timeout", "max_duration")
        p = e.sub("power", (), keys)
        off_w = p.number("off_w", _RULES.off_w) if p else _RULES.off_w
        idle_w = p.number("idle_w") if p else None
        busy_w = p.number("busy_w", _RULES.busy_w) if p else _RULES.busy_w
        hysteresis_w = p.number("hysteresis_w", _RULES.hysteresis) if p else _RULES.hysteresis
        idle_timeout = p.duration("idle_timeout") if p else None
        max_duration = p.duration("max_duration", _RULES.max_duration) if p else _RULES.max_duration
        if off_w is not None and busy_w is not None and off_w > busy_w:
            e.error(f"power.off_w ({off_w}) must not be above power.busy_w ({busy_w})", "power")
        if idle_w is not None and busy_w is not None and idle_w > busy_w:
            e.error(f"power.idle_w ({idle_w}) must not be above power.busy_w ({busy_w})", "power")
        if policy == "timeout" and (p is None or "idle_timeout" not in p.data):
            e.error("policy timeout needs power.idle_timeout (such as 15m)", "policy")
        power = {
            "off_w": off_w,
            "idle_w": idle_w,
            "busy_w": busy_w,
            "hysteresis_w": hysteresis_w,
            "idle_timeout": None if idle_timeout is None else _seconds(idle_timeout),
        }
        options = {"max_duration": None if max_duration is None else _seconds(max_duration)}
        return power, options

    def scarce(self, e: _Entry, options: dict[str, Any]) -> dict[str, Any] | None:
        s = e.sub("scarce", ("slots",), ("per_slot", "enforce"))
        if s is None:
            options["enforce_reservations"] = False
            return None
        slots = s.hours("slots")
        per_slot = s.duration("per_slot", DEFAULT_PER_SLOT)
        if per_slot is not None and per_slot > timedelta(days=1):
            s.error("scarce.per_slot must be at most 24h", "per_slot")
        options["enforce_reservations"] = s.flag("enforce", True)
        return {"slots": slots, "per_slot": None if per_slot is None else _seconds(per_slot)}

    def tasks(self, data: _Mapping) -> list[TaskSpec]:
        out = []
        for i, item in self.section(data, "tasks"):
            e = self.entry(
                item,
                f"tasks[{i}]",
                ("id", "title"),
                ("project", "slots", "hours", "weight", "resource"),
            )
            ident = e.ident("id", SLUG, "task id")
            title = e.text("title", max_len=300)
            project = e.ident("project", SLUG, "project id")
            resource = e.ident("resource", TOOL_ID, "tool id")
            slots = item.get("slots", 1)
            if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
                e.error(f"slots must be a whole number of at least 1, not {_show(slots)}", "slots")
            hours = e.decimal("hours", Decimal(1))
            if hours is not None and hours <= 0:
                e.error(f"hours must be more than 0, got {hours}", "hours")
            weight = e.decimal("weight", None)
            if weight is not None and not pc.LO <= weight <= pc.HI:
                e.error(f"weight must be between {pc.LO} and {pc.HI}, got {weight}", "weight")
            out.append(
                TaskSpec(
                    ident,
                    title,
                    project,
                    slots,
                    hours,
                    weight,
                    resource,
                    **e.where(),
                )
            )
        return out

    def stations(self, data: _Mapping) -> list[StationSpec]:
        out = []
        for i, item in self.section(data, "stations"):
            e = self.entry(item, f"stations[{i}]", ("device", "kind"), ("site",))
            device = e.ident("device", DEVICE_ID, "device id")
            kind = e.choice("kind", STATION_KINDS, None)
            site = e.ident("site", SITE_ID, "site id") or DEFAULT_SITE
            out.append(StationSpec(device, kind, site, **e.where()))
        return out

    # --- across entries

    def unique(self, specs: Iterable[Any], attr: str, what: str) -> None:
        first: dict[str, Any] = {}
        for spec in specs:
            key = getattr(spec, attr)
            if key is None:
                continue
            if key in first:
                self.problems.add(
                    spec.line, spec.label, f"{what} {key!r} is already {first[key].label}"
                )
            else:
                first[key] = spec

    def across(self, shop: Shop) -> None:
        for specs, attr, what in (
            (shop.projects, "id", "project id"),
            (shop.members, "handle", "handle"),
            (shop.trainings, "id", "training id"),
            (shop.tools, "id", "tool id"),
            (shop.tasks, "id", "task id"),
            (shop.stations, "device", "station device"),
        ):
            self.unique(specs, attr, what)
        owner: dict[str, MemberSpec] = {}
        for m in shop.members:
            for uid in m.badges:
                if uid in owner:
                    where = "twice" if owner[uid] is m else f"on {owner[uid].label} too"
                    self.problems.add(m.at("badges"), m.label, f"badge {uid} is listed {where}")
                else:
                    owner[uid] = m
        bound: dict[BindingSpec, ToolSpec] = {}
        for t in shop.tools:
            for b in t.bindings:
                if b in bound and bound[b] is not t:
                    self.problems.add(
                        t.at("devices"), t.label, f"{b} is already bound to {bound[b].label}"
                    )
                bound.setdefault(b, t)
        whole = {
            (b.kind, b.ref): t for b, t in bound.items() if b.kind == "tasmota" and not b.channel
        }
        for b, t in bound.items():
            if b.channel and (b.kind, b.ref) in whole:
                self.problems.add(
                    t.at("devices"),
                    t.label,
                    f"{b} is a channel of tasmota {b.ref}, which {whole[b.kind, b.ref].label} "
                    "has whole; bind every tool to its own channel",
                )
        for s in shop.stations:
            tool = bound.get(BindingSpec("device", s.device))
            if tool is not None:
                self.problems.add(
                    s.line,
                    s.label,
                    f"device {s.device!r} is bound to {tool.label}; a tool's reader "
                    "cannot be a station too",
                )
        roles = {m.handle: m.roles for m in shop.members}
        for t in shop.trainings:
            for g in t.granted:
                if g.by in roles and not TRAINERS & set(roles[g.by]):
                    self.problems.add(
                        g.at("by"),
                        g.label,
                        f"{g.by} is not a trainer or coordinator, so cannot grant {t.id}",
                    )

    def parse(self, data: Any) -> Shop:
        if data is None:
            self.problems.add(1, "", "the file is empty")
        elif not isinstance(data, _Mapping):
            self.problems.add(1, "", f"must be a mapping with {', '.join(TOP_KEYS)}")
        if self.problems.items:
            self.problems.raise_if_any()
        for key in data:
            if key not in TOP_KEYS:
                self.problems.add(
                    data.key_lines.get(key, 1),
                    "",
                    f"unknown section {key!r} (sections are {', '.join(TOP_KEYS)})",
                )
        shop = Shop(
            self.source,
            tuple(self.projects(data)),
            tuple(self.members(data)),
            tuple(self.trainings(data)),
            tuple(self.tools(data)),
            tuple(self.tasks(data)),
            tuple(self.stations(data)),
        )
        self.across(shop)
        self.problems.raise_if_any()
        return shop


def parse_shop(text: str, source: str = "shop.yaml") -> Shop:
    """Check a shop file's text; any problem is a :class:`ShopFileError` naming the line."""
    loader = ShopLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise ShopFileError(f"{source}:{line}: not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ShopFileError(f"{source}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    parser = _Parser(source)
    for line, key in loader.duplicates:
        parser.problems.add(line, "", f"key {key!r} is given twice in one mapping")
    return parser.parse(data)


def parse_shop_file(path: str | Path) -> Shop:
    """Read and check a shop file; nothing is written (see :func:`apply_shop`)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ShopFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ShopFileError(f"{path}: not UTF-8 text") from None
    return parse_shop(text, str(path))


# ---------------------------------------------------------------------------------------
# applying


@dataclass
class _Stored:
    """The rows a shop file can touch, as the database has them now."""

    projects: dict[str, Project]
    trainings: dict[str, Training]
    members: dict[str, Member]
    handles: dict[int, str]
    badges: dict[str, Badge]
    grants: dict[tuple[str, int], TrainingGrant]
    tools: dict[str, Tool]
    bindings: dict[BindingSpec, ToolBinding]
    tasks: dict[str, Task]
    stations: dict[str, Station]
    devices: dict[str, Device]
    factors: dict[int, ParticipationFactor]
    rules: dict[str, ProjectRules]

    @classmethod
    def load(cls, session: Session) -> _Stored:
        def rows(model: Any) -> list[Any]:
            return list(session.scalars(select(model)))

        members = {m.handle: m for m in rows(Member)}
        return cls(
            projects={p.id: p for p in rows(Project)},
            trainings={t.id: t for t in rows(Training)},
            members=members,
            handles={m.id: h for h, m in members.items()},
            badges={b.uid: b for b in rows(Badge)},
            grants={(g.training_id, g.member_id): g for g in rows(TrainingGrant)},
            tools={t.id: t for t in rows(Tool)},
            bindings={BindingSpec(b.kind, b.ref, b.channel): b for b in rows(ToolBinding)},
            tasks={t.id: t for t in rows(Task)},
            stations={s.device_id: s for s in rows(Station)},
            devices={d.id: d for d in rows(Device)},
            factors={f.member_id: f for f in rows(ParticipationFactor)},
            rules={r.project_id: r for r in rows(ProjectRules)},
        )


def _check_references(shop: Shop, db: _Stored) -> None:
    """What the file names but does not define must be in the database."""
    problems = _Problems(shop.source)
    projects = {p.id for p in shop.projects} | set(db.projects)
    trainings = {t.id for t in shop.trainings} | set(db.trainings)
    tools = {t.id for t in shop.tools} | set(db.tools)
    roles = {h: tuple(m.roles or ()) for h, m in db.members.items()}
    roles.update({m.handle: m.roles for m in shop.members})

    def need(spec: Any, key: str, value: str | None, known: Iterable[str], what: str) -> bool:
        if value is None or value in known:
            return True
        problems.add(spec.at(key), spec.label, f"unknown {what} {value!r}")
        return False

    for t in shop.tools:
        need(t, "project", t.project, projects, "project")
        need(t, "training", t.training, trainings, "training")
    for task in shop.tasks:
        need(task, "project", task.project, projects, "project")
        need(task, "resource", task.resource, tools, "tool")
    for training in shop.trainings:
        for g in training.granted:
            need(g, "member", g.member, roles, "member")
            if need(g, "by", g.by, roles, "member") and not TRAINERS & set(roles[g.by]):
                problems.add(
                    g.at("by"),
                    g.label,
                    f"{g.by} is not a trainer or coordinator, so cannot grant {training.id}",
                )

    # The same device cannot be a tool's reader and a station, whichever side is stored.
    listed = {t.id for t in shop.tools}
    file_bound = {b.ref: t for t in shop.tools for b in t.bindings if b.kind == "device"}
    file_stations = {s.device for s in shop.stations}
    for s in shop.stations:
        b = db.bindings.get(BindingSpec("device", s.device))
        if b is not None and b.tool_id not in listed:
            problems.add(
                s.line, s.label, f"device {s.device!r} is bound to tool {b.tool_id} (stored)"
            )
    for ref, t in file_bound.items():
        station = db.stations.get(ref)
        if station is not None and ref not in file_stations:
            problems.add(
                t.at("devices"), t.label, f"device {ref!r} is a {station.kind} station (stored)"
            )
    for ident in shop.devices():
        device = db.devices.get(ident)
        if device is not None and device.approval == "revoked":
            station = next((s for s in shop.stations if s.device == ident), None)
            line, label = (
                (station.line, station.label)
                if station is not None
                else (file_bound[ident].at("devices"), file_bound[ident].label)
            )
            problems.add(
                line,
                label,
                f"device {ident!r} was revoked; a file never approves a revoked device again "
                "(remove it here, or approve it on the hub)",
            )
    problems.raise_if_any()


def _check_plugs(
    shop: Shop, db: _Stored, logins: list[tuple[str, str, str]], discovery_prefix: str
) -> None:
    """A plug's topic may not reach a reserved tree or another plug's (docs/device-protocol.md):
    the hub would take that tree's messages for the plug's, and the plug's login (if it
    has the same topic) may write it."""
    problems = _Problems(shop.source)
    listed = {t.id for t in shop.tools}
    bound = [(t.id, b.kind, b.ref) for t in shop.tools for b in t.bindings if b.kind != "device"]
    bound += [
        (row.tool_id, spec.kind, spec.ref)
        for spec, row in db.bindings.items()
        if spec.kind != "device" and row.tool_id not in listed
    ]
    for t in shop.tools:
        for b in t.bindings:
            if b.kind == "device":
                continue
            problem = plug_conflict(b.kind, b.ref, discovery_prefix, logins=logins, bound=bound)
            if problem is not None:
                problems.add(t.at("devices"), t.label, problem)
    problems.raise_if_any()


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


def _at_site(site: str) -> str:
    """`` at site north`` in a diff line; nothing for the default site (one-site shops)."""
    return "" if site == DEFAULT_SITE else f" at site {site}"


# A tool's settings: (name in the file, column, key in the column's JSON, is a duration).
TOOL_SETTINGS = (
    ("power.off_w", "power", "off_w", False),
    ("power.idle_w", "power", "idle_w", False),
    ("power.busy_w", "power", "busy_w", False),
    ("power.hysteresis_w", "power", "hysteresis_w", False),
    ("power.idle_timeout", "power", "idle_timeout", True),
    ("power.max_duration", "options", "max_duration", True),
    ("hours", "options", "hours", False),
    ("no_cut_while_busy", "options", "no_cut_while_busy", False),
    ("end_on_stop", "options", "end_on_stop", False),
    ("units", "options", "units", False),
    ("scarce.enforce", "options", "enforce_reservations", False),
    ("scarce.slots", "scarce", "slots", False),
    ("scarce.per_slot", "scarce", "per_slot", True),
)

# What a tool's setting was before the shop file stored it (rows from older versions).
SETTING_DEFAULTS = {"units": "hours"}


class _Apply:
    """Writes a checked shop into the rows.  ``by`` is None for a shop-file load, which
    keeps Admin's overrides (hub/overrides.py); an Admin edit (hub/tool_admin.py) passes
    the coordinator's handle, and what it changes becomes an override."""

    def __init__(self, session: Session, shop: Shop, db: _Stored, by: str | None = None):
        self.session = session
        self.shop = shop
        self.db = db
        self.by = by
        self.changes: list[str] = []

    def note(self, line: str) -> None:
        self.changes.append(line)

    def set(self, row: Any, attr: str, value: Any, what: str, shown: str | None = None) -> None:
        old = getattr(row, attr)
        if old != value:
            self.note(f"~ {what}: {shown or attr} {_fmt(old)} -> {_fmt(value)}")
            setattr(row, attr, value)

    def member_id(self, handle: str) -> int:
        return self.db.members[handle].id

    def projects(self) -> None:
        for p in self.shop.projects:
            row = self.db.projects.get(p.id)
            if row is None:
                row = Project(id=p.id, name=p.name, model=p.model)
                self.session.add(row)
                self.db.projects[p.id] = row
                self.note(f"+ project {p.id} ({p.name}, {p.model})")
                continue
            self.set(row, "name", p.name, f"project {p.id}")
            self.set(row, "model", p.model, f"project {p.id}")

    def project_rules(self) -> None:
        """Rule (a)'s settings: a project with all defaults has no row."""
        for p in self.shop.projects:
            row = self.db.rules.get(p.id)
            if row is None:
                if p.has_default_rules():
                    continue
                row = ProjectRules(project_id=p.id, gain=pc.K, weight_min=pc.LO, weight_max=pc.HI)
                row.weight_mode = "close"
                self.session.add(row)
                self.db.rules[p.id] = row
            what = f"project {p.id}"
            self.set(row, "gain", p.gain, what)
            self.set(row, "weight_min", p.weight_min, what)
            self.set(row, "weight_max", p.weight_max, what)
            self.set(row, "weight_mode", p.weight_mode, what)

    def trainings(self) -> None:
        for t in self.shop.trainings:
            row = self.db.trainings.get(t.id)
            if row is None:
                row = Training(id=t.id, name=t.name)
                self.session.add(row)
                self.db.trainings[t.id] = row
                self.note(f"+ training {t.id} ({t.name})")
                continue
            self.set(row, "name", t.name, f"training {t.id}")

    def members(self) -> None:
        for m in self.shop.members:
            row = self.db.members.get(m.handle)
            if row is None:
                row = Member(handle=m.handle, name=m.name, roles=list(m.roles))
                self.session.add(row)
                self.db.members[m.handle] = row
                roles = "" if m.roles == ("member",) else f" {_fmt(m.roles)}"
                self.note(f"+ member {m.handle} ({m.name}){roles}")
                continue
            self.set(row, "name", m.name, f"member {m.handle}")
            self.set(row, "roles", list(m.roles), f"member {m.handle}")
        self.session.flush()  # member ids for badges and grants
        self.db.handles = {m.id: h for h, m in self.db.members.items()}

    def factors(self) -> None:
        """A participation factor other than 1 is a row; factor 1 is no row."""
        for m in self.shop.members:
            member_id = self.member_id(m.handle)
            row = self.db.factors.get(member_id)
            old = Decimal(1) if row is None else row.factor
            if old == m.factor:
                continue
            self.note(f"~ member {m.handle}: factor {_fmt(old)} -> {_fmt(m.factor)}")
            if m.factor == 1:
                assert row is not None
                self.session.delete(row)
                del self.db.factors[member_id]
            elif row is None:
                row = ParticipationFactor(member_id=member_id, factor=m.factor)
                self.session.add(row)
                self.db.factors[member_id] = row
            else:
                row.factor = m.factor

    def badges(self) -> None:
        for m in self.shop.members:
            member_id = self.member_id(m.handle)
            for uid in m.badges:
                row = self.db.badges.get(uid)
                if row is None:
                    row = Badge(uid=uid, member_id=member_id)
                    self.session.add(row)
                    self.db.badges[uid] = row
                    self.note(f"+ badge {uid} -> {m.handle}")
                elif row.member_id != member_id:
                    self.note(f"~ badge {uid}: {self.db.handles[row.member_id]} -> {m.handle}")
                    row.member_id = member_id

    def grants(self) -> None:
        marked = grant_overrides(self.session)  # grants set in Admin (hub/overrides.py)
        ended: list[int] = []  # overrides the file now agrees with
        for t in self.shop.trainings:
            for g in t.granted:
                member_id, by_id = self.member_id(g.member), self.member_id(g.by)
                row = self.db.grants.get((t.id, member_id))
                if row is not None and row.id in marked:
                    what = f"training grant {t.id}: {g.member}"
                    if row.expires_at != g.expires:
                        admin = self.db.handles.get(marked[row.id], "?")
                        self.note(
                            f"! {what}: expires {_fmt(row.expires_at)} kept (set in Admin by "
                            f"{admin}); the file says {_fmt(g.expires)}"
                        )
                        continue
                    ended.append(row.id)
                    self.note(
                        f"= {what}: expires {_fmt(g.expires)} is in the file now; override ends"
                    )
                if row is None:
                    row = TrainingGrant(
                        training_id=t.id,
                        member_id=member_id,
                        granted_by_id=by_id,
                        expires_at=g.expires,
                    )
                    self.session.add(row)
                    self.db.grants[(t.id, member_id)] = row
                    until = f", until {_fmt(g.expires)}" if g.expires else ""
                    self.note(f"+ training grant {t.id}: {g.member} (by {g.by}{until})")
                    continue
                what = f"training grant {t.id}: {g.member}"
                if row.granted_by_id != by_id:
                    old = self.db.handles.get(row.granted_by_id)  # type: ignore[arg-type]
                    self.note(f"~ {what}: by {_fmt(old)} -> {g.by}")
                    row.granted_by_id = by_id
                self.set(row, "expires_at", g.expires, what, "expires")
        unmark_grants(self.session, ended)

    def devices(self) -> None:
        for ident in self.shop.devices():
            row = self.db.devices.get(ident)
            if row is None:
                row = Device(id=ident, approval="approved")
                self.session.add(row)
                self.db.devices[ident] = row
                self.note(f"+ device {ident} (approved)")
            elif row.approval != "approved":
                self.note(f"~ device {ident}: {row.approval} -> approved")
                row.approval = "approved"

    def tools(self) -> None:
        for t in self.shop.tools:
            row = self.db.tools.get(t.id)
            if row is None:
                row = Tool(
                    id=t.id,
                    name=t.name,
                    project_id=t.project,
                    policy=t.policy,
                    training_id=t.training,
                    power=dict(t.power),
                    options=dict(t.options),
                    scarce=None if t.scarce is None else dict(t.scarce),
                    locked=False,
                    site=t.site,
                )
                self.session.add(row)
                self.db.tools[t.id] = row
                self.note(f"+ tool {t.id} ({t.name}, {t.policy}{_at_site(t.site)})")
                continue
            what = f"tool {t.id}"
            overrides = tool_overrides(row)
            training = self.kept(t.id, overrides, "training", t.training, row.training_id)
            policy = self.kept(t.id, overrides, "policy", t.policy, row.policy)
            self.set(row, "name", t.name, what)
            self.set(row, "project_id", t.project, what, "project")
            self.set(row, "training_id", training, what, "training")
            self.set(row, "policy", policy, what)
            self.set(row, "site", t.site, what)
            self.settings(row, t, overrides)
            set_tool_overrides(row, overrides)
            if self.by is None and any(line.startswith(f"! {what}:") for line in self.changes):
                self.runnable(row, t)

    def kept(
        self,
        tool_id: str,
        overrides: dict[str, dict[str, Any]],
        shown: str,
        value: Any,
        current: Any,
        fmt: Any = _fmt,
    ) -> Any:
        """The value to store for a tool setting the file (or Admin) gives as ``value``.

        A load keeps a setting overridden in Admin and says so (``!``), until the file
        gives the same value (``=``: the override ends).  An Admin edit that changes a
        setting records the override, with the value it replaced as the file's."""
        found = overrides.get(shown)
        if self.by is not None:
            if value != current:
                if found is not None and "file" in found and found["file"] == value:
                    del overrides[shown]  # set back to what the file says: no override
                else:
                    was = found["file"] if found is not None and "file" in found else current
                    overrides[shown] = {**stamp(self.by), "file": was}
            return value
        if found is None:
            return value
        if value == current:
            del overrides[shown]
            self.note(f"= tool {tool_id}: {shown} {fmt(value)} is in the file now; override ends")
            return value
        found["file"] = value
        self.note(
            f"! tool {tool_id}: {shown} {fmt(current)} kept (set in Admin by {found['by']} "
            f"at {found['at']}); the file says {fmt(value)}"
        )
        return current

    def runnable(self, row: Tool, t: ToolSpec) -> None:
        """Kept overrides and the file's new values must still make a tool the hub runs."""
        try:
            tool_rules(row.policy, row.power or {}, row.options or {})
        except ValueError as exc:
            problems = _Problems(self.shop.source)
            problems.add(
                t.line,
                t.label,
                f"with the settings kept from Admin, {exc}: change the file, or end the "
                "override in Admin",
            )
            problems.raise_if_any()

    def settings(self, row: Tool, t: ToolSpec, overrides: dict[str, dict[str, Any]]) -> None:
        """Power, options and scarce as the file gives them; keys the file does not know
        (set by the hub or a later version) are kept, and so are Admin's overrides."""
        new = {
            "power": {**(row.power or {}), **t.power},
            "options": {**(row.options or {}), **t.options},
            "scarce": None if t.scarce is None else {**(row.scarce or {}), **t.scarce},
        }
        old = {"power": row.power or {}, "options": row.options or {}, "scarce": row.scarce}
        if old["scarce"] is None and new["scarce"] is not None:
            s = new["scarce"]
            self.note(
                f"~ tool {t.id}: scarce none -> {_fmt(s['slots'])} "
                f"per {_fmt_duration(s['per_slot'])}"
            )
        elif old["scarce"] is not None and new["scarce"] is None:
            self.note(f"~ tool {t.id}: scarce {_fmt(old['scarce'].get('slots'))} -> none")
        for shown, column, key, duration in TOOL_SETTINGS:
            if old[column] is None or new[column] is None:
                continue  # scarce added or removed, said above
            default = SETTING_DEFAULTS.get(key)  # a key stored before the file had it
            before, after = old[column].get(key, default), new[column].get(key, default)
            f = _fmt_duration if duration else _fmt
            after = self.kept(t.id, overrides, shown, after, before, f)
            new[column][key] = after
            if before != after:
                self.note(f"~ tool {t.id}: {shown} {f(before)} -> {f(after)}")
        for column in ("power", "options", "scarce"):
            if old[column] != new[column]:
                setattr(row, column, new[column])  # a new object, so the change is seen

    def bindings(self) -> None:
        wanted = {b: t for t in self.shop.tools for b in t.bindings}
        listed = {t.id for t in self.shop.tools}
        for b, row in list(self.db.bindings.items()):
            if b in wanted:
                if row.tool_id != wanted[b].id:
                    self.note(f"~ binding {b}: {row.tool_id} -> {wanted[b].id}")
                    row.tool_id = wanted[b].id
            elif row.tool_id in listed:
                self.note(f"- binding {row.tool_id}: {b}")
                self.session.delete(row)
                del self.db.bindings[b]
        for b, t in wanted.items():
            if b not in self.db.bindings:
                row = ToolBinding(tool_id=t.id, kind=b.kind, ref=b.ref, channel=b.channel)
                self.session.add(row)
                self.db.bindings[b] = row
                self.note(f"+ binding {t.id}: {b}")

    def tasks(self) -> None:
        for t in self.shop.tasks:
            row = self.db.tasks.get(t.id)
            if row is None:
                weight = pc.START_WEIGHT if t.weight is None else t.weight
                row = Task(
                    id=t.id,
                    title=t.title,
                    project_id=t.project,
                    slots=t.slots,
                    hours=t.hours,
                    weight=weight,
                    resource=t.resource,
                )
                self.session.add(row)
                self.db.tasks[t.id] = row
                self.note(
                    f"+ task {t.id} ({t.title}, {t.slots} x {_fmt(t.hours)} h at {_fmt(weight)})"
                )
                continue
            what = f"task {t.id}"
            self.set(row, "title", t.title, what)
            self.set(row, "project_id", t.project, what, "project")
            self.set(row, "slots", t.slots, what)
            self.set(row, "hours", t.hours, what)
            if t.weight is not None:
                self.set(row, "weight", t.weight, what)
            self.set(row, "resource", t.resource, what)

    def stations(self) -> None:
        for s in self.shop.stations:
            row = self.db.stations.get(s.device)
            if row is None:
                row = Station(device_id=s.device, kind=s.kind, site=s.site)
                self.session.add(row)
                self.db.stations[s.device] = row
                self.note(f"+ station {s.device} ({s.kind}{_at_site(s.site)})")
                continue
            if row.kind != s.kind:
                self.note(f"~ station {s.device}: {row.kind} -> {s.kind}")
                row.kind = s.kind
            self.set(row, "site", s.site, f"station {s.device}")

    def run(self) -> list[str]:
        # Flushed in the order of the foreign keys: the models have no relationships
        # between these tables for the unit of work to sort by.
        self.projects()
        self.trainings()
        self.session.flush()
        self.project_rules()
        self.members()
        self.factors()
        self.badges()
        self.grants()
        self.devices()
        self.session.flush()
        self.tools()
        self.session.flush()
        self.bindings()
        self.tasks()
        self.stations()
        self.session.flush()
        return self.changes


def apply_shop(
    session: Session, shop: Shop, *, discovery_prefix: str = DISCOVERY_PREFIX
) -> list[str]:
    """Upsert ``shop`` in the caller's transaction; returns the changes as diff lines.

    References the file does not define are checked against the database first, and so
    are its plugs' topics (none may overlap a reserved tree such as ``peershop/`` or
    ``discovery_prefix/``, or another plug's), so a :class:`ShopFileError` leaves nothing
    written.  Lines look like ``+ member ada (Ada L.)``
    (added), ``~ tool laser-1: policy tap -> timeout`` (changed) and
    ``- binding laser-1: device old-node`` (a listed tool's device the file no longer has).
    A load that changes anything bumps the shop version, so a running hub reloads.
    A value set in Admin is kept (``! tool laser-1: policy timeout kept (set in Admin by
    cora at …); the file says tap``) until the file says the same (``= …``): see
    hub/overrides.py.  ``!`` lines report and change nothing (:func:`is_change`).
    """
    db = _Stored.load(session)
    _check_references(shop, db)
    _check_plugs(shop, db, plug_logins(session), discovery_prefix)
    changes = _Apply(session, shop, db).run()
    if any(is_change(line) for line in changes):
        bump_shop_version(session)  # a running hub reloads members, tools and stations
    return changes


def is_change(line: str) -> bool:
    """A diff line of :func:`apply_shop` that changed something (not a kept override)."""
    return not line.startswith("!")
